"""Reading a CloudFormation/SAM template file: YAML with the short-form tags (!Ref, !Sub, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    """The template cannot be served; the message says why and where."""


# ---- YAML with CloudFormation short-form tags ----------------------------------------


class CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref X` into `{"Ref": "X"}`, `!Sub s` into `{"Fn::Sub": s}`, etc."""


class _FastCloudFormationLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The same on libyaml, where PyYAML has it: ten times faster, but its errors do not
    quote the line, so a template that fails is read again with CloudFormationLoader."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{tag_suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_tag)
_FastCloudFormationLoader.add_multi_constructor("!", _construct_tag)


def parse_template_text(text: str) -> Any:
    """The YAML document; raises yaml.YAMLError with the line quoted and marked."""
    try:
        return yaml.load(text, Loader=_FastCloudFormationLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return yaml.load(text, Loader=CloudFormationLoader)  # noqa: S506 - raises the error again, explained


def load_template_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(f"Template not found: {path}") from None
    except OSError as error:
        raise TemplateError(f"Cannot read template {path}: {error.strerror}") from None
    try:
        document = parse_template_text(text)
    except yaml.YAMLError as error:
        raise TemplateError(f"Template {path} is not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"Template {path} has no Resources section.")
    return document
