"""What the ISO fallback is told: where ISOs live, how to reach Xen, how long to wait,
and when to fall back by itself (the `iso.*` settings).

`iso_settings(values, db_dir)` turns the merged `iso.*` values (config.py's raw
settings, keyed by setting path) into `IsoSettings`, or raises ConfigError naming the
setting. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from metadata_server.errors import ConfigError, InvalidInput
from metadata_server.setting import (
    Choice,
    Flag,
    Integer,
    Number,
    OptionalText,
    Setting,
    Strings,
    Text,
    Values,
)
from metadata_server.xen.settings import XenSettings

# --- the settings of this section ----------------------------------------------------

ISO_DIRECTORY = Setting(
    "iso.directory", OptionalText(), None, "where attached ISOs are kept (default: iso/ by the db)"
)
ISO_LAYOUT = Setting("iso.layout", Choice("nocloud", "configdrive"), "nocloud", "ISO layout")
ISO_TIMEOUT = Setting(
    "iso.timeout", Number(), 300.0, "seconds to wait for the guest's signal (at most 3600)"
)
ISO_XL_COMMAND = Setting("iso.xl_command", Strings(), ["xl"], "argv of xl")
ISO_XENSTORED_PATH = Setting(
    "iso.xenstored_path",
    OptionalText(),
    None,
    "XENSTORED_PATH for xl and xenstore-* (default: none)",
)
ISO_VDEV = Setting("iso.vdev", Text(), "xvdd", "virtual device the ISO is attached as")
ISO_COMMAND_TIMEOUT = Setting(
    "iso.command_timeout", Number(), 30.0, "seconds one xl or xenstore command may take"
)
ISO_PARALLEL_COMMANDS = Setting(
    "iso.parallel_commands",
    Integer(minimum=1),
    8,
    "xl and xenstore commands run at once; the others wait (their timeout starts when they run)",
)
ISO_AUTO = Setting("iso.auto", Flag(), False, "provision late guests by ISO automatically")
ISO_AUTO_AFTER = Setting(
    "iso.auto_after", Number(), 120.0, "seconds after the lease (or domain start) to wait"
)
ISO_AUTO_INTERVAL = Setting(
    "iso.auto_interval", Number(), 5.0, "seconds between looks at the running domains"
)
ISO_AUTO_PARALLEL = Setting(
    "iso.auto_parallel", Integer(minimum=1), 4, "automatic ISO flows at once"
)
ISO_SETTINGS: tuple[Setting[Any], ...] = (
    ISO_DIRECTORY,
    ISO_LAYOUT,
    ISO_TIMEOUT,
    ISO_XL_COMMAND,
    ISO_XENSTORED_PATH,
    ISO_VDEV,
    ISO_COMMAND_TIMEOUT,
    ISO_PARALLEL_COMMANDS,
    ISO_AUTO,
    ISO_AUTO_AFTER,
    ISO_AUTO_INTERVAL,
    ISO_AUTO_PARALLEL,
)


class Layout(StrEnum):
    NOCLOUD = "nocloud"
    CONFIGDRIVE = "configdrive"


def parse_layout(value: object) -> Layout:
    for layout in Layout:
        if value == layout.value:
            return layout
    names = ", ".join(layout.value for layout in Layout)
    raise InvalidInput(f"layout must be one of {names}", field="layout")


DEFAULT_TIMEOUT = 300.0
MAX_TIMEOUT = 3600.0


@dataclass(frozen=True)
class AutoSettings:
    after: float = 120.0  # seconds after the lease (or the domain appearing)
    interval: float = 5.0  # seconds between looks at the running domains
    parallel: int = 4  # attempts at once

    def __post_init__(self) -> None:
        if self.after < 0 or self.interval <= 0 or self.parallel < 1:
            raise ValueError("after >= 0, interval > 0 and parallel >= 1 are required")


@dataclass(frozen=True)
class ProvisionSettings:
    default_timeout: float = DEFAULT_TIMEOUT
    max_timeout: float = MAX_TIMEOUT
    layout: Layout = Layout.NOCLOUD


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


def _positive(values: Values, setting: Setting[float], maximum: float | None = None) -> float:
    value, name = values[setting], setting.path
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum:g} seconds")
    return float(value)


def iso_settings(values: Values, db_dir: Path) -> IsoSettings:
    directory = values[ISO_DIRECTORY]
    path = Path(directory) if directory else db_dir / ISO_DIR_NAME  # made absolute in use
    try:
        layout = parse_layout(values[ISO_LAYOUT])
        xen = XenSettings(
            xl_command=tuple(values[ISO_XL_COMMAND]),
            xenstored_path=values[ISO_XENSTORED_PATH] or None,
            vdev=values[ISO_VDEV],
            command_timeout=_positive(values, ISO_COMMAND_TIMEOUT),
            parallel_commands=values[ISO_PARALLEL_COMMANDS],
        )
    except InvalidInput as exc:
        raise ConfigError(f"iso.{exc.field}: {exc.detail}") from None
    auto = None
    if values[ISO_AUTO]:
        parallel = values[ISO_AUTO_PARALLEL]
        after = values[ISO_AUTO_AFTER]
        if isinstance(after, bool) or not isinstance(after, int | float) or after < 0:
            raise ConfigError("iso.auto_after must be a number of seconds, 0 or more")
        if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
            raise ConfigError("iso.auto_parallel must be 1 or more")
        auto = AutoSettings(
            after=float(after),
            interval=_positive(values, ISO_AUTO_INTERVAL),
            parallel=parallel,
        )
    return IsoSettings(
        directory=path,
        layout=layout,
        timeout=_positive(values, ISO_TIMEOUT, MAX_TIMEOUT),
        xen=xen,
        auto=auto,
    )
