"""A setting, typed: its path (`section.key`), the kind of value it takes, its default and
its help, and `Values`, the merged settings read back with their types.

A kind turns what a source gave (a TOML value, an environment string, a flag) into the
setting's Python type, or raises ConfigError naming where the value came from. Every
section of the configuration declares its settings with these and builds its own typed
dataclass from `Values` (config.py holds the top level and collects the sections).
Pure: no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from metadata_server.digits import ascii_decimal, ascii_int
from metadata_server.errors import ConfigError

ENV_PREFIX = "METADATA_SERVER_"
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Kind(Generic[T_co]):
    """How one kind of value is read; `name` is what the README's table calls it."""

    name = "value"

    def coerce(self, value: Any, where: str) -> T_co:
        raise NotImplementedError


class Text(Kind[str]):
    name = "str"

    def coerce(self, value: Any, where: str) -> str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string")


class OptionalText(Kind[str | None]):
    """Text whose default is none: a source can only give a string."""

    name = "str"

    def coerce(self, value: Any, where: str) -> str | None:
        return Text().coerce(value, where)


class Choice(Kind[str]):
    name = "choice"

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def coerce(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        if value not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(self.choices)}, not {value!r}")
        return value


class Integer(Kind[int]):
    name = "int"

    def __init__(self, minimum: int | None = None) -> None:
        self.minimum = minimum

    def coerce(self, value: Any, where: str) -> int:
        if isinstance(value, str):
            number = ascii_int(value.strip())
            value = value if number is None else number
        if type(value) is not int:
            raise ConfigError(f"{where} must be an integer")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{where} must be at least {self.minimum}")
        return value


class Number(Kind[float]):
    name = "float"

    def coerce(self, value: Any, where: str) -> float:
        if isinstance(value, str):
            decimal = ascii_decimal(value.strip())
            if decimal is None:
                raise ConfigError(f"{where} must be a number (digits, optionally a fraction)")
            value = decimal
        # TOML spells nan and inf natively; neither is a number of seconds or a rate.
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where} must be a number, at least 0")
        return float(value)


class Flag(Kind[bool]):
    name = "bool"

    def coerce(self, value: Any, where: str) -> bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value


class Strings(Kind[list[str]]):
    name = "list"

    def coerce(self, value: Any, where: str) -> list[str]:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where} must be a list of strings")
        return list(value)


def _json_or(value: Any, where: str, shape: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise ConfigError(f"{where} must be {shape}") from None


class Tables(Kind[list[dict[str, Any]]]):
    name = "tables"

    def __init__(self, path: str) -> None:
        self.shape = f"a list of tables ([[{path}]] in TOML, a JSON array in the environment)"

    def coerce(self, value: Any, where: str) -> list[dict[str, Any]]:
        value = _json_or(value, where, self.shape)
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise ConfigError(f"{where} must be {self.shape}")
        return value


class Table(Kind[dict[str, str]]):
    name = "mapping"

    def __init__(self, path: str) -> None:
        self.shape = f"a table of strings ([{path}] in TOML, a JSON object in the environment)"

    def coerce(self, value: Any, where: str) -> dict[str, str]:
        value = _json_or(value, where, self.shape)
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{where} must be {self.shape}")
        return dict(value)


@dataclass(frozen=True)
class Setting(Generic[T_co]):
    path: str  # "section.key" or "key"
    kind: Kind[T_co]
    default: T_co
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.path.replace(".", "_").upper()

    def coerce(self, value: Any, source: str) -> T_co:
        return self.kind.coerce(value, f"{self.path} ({source})")


class Values:
    """The merged settings; `values[SETTING]` is that setting's value, typed."""

    def __init__(self, settings: Sequence[Setting[Any]], merged: Mapping[str, Any]) -> None:
        self._known = {setting.path for setting in settings}
        self._merged = dict(merged)

    def __getitem__(self, setting: Setting[T]) -> T:
        if setting.path not in self._known:
            raise KeyError(f"{setting.path} is not declared")
        value: T = self._merged[setting.path]
        return value
