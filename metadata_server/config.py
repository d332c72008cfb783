"""Settings: a TOML file, then `METADATA_SERVER_*` variables, then flags, each overriding
the one before. Every setting is declared once in `SETTINGS`; a key, variable or flag
that is not declared there is an error, so a typo never passes silently.

Reads the file and the environment it is given; it does not reach for either itself.
"""

from __future__ import annotations

import ipaddress
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metadata_server.dhcp.render import Subnet
from metadata_server.digits import ascii_decimal, ascii_int
from metadata_server.dns.settings import DnsSettings, parse_endpoint
from metadata_server.errors import ConfigError, InvalidInput
from metadata_server.guard.settings import GuardSettings, guard_settings
from metadata_server.identity import VERIFY_MODES
from metadata_server.iso.settings import IsoSettings, iso_settings
from metadata_server.model import METADATA_ADDRESS, METADATA_URL, parse_domain
from metadata_server.store.dsn import is_postgres_url

ENV_PREFIX = "METADATA_SERVER_"
DEMO_DB = "./var/demo.db"
DEMO_GUEST_LISTEN = "127.0.0.1:8080"
SYSTEM_DB = "/var/lib/metadata-server/registry.db"
SIGNING_KEY_NAME = "signing-key.pem"  # next to the database, unless guest.signing_key


