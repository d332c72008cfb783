"""A launched guest's xl domain config, rendered from values. Pure.

PV, the guest's qcow2 delta through QEMU's qdisk backend as xvda (`target=` last: xl
reads the rest of the string as the path), one vif with the guest's MAC on the subnet's
bridge, and a fixed `uuid` (the boot script keys "already configured" on it; without
one every `xl create` makes a new uuid and the guest would configure itself again).
Every value was checked on its way in (names are RFC 1123 labels, paths hold no quote
or backslash, MACs and bridges are validated), so they go into quoted strings as they
are; `render` still refuses a value that could break out of its string.
"""

from __future__ import annotations

from dataclasses import dataclass

from metadata_server.launch.boot import Boot
from metadata_server.model import has_forbidden_characters

SINGLE = "'"  # list items are single-quoted, as in the lab's configs


@dataclass(frozen=True)
class DomainConfig:
    name: str
    uuid: str
    memory: int  # MiB
    vcpus: int
    boot: Boot
    delta: str
    mac: str
    bridge: str


def _quoted(value: str, quote: str = '"') -> str:
    if has_forbidden_characters(value) or any(c in value for c in "\"'\\"):
        raise ValueError(f"{value!r} cannot go into an xl config string")
    return f"{quote}{value}{quote}"


def disk_spec(delta: str) -> str:
    return f"format=qcow2, vdev=xvda, access=rw, backendtype=qdisk, target={delta}"


def vif_spec(mac: str, bridge: str) -> str:
    if "," in bridge or "," in mac:
        raise ValueError("a MAC or bridge name cannot hold a comma")
    return f"mac={mac}, bridge={bridge}"


def render(config: DomainConfig) -> str:
    lines = [
        "# Written by `metadata-server vm launch`; `metadata-server vm destroy` removes it.",
        f"name = {_quoted(config.name)}",
        'type = "pv"',
        f"uuid = {_quoted(config.uuid)}",
        f"memory = {int(config.memory)}",
        f"vcpus = {int(config.vcpus)}",
        f"kernel = {_quoted(config.boot.kernel)}",
    ]
    if config.boot.ramdisk is not None:
        lines.append(f"ramdisk = {_quoted(config.boot.ramdisk)}")
    if config.boot.extra is not None:
        lines.append(f"extra = {_quoted(config.boot.extra)}")
    lines += [
        f"disk = [ {_quoted(disk_spec(config.delta), SINGLE)} ]",
        f"vif = [ {_quoted(vif_spec(config.mac, config.bridge), SINGLE)} ]",
        'on_poweroff = "destroy"',
        'on_reboot = "restart"',
        'on_crash = "destroy"',
    ]
    return "\n".join(lines) + "\n"
