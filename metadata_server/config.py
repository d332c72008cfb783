"""Settings: a TOML file, then `METADATA_SERVER_*` variables, then flags, each overriding
the one before. Every setting is declared once in `SETTINGS`; a key, variable or flag
that is not declared there is an error, so a typo never passes silently.

Reads the file and the environment it is given; it does not reach for either itself.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metadata_server.dhcp.subnets import Subnet, parse_subnets
from metadata_server.digits import ascii_int
from metadata_server.dns.settings import DnsSettings, parse_endpoint
from metadata_server.errors import ConfigError, InvalidInput
from metadata_server.guard.settings import GUARD_SETTINGS, GuardSettings, guard_settings
from metadata_server.iso.settings import ISO_SETTINGS, IsoSettings, iso_settings
from metadata_server.model import METADATA_ADDRESS, METADATA_URL, VERIFY_MODES, parse_domain
from metadata_server.setting import (
    ENV_PREFIX,
    Choice,
    Flag,
    Integer,
    Number,
    OptionalText,
    Setting,
    Strings,
    Tables,
    Text,
    Values,
)
from metadata_server.store.dsn import is_postgres_url

DEMO_DB = "./var/demo.db"
DEMO_GUEST_LISTEN = "127.0.0.1:8080"
SYSTEM_DB = "/var/lib/metadata-server/registry.db"
SIGNING_KEY_NAME = "signing-key.pem"  # next to the database, unless guest.signing_key


# --- what can be set (each section's settings, then the sections' own parsers) ---------

DB = Setting(
    "db",
    OptionalText(),
    None,
    f"registry: an SQLite path (default {SYSTEM_DB}, {DEMO_DB} with --demo)",
)
DOMAIN = Setting("domain", OptionalText(), None, "default DNS domain of guests that name none")
PUBLIC_URL = Setting("public_url", Text(), METADATA_URL, "how guests reach the guest API")
PASSWORD_ROUNDS = Setting(
    "password_rounds", Integer(minimum=1000), 5000, "SHA-512 crypt rounds for plain passwords"
)
LOG_LEVEL = Setting("log_level", Choice("debug", "info", "warning", "error"), "info", "log level")
GUEST_LISTEN = Setting(
    "guest.listen", Strings(), [f"{METADATA_ADDRESS}:80"], "guest API addresses (HOST:PORT)"
)
GUEST_TRUST_PROXY = Setting(
    "guest.trust_proxy", Strings(), [], "CIDRs whose X-Forwarded-For is believed"
)
GUEST_VERIFY_NEIGHBOUR = Setting(
    "guest.verify_neighbour", Choice(*VERIFY_MODES), "auto", "check the peer's MAC"
)
GUEST_SERVE_SECRETS_ONCE = Setting(
    "guest.serve_secrets_once", Flag(), True, "withhold secrets once a guest is configured"
)
GUEST_RATE_LIMIT = Setting(
    "guest.rate_limit", Number(), 20.0, "requests per second per guest (0: no limit)"
)
GUEST_RATE_BURST = Setting(
    "guest.rate_burst", Integer(minimum=1), 200, "requests a guest may make at once"
)
GUEST_MAX_CONNECTIONS = Setting(
    "guest.max_connections", Integer(minimum=1), 16, "open connections per guest address"
)
GUEST_REQUEST_TIMEOUT = Setting(
    "guest.request_timeout", Number(), 10.0, "seconds for a request to arrive, head and body"
)
GUEST_IDLE_TIMEOUT = Setting(
    "guest.idle_timeout", Number(), 15.0, "seconds an idle keep-alive connection stays"
)
GUEST_MAX_HEADER_BYTES = Setting(
    "guest.max_header_bytes", Integer(minimum=1024), 16384, "largest request head in bytes"
)
GUEST_SIGNING_KEY = Setting(
    "guest.signing_key",
    OptionalText(),
    None,
    "Ed25519 key signing /v1/config.txt (default: signing-key.pem next to the database)",
)
GUEST_ALLOW_LOOPBACK = Setting(
    "guest.allow_loopback",
    Flag(),
    False,
    "accept guests on 127.0.0.0/8, for trying the server on one machine (--demo sets it)",
)
EC2_TOKENS = Setting("ec2.tokens", Choice("optional", "required"), "optional", "IMDSv2 tokens")
EC2_TOKEN_HOP_LIMIT = Setting(
    "ec2.token_hop_limit", Integer(minimum=1), 1, "IP TTL of the token reply"
)
EC2_INSTANCE_TYPE = Setting(
    "ec2.instance_type", Text(), "xen.guest", "EC2 instance-type of every guest"
)
EC2_AVAILABILITY_ZONE = Setting(
    "ec2.availability_zone", Text(), "local-1a", "EC2 placement/availability-zone"
)
HOST_NAME = Setting(
    "host_name", OptionalText(), None, "this Dom0's name: serve and DHCP only its own guests"
)
BRIDGE = Setting("bridge", OptionalText(), None, "Dom0 bridge: the metadata address is put on it")
DHCP_DAEMON = Setting(
    "dhcp.daemon", Choice("none", "dnsmasq", "kea", "dhcpd"), "none", "DHCP server to configure"
)
DHCP_MANAGE = Setting("dhcp.manage", Flag(), False, "run dnsmasq on the subnets' bridges ourselves")
DHCP_DIRECTORY = Setting(
    "dhcp.directory", OptionalText(), None, "where the DHCP files go (default: dhcp/ by the db)"
)
DHCP_TEMPLATES = Setting(
    "dhcp.templates", OptionalText(), None, "a directory of your own DHCP templates"
)
DHCP_SUBNETS = Setting(
    "dhcp.subnets",
    Tables("dhcp.subnets"),
    [],
    "guest subnets: cidr, gateway, bridge, dns, domain, lease_time",
)
DHCP_RELOAD_COMMAND = Setting(
    "dhcp.reload_command", Strings(), [], "argv that restarts an unmanaged daemon"
)
DHCP_DNSMASQ_PID_FILE = Setting(
    "dhcp.dnsmasq_pid_file", OptionalText(), None, "pid file of an unmanaged dnsmasq (SIGHUP)"
)
DHCP_KEA_CONTROL_SOCKET = Setting(
    "dhcp.kea_control_socket", Text(), "/run/kea/kea4-ctrl-socket", "Kea's control socket"
)
DHCP_KEA_LEASE_FILE = Setting(
    "dhcp.kea_lease_file", Text(), "/var/lib/kea/kea-leases4.csv", "Kea's lease file"
)
DHCP_LEASES = Setting(
    "dhcp.leases",
    Choice("file", "hook"),
    "file",
    "how leases are learned: the daemon's lease file, or a hook it runs per lease",
)
DHCP_DNSMASQ_LEASE_FILE = Setting(
    "dhcp.dnsmasq_lease_file",
    Text(),
    "/var/lib/misc/dnsmasq.leases",
    "lease file of an unmanaged dnsmasq",
)
DHCP_DHCPD_LEASE_FILE = Setting(
    "dhcp.dhcpd_lease_file", Text(), "/var/lib/dhcp/dhcpd.leases", "dhcpd's lease file"
)
DHCP_KEA_HOOKS_LIBRARY = Setting(
    "dhcp.kea_hooks_library",
    OptionalText(),
    None,
    "Kea's libdhcp_run_script.so, for the lease hook",
)
DHCP_DEBOUNCE_MS = Setting(
    "dhcp.debounce_ms", Integer(minimum=0), 200, "quiet time before a render"
)
DNS_LISTEN = Setting(
    "dns.listen", Strings(), [], "DNS responder addresses IP[:port] (53); empty: no DNS"
)
DNS_ZONE = Setting("dns.zone", OptionalText(), None, "the guests' zone (default: domain)")
DNS_METADATA_NAME = Setting(
    "dns.metadata_name", Text(), "metadata", "name of the metadata address in the zone"
)
DNS_UPSTREAMS = Setting(
    "dns.upstreams", Strings(), [], "resolvers for other names, IP[:port]; empty: REFUSED"
)
DNS_TTL = Setting("dns.ttl", Integer(minimum=0), 60, "TTL of answers, negative answers included")
DNS_UPSTREAM_TIMEOUT = Setting(
    "dns.upstream_timeout", Number(), 2.0, "seconds to wait for an upstream"
)
ADMIN_LISTEN = Setting(
    "admin.listen", Text(), "127.0.0.1:8775", "admin API address (HOST:PORT or unix:/path)"
)
ADMIN_TOKEN = Setting("admin.token", OptionalText(), None, "admin bearer token (prefer token_file)")
ADMIN_TOKEN_FILE = Setting(
    "admin.token_file", OptionalText(), None, "file holding the admin bearer token"
)
ADMIN_MAX_BODY_BYTES = Setting(
    "admin.max_body_bytes", Integer(minimum=1024), 1 << 20, "largest admin request body"
)
ADMIN_MAX_IMPORT_BYTES = Setting(
    "admin.max_import_bytes", Integer(minimum=1024), 32 << 20, "largest bulk import body"
)

SETTINGS: tuple[Setting[Any], ...] = (
    DB,
    DOMAIN,
    PUBLIC_URL,
    PASSWORD_ROUNDS,
    LOG_LEVEL,
    GUEST_LISTEN,
    GUEST_TRUST_PROXY,
    GUEST_VERIFY_NEIGHBOUR,
    GUEST_SERVE_SECRETS_ONCE,
    GUEST_RATE_LIMIT,
    GUEST_RATE_BURST,
    GUEST_MAX_CONNECTIONS,
    GUEST_REQUEST_TIMEOUT,
    GUEST_IDLE_TIMEOUT,
    GUEST_MAX_HEADER_BYTES,
    GUEST_SIGNING_KEY,
    GUEST_ALLOW_LOOPBACK,
    EC2_TOKENS,
    EC2_TOKEN_HOP_LIMIT,
    EC2_INSTANCE_TYPE,
    EC2_AVAILABILITY_ZONE,
    HOST_NAME,
    BRIDGE,
    DHCP_DAEMON,
    DHCP_MANAGE,
    DHCP_DIRECTORY,
    DHCP_TEMPLATES,
    DHCP_SUBNETS,
    DHCP_RELOAD_COMMAND,
    DHCP_DNSMASQ_PID_FILE,
    DHCP_KEA_CONTROL_SOCKET,
    DHCP_KEA_LEASE_FILE,
    DHCP_LEASES,
    DHCP_DNSMASQ_LEASE_FILE,
    DHCP_DHCPD_LEASE_FILE,
    DHCP_KEA_HOOKS_LIBRARY,
    DHCP_DEBOUNCE_MS,
    DNS_LISTEN,
    DNS_ZONE,
    DNS_METADATA_NAME,
    DNS_UPSTREAMS,
    DNS_TTL,
    DNS_UPSTREAM_TIMEOUT,
    ADMIN_LISTEN,
    ADMIN_TOKEN,
    ADMIN_TOKEN_FILE,
    ADMIN_MAX_BODY_BYTES,
    ADMIN_MAX_IMPORT_BYTES,
    *ISO_SETTINGS,
    *GUARD_SETTINGS,
)
_BY_PATH = {setting.path: setting for setting in SETTINGS}
_BY_ENV = {setting.env: setting for setting in SETTINGS}


@dataclass(frozen=True)
class ListenAddress:
    """A TCP `host:port` or a unix socket path."""

    host: str | None
    port: int | None
    unix_path: str | None = None

    def is_local(self) -> bool:
        """Only this host can reach it: a unix socket, or a loopback address."""
        if self.unix_path is not None:
            return True
        try:
            return self.host is not None and ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

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
        raw[key] = setting.coerce(value, str(path))
    return raw


def read_environment(env: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        setting = _BY_ENV.get(name)
        if setting is None:
            raise ConfigError(f"unknown setting in the environment: {name}")
        raw[setting.path] = setting.coerce(value, name)
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


def _optional_path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _merged(
    config_file: Path | None, env: Mapping[str, str], flags: Mapping[str, Any], demo: bool
) -> Values:
    """The defaults, then the file, the environment and the flags: each overrides the one
    before (the demo has defaults of its own)."""
    raw: dict[str, Any] = {setting.path: setting.default for setting in SETTINGS}
    if demo:  # the demo runs without root, without a bridge and without 169.254.169.254
        raw[DB.path] = DEMO_DB
        raw[GUEST_LISTEN.path] = [DEMO_GUEST_LISTEN]
        raw[PUBLIC_URL.path] = f"http://{DEMO_GUEST_LISTEN}"
        raw[GUEST_ALLOW_LOOPBACK.path] = True  # the demo guest is whoever calls from 127.0.0.1
    if config_file is not None:
        raw.update(read_config_file(config_file))
    raw.update(read_environment(env))
    for path, value in flags.items():
        if value is not None:
            raw[path] = _BY_PATH[path].coerce(value, "command line")
    return Values(SETTINGS, raw)


def _domain(values: Values) -> str | None:
    domain = values[DOMAIN]
    if domain is None:
        return None
    try:
        return parse_domain(domain)
    except InvalidInput as exc:
        raise ConfigError(f"domain: {exc.detail}") from None


def _public_url(values: Values) -> str:
    public_url = values[PUBLIC_URL]
    if not public_url.startswith(("http://", "https://")):
        raise ConfigError(f"public_url must start with http:// or https://, not {public_url!r}")
    # It is written into the guests' config.txt lines and quoted in the DHCP files.
    if not public_url.isprintable() or any(c in public_url for c in ' "\\'):
        raise ConfigError(
            "public_url must be a URL without spaces, quotes or control characters, "
            f"not {public_url!r}"
        )
    return public_url


def _host_name(values: Values) -> str | None:
    host_name = values[HOST_NAME]
    if host_name is None:
        return None
    try:
        return parse_domain(host_name, "host_name")
    except InvalidInput as exc:
        raise ConfigError(exc.detail) from None


def _state_dir(db: str, demo: bool) -> Path:
    """Where the admin token, DHCP files and ISOs go: beside an SQLite file, else fixed."""
    if is_postgres_url(db):  # never derive a path from a URL (it may hold a password)
        return Path(DEMO_DB).parent if demo else Path(SYSTEM_DB).parent
    return Path(db.removeprefix("sqlite://")).parent


def guest_settings(values: Values, state_dir: Path) -> GuestSettings:
    trust: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for cidr in values[GUEST_TRUST_PROXY]:
        try:
            trust.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ConfigError(f"guest.trust_proxy: {cidr!r} is not a CIDR") from None
    listen = tuple(parse_listen(text, "guest.listen") for text in values[GUEST_LISTEN])
    if not listen:
        raise ConfigError("guest.listen needs at least one address")
    if any(address.unix_path for address in listen):
        raise ConfigError("guest.listen takes HOST:PORT only: guests are identified by address")
    return GuestSettings(
        listen=listen,
        trust_proxy=tuple(trust),
        verify_neighbour=values[GUEST_VERIFY_NEIGHBOUR],
        serve_secrets_once=values[GUEST_SERVE_SECRETS_ONCE],
        rate_limit=values[GUEST_RATE_LIMIT],
        rate_burst=values[GUEST_RATE_BURST],
        max_connections=values[GUEST_MAX_CONNECTIONS],
        request_timeout=_positive(values[GUEST_REQUEST_TIMEOUT], GUEST_REQUEST_TIMEOUT.path),
        idle_timeout=_positive(values[GUEST_IDLE_TIMEOUT], GUEST_IDLE_TIMEOUT.path),
        max_header_bytes=values[GUEST_MAX_HEADER_BYTES],
        allow_loopback=values[GUEST_ALLOW_LOOPBACK],
        signing_key=_optional_path(values[GUEST_SIGNING_KEY]) or state_dir / SIGNING_KEY_NAME,
    )


def dhcp_settings(values: Values, domain: str | None, state_dir: Path) -> DhcpSettings:
    daemon = values[DHCP_DAEMON]
    subnets = parse_subnets(values[DHCP_SUBNETS], domain)
    if daemon != "none" and not subnets:
        raise ConfigError(f"dhcp.daemon is {daemon}: give at least one [[dhcp.subnets]]")
    if values[DHCP_MANAGE] and daemon != "dnsmasq":
        raise ConfigError('dhcp.manage runs dnsmasq only: set dhcp.daemon = "dnsmasq"')
    if values[DHCP_MANAGE] and not all(subnet.bridge for subnet in subnets):
        raise ConfigError("dhcp.manage needs the bridge of every subnet (dhcp.subnets[].bridge)")
    return DhcpSettings(
        daemon=daemon,
        manage=values[DHCP_MANAGE],
        directory=_optional_path(values[DHCP_DIRECTORY]) or state_dir / "dhcp",
        templates=_optional_path(values[DHCP_TEMPLATES]),
        subnets=subnets,
        reload_command=tuple(values[DHCP_RELOAD_COMMAND]),
        dnsmasq_pid_file=_optional_path(values[DHCP_DNSMASQ_PID_FILE]),
        kea_control_socket=Path(values[DHCP_KEA_CONTROL_SOCKET]),
        kea_lease_file=Path(values[DHCP_KEA_LEASE_FILE]),
        leases=values[DHCP_LEASES],
        dnsmasq_lease_file=Path(values[DHCP_DNSMASQ_LEASE_FILE]),
        dhcpd_lease_file=Path(values[DHCP_DHCPD_LEASE_FILE]),
        kea_hooks_library=_optional_path(values[DHCP_KEA_HOOKS_LIBRARY]),
        debounce=values[DHCP_DEBOUNCE_MS] / 1000,
    )


def dns_settings(values: Values, domain: str | None) -> DnsSettings | None:
    if not values[DNS_LISTEN]:
        return None
    zone = values[DNS_ZONE] or domain
    if zone is None:
        raise ConfigError("dns.listen is set: give dns.zone (or domain) for the guests' zone")
    return DnsSettings(
        listen=tuple(parse_endpoint(text, "dns.listen") for text in values[DNS_LISTEN]),
        zone=zone,
        metadata_name=values[DNS_METADATA_NAME],
        metadata_address=str(METADATA_ADDRESS),
        upstreams=tuple(parse_endpoint(text, "dns.upstreams") for text in values[DNS_UPSTREAMS]),
        ttl=values[DNS_TTL],
        upstream_timeout=values[DNS_UPSTREAM_TIMEOUT],
    )


def ec2_settings(values: Values) -> Ec2Settings:
    return Ec2Settings(
        tokens=values[EC2_TOKENS],
        token_hop_limit=_in_range(values[EC2_TOKEN_HOP_LIMIT], 1, 255, EC2_TOKEN_HOP_LIMIT.path),
        instance_type=_single_line(values[EC2_INSTANCE_TYPE], EC2_INSTANCE_TYPE.path),
        availability_zone=_single_line(values[EC2_AVAILABILITY_ZONE], EC2_AVAILABILITY_ZONE.path),
    )


def admin_settings(values: Values) -> AdminSettings:
    return AdminSettings(
        listen=parse_listen(values[ADMIN_LISTEN], "admin.listen"),
        token=values[ADMIN_TOKEN],
        token_file=_optional_path(values[ADMIN_TOKEN_FILE]),
        max_body_bytes=values[ADMIN_MAX_BODY_BYTES],
        max_import_bytes=values[ADMIN_MAX_IMPORT_BYTES],
    )


def build_settings(
    *,
    config_file: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
    demo: bool = False,
) -> Settings:
    """Merge the three sources (later wins) over the defaults and check every value: each
    section is built by its own parser."""
    values = _merged(config_file, env, flags, demo)
    db = values[DB] or SYSTEM_DB
    state_dir = _state_dir(db, demo)
    domain = _domain(values)
    return Settings(
        db=db,
        state_dir=state_dir,
        domain=domain,
        public_url=_public_url(values),
        password_rounds=values[PASSWORD_ROUNDS],
        log_level=values[LOG_LEVEL],
        guest=guest_settings(values, state_dir),
        dhcp=dhcp_settings(values, domain, state_dir),
        bridge=values[BRIDGE],
        guard=guard_settings(values),
        dns=dns_settings(values, domain),
        host_name=_host_name(values),
        iso=iso_settings(values, state_dir),
        ec2=ec2_settings(values),
        admin=admin_settings(values),
    )
