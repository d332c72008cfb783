"""How to reach Xen (the `iso.xl_command`, `iso.xenstored_path`, ... settings), apart
from the code that talks to it, so reading the settings loads no Xen code."""

from __future__ import annotations

import re
from dataclasses import dataclass

from metadata_server.errors import InvalidInput

_VDEV_RE = re.compile(r"^[a-z][a-z0-9]{1,15}$")


@dataclass(frozen=True)
class XenSettings:
    """How to reach Xen. Tests point `xl_command` at the stand-in and `xenstored_path`
    at the stand-in xenstored's Dom0 socket."""

    xl_command: tuple[str, ...] = ("xl",)
    xenstored_path: str | None = None
    xenstore_bin_dir: str | None = None
    vdev: str = "xvdd"
    command_timeout: float = 30.0
    parallel_commands: int = 8  # xl and xenstore-* commands at once; more wait their turn

    def __post_init__(self) -> None:
        if not self.xl_command:
            raise InvalidInput("xl_command must name a program", field="xl_command")
        if self.parallel_commands < 1:
            raise InvalidInput("parallel_commands must be at least 1", field="parallel_commands")
        if not _VDEV_RE.fullmatch(self.vdev):
            raise InvalidInput(f"{self.vdev!r} is not a virtual device name", field="vdev")
