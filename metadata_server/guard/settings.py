"""What the bridge guard is told (the `guard.*` settings): on or off, which bridge ports
face guests, and which MAC each port carries where Xen cannot tell.

`guard_settings(values)` turns the merged `guard.*` values (config.py's raw settings,
keyed by setting path) into `GuardSettings`, or raises ConfigError naming the setting.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metadata_server.errors import ConfigError, InvalidInput
from metadata_server.model import parse_mac
from metadata_server.setting import (
    Flag,
    Setting,
    Strings,
    Table,
    Values,
)

# Interface names: 1-15 of what `ip link` accepts, without '/' or space; `*` for patterns.
_PORT_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
_PATTERN_RE = re.compile(r"[A-Za-z0-9_.:@*-]{1,15}")


# --- the settings of this section ----------------------------------------------------

GUARD_ENABLED = Setting(
    "guard.enabled", Flag(), True, "guard the bridge (nftables) whenever bridge is set"
)
GUARD_GUEST_PORTS = Setting(
    "guard.guest_ports", Strings(), ["vif*"], "bridge ports that face guests (patterns)"
)
GUARD_PORTS = Setting(
    "guard.ports", Table("guard.ports"), {}, "bridge port → the MAC it carries (off Xen)"
)
GUARD_NFT_COMMAND = Setting("guard.nft_command", Strings(), ["nft"], "argv of nft")
GUARD_SETTINGS: tuple[Setting[Any], ...] = (
    GUARD_ENABLED,
    GUARD_GUEST_PORTS,
    GUARD_PORTS,
    GUARD_NFT_COMMAND,
)


@dataclass(frozen=True)
class GuardSettings:
    enabled: bool = True
    guest_ports: tuple[str, ...] = ("vif*",)  # bridge ports that face guests
    ports: Mapping[str, str] = field(default_factory=dict)  # port → MAC, where not on Xen
    nft_command: tuple[str, ...] = ("nft",)
    refresh: float = 5.0  # seconds between looks at ports and vifs without an event
    debounce: float = 0.1  # quiet time before the sets are replaced


def guard_settings(values: Values) -> GuardSettings:
    patterns = tuple(values[GUARD_GUEST_PORTS])
    for pattern in patterns:
        if not _PATTERN_RE.fullmatch(pattern):
            raise ConfigError(
                f"guard.guest_ports: {pattern!r} is not an interface name pattern "
                "(1-15 letters, digits, '_.:@-', and '*')"
            )
    ports: dict[str, str] = {}
    for port, mac in values[GUARD_PORTS].items():
        if not _PORT_RE.fullmatch(port):
            raise ConfigError(f"guard.ports: {port!r} is not an interface name")
        try:
            ports[port] = parse_mac(mac, f"guard.ports.{port}")
        except InvalidInput as exc:
            raise ConfigError(f"guard.ports: {exc.detail}") from None
    nft_command = tuple(values[GUARD_NFT_COMMAND])
    if not nft_command:
        raise ConfigError("guard.nft_command must name a program")
    return GuardSettings(
        enabled=values[GUARD_ENABLED], guest_ports=patterns, ports=ports, nft_command=nft_command
    )
