"""`relay-local invoke`: sam local invoke's interface, without Docker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.files import ROOT
from tests.support.relay_local import FIXTURES

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EVENTS = sorted((ROOT / "events").glob("*.json"))


def invoke(*arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay_local", "invoke", *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        input=stdin,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize("event", EVENTS, ids=[path.stem for path in EVENTS])
def test_every_events_fixture_runs(event: Path) -> None:
    function = f"{event.stem.capitalize()}Function"
    completed = invoke(function, "-e", str(event))
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)  # stdout is the result and nothing else
    if event.stem in ("expiry", "grace"):  # stream and queue events: a batch response
        assert result == {"batchItemFailures": []}
    elif event.stem == "debug":
        assert result["body"] == "Active sessions: 0"
    else:
        assert result["statusCode"] == 200


def test_env_vars_and_parameter_overrides_and_stdin(tmp_path: Path) -> None:
    env_vars = tmp_path / "env.json"
    env_vars.write_text(json.dumps({"Parameters": {"RECORD_DIR": str(tmp_path)}, "TickFunction": {"SOURCE": "own"}}))
    completed = invoke(
        "--template",
        str(FIXTURES / "sources" / "template.yaml"),
        "TickFunction",
        "-e",
        "-",
        "--env-vars",
        str(env_vars),
        "--parameter-overrides",
        "RecordDir=/elsewhere",
        stdin='{"hello": "world"}',
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"statusCode": 200}
    # The --env-vars values won over the template's (and the parameter override).
    (record,) = [json.loads(line) for line in (tmp_path / "own.jsonl").read_text().splitlines()]
    assert record["event"] == {"hello": "world"}


def test_a_failing_function_answers_its_error_on_stdout_and_logs_on_stderr() -> None:
    completed = invoke(
        "--template",
        str(FIXTURES / "gateway" / "template.yaml"),
        "RaisingFunction",
        "--parameter-overrides",
        "RecordDir=/tmp",
    )
    assert completed.returncode == 1
    error = json.loads(completed.stdout)
    assert error["errorType"] == "ValueError"
    assert "Traceback" in completed.stderr


def test_an_unknown_function_is_a_clear_error() -> None:
    completed = invoke("NoSuchFunction")
    assert completed.returncode == 2
    assert "no function NoSuchFunction in the template" in completed.stderr
    assert completed.stdout == ""
