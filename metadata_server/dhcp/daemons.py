"""Each DHCP daemon's way to check a configuration before it is used, and to pick it up
after: dnsmasq (`--test`, SIGHUP or restart), Kea (`kea-dhcp4 -t`, `config-reload` over
its control socket), ISC dhcpd (`dhcpd -t -cf`, a configured restart command).

Checks run on temporary copies, never on the live files; a refused configuration never
reaches the live files or the daemon.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from metadata_server.dhcp.commands import DaemonError, find_binary, run_tool
from metadata_server.digits import ascii_int

log = logging.getLogger(__name__)
KEA_SOCKET_TIMEOUT = 10.0


class ReloadTarget(Protocol):
    """A daemon the server runs itself (managed dnsmasq)."""

    async def reload(self, *, restart: bool) -> None: ...


class Daemon(Protocol):
    name: str

    async def check(self, files: Mapping[str, str]) -> None:
        """Raise DaemonError with the checker's message when the files are refused."""

    async def reload(self, changed: set[str]) -> None:
        """Make the running daemon use the files just installed."""


def _scratch(files: Mapping[str, str]) -> tempfile.TemporaryDirectory[str]:
    scratch = tempfile.TemporaryDirectory(prefix="metadata-server-dhcp-")
    for name, text in files.items():
        Path(scratch.name, name).write_text(text, encoding="utf-8")
    return scratch


async def _run_command(argv: Sequence[str], what: str) -> None:
    if not argv:
        log.warning("no dhcp.reload_command is configured: %s needs a restart by hand", what)
        return
    await run_tool(argv)


@dataclass
class Dnsmasq:
    """dnsmasq: the hosts file is re-read on SIGHUP; the options file needs a restart."""

    pid_file: Path | None = None
    reload_command: Sequence[str] = ()
    managed: ReloadTarget | None = None
    name: str = "dnsmasq"

    async def check(self, files: Mapping[str, str]) -> None:
        # `dnsmasq --test` skips hosts files, so the reservations are checked as the
        # equivalent dhcp-host= lines of one configuration file.
        hosts = files["dnsmasq-hosts"].splitlines()
        combined = files["dnsmasq.conf"] + "".join(f"dhcp-host={line}\n" for line in hosts if line)
        with _scratch({"check.conf": combined}) as scratch:
            await run_tool([find_binary("dnsmasq"), "--test", f"--conf-file={scratch}/check.conf"])

    async def reload(self, changed: set[str]) -> None:
        restart = "dnsmasq.conf" in changed
        if self.managed is not None:
            await self.managed.reload(restart=restart)
        elif restart:
            await _run_command(self.reload_command, "dnsmasq (its options changed)")
        elif self.pid_file is not None:
            try:
                pid = ascii_int(self.pid_file.read_text().strip())
                if pid is None or pid < 2:  # 0 and 1 would signal a group or init
                    raise ValueError("it does not hold a process id")
                os.kill(pid, signal.SIGHUP)
            except (OSError, ValueError) as exc:
                raise DaemonError(
                    f"cannot signal dnsmasq (pid file {self.pid_file}): {exc}"
                ) from None
        else:
            log.warning("dnsmasq is not managed and has no dhcp.dnsmasq_pid_file: send it SIGHUP")


@dataclass
class Kea:
    """Kea DHCPv4: checked with `kea-dhcp4 -t` on a copy that listens on any interface
    (the check fails on a named interface that is missing, as on a host being set up),
    then `config-reload` over the control socket."""

    config_name: str
    control_socket: Path
    name: str = "kea"

    async def check(self, files: Mapping[str, str]) -> None:
        try:
            config = json.loads(files[self.config_name])
            dhcp4 = config["Dhcp4"]
            dhcp4["interfaces-config"]["interfaces"] = ["*"]
            for subnet in dhcp4.get("subnet4", []):
                subnet.pop("interface", None)
            dhcp4.pop("hooks-libraries", None)  # checked where Kea runs; needs its paths
        except (ValueError, KeyError, TypeError) as exc:
            raise DaemonError(f"the rendered Kea configuration is not valid JSON: {exc}") from None
        with _scratch({"kea-check.conf": json.dumps(config)}) as scratch:
            await run_tool([find_binary("kea-dhcp4"), "-t", f"{scratch}/kea-check.conf"])

    async def reload(self, changed: set[str]) -> None:
        if not self.control_socket.exists():
            # Not running (yet): it reads the new file when it starts.
            log.warning("no Kea control socket at %s: is kea-dhcp4 running?", self.control_socket)
            return
        reply = await kea_command(self.control_socket, {"command": "config-reload"})
        if reply.get("result") != 0:
            raise DaemonError(f"Kea refused config-reload: {reply.get('text', reply)}")


async def kea_command(socket_path: Path, command: Mapping[str, object]) -> dict[str, object]:
    """One command over Kea's unix control socket; the JSON answer."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(socket_path)), KEA_SOCKET_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        raise DaemonError(f"cannot reach Kea's control socket {socket_path}: {exc}") from None
    answer: object = None
    try:
        writer.write(json.dumps(command).encode())
        await writer.drain()
        buffer = b""
        while answer is None:
            chunk = await asyncio.wait_for(reader.read(65536), KEA_SOCKET_TIMEOUT)
            if not chunk:
                break
            buffer += chunk
            try:  # Kea may send its answer in pieces; it is whole once it parses
                answer = json.loads(buffer)
            except ValueError:
                continue
    except (OSError, TimeoutError) as exc:
        raise DaemonError(f"no answer on Kea's control socket: {exc}") from None
    finally:
        writer.close()
    if answer is None:
        raise DaemonError("Kea closed its control socket without a whole answer")
    if isinstance(answer, list):
        answer = answer[0] if answer else {}
    if not isinstance(answer, dict):
        raise DaemonError("Kea's answer is not a JSON object")
    return answer


@dataclass
class Dhcpd:
    """ISC dhcpd: `dhcpd -t -cf` on a copy, then the configured restart command."""

    config_name: str
    reload_command: Sequence[str] = ()
    name: str = "dhcpd"

    async def check(self, files: Mapping[str, str]) -> None:
        with _scratch(dict(files)) as scratch:
            await run_tool(
                [find_binary("dhcpd"), "-t", "-q", "-cf", f"{scratch}/{self.config_name}"]
            )

    async def reload(self, changed: set[str]) -> None:
        await _run_command(self.reload_command, "dhcpd")
