"""Unit tests of protocol v1's pure parts: codes, normalisation, parsing, message shapes."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from relay import protocol, session_codes
from relay.protocol import ErrorCode, ProtocolError

from tests.support.codes import other_well_formed_code


def test_alphabet_leaves_out_characters_people_confuse() -> None:
    for confusable in "0O1IL":
        assert confusable not in protocol.CODE_ALPHABET
    assert len(set(protocol.CODE_ALPHABET)) == len(protocol.CODE_ALPHABET) == 31
    assert protocol.CODE_LENGTH == 6


def test_generated_codes_are_well_formed_and_cover_the_alphabet() -> None:
    codes = [session_codes.generate_session_code() for _ in range(2000)]
    assert all(protocol.is_well_formed_code(code) for code in codes)
    seen = Counter("".join(codes))
    assert set(seen) == set(protocol.CODE_ALPHABET)  # 12,000 draws: every symbol shows up
    assert len(set(codes)) > 1990  # 8.9e8 codes: collisions in 2,000 draws are very unlikely


def test_codes_come_from_the_secrets_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def recording_choice(alphabet: str) -> str:
        calls.append(alphabet)
        return alphabet[0]

    monkeypatch.setattr(secrets, "choice", recording_choice)
    assert session_codes.generate_session_code() == protocol.CODE_ALPHABET[0] * protocol.CODE_LENGTH
    assert calls == [protocol.CODE_ALPHABET] * protocol.CODE_LENGTH


def test_peer_ids_are_distinct_and_never_mac() -> None:
    peers = {session_codes.generate_peer_id() for _ in range(500)}
    assert len(peers) == 500
    assert protocol.MAC_PEER not in peers


@pytest.mark.parametrize(
    ("typed", "normalised"),
    [
        ("k7m2qx", "K7M2QX"),
        ("  K7M-2QX ", "K7M2QX"),
        ("k 7 m - 2 q x", "K7M2QX"),
        ("K7M--2QX", "K7M2QX"),
    ],
)
def test_codes_are_normalised_before_comparison(typed: str, normalised: str) -> None:
    assert protocol.normalise_code(typed) == normalised
    assert protocol.is_well_formed_code(protocol.normalise_code(typed))


@pytest.mark.parametrize("code", ["", "K7M2Q", "K7M2QXA", "K7M2Q0", "K7M2QO", "K7M2Q1", "K7M2QI", "K7M2QL", "K7M2Q!"])
def test_malformed_codes_are_rejected(code: str) -> None:
    assert not protocol.is_well_formed_code(code)


@given(st.text(alphabet=protocol.CODE_ALPHABET.lower() + " -", max_size=20))
def test_normalising_is_idempotent(typed: str) -> None:
    once = protocol.normalise_code(typed)
    assert protocol.normalise_code(once) == once
    assert once == once.upper()


def test_redacted_codes_keep_two_characters() -> None:
    assert protocol.redact_code("K7M2QX") == "K7****"


def test_every_error_code_has_a_human_message() -> None:
    for code in ErrorCode:
        message = protocol.error(code)
        assert message == {"type": "error", "error": code.value, "message": protocol.ERROR_MESSAGES[code]}
        assert message["message"].strip()


def test_messages_have_the_documented_shapes() -> None:
    assert protocol.registered("K7M2QX") == {"type": "registered", "code": "K7M2QX"}
    assert protocol.authenticated("K7M2QX", "p1") == {"type": "authenticated", "code": "K7M2QX", "peer": "p1"}
    assert protocol.peer_joined("p1") == {"type": "peer_joined", "peer": "p1"}
    assert protocol.peer_left("p1") == {"type": "peer_left", "peer": "p1"}
    assert protocol.session_closed() == {"type": "session_closed"}
    assert protocol.frame("mac", [1]) == {"type": "frame", "from": "mac", "data": [1]}
    assert protocol.pong() == {"type": "pong"}


def test_encoded_size_counts_utf8_bytes() -> None:
    message = protocol.frame("mac", "é" * 10)
    assert protocol.encoded_size(message) == len(
        json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert protocol.encoded_size(message) > len(protocol.encode(message))


@pytest.mark.parametrize(
    ("body", "request_"),
    [
        ('{"action":"register","client_id":"mac-1"}', protocol.RegisterRequest("mac-1")),
        ('{"action":"auth","code":"k7m-2qx"}', protocol.AuthRequest("k7m-2qx")),
        ('{"action":"send","data":null}', protocol.SendRequest(None)),
        ('{"action":"send","data":{"a":[1]},"to":"p1"}', protocol.SendRequest({"a": [1]}, "p1")),
        ('{"action":"ping"}', protocol.PingRequest()),
    ],
)
def test_valid_messages_parse(body: str, request_: protocol.ClientRequest) -> None:
    assert protocol.parse_client_message(body) == request_


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (None, ErrorCode.BAD_REQUEST),
        ("", ErrorCode.BAD_REQUEST),
        ("not json", ErrorCode.BAD_REQUEST),
        ("[1,2]", ErrorCode.BAD_REQUEST),
        ('"register"', ErrorCode.BAD_REQUEST),
        ("{}", ErrorCode.UNKNOWN_ACTION),
        ('{"action":7}', ErrorCode.UNKNOWN_ACTION),
        ('{"action":"dance"}', ErrorCode.UNKNOWN_ACTION),
        ('{"action":"register"}', ErrorCode.BAD_REQUEST),
        ('{"action":"register","client_id":""}', ErrorCode.BAD_REQUEST),
        ('{"action":"register","client_id":5}', ErrorCode.BAD_REQUEST),
        ('{"action":"register","client_id":"' + "x" * 129 + '"}', ErrorCode.BAD_REQUEST),
        ('{"action":"auth"}', ErrorCode.BAD_REQUEST),
        ('{"action":"auth","code":123456}', ErrorCode.BAD_REQUEST),
        ('{"action":"send"}', ErrorCode.BAD_REQUEST),
        ('{"action":"send","data":1,"to":5}', ErrorCode.BAD_REQUEST),
        ("[" * 100_000, ErrorCode.BAD_REQUEST),
    ],
)
def test_bad_messages_raise_protocol_errors(body: str | None, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as raised:
        protocol.parse_client_message(body)
    assert raised.value.code is code
    assert raised.value.reply["error"] == code.value


def test_client_id_of_exactly_the_maximum_length_is_accepted() -> None:
    client_id = "x" * protocol.CLIENT_ID_MAX_LENGTH
    assert protocol.parse_client_message(json.dumps({"action": "register", "client_id": client_id})) == (
        protocol.RegisterRequest(client_id)
    )


@given(st.text(max_size=200))
def test_no_text_makes_the_parser_raise_anything_but_protocol_errors(body: str) -> None:
    with contextlib.suppress(ProtocolError):
        protocol.parse_client_message(body)


def test_the_tests_wrong_codes_are_well_formed_distinct_and_never_the_right_code() -> None:
    # Wrong guesses made by shifting every character wrap round to the right code after
    # len(CODE_ALPHABET) shifts; a guessing test once "guessed" its session that way.
    code = session_codes.generate_session_code()
    guesses = [other_well_formed_code(code, n) for n in range(1, 3 * len(protocol.CODE_ALPHABET))]
    assert all(protocol.is_well_formed_code(guess) for guess in guesses)
    assert code not in guesses
    assert len(set(guesses)) == len(guesses)
    last = len(protocol.CODE_ALPHABET) ** protocol.CODE_LENGTH - 1
    assert other_well_formed_code(code, last) != code
    with pytest.raises(ValueError):
        other_well_formed_code(code, last + 1)
