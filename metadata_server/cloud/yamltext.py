"""YAML in and out for cloud-init's documents, through libyaml when PyYAML has it.

The C dumper and loader are several times faster than the pure-Python ones (the ISO
builder renders these documents for every guest) and give the same text. Pure.
"""

from __future__ import annotations

from typing import Any

import yaml

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAMLError = yaml.YAMLError


def dump(data: Any) -> str:
    """Block style, keys in the order given."""
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return text


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
