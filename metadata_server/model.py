"""Guest records and their validation: the one door from raw JSON to frozen types.

`parse_vm(obj)` turns an admin's JSON object into a `VMInput` or raises `InvalidInput`
naming the field; `VM` is a stored record (the admin's `VMSpec` plus what the server
assigns). Pure: no I/O, no clock, no randomness; values come in as arguments.

Error messages echo the offending value for ordinary fields (it helps the admin), but
never for `password` or `password_hash`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import yaml

from metadata_server.errors import InvalidInput
from metadata_server.passwords import validate_crypt_hash

MAX_USER_DATA_BYTES = 64 * 1024
MAX_SSH_KEYS = 100
MAX_DNS_SERVERS = 8
MAX_METADATA_ITEMS = 128
MAX_METADATA_VALUE = 1024
MAX_PASSWORD_LENGTH = 256
MAX_MESSAGE_LENGTH = 500
# How a guest's address is checked against the neighbour table (guest.verify_neighbour).
VERIFY_MODES = ("auto", "always", "never")
# The instance metadata address every cloud uses; the one place it is written.
METADATA_ADDRESS = ipaddress.IPv4Address("169.254.169.254")
METADATA_URL = f"http://{METADATA_ADDRESS}"


class State(StrEnum):
    """Where a guest is on its way to being configured."""

    REGISTERED = "registered"
    LEASED = "leased"
    FETCHED = "fetched"
    CONFIGURED = "configured"
    FAILED = "failed"


GUEST_REPORTABLE_STATES = (State.CONFIGURED, State.FAILED)


@dataclass(frozen=True)
class IPv4Config:
    address: str
    prefix: int
    gateway: str | None

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(f"{self.address}/{self.prefix}").network


@dataclass(frozen=True)
class VMSpec:
    """What the admin decides about a guest; `password_hash` is a crypt string or None."""

    mac: str
    hostname: str
    ipv4: IPv4Config
    domain: str | None = None
    dns: tuple[str, ...] = ()
    password_hash: str | None = None
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    host: str | None = None

    def fqdn(self, default_domain: str | None) -> str:
        domain = self.domain or default_domain
        return f"{self.hostname}.{domain}" if domain else self.hostname


@dataclass(frozen=True)
class VMInput:
    """A parsed admin request: the spec plus a plain password still to be hashed.

    The plain password lives only as long as the request; the registry hashes it and
    drops this object.
    """

    spec: VMSpec
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Launch:
    """What `vm launch` made for a guest on its Dom0: the master it was cloned from (its
    path and image id, the guest's EC2 `ami-id`), its delta disk and its xl domain config.
    `destroyed_at` is set when `vm destroy --keep-record` removed the domain and files but
    kept the registration. Set by the server only, never from an admin's guest object."""

    image: str
    image_id: str
    delta: str
    xl_config: str
    destroyed_at: float | None = None


@dataclass(frozen=True)
class VM:
    """A stored guest record: the spec plus what the server assigns."""

    spec: VMSpec
    instance_id: str
    state: State
    state_times: Mapping[str, float]
    message: str | None
    created_at: float
    updated_at: float
    launch: Launch | None = None

    @property
    def mac(self) -> str:
        return self.spec.mac

    def with_state(self, state: State, at: float, message: str | None) -> VM:
        times = dict(self.state_times)
        times[state.value] = at
        return replace(self, state=state, state_times=times, message=message, updated_at=at)


# --- what text may hold -----------------------------------------------------------------
#
# Patterns are regex source strings meant for `re.fullmatch` (never `match` with `$`,
# which also matches before a trailing newline), written in the subset that JSON
# Schema's ECMA-262 patterns share with Python's `re`, so the OpenAPI document can state
# them as they are (anchored with ^...$ there). Each describes the raw input a parser
# accepts, before it normalises case or separators.
#
# Refused in every field and key: C0 controls (U+0000-U+001F: newline, carriage
# return, tab, escape...), DEL (U+007F) and the C1 controls (U+0080-U+009F, NEL U+0085
# among them), which a terminal or a line-based reader may act on; the Unicode line
# and paragraph separators U+2028/U+2029, which a POSIX sh `read` does not split on but
# YAML and JavaScript readers do (the NoCloud documents are YAML); and lone surrogates
# (U+D800-U+DFFF), which JSON can spell but no UTF-8 document can hold. User-data is
# the one multi-line field: only surrogates are refused there.
FORBIDDEN_CHARACTERS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff"
SURROGATES = r"\ud800-\udfff"
TEXT_PATTERN = rf"[^{FORBIDDEN_CHARACTERS}]*"
LABEL_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_PATTERN = LABEL_PATTERN
MAX_HOSTNAME_LENGTH = 63
MAX_DOMAIN_LENGTH = 253  # without the optional trailing dot
# Labels separated by dots, an optional trailing dot; the two look-aheads cap the
# length at 253 characters before that dot.
DOMAIN_PATTERN = rf"(?!.{{255}})(?!.{{253}}[^.]){LABEL_PATTERN}(?:\.{LABEL_PATTERN})*\.?"
# Six hex pairs, all ':' or all '-', any case, surrounding spaces allowed; the first
# octet even (a unicast MAC), and not all zero.
MAC_PATTERN = (
    r" *(?!(?:00[:-]){5}00)[0-9A-Fa-f][02468ACEace]([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4} *"
)
METADATA_KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
MAX_METADATA_KEY_LENGTH = 64
METADATA_VALUE_PATTERN = TEXT_PATTERN
PASSWORD_PATTERN = rf"[^:{FORBIDDEN_CHARACTERS}]{{1,{MAX_PASSWORD_LENGTH}}}"
USER_DATA_PATTERN = rf"[^{SURROGATES}]*"
MAX_SSH_KEY_COMMENT = 256
MIN_PREFIX = 1
MAX_PREFIX = 32

_FORBIDDEN_RE = re.compile(rf"[{FORBIDDEN_CHARACTERS}]")
_SURROGATE_RE = re.compile(rf"[{SURROGATES}]")
_MAC_SYNTAX_RE = re.compile(r" *[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4} *")
_LABEL_RE = re.compile(LABEL_PATTERN)
_METADATA_KEY_RE = re.compile(METADATA_KEY_PATTERN)
_SSH_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
SSH_KEY_TYPES = tuple(sorted(_SSH_KEY_TYPES))


def has_forbidden_characters(text: str) -> bool:
    """Whether `text` holds a character no single-line field may hold (see above)."""
    return _FORBIDDEN_RE.search(text) is not None


def is_label(text: str) -> bool:
    """Whether `text` is one RFC 1123 label (any case)."""
    return _LABEL_RE.fullmatch(text) is not None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_mac(value: object, field_name: str = "mac") -> str:
    """`02-00-AA-..` or `02:00:aa:..` → `02:00:aa:..`; multicast and all-zero refused."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field_name} must be a string", field=field_name)
    if not _MAC_SYNTAX_RE.fullmatch(value):
        raise InvalidInput(
            f"{_show(value)} is not a MAC address (six hex pairs separated by ':' or '-')",
            field=field_name,
        )
    text = value.strip(" ").lower().replace("-", ":")
    first = int(text[:2], 16)
    if first & 1:
        raise InvalidInput(f"{text} is a multicast MAC address", field=field_name)
    if text == "00:00:00:00:00:00":
        raise InvalidInput("the all-zero MAC address cannot name a guest", field=field_name)
    return text


def parse_hostname(value: object, field_name: str = "hostname") -> str:
    """One RFC 1123 label: 1..63 of a-z, 0-9 and '-', not starting or ending with '-'."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field_name} must be a string", field=field_name)
    if not _LABEL_RE.fullmatch(value):
        raise InvalidInput(
            f"{_show(value)} is not a valid host name (one RFC 1123 label: 1-63 letters, "
            "digits and '-', not at either end)",
            field=field_name,
        )
    return value.lower()


