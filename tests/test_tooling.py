"""Copies of tool versions and tiers that must agree with their one source."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.support.files import ROOT


def test_pre_commit_runs_the_ruff_pinned_in_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["project"]["optional-dependencies"]["test"] if d.startswith("ruff==")]
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (ruff,) = [repo for repo in config["repos"] if repo["repo"].endswith("/ruff-pre-commit")]

    assert ruff["rev"] == "v" + pin.removeprefix("ruff==")


def test_the_fast_tier_leaves_out_exactly_the_process_and_browser_markers() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (selection,) = re.findall(r"pytest [^'\n]*-m '([^']+)'", makefile)

    assert selection == "not process and not browser"


def test_changelog_has_an_unreleased_section_and_the_current_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    changelog = (ROOT / "CHANGELOG.md").read_text()

    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)


def test_nothing_imports_a_conftest_a_test_module_or_bench() -> None:
    """Shared test code lives in tests/support (or a helper module beside the tests)."""
    forbidden = re.compile(r"^\s*(?:from|import)\s+(?:tests(?:\.\w+)*\.(?:conftest|test_\w+)|bench)\b", re.MULTILINE)
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for folder in ("tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        for match in forbidden.finditer(path.read_text())
    ]
    assert not offenders
