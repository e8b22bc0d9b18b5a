"""Which interpreter runs a function, and what it may import, as Lambda's runtime gives it.

- The interpreter matches the function's Runtime: python3.X from PATH, pyenv or uv; node for
  nodejsNN.x. When the machine has none, the closest one runs it, with one warning.
- A function sees only what Lambda gives it: its code, its layers, what `sam build` would
  install (requirements.txt beside a Python CodeUri or in a layer with a BuildMethod;
  package.json dependencies for Node.js), and the runtime's own SDK (boto3/botocore for
  Python, AWS SDK for JavaScript v3 for Node.js). Each is installed once per content hash
  into a cache directory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from relay_local.template import Function

log = logging.getLogger("relay_local.install")

# The part of AWS SDK for JavaScript v3 installed as the Node.js runtimes' own SDK (the
# runtimes bundle every client; these are the ones SAM WebSocket apps use).
NODE_SDK_PACKAGES = (
    "@aws-sdk/client-apigatewaymanagementapi@3.1169.0",
    "@aws-sdk/client-dynamodb@3.1169.0",
    "@aws-sdk/lib-dynamodb@3.1169.0",
    "@aws-sdk/client-sqs@3.1169.0",
    "@aws-sdk/client-sns@3.1169.0",
)
_PYTHON_RUNTIME = re.compile(r"^python3\.(\d+)$")
_NODE_RUNTIME = re.compile(r"^nodejs(\d+)\.x$")


class InstallError(Exception):
    """An install of requirements or of a runtime SDK failed; the message says which and why."""


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: tuple[int, int]  # (3, 13) for Python, (20, 0) for Node.js
    is_node: bool = False

    @property
    def name(self) -> str:
        return f"node{self.version[0]}" if self.is_node else f"python{self.version[0]}.{self.version[1]}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "relay-local"


# ---- finding interpreters ---------------------------------------------------------------


def _python_version(path: str) -> tuple[int, int] | None:
    try:
        output = subprocess.run(  # noqa: S603 - an interpreter found on this machine
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    major, _, minor = output.partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def python_interpreters() -> list[Interpreter]:
    """Every python3.X on PATH (pyenv shims aside), in pyenv's versions and known to uv."""
    candidates: list[str] = [sys.executable]
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    for minor in range(8, 20):
        on_path = shutil.which(f"python3.{minor}")
        if on_path and "/shims/" not in on_path:
            candidates.append(on_path)
        installed = sorted((pyenv_root / "versions").glob(f"3.{minor}.*/bin/python3.{minor}"))
        if installed:
            candidates.append(str(installed[-1]))
    uv = shutil.which("uv")
    if uv:
        try:
            listed = subprocess.run(  # noqa: S603
                [uv, "python", "list", "--only-installed", "--output-format", "json"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            candidates += re.findall(r'"path":\s*"([^"]+)"', listed)
        except (OSError, subprocess.SubprocessError):
            pass
    found: dict[tuple[int, int], Interpreter] = {}
    for path in candidates:
        version = (sys.version_info.major, sys.version_info.minor) if path == sys.executable else None
        version = version or _python_version(path)
        if version is not None and version[0] == 3:
            found.setdefault(version, Interpreter(path, version))
    return sorted(found.values(), key=lambda interpreter: interpreter.version)


def node_interpreter() -> Interpreter | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        output = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"v(\d+)\.(\d+)", output.strip())
    return Interpreter(node, (int(match.group(1)), int(match.group(2))), is_node=True) if match else None


class InterpreterChooser:
    """Picks an interpreter per Runtime, looking the machine over once; one warning per inexact choice."""

    def __init__(self) -> None:
        self._pythons: list[Interpreter] | None = None
        self._node: Interpreter | None = None
        self._node_looked = False
        self._chosen: dict[str, Interpreter] = {}
        self.warnings: list[str] = []

    def for_runtime(self, runtime: str) -> Interpreter:
        if runtime not in self._chosen:
            self._chosen[runtime] = self._choose(runtime)
        return self._chosen[runtime]

    def _choose(self, runtime: str) -> Interpreter:
        node = _NODE_RUNTIME.match(runtime)
        if node is not None:
            if not self._node_looked:
                self._node, self._node_looked = node_interpreter(), True
            if self._node is None:
                raise InstallError(
                    f"{runtime}: no node on PATH; install Node.js {node.group(1)} to run these functions"
                )
            if self._node.version[0] != int(node.group(1)):
                self.warnings.append(
                    f"{runtime}: functions run on node {self._node.version[0]} ({self._node.path}), "
                    f"not Node.js {node.group(1)}"
                )
            return self._node
        if self._pythons is None:
            self._pythons = python_interpreters()
        python = _PYTHON_RUNTIME.match(runtime)
        wanted = (3, int(python.group(1))) if python else (sys.version_info.major, sys.version_info.minor)
        exact = [interpreter for interpreter in self._pythons if interpreter.version == wanted]
        if exact:
            return exact[0]
        closest = min(self._pythons, key=lambda item: (abs(item.version[1] - wanted[1]), -item.version[1]))
        label = runtime or "(no Runtime)"
        self.warnings.append(
            f"{label}: no python3.{wanted[1]} on this machine (PATH, pyenv, uv); "
            f"its functions run on {closest.name} ({closest.path})"
        )
        return closest


# ---- installing what sam build and the runtime would provide -----------------------------


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class Installer:
    """Installs once per content hash into the cache directory; later runs reuse the result."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def _install(self, key: str, what: str, command: list[str], cwd: Path | None = None) -> Path:
        target = self.cache_dir / key
        if (target / ".complete").exists():
            return target
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        log.info("Installing %s (once; cached in %s)", what, target)
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix=".installing-") as temporary:
            staging = Path(temporary) / "content"
            staging.mkdir()
            completed = subprocess.run(  # noqa: S603 - pip or npm, with arguments we built
                [part.replace("{target}", str(staging)) for part in command],
                capture_output=True,
                text=True,
                cwd=cwd,
                timeout=900,
                check=False,
            )
            if completed.returncode != 0:
                detail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
                raise InstallError(f"Cannot install {what}:\n  " + "\n  ".join(detail))
            (staging / ".complete").touch()
            try:
                staging.rename(target)
            except OSError:
                if not (target / ".complete").exists():  # another relay-local installed it meanwhile
                    raise
        return target

    def _pip(self, interpreter: Interpreter, *arguments: str) -> list[str]:
        return [
            sys.executable, "-m", "pip", "--python", interpreter.path, "install", "--quiet",
            "--no-warn-script-location", "--root-user-action", "ignore", "--target", "{target}", *arguments,
        ]  # fmt: skip

    def python_sdk(self, interpreter: Interpreter) -> Path:
        """boto3 and botocore, as the Python runtimes bundle them (relay-local's own pinned versions)."""
        packages = [
            f"boto3=={importlib.metadata.version('boto3')}",
            f"botocore=={importlib.metadata.version('botocore')}",
        ]
        key = f"{interpreter.name}-sdk-{_digest(*packages)}"
        return self._install(key, f"the {interpreter.name} runtime's boto3", self._pip(interpreter, *packages))

    def python_requirements(self, interpreter: Interpreter, requirements: Path) -> Path:
        key = f"{interpreter.name}-requirements-{_digest(requirements.read_bytes())}"
        what = f"{requirements} for {interpreter.name}"
        return self._install(key, what, self._pip(interpreter, "-r", str(requirements)))

    def node_sdk(self, npm: str) -> Path:
        key = f"node-sdk-{_digest(*NODE_SDK_PACKAGES)}"
        command = [npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", "{target}", *NODE_SDK_PACKAGES]
        return self._install(key, "AWS SDK for JavaScript v3 (the Node.js runtime's own)", command) / "node_modules"

    def node_dependencies(self, npm: str, package_dir: Path) -> Path:
        manifest = package_dir / "package.json"
        lock = package_dir / "package-lock.json"
        key = f"node-deps-{_digest(manifest.read_bytes(), lock.read_bytes() if lock.exists() else b'')}"
        staging_copy = ["sh", "-c", 'cp "$0" "$1" "{target}/" 2>/dev/null; cd "{target}" && exec "$2" install '
                        "--omit=dev --no-audit --no-fund --silent", str(manifest), str(lock), npm]  # fmt: skip
        return self._install(key, f"{manifest} dependencies", staging_copy) / "node_modules"


@dataclass(frozen=True)
class Sandbox:
    """What one function's worker runs on and may import."""

    interpreter: Interpreter
    import_path: list[Path]  # Python: sys.path before the standard library; Node.js: node_modules folders
    isolated: bool

    def command(self) -> list[str]:
        """How to start a worker (the channel's file descriptor is appended)."""
        here = Path(__file__).parent
        if self.interpreter.is_node:
            return [self.interpreter.path, str(here / "node_worker.mjs")]
        # -I -S: no site-packages and no PYTHON* variables; the worker sets sys.path itself.
        flags = ["-I", "-S"] if self.isolated else []
        return [self.interpreter.path, *flags, str(here / "worker.py")]

    def environment(self) -> dict[str, str]:
        if self.interpreter.is_node:
            return {
                "NODE_PATH": os.pathsep.join(str(folder) for folder in self.import_path),
                # The SDK a runtime bundles does not nag about the runtime's own Node.js version.
                "AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED": "true",
            }
        return {}


def prepare_sandbox(function: Function, chooser: InterpreterChooser, installer: Installer | None) -> Sandbox:
    """The interpreter and import path of a function; installer None: --skip-install (as things are)."""
    interpreter = chooser.for_runtime(function.runtime)
    if installer is None:
        if not interpreter.is_node:  # as they are: relay-local's own interpreter and packages
            interpreter = Interpreter(sys.executable, (sys.version_info.major, sys.version_info.minor))
        layers = [layer / "node_modules" for layer in function.layer_paths] if interpreter.is_node else []
        return Sandbox(interpreter, [function.code_dir, *(layers or function.layer_paths)], isolated=False)
    if interpreter.is_node:
        npm = shutil.which("npm")
        if npm is None:
            raise InstallError("npm is not on PATH; it installs the Node.js runtime's SDK and dependencies")
        folders = [function.code_dir / "node_modules"]
        if (function.code_dir / "package.json").exists():
            folders.append(installer.node_dependencies(npm, function.code_dir))
        for layer in function.layer_paths:
            folders.append(layer / "node_modules")
            # A layer built by sam build (BuildMethod nodejsNN.x) has its package.json at its root.
            if (layer / "package.json").exists():
                folders.append(installer.node_dependencies(npm, layer))
        folders.append(installer.node_sdk(npm))
        return Sandbox(interpreter, folders, isolated=True)
    path: list[Path] = [function.code_dir]
    requirements = function.code_dir / "requirements.txt"
    if requirements.exists():
        path.append(installer.python_requirements(interpreter, requirements))
    for layer in function.layer_paths:
        path.append(layer)
        # A layer built by sam build (BuildMethod) has its requirements.txt at its root.
        if (layer / "requirements.txt").exists():
            path.append(installer.python_requirements(interpreter, layer / "requirements.txt"))
    path.append(installer.python_sdk(interpreter))
    return Sandbox(interpreter, path, isolated=True)
