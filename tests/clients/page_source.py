"""The browser page's source, and its protocol block parsed."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.support.browser import BROWSER_DIR

APP_JS = (BROWSER_DIR / "app.js").read_text(encoding="utf-8")
INDEX_HTML = (BROWSER_DIR / "index.html").read_text(encoding="utf-8")
BLOCK = re.compile(r"/\* PROTOCOL-BEGIN \*/(?P<json>.*?)/\* PROTOCOL-END \*/", re.DOTALL)


def page_protocol() -> dict[str, Any]:
    blocks = BLOCK.findall(APP_JS)
    assert len(blocks) == 1, "app.js must hold exactly one PROTOCOL-BEGIN ... PROTOCOL-END block"
    return json.loads(blocks[0])  # type: ignore[no-any-return]


def ui_message(name: str, **values: object) -> str:
    """A UI_MESSAGES entry of app.js, with its {placeholders} filled like the page's fill()."""
    match = re.search(rf'^\s+{name}: "(.*)",$', APP_JS, re.MULTILINE)
    assert match, f"app.js has no UI message {name}"
    text: str = json.loads(f'"{match.group(1)}"')
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text
