"""Where the browser page and Chromium are, for the clients' tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = ROOT / "clients" / "browser"
CHROMIUM = Path("/usr/bin/chromium")


def require_chromium(path: Path) -> None:
    if not path.exists():
        # Fail, not skip: a missing browser must not pass CI as a green run.
        pytest.fail(
            f"{path} is missing. Install Debian's chromium: run scripts/ensure-chromium "
            "(as root), or `sudo apt-get install -y chromium`.",
            pytrace=False,
        )