@dataclass(frozen=True)
class Setting:
    path: str  # "section.key" or "key"
    kind: str  # str | int | float | bool | list | choice | tables | mapping
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.path.replace(".", "_").upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "db", "str", None, f"registry: an SQLite path (default {SYSTEM_DB}, {DEMO_DB} with --demo)"
    ),
    Setting("domain", "str", None, "default DNS domain of guests that name none"),
    Setting("public_url", "str", METADATA_URL, "how guests reach the guest API"),
    Setting(
        "password_rounds", "int", 5000, "SHA-512 crypt rounds for plain passwords", minimum=1000
    ),
    Setting(
        "log_level", "choice", "info", "log level", choices=("debug", "info", "warning", "error")
    ),
    Setting("guest.listen", "list", [f"{METADATA_ADDRESS}:80"], "guest API addresses (HOST:PORT)"),
    Setting("guest.trust_proxy", "list", [], "CIDRs whose X-Forwarded-For is believed"),
    Setting(
        "guest.verify_neighbour", "choice", "auto", "check the peer's MAC", choices=VERIFY_MODES
    ),
    Setting(
        "guest.serve_secrets_once", "bool", True, "withhold secrets once a guest is configured"
    ),
    Setting("guest.rate_limit", "float", 20.0, "requests per second per guest (0: no limit)"),
    Setting("guest.rate_burst", "int", 200, "requests a guest may make at once", minimum=1),
    Setting("guest.max_connections", "int", 16, "open connections per guest address", minimum=1),
    Setting(
        "guest.request_timeout", "float", 10.0, "seconds for a request to arrive, head and body"
    ),
    Setting("guest.idle_timeout", "float", 15.0, "seconds an idle keep-alive connection stays"),
    Setting("guest.max_header_bytes", "int", 16384, "largest request head in bytes", minimum=1024),
    Setting(
        "guest.signing_key",
        "str",
        None,
        "Ed25519 key signing /v1/config.txt (default: signing-key.pem next to the database)",
    ),
    Setting(
        "guest.allow_loopback",
        "bool",
        False,
        "accept guests on 127.0.0.0/8, for trying the server on one machine (--demo sets it)",
    ),
    Setting("ec2.tokens", "choice", "optional", "IMDSv2 tokens", choices=("optional", "required")),
    Setting("ec2.token_hop_limit", "int", 1, "IP TTL of the token reply", minimum=1),
    Setting("ec2.instance_type", "str", "xen.guest", "EC2 instance-type of every guest"),
    Setting("ec2.availability_zone", "str", "local-1a", "EC2 placement/availability-zone"),
    Setting("host_name", "str", None, "this Dom0's name: serve and DHCP only its own guests"),
    Setting("bridge", "str", None, "Dom0 bridge: the metadata address is put on it"),
    Setting("guard.enabled", "bool", True, "guard the bridge (nftables) whenever bridge is set"),
    Setting("guard.guest_ports", "list", ["vif*"], "bridge ports that face guests (patterns)"),
    Setting("guard.ports", "mapping", {}, "bridge port → the MAC it carries (off Xen)"),
    Setting("guard.nft_command", "list", ["nft"], "argv of nft"),
    Setting(
        "dhcp.daemon",
        "choice",
        "none",
        "DHCP server to configure",
        choices=("none", "dnsmasq", "kea", "dhcpd"),
    ),
    Setting("dhcp.manage", "bool", False, "run dnsmasq on the subnets' bridges ourselves"),
    Setting("dhcp.directory", "str", None, "where the DHCP files go (default: dhcp/ by the db)"),
    Setting("dhcp.templates", "str", None, "a directory of your own DHCP templates"),
    Setting(
        "dhcp.subnets",
        "tables",
        [],
        "guest subnets: cidr, gateway, bridge, dns, domain, lease_time",
    ),
    Setting("dhcp.reload_command", "list", [], "argv that restarts an unmanaged daemon"),
    Setting("dhcp.dnsmasq_pid_file", "str", None, "pid file of an unmanaged dnsmasq (SIGHUP)"),
    Setting("dhcp.kea_control_socket", "str", "/run/kea/kea4-ctrl-socket", "Kea's control socket"),
    Setting("dhcp.kea_lease_file", "str", "/var/lib/kea/kea-leases4.csv", "Kea's lease file"),
    Setting(
        "dhcp.leases",
        "choice",
        "file",
        "how leases are learned: the daemon's lease file, or a hook it runs per lease",
        choices=("file", "hook"),
    ),
    Setting(
        "dhcp.dnsmasq_lease_file",
        "str",
        "/var/lib/misc/dnsmasq.leases",
        "lease file of an unmanaged dnsmasq",
    ),
    Setting("dhcp.dhcpd_lease_file", "str", "/var/lib/dhcp/dhcpd.leases", "dhcpd's lease file"),
    Setting(
        "dhcp.kea_hooks_library", "str", None, "Kea's libdhcp_run_script.so, for the lease hook"
    ),
    Setting("dhcp.debounce_ms", "int", 200, "quiet time before a render", minimum=0),
    Setting("dns.listen", "list", [], "DNS responder addresses IP[:port] (53); empty: no DNS"),
    Setting("dns.zone", "str", None, "the guests' zone (default: domain)"),
    Setting("dns.metadata_name", "str", "metadata", "name of the metadata address in the zone"),
    Setting("dns.upstreams", "list", [], "resolvers for other names, IP[:port]; empty: REFUSED"),
    Setting("dns.ttl", "int", 60, "TTL of answers, negative answers included", minimum=0),
    Setting("dns.upstream_timeout", "float", 2.0, "seconds to wait for an upstream"),
    Setting("iso.directory", "str", None, "where attached ISOs are kept (default: iso/ by the db)"),
    Setting("iso.layout", "choice", "nocloud", "ISO layout", choices=("nocloud", "configdrive")),
    Setting("iso.timeout", "float", 300.0, "seconds to wait for the guest's signal (at most 3600)"),
    Setting("iso.xl_command", "list", ["xl"], "argv of xl"),
    Setting(
        "iso.xenstored_path", "str", None, "XENSTORED_PATH for xl and xenstore-* (default: none)"
    ),
    Setting("iso.vdev", "str", "xvdd", "virtual device the ISO is attached as"),
    Setting("iso.command_timeout", "float", 30.0, "seconds one xl or xenstore command may take"),
    Setting("iso.auto", "bool", False, "provision late guests by ISO automatically"),
    Setting("iso.auto_after", "float", 120.0, "seconds after the lease (or domain start) to wait"),
    Setting("iso.auto_interval", "float", 5.0, "seconds between looks at the running domains"),
    Setting("iso.auto_parallel", "int", 4, "automatic ISO flows at once", minimum=1),
    Setting("admin.listen", "str", "127.0.0.1:8775", "admin API address (HOST:PORT or unix:/path)"),
    Setting("admin.token", "str", None, "admin bearer token (prefer token_file)"),
    Setting("admin.token_file", "str", None, "file holding the admin bearer token"),
    Setting("admin.max_body_bytes", "int", 1 << 20, "largest admin request body", minimum=1024),
    Setting("admin.max_import_bytes", "int", 32 << 20, "largest bulk import body", minimum=1024),
)
_BY_PATH = {setting.path: setting for setting in SETTINGS}
_BY_ENV = {setting.env: setting for setting in SETTINGS}


