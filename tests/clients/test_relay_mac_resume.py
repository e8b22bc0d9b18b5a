"""relay-mac and resumable sessions (issue 11) and lock (issue 10), against a scripted relay.

The real relay's side of both issues is being built elsewhere; the scripted relay plays
the wire protocol as the issues define it (see scripted_relay.py).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any

import pytest
from relay import protocol
from relay_mac import e2e, events
from relay_mac.client import MacClient
from relay_mac.render import HumanRenderer

from tests.clients.client_harness import (
    CODE,
    Lines,
    Recorder,
    handshake,
    in_thread,
    run_scenario,
    sends_to,
    settings_for,
    wait_for_send,
)
from tests.clients.scripted_relay import RelayScript, ScriptedRelay

PRESENT = "p1111111"
AWAY = "p2222222"
PENDING = "p3333333"


@pytest.fixture
def relay() -> Iterator[ScriptedRelay]:
    with ScriptedRelay() as server:
        yield server


def peer_away(peer: str) -> dict[str, Any]:
    return {"type": protocol.MessageType.PEER_AWAY.value, "peer": peer}


def peer_back(peer: str) -> dict[str, Any]:
    return {"type": protocol.MessageType.PEER_BACK.value, "peer": peer}


def resumes(relay: ScriptedRelay) -> list[dict[str, Any]]:
    return [r.message for r in relay.messages("resume")]


def test_a_drop_resumes_the_same_session_with_the_latest_token_each_time(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        first_token = relay.token("mac")
        assert client.resume_token == first_token
        relay.drop()
        await recorder.wait_for("resumed")
        second_token = relay.token("mac")
        assert client.resume_token == second_token != first_token
        relay.drop()
        await recorder.wait_for("resumed", count=2)
        assert resumes(relay) == [
            {"action": "resume", "token": first_token},
            {"action": "resume", "token": second_token},
        ]
        assert client.code == CODE

    recorder = run_scenario(settings_for(relay), scenario)
    assert len(relay.messages("register")) == 1
    # The resume is the first thing said on each new connection.
    assert [r.message["action"] for r in relay.received if r.connection > 0 and r.message["action"] != "end"][:2] == [
        "resume",
        "resume",
    ]
    assert recorder.of("resumed")[0] == {
        "event": "resumed",
        "code": CODE,
        "session": 1,
        "peers": [],
        "away": [],
        "waiting": [],
    }
    assert [e["resuming"] for e in recorder.of("disconnected")] == [True, True]
    assert len(recorder.of("registered")) == 1


def test_a_frame_that_comes_before_resumed_is_shown_not_dropped(relay: ScriptedRelay) -> None:
    """A browser's frame sent while the relay resumes us may be posted straight to the new
    connection before `resumed` (the relay's hold meets a holder that is back)."""

    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined(PRESENT))
        await recorder.wait_for("peer_joined")
        relay.script.resume_peers = [{"peer": PRESENT, "state": "present"}]
        relay.script.before_resumed = [protocol.frame(PRESENT, "sent while we resumed")]
        relay.script.held = [protocol.frame(PRESENT, "held for us")]
        relay.drop()
        await recorder.wait_for("frame", count=2)

    recorder = run_scenario(settings_for(relay, e2e=False), scenario)
    assert [e["data"] for e in recorder.of("frame")] == ["sent while we resumed", "held for us"]
    assert recorder.kinds().index("resumed") < recorder.kinds().index("frame")


