"""What the ISO fallback is told: where ISOs live, how to reach Xen, how long to wait,
and when to fall back by itself (the `iso.*` settings).

`iso_settings(values, db_dir)` turns the merged `iso.*` values (config.py's raw
settings, keyed by setting path) into `IsoSettings`, or raises ConfigError naming the
setting. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metadata_server.errors import ConfigError, InvalidInput
from metadata_server.iso.auto import AutoSettings
from metadata_server.iso.layout import Layout, parse_layout
from metadata_server.iso.provision import MAX_TIMEOUT, ProvisionSettings
from metadata_server.xen.host import XenSettings

ISO_DIR_NAME = "iso"  # next to the database, by default


@dataclass(frozen=True)
class IsoSettings:
    directory: Path
    layout: Layout
    timeout: float
    xen: XenSettings
    auto: AutoSettings | None  # None: no automatic fallback

    @property
    def provision(self) -> ProvisionSettings:
        return ProvisionSettings(default_timeout=self.timeout, layout=self.layout)


def _positive(values: Mapping[str, Any], name: str, maximum: float | None = None) -> float:
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum:g} seconds")
    return float(value)


def iso_settings(values: Mapping[str, Any], db_dir: Path) -> IsoSettings:
    directory = values["iso.directory"]
    path = Path(directory) if directory else db_dir / ISO_DIR_NAME  # made absolute in use
    try:
        layout = parse_layout(values["iso.layout"])
        xen = XenSettings(
            xl_command=tuple(values["iso.xl_command"]),
            xenstored_path=values["iso.xenstored_path"] or None,
            vdev=values["iso.vdev"],
            command_timeout=_positive(values, "iso.command_timeout"),
        )
    except InvalidInput as exc:
        raise ConfigError(f"iso.{exc.field}: {exc.detail}") from None
    auto = None
    if values["iso.auto"]:
        parallel = values["iso.auto_parallel"]
        after = values["iso.auto_after"]
        if isinstance(after, bool) or not isinstance(after, int | float) or after < 0:
            raise ConfigError("iso.auto_after must be a number of seconds, 0 or more")
        if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
            raise ConfigError("iso.auto_parallel must be 1 or more")
        auto = AutoSettings(
            after=float(after),
            interval=_positive(values, "iso.auto_interval"),
            parallel=parallel,
        )
    return IsoSettings(
        directory=path,
        layout=layout,
        timeout=_positive(values, "iso.timeout", MAX_TIMEOUT),
        xen=xen,
        auto=auto,
    )
