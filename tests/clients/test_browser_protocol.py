"""The page's copy of the protocol (one block at the top of app.js) against relay.protocol."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from relay import protocol

from tests.clients.page_source import APP_JS, BLOCK, INDEX_HTML, page_protocol
from tests.support.browser import require_chromium


def code_outside_block() -> str:
    return BLOCK.sub("", APP_JS)


def function_body(name: str) -> str:
    """The source of a top-level `function name(...) { ... }` in app.js."""
    match = re.search(rf"^function {name}\(.*?^\}}$", APP_JS, re.DOTALL | re.MULTILINE)
    assert match, f"app.js has no top-level function {name}"
    return match.group(0)


def case_labels(body: str) -> set[str]:
    return set(re.findall(r'case "([^"]+)":', body))


def test_code_alphabet_length_and_separators_match() -> None:
    page = page_protocol()
    assert page["codeAlphabet"] == protocol.CODE_ALPHABET
    assert page["codeLength"] == protocol.CODE_LENGTH
    assert page["codeSeparators"] == protocol.CODE_SEPARATORS
    assert page["version"] == protocol.PROTOCOL_VERSION


def test_excluded_characters_are_exactly_those_left_out_of_the_alphabet() -> None:
    excluded = page_protocol()["excludedCharacters"]
    assert set(excluded) == {"0", "O", "1", "I", "L"}
    assert not set(excluded) & set(protocol.CODE_ALPHABET)


def test_limits_match() -> None:
    page = page_protocol()
    assert page["maxFrameBytes"] == protocol.MAX_FRAME_BYTES
    assert page["idleTimeoutSeconds"] == protocol.IDLE_TIMEOUT_SECONDS
    assert 0 < page["keepaliveSeconds"] < protocol.IDLE_TIMEOUT_SECONDS


def test_every_error_code_has_a_message_on_the_page_and_no_other() -> None:
    messages = page_protocol()["errorMessages"]
    assert set(messages) == {code.value for code in protocol.ErrorCode}
    assert all(isinstance(text, str) and text.strip() for text in messages.values())


def test_every_error_code_the_page_handles_exists() -> None:
    handled = case_labels(function_body("showRelayError"))
    assert handled, "showRelayError handles no error codes by name"
    assert handled <= {code.value for code in protocol.ErrorCode}
    assert {"invalid_code", "too_many_attempts"} <= handled
    # Any other reference by name must be a real code too.
    named = set(re.findall(r"errorMessages\.(\w+)", code_outside_block()))
    assert named <= {code.value for code in protocol.ErrorCode}


def test_message_types_and_actions_the_page_uses_exist() -> None:
    page = page_protocol()
    types = {t.value for t in protocol.MessageType}
    assert set(page["messageTypes"]) <= types
    assert case_labels(function_body("handleRelayMessage")) == set(page["messageTypes"])
    actions = {a.value for a in protocol.Action}
    assert set(page["actions"]) <= actions
    sent = set(re.findall(r'action: "(\w+)"', code_outside_block()))
    assert sent == set(page["actions"])


def test_the_block_comes_first() -> None:
    """One place to look: nothing protocol-like is defined before the block."""
    before = APP_JS[: APP_JS.index("/* PROTOCOL-BEGIN */")]
    assert before.count("const ") == 1


class _Controls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.label_targets: set[str] = set()
        self.elements: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if element_id := attributes.get("id"):
            self.elements[element_id] = {"tag": tag, **attributes}
        if tag in {"input", "textarea", "select"}:
            self.controls.append(attributes)
        if tag == "label" and attributes.get("for"):
            self.label_targets.add(str(attributes["for"]))


@pytest.fixture(scope="module")
def page_html() -> _Controls:
    parser = _Controls()
    parser.feed(INDEX_HTML)
    return parser


def test_every_control_has_a_label(page_html: _Controls) -> None:
    assert page_html.controls
    for control in page_html.controls:
        assert control.get("id") in page_html.label_targets, f"no <label for> for {control}"


def test_the_log_is_a_polite_live_region_and_the_alert_an_alert(page_html: _Controls) -> None:
    assert page_html.elements["log"]["aria-live"] == "polite"
    assert page_html.elements["alert"]["role"] == "alert"
    assert page_html.elements["status"]["role"] == "status"


def test_the_send_box_starts_disabled(page_html: _Controls) -> None:
    assert "disabled" in page_html.elements["message"]
    assert "disabled" in page_html.elements["send-button"]


def test_the_page_never_renders_relay_data_as_html() -> None:
    code = re.sub(r"//[^\n]*", "", APP_JS)
    assert not re.search(r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write", code)


def test_a_missing_chromium_fails_the_browser_tests_with_instructions(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="scripts/ensure-chromium"):
        require_chromium(tmp_path / "no-chromium-here")
