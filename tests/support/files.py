"""The repository's files the tests read: template.yaml and the events/ fixtures."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"


@cache
def _parsed_template() -> dict[str, Any]:
    return yaml_parse(TEMPLATE.read_text())  # type: ignore[no-any-return]


def load_template() -> dict[str, Any]:
    """template.yaml, parsed once per run (SAM's parser takes a while); a fresh copy each call."""
    return copy.deepcopy(_parsed_template())


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())  # type: ignore[no-any-return]
