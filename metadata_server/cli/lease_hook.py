"""`metadata-server dhcp lease-hook`: what a DHCP daemon runs for every lease.

dnsmasq runs it as `--dhcp-script` (`add|old|del MAC IP [HOSTNAME]`), Kea's run_script
hook with the event name and the lease in `LEASE4_*` / `LEASES4_AT<n>_*` variables. A
lease that is held (dnsmasq's add/old; Kea's committed, renewed, rebound) is reported to
the admin API, which moves the guest from `registered` to `leased`.

The daemon runs the hook once per lease, one at a time, so in a boot storm its start-up
cost is Dom0's largest expense. This module therefore uses the standard library only;
with `--url` and `--admin-token-file` given (as in the wrapper the server writes) the
command runs from here without loading the rest of the CLI.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlsplit

from metadata_server.digits import ascii_int

TIMEOUT = 5.0


class LeaseHookError(Exception):
    """One line for stderr; the hook then exits 1 (the daemon logs it)."""


def lease_reports(event: str, args: Sequence[str], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(MAC, address) pairs that a hook call reports as held: dnsmasq's `add`/`old`, Kea's
    committed, renewed and rebound leases. Releases and expiries report nothing."""
    if event in ("add", "old"):
        if len(args) < 2:
            raise LeaseHookError(f"dnsmasq's {event} needs MAC and IP")
        return [(args[0], args[1])]
    if event == "leases4_committed":
        size = env.get("LEASES4_SIZE", "0") or "0"
        count = ascii_int(size) or 0
        return [
            (env.get(f"LEASES4_AT{i}_HWADDR", ""), env.get(f"LEASES4_AT{i}_ADDRESS", ""))
            for i in range(count)
        ]
    if event in ("lease4_renew", "lease4_rebind", "lease4_select"):
        return [(env.get("LEASE4_HWADDR", ""), env.get("LEASE4_ADDRESS", ""))]
    return []


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    if url.startswith("unix:"):
        return _UnixConnection(url.removeprefix("unix:"), timeout)
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise LeaseHookError(f"the admin URL must be http://HOST:PORT or unix:/path, not {url!r}")
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)


def report_lease(url: str, token: str, mac: str, address: str, *, timeout: float = TIMEOUT) -> bool:
    """POST the lease; True when recorded, False for a MAC the registry does not know."""
    connection = _connection(url, timeout)
    body = json.dumps({"address": address})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        connection.request("POST", f"/api/v1/vms/{quote(mac)}/lease", body, headers)
        response = connection.getresponse()
        answer = response.read()
    except OSError as exc:
        raise LeaseHookError(f"cannot reach the admin API at {url}: {exc}") from None
    finally:
        connection.close()
    if response.status == 404:
        return False
    if response.status >= 400:
        try:
            detail = json.loads(answer).get("detail", "")
        except (ValueError, AttributeError):
            detail = ""
        raise LeaseHookError(
            f"the admin API refused the lease of {mac}: HTTP {response.status} {detail}"
        )
    return True


def report_all(
    url: str, token: str, event: str, args: Sequence[str], env: Mapping[str, str]
) -> None:
    for mac, address in lease_reports(event, args, env):
        if mac and address:
            report_lease(url, token, mac, address)


def read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise LeaseHookError(f"cannot read the admin token file {path}: {exc.strerror}") from None


def quick(argv: Sequence[str], env: Mapping[str, str]) -> int | None:
    """Run `dhcp lease-hook ARGV` from here when URL and token file are both given;
    None when the full CLI must work them out from the configuration."""
    parser = argparse.ArgumentParser(prog="metadata-server dhcp lease-hook", add_help=False)
    parser.add_argument("--url")
    parser.add_argument("--admin-token-file")
    parser.add_argument("--config")
    parser.add_argument("event", nargs="?")
    parser.add_argument("args", nargs="*")
    known, unknown = parser.parse_known_args(list(argv))
    if unknown or not known.url or not known.admin_token_file or known.event is None:
        return None
    try:
        report_all(known.url, read_token(known.admin_token_file), known.event, known.args, env)
    except LeaseHookError as exc:
        print(f"metadata-server: {exc}", file=sys.stderr)
        return 1
    return 0
