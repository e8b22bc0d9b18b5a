"""A project's own defaults for relay-local: `[tool.relay-local]` in the pyproject.toml beside the template.

    [tool.relay-local]
    static-dir = "clients/browser"   # served at / on the HTTP port; relative to that file

Command-line options win over it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def project_settings(template: Path) -> dict[str, Any]:
    path = template.resolve().parent / "pyproject.toml"
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    settings = document.get("tool", {}).get("relay-local", {})
    return settings if isinstance(settings, dict) else {}


def project_static_dir(template: Path) -> Path | None:
    value = project_settings(template).get("static-dir")
    return (template.resolve().parent / str(value)).resolve() if value else None