def test_resumed_lists_present_away_and_pending_browsers_and_away_and_back_move_them() -> None:
    script = RelayScript(
        resume_peers=[
            {"peer": PRESENT, "state": "present"},
            {"peer": AWAY, "state": "away"},
            {"peer": PENDING, "state": "pending"},
        ]
    )
    with ScriptedRelay(script) as relay:

        async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
            await recorder.wait_for("registered")
            relay.push(protocol.peer_joined(PRESENT))
            relay.push(protocol.peer_joined("p9999999"))  # removed while we were away
            await recorder.wait_for("peer_joined", count=2)
            relay.drop()
            resumed = await recorder.wait_for("resumed")
            assert (resumed["peers"], resumed["away"], resumed["waiting"]) == ([PRESENT], [AWAY], [PENDING])
            assert client.links.link("p9999999") is None
            assert client.links.link(AWAY) is None  # no wait for a handshake it cannot send yet
            relay.push(peer_away(PRESENT))
            away = await recorder.wait_for("peer_away")
            assert away == {"event": "peer_away", "peer": PRESENT, "peers": [], "away": [AWAY, PRESENT]}
            relay.push(peer_back(AWAY))
            back = await recorder.wait_for("peer_back")
            assert back == {"event": "peer_back", "peer": AWAY, "peers": [AWAY], "away": [PRESENT]}
            assert client.links.link(AWAY) is not None
            lines.type("/peers")
            listed = await recorder.wait_for("peers")
            assert (listed["peers"], listed["away"], listed["waiting"]) == ([AWAY], [PRESENT], [PENDING])
            relay.push(protocol.peer_left(PRESENT))  # its grace period ran out
            await recorder.wait_for("peer_left")
            assert client.away == []

        run_scenario(settings_for(relay, e2e=False), scenario)


def test_a_refused_resume_registers_a_new_session_and_says_so() -> None:
    with ScriptedRelay(RelayScript(resume_reply="invalid")) as relay:

        async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
            await recorder.wait_for("registered")
            relay.push(protocol.peer_joined(PRESENT))
            await recorder.wait_for("peer_joined")
            relay.drop()
            refused = await recorder.wait_for("resume_refused")
            assert refused == {
                "event": "resume_refused",
                "code": CODE,
                "error": "invalid_token",
                "message": protocol.ERROR_MESSAGES[protocol.ErrorCode.INVALID_TOKEN],
            }
            second = await recorder.wait_for("registered", count=2)
            assert second == {"event": "registered", "code": "ABCDEF", "session": 2, "new_session": True}
            assert client.peers == []
            assert client.links.link(PRESENT) is None
            assert client.resume_token == relay.token("mac")

        recorder = run_scenario(settings_for(relay), scenario)
        kinds = recorder.kinds()
        assert kinds.index("resume_refused") < kinds.index("registered", 2)
        # Both on the second connection: resume first, then register.
        assert [r.message["action"] for r in relay.received if r.connection == 1][:2] == ["resume", "register"]


def test_other_refusals_keep_the_token_and_try_again() -> None:
    """Only invalid_token means the session is gone; rate_limited and the like are retried."""
    with ScriptedRelay() as relay:
        relay.script.resume_reply = "silent"

        async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
            await recorder.wait_for("registered")
            token = relay.token("mac")
            relay.drop()
            await in_thread(lambda: relay.wait_until(lambda: len(relay.messages("resume")) == 1))
            relay.push(protocol.error(protocol.ErrorCode.RATE_LIMITED))
            await recorder.wait_for("error", error="connect_failed")
            relay.script.resume_reply = "ok"
            await recorder.wait_for("resumed")
            assert [m["token"] for m in resumes(relay)] == [token, token]

        recorder = run_scenario(settings_for(relay), scenario)
        assert recorder.of("resume_refused") == []
        assert len(relay.messages("register")) == 1


