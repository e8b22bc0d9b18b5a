"""Fixtures of relay-local's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the fixture functions write the events they receive."""
    return tmp_path_factory.mktemp("records")
