"""`sam build` of template.yaml succeeds and produces deployable artifacts.

Runs scripts/sam-build, which uses aws-sam-cli from its own virtualenv (.venv-sam) and
creates that virtualenv on first use. The build installs the layer's requirements from
PyPI for arm64 with python3.13; without a python3.13 the test fails, saying so.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from samtranslator.yaml_helper import intrinsics_multi_constructor

from tests.support.template import FUNCTION_DIRS

pytestmark = pytest.mark.process

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "sam-build"
ELF_MAGIC = b"\x7fELF"
EM_AARCH64 = 183  # ELF e_machine of arm64


class _CfnLoader(yaml.SafeLoader):
    """YAML loader for CloudFormation short-form tags (!Ref, !Sub, !GetAtt...)."""


_CfnLoader.add_multi_constructor("!", intrinsics_multi_constructor)


def run_sam_build(build_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), str(build_dir)],
        cwd=REPO,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )


def elf_machine(path: Path) -> int | None:
    """e_machine of an ELF file (little-endian, as on Lambda), None if not ELF."""
    header = path.read_bytes()[:20]
    if not header.startswith(ELF_MAGIC):
        return None
    return int.from_bytes(header[18:20], "little")


def pinned_powertools_version() -> str:
    requirements = (REPO / "layers" / "relay" / "requirements.txt").read_text(encoding="utf-8")
    match = re.search(r"^aws-lambda-powertools(?:\[[^\]]*\])?==(\S+)", requirements, re.MULTILINE)
    assert match, "layers/relay/requirements.txt must pin aws-lambda-powertools"
    return match[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # build.toml lands next to the build dir, so both stay inside the temp dir.
    build_dir = tmp_path_factory.mktemp("sam") / ".aws-sam" / "build"
    result = run_sam_build(build_dir)
    if result.returncode != 0:
        pytest.fail(
            f"scripts/sam-build exited {result.returncode}\n--- stderr ---\n{result.stderr}"
            f"\n--- stdout ---\n{result.stdout}",
            pytrace=False,
        )
    return build_dir


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sam_build_builds_every_function_from_its_folder(built: Path) -> None:
    for logical_id, folder in FUNCTION_DIRS.items():
        source = REPO / "functions" / folder / "app.py"
        artifact = built / logical_id / "app.py"
        assert artifact.read_bytes() == source.read_bytes(), logical_id


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sam_build_layer_holds_the_relay_package_and_powertools(built: Path) -> None:
    site = built / "RelayLayer" / "python"
    source = REPO / "layers" / "relay" / "relay"
    modules = sorted(path.name for path in source.glob("*.py"))
    assert "protocol.py" in modules
    for module in modules:
        assert (site / "relay" / module).read_bytes() == (source / module).read_bytes(), module
    assert (site / "aws_lambda_powertools" / "__init__.py").is_file()
    version = pinned_powertools_version()
    assert (site / f"aws_lambda_powertools-{version}.dist-info").is_dir()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sam_build_layer_binaries_are_arm64(built: Path) -> None:
    machines = {str(path.relative_to(built)): elf_machine(path) for path in (built / "RelayLayer").rglob("*.so*")}
    wrong = {name: machine for name, machine in machines.items() if machine not in (None, EM_AARCH64)}
    assert wrong == {}, "layer contains binaries for another architecture"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sam_build_template_points_at_the_built_artifacts(built: Path) -> None:
    template: dict[str, Any] = yaml.load((built / "template.yaml").read_text(encoding="utf-8"), Loader=_CfnLoader)
    resources = template["Resources"]
    for logical_id in FUNCTION_DIRS:
        properties = resources[logical_id]["Properties"]
        assert properties["CodeUri"] == logical_id
        assert properties["Handler"] == "app.lambda_handler"
    assert resources["RelayLayer"]["Properties"]["ContentUri"] == "RelayLayer"


def _isolated_path(tmp_path: Path, python313: str | None) -> dict[str, str]:
    """An environment whose PATH has the script's tools and, optionally, a fake python3.13."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "date", "mkdir", "env"):
        target = next(Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists())
        (bin_dir / tool).symlink_to(target)
    if python313 is not None:
        fake = bin_dir / "python3.13"
        fake.write_text(f"#!/bin/sh\necho {python313}\n", encoding="utf-8")
        fake.chmod(0o755)
    # An already "installed" private venv: the script must stop before it needs sam.
    sam_venv = tmp_path / "venv-sam"
    sam_venv.mkdir()
    stamp = (SCRIPT.read_text(encoding="utf-8").split("SAM_CLI_VERSION=", 1)[1]).split("\n", 1)[0]
    (sam_venv / f".installed-aws-sam-cli-{stamp}").touch()
    return {"PATH": str(bin_dir), "HOME": str(tmp_path), "SAM_VENV": str(sam_venv)}


@pytest.mark.parametrize("python313", [None, "3.11"], ids=["missing", "wrong-version"])
def test_sam_build_without_python313_fails_saying_so(tmp_path: Path, python313: str | None) -> None:
    result = run_sam_build(tmp_path / "build", env=_isolated_path(tmp_path, python313))
    assert result.returncode == 2
    assert "python3.13" in result.stderr
    assert not (tmp_path / "build").exists()