def parse_domain(value: object, field_name: str = "domain") -> str:
    """Dot-separated RFC 1123 labels, at most 253 characters; a trailing dot is dropped."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field_name} must be a string", field=field_name)
    text = value.removesuffix(".")
    labels = text.split(".")
    if (
        not text
        or len(text) > MAX_DOMAIN_LENGTH
        or not all(_LABEL_RE.fullmatch(label) for label in labels)
    ):
        raise InvalidInput(f"{_show(value)} is not a valid domain name", field=field_name)
    return text.lower()


@dataclass(frozen=True)
class GuestNetwork:
    """A network guests are placed on (a configured DHCP subnet): its CIDR and router."""

    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class AddressRules:
    """What this server accepts as a guest's addresses, beyond being a host address.

    `allow_loopback`: guests on 127.0.0.0/8, for trying the server on one machine (the
    demo guest is whoever calls from 127.0.0.1); never on a real Dom0, where a loopback
    reservation only ever fails. `networks`: when given (the DHCP subnets), a guest
    whose record this server serves (`host` None, or the record's `host`) must sit on
    one of them, off its gateway, network and broadcast address, or its reservation
    could not be rendered for the DHCP daemon.
    """

    allow_loopback: bool = False
    networks: tuple[GuestNetwork, ...] = ()
    host: str | None = None


STRICT_ADDRESSES = AddressRules()


def parse_ipv4(value: object, field_name: str) -> ipaddress.IPv4Address:
    """An IPv4 host address: not multicast, unspecified, reserved or in 0.0.0.0/8."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field_name} must be a string", field=field_name)
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidInput(f"{_show(value)} is not an IPv4 address", field=field_name) from None
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        raise InvalidInput(f"{address} cannot be a host address", field=field_name)
    if int(address) >> 24 == 0:
        raise InvalidInput(f"{address} is in 0.0.0.0/8 and cannot be a host", field=field_name)
    return address


