"""The template's functions as Lambda runs them: each folder of functions/ with its
handler, environment and memory, and the environment Lambda adds (dummy credentials).
Shared by the import-budget test and the bench scripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
TABLE_NAME = "relay-sessions-bench"

# What Lambda puts in every function's environment (apart from its own variables), with
# dummy credentials: nothing here reaches AWS.
LAMBDA_ENVIRONMENT = {
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_SESSION_TOKEN": "bench",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "LAMBDA_TASK_ROOT": "/var/task",
}


@dataclass(frozen=True)
class Function:
    name: str  # the folder under functions/, e.g. "send"
    code_uri: Path
    handler: str  # "app.lambda_handler"
    environment: dict[str, str]
    memory_mb: int


def load_template(root: Path = ROOT) -> dict[str, Any]:
    return yaml_parse((root / "template.yaml").read_text())  # type: ignore[no-any-return]


def in_process_environment(log_level: str) -> dict[str, str]:
    """What the handlers need when a bench drives them in this process, against moto:
    dummy credentials, the bench table, and Powertools' names as the template sets them."""
    template_globals = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    return {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "TABLE_NAME": TABLE_NAME,
        "POWERTOOLS_SERVICE_NAME": str(template_globals["POWERTOOLS_SERVICE_NAME"]),
        "POWERTOOLS_METRICS_NAMESPACE": str(template_globals["POWERTOOLS_METRICS_NAMESPACE"]),
        "POWERTOOLS_LOG_LEVEL": log_level,
    }


def _resolve(value: Any, parameters: dict[str, Any]) -> str:
    """A template value as the function would see it: Refs to parameters take their default."""
    if isinstance(value, dict) and "Ref" in value:
        name = value["Ref"]
        if name in parameters:
            return str(parameters[name].get("Default", ""))
        return TABLE_NAME if "Table" in name else name
    if isinstance(value, dict):
        return "bench-" + "-".join(str(v) for v in value.values())
    return str(value)


def functions(root: Path = ROOT) -> list[Function]:
    """Every folder of functions/, with its environment and memory from the template.

    A folder the template does not (yet) declare gets the Globals environment.
    """
    template = load_template(root)
    parameters = template.get("Parameters", {})
    global_function = template.get("Globals", {}).get("Function", {})
    global_environment = global_function.get("Environment", {}).get("Variables", {})
    declared: dict[str, dict[str, Any]] = {}
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            properties = resource["Properties"]
            declared[Path(properties["CodeUri"]).name] = properties
    found = []
    for folder in sorted((root / "functions").iterdir()):
        if not (folder / "app.py").exists():
            continue
        properties = declared.get(folder.name, {})
        variables = {**global_environment, **properties.get("Environment", {}).get("Variables", {})}
        found.append(
            Function(
                name=folder.name,
                code_uri=folder,
                handler=properties.get("Handler", "app.lambda_handler"),
                environment={k: _resolve(v, parameters) for k, v in variables.items()},
                memory_mb=int(properties.get("MemorySize", global_function.get("MemorySize", 128))),
            )
        )
    return found
