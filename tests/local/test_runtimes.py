"""Each function runs on its Runtime's interpreter and sees only what Lambda gives it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
from pathlib import Path

import pytest
from relay_local.runtimes import Interpreter, InterpreterChooser
from websockets.asyncio.client import connect

from tests.support.relay_local import EFFECT_TIMEOUT, FIXTURES, start_relay_local


def chooser_with(*versions: tuple[int, int]) -> InterpreterChooser:
    chooser = InterpreterChooser()
    chooser._pythons = [Interpreter(f"/usr/bin/python{major}.{minor}", (major, minor)) for major, minor in versions]
    return chooser


def test_the_runtimes_own_version_is_chosen_without_a_warning() -> None:
    chooser = chooser_with((3, 11), (3, 12), (3, 13))
    assert chooser.for_runtime("python3.12").version == (3, 12)
    assert chooser.warnings == []


def test_the_closest_version_runs_it_with_one_warning() -> None:
    chooser = chooser_with((3, 11), (3, 12))
    for _ in range(3):
        assert chooser.for_runtime("python3.13").version == (3, 12)
    (warning,) = chooser.warnings
    assert "no python3.13 on this machine" in warning
    assert "python3.12" in warning


def serve_isolation(runtime: str, *extra: str) -> tuple[dict[str, object], str]:
    relay = start_relay_local(
        "--template",
        str(FIXTURES / "isolation" / "template.yaml"),
        "--ws-port",
        "0",
        "--http-port",
        "0",
        "--parameter-overrides",
        f"Runtime={runtime}",
        *extra,
    )
    try:

        async def ask() -> dict[str, object]:
            async with connect(relay.ws_url) as ws:
                await ws.send("{}")
                answer: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), EFFECT_TIMEOUT))
                return answer

        return asyncio.run(ask()), relay.output()
    finally:
        assert relay.stop() == 0, relay.output()


@pytest.mark.e2e
@pytest.mark.parametrize("runtime", ["python3.12", "python3.13"])
def test_a_function_sees_its_runtime_its_requirements_and_nothing_of_relay_local(runtime: str) -> None:
    seen, _ = serve_isolation(runtime)
    assert seen["python"] == runtime.removeprefix("python")
    assert seen["colorama"] == "0.4.6"  # requirements.txt beside the CodeUri
    assert seen["boto3"] == importlib.metadata.version("boto3")  # the runtime's own SDK
    assert seen["importable"] == dict.fromkeys(
        ("moto", "websockets", "aiohttp", "relay_local", "yaml", "pydantic"), False
    )


@pytest.mark.e2e
def test_installs_happen_once_per_content_hash(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _, first = serve_isolation("python3.12", "--cache-dir", str(cache))
    _, second = serve_isolation("python3.12", "--cache-dir", str(cache))
    assert first.count("Installing") == 2  # the requirements and the runtime's boto3, with a progress line each
    assert second.count("Installing") == 0
    assert sorted(path.name.split("-")[1] for path in cache.iterdir()) == ["requirements", "sdk"]


@pytest.mark.e2e
def test_skip_install_runs_things_as_they_are(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    seen, output = serve_isolation("python3.12", "--skip-install", "--cache-dir", str(cache))
    assert not cache.exists()
    assert "Installing" not in output
    assert seen["importable"]["moto"] is True  # type: ignore[index]  # relay-local's own packages, as they are