def parse_guest_ipv4(
    value: object, field_name: str, rules: AddressRules, *, metadata_ok: bool = False
) -> ipaddress.IPv4Address:
    """A host address a guest can use on its network: also not loopback (unless the
    rules allow it) and not link-local (`metadata_ok`: except the metadata address,
    where this server's own DNS responder may listen)."""
    address = parse_ipv4(value, field_name)
    if address == METADATA_ADDRESS and not metadata_ok:
        raise InvalidInput(f"{address} is the metadata address", field=field_name)
    if address.is_loopback and not rules.allow_loopback:
        raise InvalidInput(
            f"{address} is a loopback address: a guest cannot use it "
            "(guest.allow_loopback allows it, for trying the server on one machine)",
            field=field_name,
        )
    if address.is_link_local and not (metadata_ok and address == METADATA_ADDRESS):
        raise InvalidInput(
            f"{address} is a link-local address (169.254.0.0/16): a guest cannot use it",
            field=field_name,
        )
    return address


def _check_networks(config: IPv4Config, rules: AddressRules) -> None:
    address = ipaddress.IPv4Address(config.address)
    for network in rules.networks:
        if address not in network.cidr:
            continue
        if address == network.gateway:
            raise InvalidInput(
                f"{address} is the gateway of the DHCP subnet {network.cidr}",
                field="ipv4.address",
            )
        if network.cidr.prefixlen <= 30 and address in (
            network.cidr.network_address,
            network.cidr.broadcast_address,
        ):
            raise InvalidInput(
                f"{address} is the network or broadcast address of the DHCP subnet {network.cidr}",
                field="ipv4.address",
            )
        return
    subnets = ", ".join(str(network.cidr) for network in rules.networks)
    raise InvalidInput(
        f"{address} is outside every configured DHCP subnet ({subnets})", field="ipv4.address"
    )


def parse_ipv4_config(value: object, rules: AddressRules = STRICT_ADDRESSES) -> IPv4Config:
    if not isinstance(value, dict):
        raise InvalidInput("ipv4 must be an object {address, prefix, gateway}", field="ipv4")
    _refuse_unknown(value, {"address", "prefix", "gateway"}, prefix="ipv4.")
    if "address" not in value:
        raise InvalidInput("ipv4.address is required", field="ipv4.address")
    address = parse_guest_ipv4(value["address"], "ipv4.address", rules)
    prefix = value.get("prefix")
    if type(prefix) is not int or not MIN_PREFIX <= prefix <= MAX_PREFIX:
        raise InvalidInput(
            f"ipv4.prefix must be an integer from {MIN_PREFIX} to {MAX_PREFIX}, "
            f"not {_show(prefix)}",
            field="ipv4.prefix",
        )
    network = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
    if prefix <= 30 and address in (network.network_address, network.broadcast_address):
        raise InvalidInput(
            f"{address} is the network or broadcast address of {network}", field="ipv4.address"
        )
    gateway: str | None = None
    if value.get("gateway") is not None:
        gw = parse_guest_ipv4(value["gateway"], "ipv4.gateway", rules)
        if gw == address:
            raise InvalidInput(
                "ipv4.gateway cannot be the guest's own address", field="ipv4.gateway"
            )
        if gw not in network:
            raise InvalidInput(f"ipv4.gateway {gw} is outside {network}", field="ipv4.gateway")
        if prefix <= 30 and gw in (network.network_address, network.broadcast_address):
            raise InvalidInput(
                f"ipv4.gateway {gw} is the network or broadcast address of {network}",
                field="ipv4.gateway",
            )
        gateway = str(gw)
    return IPv4Config(address=str(address), prefix=prefix, gateway=gateway)