def test_no_resume_registers_plainly_and_a_drop_gives_a_new_session(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.drop()
        await recorder.wait_for("registered", count=2)

    recorder = run_scenario(settings_for(relay, resumable=False), scenario)
    assert [r.message for r in relay.messages("register")] == [{"action": "register", "client_id": "mac-test"}] * 2
    assert resumes(relay) == []
    assert recorder.of("disconnected")[0]["resuming"] is False


def test_a_relay_without_resumable_sessions_gets_a_new_registration_after_a_drop() -> None:
    with ScriptedRelay(RelayScript(resumable=False)) as relay:

        async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
            await recorder.wait_for("registered")
            assert client.resume_token is None
            relay.drop()
            await recorder.wait_for("registered", count=2)

        run_scenario(settings_for(relay), scenario)
        assert resumes(relay) == []


def test_stopping_ends_the_session_before_closing(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")

    recorder = run_scenario(settings_for(relay), scenario)
    relay.wait_until(lambda: 0 in relay.close_codes)
    assert [r.message for r in relay.messages("end")] == [{"action": "end"}]
    assert relay.close_codes[0] == 1000
    assert recorder.kinds()[-2:] == ["ended", "stopped"]


def test_a_relay_that_does_not_answer_end_delays_the_exit_only_briefly() -> None:
    with ScriptedRelay(RelayScript(answer_end=False)) as relay:

        async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
            await recorder.wait_for("registered")

        recorder = run_scenario(settings_for(relay, end_timeout_seconds=0.2), scenario)
        assert len(relay.messages("end")) == 1
        assert recorder.kinds()[-1] == "stopped"
        assert "ended" not in recorder.kinds()


def test_a_relay_that_answers_end_lets_the_exit_go_at_once() -> None:
    """The exit waits for `ended` or the close, whichever comes first, not for the timeout:
    with an hour's timeout, run_scenario's ten-second bound fails if the client waits it out."""
    with ScriptedRelay() as relay:

        async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
            await recorder.wait_for("registered")

        recorder = run_scenario(settings_for(relay, end_timeout_seconds=3600), scenario)
        assert len(relay.messages("end")) == 1
        assert recorder.kinds()[-2:] == ["ended", "stopped"]


def test_a_relay_without_end_is_not_reported_as_an_error(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.script.answer_end = False
        # What today's relay answers to an action it does not know.
        original = relay._answer

        async def answer(connection: Any, message: dict[str, Any]) -> None:
            if message.get("action") == "end":
                await connection.send(protocol.encode(protocol.error(protocol.ErrorCode.UNKNOWN_ACTION)))
            else:
                await original(connection, message)

        relay._answer = answer  # type: ignore[method-assign]

    recorder = run_scenario(settings_for(relay, end_timeout_seconds=5), scenario)
    assert recorder.of("error") == []
    assert recorder.kinds()[-1] == "stopped"


def test_lock_and_unlock_commands(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        lines.type("/lock")
        await recorder.wait_for("locked")
        assert client.locked
        lines.type("/unlock")
        await recorder.wait_for("unlocked")
        assert not client.locked
        lines.type("/lock now")
        await recorder.wait_for("error", error="usage")

    run_scenario(settings_for(relay), scenario)
    assert [r.message for r in relay.received if r.message["action"] in ("lock", "unlock")] == [
        {"action": "lock"},
        {"action": "unlock"},
    ]


def test_lock_after_first_locks_once_when_the_first_browser_is_in_and_not_again_after_a_resume(
    relay: ScriptedRelay,
) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        await asyncio.sleep(0.05)
        assert relay.messages("lock") == []  # nobody in yet
        relay.push(protocol.peer_joined(PRESENT))
        await recorder.wait_for("locked")
        relay.push(protocol.peer_joined(AWAY))
        await recorder.wait_for("peer_joined", count=2)
        relay.drop()
        await recorder.wait_for("resumed")
        await asyncio.sleep(0.05)

    recorder = run_scenario(settings_for(relay, lock_after_first=True, e2e=False), scenario)
    assert [r.message for r in relay.messages("lock")] == [{"action": "lock"}]
    assert recorder.kinds().index("peer_joined") < recorder.kinds().index("locked")


def test_lock_after_first_in_approval_mode_waits_for_the_admission(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.join_request(PRESENT, None, None))
        await recorder.wait_for("join_request")
        await asyncio.sleep(0.05)
        assert relay.messages("lock") == []
        lines.type(f"/admit {PRESENT}")
        await recorder.wait_for("locked")

    run_scenario(settings_for(relay, lock_after_first=True, approve=True, e2e=False), scenario)


def test_lines_for_everyone_include_away_browsers(relay: ScriptedRelay) -> None:
    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined(PRESENT))
        relay.push(protocol.peer_joined(AWAY))
        await recorder.wait_for("peer_joined", count=2)
        relay.push(peer_away(PRESENT))
        relay.push(peer_away(AWAY))
        await recorder.wait_for("peer_away", count=2)
        lines.type("for whoever comes back")
        await recorder.wait_for("sent")

    recorder = run_scenario(settings_for(relay, e2e=False), scenario)
    assert recorder.of("error") == []
    assert [r.message for r in relay.user_sends()] == [{"action": "send", "data": "for whoever comes back"}]


# ---- encryption across a resume ------------------------------------------------------------


def test_after_resuming_held_frames_open_with_the_old_keys_then_each_present_browser_rekeys() -> None:
    with ScriptedRelay() as relay:

        async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
            await recorder.wait_for("registered")
            relay.push(protocol.peer_joined(PRESENT))
            relay.push(protocol.peer_joined(AWAY))
            relay.push(protocol.peer_joined("pplain01"))
            old_present = await handshake(relay, recorder, PRESENT)
            old_away = await handshake(relay, recorder, AWAY)
            relay.push(protocol.frame("pplain01", "no layer here"))
            await recorder.wait_for("encryption", count=3)
            relay.push(peer_away(AWAY))
            await recorder.wait_for("peer_away")
            # While we are away the browser goes on; the relay holds its frames for us.
            relay.script.resume_peers = [
                {"peer": PRESENT, "state": "present"},
                {"peer": AWAY, "state": "away"},
                {"peer": "pplain01", "state": "present"},
            ]
            relay.script.held = [
                protocol.frame(PRESENT, old_present.seal("held 1")),
                protocol.frame(PRESENT, old_present.seal("held 2")),
            ]
            relay.drop()
            await recorder.wait_for("resumed")
            await recorder.wait_for("frame", count=2, **{"from": PRESENT})
            rekey = await wait_for_send(relay, PRESENT, 2)
            assert rekey == e2e.rekey_message()
            lines.type(f"@{PRESENT} after the resume")  # waits for the new keys
            await asyncio.sleep(0.05)
            assert len(sends_to(relay, PRESENT)) == 2
            new_present = await handshake(relay, recorder, PRESENT, sent_before=2)
            again = await recorder.wait_for("encryption", count=4)
            assert again["sas"] == e2e.spaced_sas(new_present.sas)
            assert new_present.open(await wait_for_send(relay, PRESENT, 4)) == "after the resume"
            # The old keys are gone once the new agreement is made.
            relay.push(protocol.frame(PRESENT, old_present.seal("stale")))
            await recorder.wait_for("rejected")
            # The away browser made no new agreement yet: what we send it is still sealed as before.
            lines.type(f"@{AWAY} while you are away")
            assert old_away.open(await wait_for_send(relay, AWAY, 2)) == "while you are away"

        recorder = run_scenario(settings_for(relay), scenario)
        assert [e["data"] for e in recorder.of("frame") if e["from"] == PRESENT] == ["held 1", "held 2"]
        assert recorder.of("rejected")[0]["reason"] == "tampered"
        # No rekey for the away browser (it starts over itself when it resumes), none for a plain one.
        assert e2e.rekey_message() not in sends_to(relay, AWAY)
        assert sends_to(relay, "pplain01") == []


def test_no_rekey_after_resuming_for_a_browser_whose_new_commit_was_answered(relay: ScriptedRelay) -> None:
    """The browser started over itself (it resumed while we were away): our rekey would make
    its reveal arrive out of turn, rejected on our side, and start a second agreement."""

    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined(PRESENT))
        await handshake(relay, recorder, PRESENT)
        await recorder.wait_for("encryption")
        browser = e2e.BrowserHandshake(CODE, PRESENT)
        relay.push(protocol.frame(PRESENT, browser.commit_message()))
        key = await wait_for_send(relay, PRESENT, 2)
        relay.script.resume_peers = [{"peer": PRESENT, "state": "present"}]
        relay.drop()
        await recorder.wait_for("resumed")
        reveal, channel = browser.on_key(key)
        relay.push(protocol.frame(PRESENT, reveal))
        await recorder.wait_for("encryption", count=2)
        lines.type(f"@{PRESENT} sealed with the agreement it started")
        assert channel.open(await wait_for_send(relay, PRESENT, 3)) == "sealed with the agreement it started"

    recorder = run_scenario(settings_for(relay), scenario)
    assert e2e.rekey_message() not in sends_to(relay, PRESENT)
    assert recorder.of("rejected") == []


def test_a_browser_that_comes_back_and_commits_again_still_has_its_earlier_frames_opened(
    relay: ScriptedRelay,
) -> None:
    """The relay does not keep order: a frame sealed before the new commit may arrive after it."""

    async def scenario(client: MacClient, recorder: Recorder, lines: Lines) -> None:
        await recorder.wait_for("registered")
        relay.push(protocol.peer_joined(PRESENT))
        old = await handshake(relay, recorder, PRESENT)
        await recorder.wait_for("encryption")
        late = old.seal("sealed before the new commit")
        relay.push(peer_away(PRESENT))
        relay.push(peer_back(PRESENT))
        await recorder.wait_for("peer_back")
        browser = e2e.BrowserHandshake(CODE, PRESENT)
        relay.push(protocol.frame(PRESENT, browser.commit_message()))
        key = await wait_for_send(relay, PRESENT, 2)
        relay.push(protocol.frame(PRESENT, late))
        await recorder.wait_for("frame")
        reveal, new = browser.on_key(key)
        relay.push(protocol.frame(PRESENT, reveal))
        await recorder.wait_for("encryption", count=2)
        relay.push(protocol.frame(PRESENT, new.seal("with the new keys")))
        await recorder.wait_for("frame", count=2)

    recorder = run_scenario(settings_for(relay), scenario)
    assert [e["data"] for e in recorder.of("frame")] == ["sealed before the new commit", "with the new keys"]
    assert recorder.of("rejected") == []


# ---- the human display ----------------------------------------------------------------------


def render(*shown: events.Event) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    renderer = HumanRenderer(out, err)
    for event in shown:
        renderer(event)
    return out.getvalue(), err.getvalue()


def test_a_resumed_session_shows_the_same_code_marked_reconnected_not_new() -> None:
    out, err = render(
        events.disconnected(1006, "connection lost", resuming=True),
        events.resumed(CODE, 1, [PRESENT], [AWAY], []),
    )
    assert "K 7 M   2 Q X" in out
    assert "reconnected" in out
    assert "NEW" not in out
    assert "no longer works" not in err
    assert "Resuming the same session" in err


def test_a_refused_resume_says_a_new_session_follows() -> None:
    out, err = render(
        events.resume_refused(CODE, "invalid_token", "gone"),
        events.registered("ABCDEF", 2),
    )
    assert "could not resume session K 7 M   2 Q X" in err
    assert "NEW session" in err
    assert "NEW session code" in out


def test_away_back_lock_and_end_are_shown() -> None:
    out, _ = render(
        events.peer_away(PRESENT, [], [PRESENT]),
        events.peer_back(PRESENT, [PRESENT], []),
        events.locked(True),
        events.locked(False),
        events.ended(),
        events.peers([PRESENT], [], {}, [AWAY]),
    )
    assert f"browser {PRESENT} is away" in out
    assert f"browser {PRESENT} is back" in out
    assert "Session locked" in out
    assert "Session unlocked" in out
    assert "Session ended" in out
    assert f"away: {AWAY}" in out