@dataclass(frozen=True)
class ListenAddress:
    """A TCP `host:port` or a unix socket path."""

    host: str | None
    port: int | None
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(text: str, name: str) -> ListenAddress:
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path.startswith("/"):
            raise ConfigError(f"{name}: a unix socket path must be absolute: {text!r}")
        return ListenAddress(host=None, port=None, unix_path=path)
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    port = ascii_int(port_text)
    if not sep or not host or port is None or not 0 <= port <= 65535:
        raise ConfigError(f"{name}: expected HOST:PORT or unix:/path, not {text!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(f"{name}: {host!r} is not an IP address") from None
    return ListenAddress(host=host, port=port)


@dataclass(frozen=True)
class GuestSettings:
    listen: tuple[ListenAddress, ...]
    trust_proxy: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    verify_neighbour: str
    serve_secrets_once: bool
    rate_limit: float
    rate_burst: int
    max_connections: int
    request_timeout: float
    idle_timeout: float
    max_header_bytes: int
    allow_loopback: bool
    signing_key: Path


@dataclass(frozen=True)
class Ec2Settings:
    tokens: str
    token_hop_limit: int
    instance_type: str
    availability_zone: str


@dataclass(frozen=True)
class DhcpSettings:
    daemon: str
    manage: bool
    directory: Path
    templates: Path | None
    subnets: tuple[Subnet, ...]
    reload_command: tuple[str, ...]
    dnsmasq_pid_file: Path | None
    kea_control_socket: Path
    kea_lease_file: Path
    leases: str
    dnsmasq_lease_file: Path
    dhcpd_lease_file: Path
    kea_hooks_library: Path | None
    debounce: float


SUBNET_KEYS = frozenset({"cidr", "gateway", "bridge", "dns", "domain", "lease_time"})


def _is_interface_name(name: object) -> bool:
    """What Linux takes as a link name (1-15 bytes, no '/', ':' or whitespace), narrowed
    to printable ASCII: the name is written into the DHCP daemons' files."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 15
        and name.isascii()
        and name.isprintable()
        and name not in (".", "..")
        and not any(c in name for c in " /:")
    )


def parse_subnets(tables: list[dict[str, Any]], default_domain: str | None) -> tuple[Subnet, ...]:
    subnets: list[Subnet] = []
    for index, table in enumerate(tables):
        where = f"dhcp.subnets[{index}]"
        unknown = set(table) - SUBNET_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        try:
            cidr = ipaddress.IPv4Network(str(table.get("cidr")), strict=True)
        except ValueError as exc:
            raise ConfigError(f"{where}.cidr: {exc}") from None
        try:
            gateway = ipaddress.IPv4Address(str(table.get("gateway")))
        except ValueError:
            raise ConfigError(f"{where}.gateway must be an IPv4 address") from None
        if gateway not in cidr or gateway in (cidr.network_address, cidr.broadcast_address):
            raise ConfigError(f"{where}.gateway {gateway} is not a host address of {cidr}")
        dns = table.get("dns", [])
        if not isinstance(dns, list):
            raise ConfigError(f"{where}.dns must be a list of addresses")
        try:
            dns_servers = tuple(str(ipaddress.IPv4Address(str(item))) for item in dns)
        except ValueError:
            raise ConfigError(f"{where}.dns must be a list of IPv4 addresses") from None
        domain = table.get("domain", default_domain)
        if domain is not None:
            try:
                domain = parse_domain(domain, f"{where}.domain")
            except InvalidInput as exc:
                raise ConfigError(exc.detail) from None
        lease_time = table.get("lease_time", 3600)
        if type(lease_time) is not int or not 60 <= lease_time <= 86400 * 365:
            raise ConfigError(f"{where}.lease_time must be seconds, from 60 to a year")
        bridge = table.get("bridge")
        if bridge is not None and not _is_interface_name(bridge):
            raise ConfigError(f"{where}.bridge must be an interface name")
        for other in subnets:
            if other.cidr.overlaps(cidr):
                raise ConfigError(f"{where}.cidr {cidr} overlaps {other.cidr}")
        subnets.append(Subnet(cidr, gateway, bridge, dns_servers, domain, lease_time))
    return tuple(subnets)


@dataclass(frozen=True)
class AdminSettings:
    listen: ListenAddress
    token: str | None
    token_file: Path | None
    max_body_bytes: int
    max_import_bytes: int


@dataclass(frozen=True)
class Settings:
    db: str
    domain: str | None
    public_url: str
    password_rounds: int
    log_level: str
    guest: GuestSettings
    admin: AdminSettings
    ec2: Ec2Settings
    dhcp: DhcpSettings
    bridge: str | None
    guard: GuardSettings
    dns: DnsSettings | None
    host_name: str | None
    iso: IsoSettings

    state_dir: Path  # the admin token, DHCP files, ISOs: beside an SQLite file, else fixed

    @property
    def db_dir(self) -> Path:
        return self.state_dir


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    where = f"{setting.path} ({source})"
    if setting.kind in ("str", "choice"):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        if setting.kind == "choice" and value not in setting.choices:
            raise ConfigError(f"{where} must be one of {', '.join(setting.choices)}, not {value!r}")
        return value
    if setting.kind == "int":
        if isinstance(value, str):
            number = ascii_int(value.strip())
            value = value if number is None else number
        if type(value) is not int:
            raise ConfigError(f"{where} must be an integer")
        if setting.minimum is not None and value < setting.minimum:
            raise ConfigError(f"{where} must be at least {setting.minimum}")
        return value
    if setting.kind == "tables":
        shape = f"a list of tables ([[{setting.path}]] in TOML, a JSON array in the environment)"
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f"{where} must be {shape}") from None
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise ConfigError(f"{where} must be {shape}")
        return value
    if setting.kind == "mapping":
        shape = f"a table of strings ([{setting.path}] in TOML, a JSON object in the environment)"
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f"{where} must be {shape}") from None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{where} must be {shape}")
        return dict(value)
    if setting.kind == "float":
        if isinstance(value, str):
            decimal = ascii_decimal(value.strip())
            if decimal is None:
                raise ConfigError(f"{where} must be a number (digits, optionally a fraction)")
            value = decimal
        # TOML spells nan and inf natively; neither is a number of seconds or a rate.
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where} must be a number, at least 0")
        return float(value)
    if setting.kind == "bool":
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if setting.kind == "list":
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where} must be a list of strings")
        return list(value)
    raise AssertionError(setting.kind)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in _BY_PATH:
            flat.update(_flatten(value, prefix=f"{path}."))
        else:
            flat[path] = value
    return flat


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            table = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    raw: dict[str, Any] = {}
    for key, value in _flatten(table).items():
        setting = _BY_PATH.get(key)
        if setting is None:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        raw[key] = _coerce(setting, value, str(path))
    return raw


def read_environment(env: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        setting = _BY_ENV.get(name)
        if setting is None:
            raise ConfigError(f"unknown setting in the environment: {name}")
        raw[setting.path] = _coerce(setting, value, name)
    return raw


def _in_range(value: int, low: int, high: int, name: str) -> int:
    if not low <= value <= high:
        raise ConfigError(f"{name} must be from {low} to {high}")
    return value


def _positive(value: float, name: str) -> float:
    if not 0 < value <= 3600:
        raise ConfigError(f"{name} must be more than 0 and at most 3600 seconds")
    return value


def _single_line(value: str, name: str) -> str:
    if not value or not value.isprintable() or len(value) > 64 or " " in value:
        raise ConfigError(f"{name} must be 1-64 printable characters without spaces")
    return value


def build_settings(
    *,
    config_file: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
    demo: bool = False,
) -> Settings:
    """Merge the three sources (later wins) over the defaults and check every value."""
    raw: dict[str, Any] = {setting.path: setting.default for setting in SETTINGS}
    if demo:  # the demo runs without root, without a bridge and without 169.254.169.254
        raw["db"] = DEMO_DB
        raw["guest.listen"] = [DEMO_GUEST_LISTEN]
        raw["public_url"] = f"http://{DEMO_GUEST_LISTEN}"
        raw["guest.allow_loopback"] = True  # the demo guest is whoever calls from 127.0.0.1
    if config_file is not None:
        raw.update(read_config_file(config_file))
    raw.update(read_environment(env))
    for path, value in flags.items():
        if value is not None:
            raw[path] = _coerce(_BY_PATH[path], value, "command line")
    if raw["db"] is None:
        raw["db"] = SYSTEM_DB

    trust: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for cidr in raw["guest.trust_proxy"]:
        try:
            trust.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ConfigError(f"guest.trust_proxy: {cidr!r} is not a CIDR") from None
    listen = tuple(parse_listen(text, "guest.listen") for text in raw["guest.listen"])
    if not listen:
        raise ConfigError("guest.listen needs at least one address")
    if any(address.unix_path for address in listen):
        raise ConfigError("guest.listen takes HOST:PORT only: guests are identified by address")
    token_file = raw["admin.token_file"]
    domain = raw["domain"]
    if domain is not None:
        try:
            domain = parse_domain(domain)
        except InvalidInput as exc:
            raise ConfigError(f"domain: {exc.detail}") from None
    public_url = raw["public_url"]
    if not public_url.startswith(("http://", "https://")):
        raise ConfigError(f"public_url must start with http:// or https://, not {public_url!r}")
    # It is written into the guests' config.txt lines and quoted in the DHCP files.
    if not public_url.isprintable() or any(c in public_url for c in ' "\\'):
        raise ConfigError(
            "public_url must be a URL without spaces, quotes or control characters, "
            f"not {public_url!r}"
        )
    if is_postgres_url(raw["db"]):  # never derive a path from a URL (it may hold a password)
        db_dir = Path(DEMO_DB).parent if demo else Path(SYSTEM_DB).parent
    else:
        db_dir = Path(raw["db"].removeprefix("sqlite://")).parent
    daemon = raw["dhcp.daemon"]
    subnets = parse_subnets(raw["dhcp.subnets"], domain)
    if daemon != "none" and not subnets:
        raise ConfigError(f"dhcp.daemon is {daemon}: give at least one [[dhcp.subnets]]")
    if raw["dhcp.manage"] and daemon != "dnsmasq":
        raise ConfigError('dhcp.manage runs dnsmasq only: set dhcp.daemon = "dnsmasq"')
    if raw["dhcp.manage"] and not all(subnet.bridge for subnet in subnets):
        raise ConfigError("dhcp.manage needs the bridge of every subnet (dhcp.subnets[].bridge)")
    dhcp = DhcpSettings(
        daemon=daemon,
        manage=raw["dhcp.manage"],
        directory=Path(raw["dhcp.directory"]) if raw["dhcp.directory"] else db_dir / "dhcp",
        templates=Path(raw["dhcp.templates"]) if raw["dhcp.templates"] else None,
        subnets=subnets,
        reload_command=tuple(raw["dhcp.reload_command"]),
        dnsmasq_pid_file=Path(raw["dhcp.dnsmasq_pid_file"])
        if raw["dhcp.dnsmasq_pid_file"]
        else None,
        kea_control_socket=Path(raw["dhcp.kea_control_socket"]),
        kea_lease_file=Path(raw["dhcp.kea_lease_file"]),
        leases=raw["dhcp.leases"],
        dnsmasq_lease_file=Path(raw["dhcp.dnsmasq_lease_file"]),
        dhcpd_lease_file=Path(raw["dhcp.dhcpd_lease_file"]),
        kea_hooks_library=Path(raw["dhcp.kea_hooks_library"])
        if raw["dhcp.kea_hooks_library"]
        else None,
        debounce=raw["dhcp.debounce_ms"] / 1000,
    )
    host_name = raw["host_name"]
    if host_name is not None:
        try:
            host_name = parse_domain(host_name, "host_name")
        except InvalidInput as exc:
            raise ConfigError(exc.detail) from None
    dns: DnsSettings | None = None
    if raw["dns.listen"]:
        zone = raw["dns.zone"] or domain
        if zone is None:
            raise ConfigError("dns.listen is set: give dns.zone (or domain) for the guests' zone")
        dns = DnsSettings(
            listen=tuple(parse_endpoint(text, "dns.listen") for text in raw["dns.listen"]),
            zone=zone,
            metadata_name=raw["dns.metadata_name"],
            metadata_address=str(METADATA_ADDRESS),
            upstreams=tuple(parse_endpoint(text, "dns.upstreams") for text in raw["dns.upstreams"]),
            ttl=raw["dns.ttl"],
            upstream_timeout=raw["dns.upstream_timeout"],
        )
    return Settings(
        db=raw["db"],
        state_dir=db_dir,
        domain=domain,
        public_url=public_url,
        password_rounds=raw["password_rounds"],
        log_level=raw["log_level"],
        guest=GuestSettings(
            listen=listen,
            trust_proxy=tuple(trust),
            verify_neighbour=raw["guest.verify_neighbour"],
            serve_secrets_once=raw["guest.serve_secrets_once"],
            rate_limit=raw["guest.rate_limit"],
            rate_burst=raw["guest.rate_burst"],
            max_connections=raw["guest.max_connections"],
            request_timeout=_positive(raw["guest.request_timeout"], "guest.request_timeout"),
            idle_timeout=_positive(raw["guest.idle_timeout"], "guest.idle_timeout"),
            max_header_bytes=raw["guest.max_header_bytes"],
            allow_loopback=raw["guest.allow_loopback"],
            signing_key=(
                Path(raw["guest.signing_key"])
                if raw["guest.signing_key"]
                else db_dir / SIGNING_KEY_NAME
            ),
        ),
        dhcp=dhcp,
        bridge=raw["bridge"],
        guard=guard_settings(raw),
        dns=dns,
        host_name=host_name,
        iso=iso_settings(raw, db_dir),
        ec2=Ec2Settings(
            tokens=raw["ec2.tokens"],
            token_hop_limit=_in_range(raw["ec2.token_hop_limit"], 1, 255, "ec2.token_hop_limit"),
            instance_type=_single_line(raw["ec2.instance_type"], "ec2.instance_type"),
            availability_zone=_single_line(raw["ec2.availability_zone"], "ec2.availability_zone"),
        ),
        admin=AdminSettings(
            listen=parse_listen(raw["admin.listen"], "admin.listen"),
            token=raw["admin.token"],
            token_file=Path(token_file) if token_file else None,
            max_body_bytes=raw["admin.max_body_bytes"],
            max_import_bytes=raw["admin.max_import_bytes"],
        ),
    )
