"""PostgreSQL connection URLs: telling them apart from paths, checking their shape before
anything connects, and a redacted form that may appear in logs and error messages.

Pure string work. It never connects, and it never returns or logs a URL with its
password in it: every message about a database uses `redact()`.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from metadata_server.digits import ascii_int
from metadata_server.errors import ConfigError

SCHEMES = ("postgres", "postgresql")
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
_HIDDEN = "***"


def is_postgres_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES and "://" in url


def redact(url: str) -> str:
    """The URL with any password (in the user part or the query) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable database URL)"
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{_HIDDEN}@{hosts}"
    segments = parts.query.split("&") if parts.query else []
    for index, segment in enumerate(segments):
        key = unquote(segment.partition("=")[0]).lower()
        if key in _SECRET_PARAMS:
            segments[index] = f"{segment.partition('=')[0]}={_HIDDEN}"
    query = "&".join(segments)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _check_host(host: str, url: str) -> None:
    if host.startswith("["):  # [IPv6]:port
        end = host.find("]")
        rest = host[end + 1 :] if end >= 0 else None
        if rest is None or (rest and not rest.startswith(":")):
            raise ConfigError(f"db: bad host {host!r} in {redact(url)}")
        port = rest[1:]
    else:
        _, _, port = host.partition(":")
    number = ascii_int(port) if port else None
    if port and not (number is not None and 0 < number < 65536):
        raise ConfigError(f"db: bad port {port!r} in {redact(url)}")


def check(url: str) -> None:
    """Refuse a URL that cannot name a PostgreSQL database, before connecting.

    Accepts what libpq and asyncpg accept: `postgresql://[user[:password]@][host[:port]]
    [,host[:port]...][/database][?param=value&...]`, a unix socket directory as
    `?host=/run/postgresql`.
    """
    if not is_postgres_url(url):
        raise ConfigError(f"db: {redact(url)} is not a postgresql:// URL")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"db: cannot parse the database URL: {exc}") from None
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(","):
        if host:
            _check_host(host, url)
    if parts.path not in ("", "/") and "/" in parts.path[1:]:
        raise ConfigError(f"db: the database name in {redact(url)} may not contain '/'")
    if parts.fragment:
        raise ConfigError(f"db: unexpected '#' in {redact(url)}")