def parse_dns(value: object, rules: AddressRules = STRICT_ADDRESSES) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidInput("dns must be a list of IPv4 addresses", field="dns")
    if len(value) > MAX_DNS_SERVERS:
        raise InvalidInput(f"dns takes at most {MAX_DNS_SERVERS} servers", field="dns")
    servers = [
        str(parse_guest_ipv4(item, f"dns[{i}]", rules, metadata_ok=True))
        for i, item in enumerate(value)
    ]
    return tuple(dict.fromkeys(servers))


def parse_ssh_key(value: object, field_name: str) -> str:
    """`type base64 [comment]`, the blob's own type matching the declared one."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field_name} must be a string", field=field_name)
    if has_forbidden_characters(value):
        raise InvalidInput(
            f"{field_name} contains control characters or line separators", field=field_name
        )
    parts = value.strip().split(None, 2)
    if len(parts) < 2:
        raise InvalidInput(
            f"{field_name} is not an OpenSSH public key ('type base64 [comment]')", field=field_name
        )
    key_type, blob_text = parts[0], parts[1]
    if key_type not in _SSH_KEY_TYPES:
        raise InvalidInput(
            f"{field_name}: key type {_show(key_type)} is not supported "
            f"(one of {', '.join(SSH_KEY_TYPES)})",
            field=field_name,
        )
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"{field_name}: the key data is not valid base64", field=field_name
        ) from None
    if len(blob) < 4:
        raise InvalidInput(f"{field_name}: the key data is truncated", field=field_name)
    (length,) = struct.unpack(">I", blob[:4])
    if blob[4 : 4 + length] != key_type.encode():
        raise InvalidInput(
            f"{field_name}: the key data does not hold a {key_type} key", field=field_name
        )
    if len(blob) < 4 + length + 16:
        raise InvalidInput(f"{field_name}: the key data is truncated", field=field_name)
    comment = parts[2].strip() if len(parts) == 3 else ""
    if len(comment) > MAX_SSH_KEY_COMMENT:
        raise InvalidInput(
            f"{field_name}: the comment is longer than {MAX_SSH_KEY_COMMENT} characters",
            field=field_name,
        )
    return " ".join(p for p in (key_type, blob_text, comment) if p)


def parse_ssh_keys(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidInput("ssh_keys must be a list of OpenSSH public keys", field="ssh_keys")
    if len(value) > MAX_SSH_KEYS:
        raise InvalidInput(f"ssh_keys takes at most {MAX_SSH_KEYS} keys", field="ssh_keys")
    keys = [parse_ssh_key(item, f"ssh_keys[{i}]") for i, item in enumerate(value)]
    unique: dict[str, str] = {}
    for key in keys:
        unique.setdefault(" ".join(key.split()[:2]), key)
    return tuple(unique.values())


def parse_user_data(value: object) -> str:
    """Text up to 64 KiB; a `#cloud-config` must be a YAML mapping (it gets merged)."""
    if not isinstance(value, str):
        raise InvalidInput("user_data must be a string", field="user_data")
    if _SURROGATE_RE.search(value):
        raise InvalidInput("user_data holds a lone surrogate (not UTF-8 text)", field="user_data")
    if value.startswith("#cloud-config"):
        try:
            loaded = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise InvalidInput(
                f"user_data is #cloud-config but not valid YAML{where}", field="user_data"
            ) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InvalidInput("user_data is #cloud-config but not a mapping", field="user_data")
    size = len(value.encode())
    if size > MAX_USER_DATA_BYTES:
        raise InvalidInput(
            f"user_data is {size} bytes; at most {MAX_USER_DATA_BYTES} are allowed",
            field="user_data",
        )
    return value


def parse_metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be an object of string values", field="metadata")
    if len(value) > MAX_METADATA_ITEMS:
        raise InvalidInput(f"metadata takes at most {MAX_METADATA_ITEMS} items", field="metadata")
    result: dict[str, str] = {}
    for key, item in value.items():
        name = f"metadata.{key}"
        if not _METADATA_KEY_RE.fullmatch(key):
            raise InvalidInput(
                f"metadata key {_show(key)} must be 1-64 of letters, digits, '_', '.', '-'",
                field="metadata",
            )
        if not isinstance(item, str):
            raise InvalidInput(f"{name} must be a string", field=name)
        if len(item) > MAX_METADATA_VALUE or has_forbidden_characters(item):
            raise InvalidInput(
                f"{name} must be at most {MAX_METADATA_VALUE} characters, "
                "without control characters or line separators",
                field=name,
            )
        result[key] = item
    return dict(sorted(result.items()))


def parse_password(value: object) -> str:
    """A plain password: never echoed in an error."""
    if not isinstance(value, str):
        raise InvalidInput("password must be a string", field="password")
    if (
        not 1 <= len(value) <= MAX_PASSWORD_LENGTH
        or has_forbidden_characters(value)
        or ":" in value
    ):
        raise InvalidInput(
            f"password must be 1-{MAX_PASSWORD_LENGTH} characters, "
            "without control characters, line separators or ':'",
            field="password",
        )
    return value


def parse_password_hash(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput("password_hash must be a string", field="password_hash")
    reason = validate_crypt_hash(value)
    if reason is not None:
        raise InvalidInput(f"password_hash {reason}", field="password_hash")
    return value


def parse_message(value: object) -> str:
    """A guest's one-line report: control characters and line separators become
    spaces, length capped."""
    if not isinstance(value, str):
        raise InvalidInput("message must be a string", field="message")
    return _FORBIDDEN_RE.sub(" ", value).strip()[:MAX_MESSAGE_LENGTH]


# --- the record ------------------------------------------------------------------------

VM_INPUT_FIELDS = frozenset(
    {
        "mac",
        "hostname",
        "domain",
        "ipv4",
        "dns",
        "password",
        "password_hash",
        "ssh_keys",
        "user_data",
        "metadata",
        "host",
    }
)


def _refuse_unknown(
    obj: Mapping[str, Any], known: frozenset[str] | set[str], prefix: str = ""
) -> None:
    for key in obj:
        if key not in known:
            raise InvalidInput(f"unknown field {prefix}{key}", field=f"{prefix}{key}")


def parse_vm(
    obj: object, *, mac: str | None = None, rules: AddressRules = STRICT_ADDRESSES
) -> VMInput:
    """Validate an admin's guest object. `mac` is the MAC from the URL, when there is one;
    `rules` say which addresses this server takes (the strictest by default)."""
    if not isinstance(obj, dict):
        raise InvalidInput("a guest must be a JSON object")
    _refuse_unknown(obj, VM_INPUT_FIELDS)
    body_mac = parse_mac(obj["mac"]) if obj.get("mac") is not None else None
    path_mac = parse_mac(mac) if mac is not None else None
    if body_mac and path_mac and body_mac != path_mac:
        raise InvalidInput(
            f"mac {body_mac} in the body differs from {path_mac} in the URL", field="mac"
        )
    the_mac = body_mac or path_mac
    if the_mac is None:
        raise InvalidInput("mac is required", field="mac")
    if obj.get("hostname") is None:
        raise InvalidInput("hostname is required", field="hostname")
    if obj.get("ipv4") is None:
        raise InvalidInput("ipv4 is required", field="ipv4")
    if obj.get("password") is not None and obj.get("password_hash") is not None:
        raise InvalidInput("give password or password_hash, not both", field="password")

    def optional(name: str) -> Any:
        return obj.get(name)

    spec = VMSpec(
        mac=the_mac,
        hostname=parse_hostname(obj["hostname"]),
        ipv4=parse_ipv4_config(obj["ipv4"], rules),
        domain=parse_domain(optional("domain")) if optional("domain") is not None else None,
        dns=parse_dns(optional("dns"), rules) if optional("dns") is not None else (),
        password_hash=(
            parse_password_hash(optional("password_hash"))
            if optional("password_hash") is not None
            else None
        ),
        ssh_keys=parse_ssh_keys(optional("ssh_keys")) if optional("ssh_keys") is not None else (),
        user_data=parse_user_data(optional("user_data"))
        if optional("user_data") is not None
        else None,
        metadata=parse_metadata(optional("metadata")) if optional("metadata") is not None else {},
        host=parse_domain(optional("host"), "host") if optional("host") is not None else None,
    )
    if rules.networks and (rules.host is None or spec.host == rules.host):
        _check_networks(spec.ipv4, rules)
    password = parse_password(obj["password"]) if obj.get("password") is not None else None
    return VMInput(spec=spec, password=password)


def spec_to_json(spec: VMSpec, *, secrets: bool) -> dict[str, Any]:
    """The spec as JSON. With `secrets=False` the hash and user-data are left out."""
    out: dict[str, Any] = {
        "mac": spec.mac,
        "hostname": spec.hostname,
        "domain": spec.domain,
        "ipv4": {
            "address": spec.ipv4.address,
            "prefix": spec.ipv4.prefix,
            "gateway": spec.ipv4.gateway,
        },
        "dns": list(spec.dns),
        "ssh_keys": list(spec.ssh_keys),
        "metadata": dict(spec.metadata),
        "host": spec.host,
    }
    if secrets:
        out["password_hash"] = spec.password_hash
        out["user_data"] = spec.user_data
    return out


def merge_patch(base: dict[str, Any], patch: object) -> dict[str, Any]:
    """RFC 7396 JSON merge patch of a spec object; a `password` replaces the stored hash."""
    if not isinstance(patch, dict):
        raise InvalidInput("a patch must be a JSON object")
    _refuse_unknown(patch, VM_INPUT_FIELDS)
    merged = dict(base)
    if patch.get("password") is not None:
        merged.pop("password_hash", None)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            inner = dict(merged[key])
            for inner_key, inner_value in value.items():
                if inner_value is None:
                    inner.pop(inner_key, None)
                else:
                    inner[inner_key] = inner_value
            merged[key] = inner
        else:
            merged[key] = value
    return merged


def is_valid_instance_id(value: str) -> bool:
    """Instance ids are UUIDs that never start with `ec2` (cloud-init reads that as EC2)."""
    return not value.lower().startswith("ec2")


def iso_time(timestamp: float) -> str:
    """Seconds since the epoch → `2026-11-26T07:16:55.123Z`."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def vm_to_json(vm: VM) -> dict[str, Any]:
    """The admin's view of a record: never the hash, never the user-data itself."""
    out = spec_to_json(vm.spec, secrets=False)
    out["password_set"] = vm.spec.password_hash is not None
    out["user_data_bytes"] = len(vm.spec.user_data.encode()) if vm.spec.user_data else 0
    out["instance_id"] = vm.instance_id
    out["state"] = vm.state.value
    out["state_times"] = {name: iso_time(at) for name, at in vm.state_times.items()}
    out["message"] = vm.message
    out["created_at"] = iso_time(vm.created_at)
    out["updated_at"] = iso_time(vm.updated_at)
    out["launch"] = launch_to_json(vm.launch, times=True) if vm.launch is not None else None
    return out


def launch_to_json(launch: Launch, *, times: bool = False) -> dict[str, Any]:
    """A launch as JSON: `destroyed_at` as an ISO time with `times`, else as stored."""
    out: dict[str, Any] = {
        "image": launch.image,
        "image_id": launch.image_id,
        "delta": launch.delta,
        "xl_config": launch.xl_config,
        "destroyed_at": launch.destroyed_at,
    }
    if times and launch.destroyed_at is not None:
        out["destroyed_at"] = iso_time(launch.destroyed_at)
    return out


def launch_from_json(data: Mapping[str, Any]) -> Launch:
    """A stored launch back (the store's JSON, written by `launch_to_json`)."""
    destroyed = data.get("destroyed_at")
    return Launch(
        image=str(data["image"]),
        image_id=str(data["image_id"]),
        delta=str(data["delta"]),
        xl_config=str(data["xl_config"]),
        destroyed_at=float(destroyed) if destroyed is not None else None,
    )
