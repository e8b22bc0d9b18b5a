"""Bodies are RFC 8259 JSON: what Python's json module accepts beyond it is a bad request.

NaN, Infinity, -Infinity, numbers too large for a double and lone UTF-16 surrogates (raw
or escaped) cannot be relayed as JSON; before this rule a lone surrogate in `client_id`
reached DynamoDB and came back as internal_error with an ERROR log line.
"""

from __future__ import annotations

import json
import logging

import pytest
from relay import protocol
from relay.protocol import ErrorCode, ProtocolError

from tests.support.harness import Gateway

NOT_JSON_VALUES = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]
LONE_SURROGATES = [r'"\ud800"', r'"\uDFFF"', r'"x\udc00y"', r'"\ud83d"', r'"\ude00\ud83d"', '"\ud800"']


@pytest.mark.parametrize("value", NOT_JSON_VALUES + LONE_SURROGATES)
@pytest.mark.parametrize("field", ["data", "to"])
def test_send_with_a_value_that_is_not_json_is_a_bad_request(field: str, value: str) -> None:
    body = '{"action":"send","data":1,"%s":%s}' % (field, value)  # noqa: UP031
    with pytest.raises(ProtocolError) as refused:
        protocol.parse_client_message(body)
    assert refused.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("value", LONE_SURROGATES)
def test_a_lone_surrogate_in_a_key_is_a_bad_request(value: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.parse_client_message('{"action":"send","data":{%s:1}}' % value)  # noqa: UP031
    assert refused.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "data",
    [r'"\ud83d\ude00"', '"\U0001f600"', "1.5e308", "-0.0", "12345678901234567890", r'"\\ud800"', '"\u00e9"'],
)
def test_valid_json_is_still_accepted(data: str) -> None:
    request = protocol.parse_client_message('{"action":"send","data":%s}' % data)  # noqa: UP031
    assert isinstance(request, protocol.SendRequest)
    assert request.data == json.loads(data)


@pytest.mark.parametrize("value", NOT_JSON_VALUES[:3] + LONE_SURROGATES)
def test_no_route_answers_internal_error_or_logs_an_error(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    mac = gateway.connect()
    browser = gateway.connect()
    stranger = gateway.connect()
    code = gateway.message(mac, {"action": "register", "client_id": "mac-1"})[0]["code"]
    gateway.message(browser, {"action": "auth", "code": code})
    bodies = {
        stranger: [
            '{"action":"register","client_id":%s}' % value,  # noqa: UP031
            '{"action":"auth","code":%s}' % value,  # noqa: UP031
            '{"action":"ping","x":%s}' % value,  # noqa: UP031
        ],
        browser: ['{"action":"send","data":%s}' % value],  # noqa: UP031
        mac: [
            '{"action":"send","data":[%s]}' % value,  # noqa: UP031
            '{"action":"kick","peer":%s}' % value,  # noqa: UP031
            '{"action":"admit","peer":%s}' % value,  # noqa: UP031
        ],
    }
    with caplog.at_level(logging.INFO):
        for connection_id, texts in bodies.items():
            for text in texts:
                replies = gateway.message(connection_id, text)
                assert [r.get("error") for r in replies] == [ErrorCode.BAD_REQUEST.value], (text, replies)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Nothing was relayed to anyone.
    assert not [m for m in gateway.sent[mac] if m["type"] == "frame"]
