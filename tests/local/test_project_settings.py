"""relay-local knows nothing of any project: static files come from an option or [tool.relay-local]."""

from __future__ import annotations

from pathlib import Path

from relay_local.cli import parse_options

from tests.support.files import ROOT


def _template(folder: Path) -> Path:
    path = folder / "template.yaml"
    path.write_text("Resources: {}\n")
    return path


def test_no_static_dir_without_option_or_project_setting(tmp_path: Path) -> None:
    (tmp_path / "clients" / "browser").mkdir(parents=True)  # the relay's layout means nothing to it
    options, _ = parse_options(["--template", str(_template(tmp_path))])
    assert options.static_dir is None


def test_static_dir_from_the_project_setting_beside_the_template(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "pyproject.toml").write_text('[tool.relay-local]\nstatic-dir = "site"\n')
    options, _ = parse_options(["--template", str(_template(tmp_path))])
    assert options.static_dir == (tmp_path / "site").resolve()


def test_the_option_wins_over_the_project_setting(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "pyproject.toml").write_text('[tool.relay-local]\nstatic-dir = "site"\n')
    options, _ = parse_options(["--template", str(_template(tmp_path)), "--static-dir", str(tmp_path / "other")])
    assert options.static_dir == tmp_path / "other"


def test_this_project_serves_its_browser_page() -> None:
    options, _ = parse_options(["--template", str(ROOT / "template.yaml")])
    assert options.static_dir == (ROOT / "clients" / "browser").resolve()
