"""The admin's launch and destroy requests: the one door from their JSON to frozen
values (`parse_launch`, `parse_destroy`), InvalidInput naming the field otherwise.
Pure. A plain password lives only in the request; it is never echoed in an error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metadata_server.errors import InvalidInput
from metadata_server.model import (
    has_forbidden_characters,
    parse_hostname,
    parse_password,
    parse_ssh_keys,
)

LAUNCH_FIELDS = frozenset(
    {"name", "image", "ip", "memory", "vcpus", "ssh_keys", "password", "wait", "keep"}
    | {"kernel", "ramdisk"}
)
DESTROY_FIELDS = frozenset({"keep_record", "force"})
DEFAULT_MEMORY = 512  # MiB
MIN_MEMORY, MAX_MEMORY = 64, 1 << 20
MAX_VCPUS = 128
MAX_WAIT = 3600.0  # seconds
DEFAULT_WAIT = 0.0
MAX_PATH = 4096


@dataclass(frozen=True)
class LaunchRequest:
    name: str  # the guest's host name and its xl domain name
    image: str  # a prepared master's path
    ip: str | None = None  # ADDRESS or ADDRESS/PREFIX; None: the next free one
    memory: int = DEFAULT_MEMORY
    vcpus: int = 1
    ssh_keys: tuple[str, ...] = ()
    password: str | None = field(default=None, repr=False)
    wait: float = DEFAULT_WAIT
    keep: bool = False  # on failure, leave what was made for a look
    kernel: str | None = None
    ramdisk: str | None = None


@dataclass(frozen=True)
class DestroyRequest:
    keep_record: bool = False
    force: bool = False


def _refuse_unknown(obj: dict[str, Any], known: frozenset[str]) -> None:
    for key in obj:
        if key not in known:
            raise InvalidInput(f"unknown field {key}", field=key)


def _int(obj: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = obj.get(name, default)
    if type(value) is not int or not low <= value <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}", field=name)
    return value


def _bool(obj: dict[str, Any], name: str) -> bool:
    value = obj.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false", field=name)
    return value


def parse_path(value: object, name: str) -> str:
    """An absolute path that can go into an xl config string as it is."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > MAX_PATH:
        raise InvalidInput(f"{name} must be an absolute path", field=name)
    if has_forbidden_characters(value) or any(c in value for c in "\"'\\"):
        raise InvalidInput(
            f"{name} must not hold quotes, backslashes or control characters", field=name
        )
    return value


def parse_launch(obj: object) -> LaunchRequest:
    if not isinstance(obj, dict):
        raise InvalidInput("a launch request must be a JSON object")
    _refuse_unknown(obj, LAUNCH_FIELDS)
    if obj.get("name") is None:
        raise InvalidInput("name is required", field="name")
    if obj.get("image") is None:
        raise InvalidInput("image is required", field="image")
    ip = obj.get("ip")
    if ip is not None and (not isinstance(ip, str) or has_forbidden_characters(ip)):
        raise InvalidInput("ip must be a string ADDRESS or ADDRESS/PREFIX", field="ip")
    wait = obj.get("wait", DEFAULT_WAIT)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_WAIT:
        raise InvalidInput(f"wait must be seconds from 0 to {MAX_WAIT:g}", field="wait")
    kernel = parse_path(obj["kernel"], "kernel") if obj.get("kernel") is not None else None
    ramdisk = parse_path(obj["ramdisk"], "ramdisk") if obj.get("ramdisk") is not None else None
    if ramdisk is not None and kernel is None:
        raise InvalidInput("ramdisk needs kernel", field="ramdisk")
    password = obj.get("password")
    return LaunchRequest(
        name=parse_hostname(obj["name"], "name"),
        image=parse_path(obj["image"], "image"),
        ip=ip,
        memory=_int(obj, "memory", DEFAULT_MEMORY, MIN_MEMORY, MAX_MEMORY),
        vcpus=_int(obj, "vcpus", 1, 1, MAX_VCPUS),
        ssh_keys=parse_ssh_keys(obj["ssh_keys"]) if obj.get("ssh_keys") is not None else (),
        password=parse_password(password) if password is not None else None,
        wait=float(wait),
        keep=_bool(obj, "keep"),
        kernel=kernel,
        ramdisk=ramdisk,
    )


def parse_destroy(obj: object) -> DestroyRequest:
    if obj is None:
        return DestroyRequest()
    if not isinstance(obj, dict):
        raise InvalidInput("a destroy request must be a JSON object")
    _refuse_unknown(obj, DESTROY_FIELDS)
    return DestroyRequest(keep_record=_bool(obj, "keep_record"), force=_bool(obj, "force"))
