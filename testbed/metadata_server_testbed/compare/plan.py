"""What one comparison run consists of: the guests (MAC, address, domain id, record) and
the Dom0 server's configuration file.

Every guest lives in 198.18.0.0/16 (inside the benchmarking range 198.18.0.0/15) behind
gateway 198.18.0.1; the metadata address is 169.254.169.254. Pure: values in, values
out. It never reads the clock, the disk or the network.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METHODS = ("network", "iso")
SUBNET = ipaddress.IPv4Network("198.18.0.0/16")
GATEWAY = "198.18.0.1"
METADATA_ADDRESS = "169.254.169.254"
FIRST_HOST = 10  # guest 1 is 198.18.0.11
MAX_GUESTS = 60000
DOMAIN = "guests.internal"
# A crypt string, not a password: the harness never handles a plain one.
PASSWORD_HASH = (
    "$6$compareharness$"  # noqa: S105 (a sample hash for test guests)
    "ZNEGiETZH5IxhTYbBVcX6nYtZ8o6kEQLoLDhzkUpBsS9hFV59IXFADy5Hi1nYThvMJ1aoFpXV.wJtLtDjs6Hm."
)
USER_DATA = "#!/bin/sh\necho configured by the comparison harness\n"


def ssh_key(seed: int) -> str:
    """A well-formed (not usable) OpenSSH ed25519 public key."""
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32)
    blob += struct.pack(">I", seed) * 8
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} compare@harness"


@dataclass(frozen=True)
class GuestPlan:
    """One simulated guest: its number in the run (1-based), which is also its Xen
    domain id, its MAC, its reserved address and its hostname."""

    index: int

    @property
    def domid(self) -> int:
        return self.index

    @property
    def mac(self) -> str:
        return f"02:00:c6:12:{self.index // 256:02x}:{self.index % 256:02x}"

    @property
    def address(self) -> str:
        return str(SUBNET.network_address + FIRST_HOST + self.index)

    @property
    def hostname(self) -> str:
        return f"guest{self.index}"

    @property
    def uuid(self) -> str:
        """The Xen domain UUID the guest sees in /sys/hypervisor/uuid."""
        return f"c0ffee00-0000-4000-8000-{self.index:012x}"

    def record(self) -> dict[str, Any]:
        """The admin API's guest object for this guest."""
        return {
            "mac": self.mac,
            "hostname": self.hostname,
            "ipv4": {"address": self.address, "prefix": SUBNET.prefixlen, "gateway": GATEWAY},
            "password_hash": PASSWORD_HASH,
            "ssh_keys": [ssh_key(self.index)],
            "user_data": USER_DATA,
            "metadata": {"harness": "compare"},
        }


def plan_guests(count: int) -> list[GuestPlan]:
    if not 1 <= count <= MAX_GUESTS:
        raise ValueError(f"the number of guests must be 1 to {MAX_GUESTS}")
    return [GuestPlan(index) for index in range(1, count + 1)]


@dataclass(frozen=True)
class ServerLayout:
    """Where one Dom0 server keeps its files, and what it runs."""

    directory: Path  # database, logs; must be reachable by dnsmasq's user (0755)
    dhcp_directory: Path
    admin_socket: Path
    dhcp: bool = True  # run dnsmasq on the bridge (the network path needs it)
    guest_api: bool = True  # False: the guest API is down for the guests (a fault)
    iso: IsoLayout | None = None  # the ISO fallback's settings (the ISO method)


@dataclass(frozen=True)
class IsoLayout:
    """The server's `[iso]` settings: where ISOs go, the `xl` to run, the xenstored
    socket (None: the host's own), the default flow timeout."""

    directory: Path
    xl_command: tuple[str, ...]
    xenstored_path: Path | None
    timeout: float


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def server_config(layout: ServerLayout, bridge: str = "br0") -> str:
    """The server's TOML configuration: the guest API on 169.254.169.254:80 (or, for the
    "server down" fault, on Dom0's loopback only, out of the guests' reach), the admin
    API on a unix socket, dnsmasq run by the server on the bridge, no DNS responder, and
    the ISO fallback as `layout.iso` says."""
    listen = f"{METADATA_ADDRESS}:80" if layout.guest_api else "127.0.0.1:0"
    lines = [
        f"db = {_toml_string(str(layout.directory / 'registry.db'))}",
        f"domain = {_toml_string(DOMAIN)}",
        f"bridge = {_toml_string(bridge)}",
        'log_level = "info"',
        "[guest]",
        f"listen = [{_toml_string(listen)}]",
        "[admin]",
        f"listen = {_toml_string('unix:' + str(layout.admin_socket))}",
    ]
    if layout.dhcp:
        lines += [
            "[dhcp]",
            'daemon = "dnsmasq"',
            "manage = true",
            f"directory = {_toml_string(str(layout.dhcp_directory))}",
            "debounce_ms = 50",
            "[[dhcp.subnets]]",
            f"cidr = {_toml_string(str(SUBNET))}",
            f"gateway = {_toml_string(GATEWAY)}",
            f"bridge = {_toml_string(bridge)}",
            "lease_time = 3600",
        ]
    if layout.iso is not None:
        iso = layout.iso
        lines += [
            "[iso]",
            f"directory = {_toml_string(str(iso.directory))}",
            f"xl_command = [{', '.join(_toml_string(word) for word in iso.xl_command)}]",
            f"timeout = {iso.timeout!r}",
        ]
        if iso.xenstored_path is not None:
            lines.append(f"xenstored_path = {_toml_string(str(iso.xenstored_path))}")
    return "\n".join(lines) + "\n"
