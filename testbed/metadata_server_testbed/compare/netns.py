"""Network namespaces: a Dom0 side with a bridge, guests joined to it by veth pairs.

Used by the comparison harness and by the test suite (tests/support/netns.py re-exports
this module). `bridge_network()` makes a Dom0 namespace with bridge `br0`;
`BridgeNetwork.add_guest()` adds one guest namespace on it. For many guests at once,
`ip_batch()` runs one `ip -batch` for all of them instead of a handful of `ip` processes
per guest.

Everything is created under unique names and removed on exit, also when the caller
fails. Only addresses from 198.18.0.0/15 (the benchmarking range) and 169.254.169.254
belong inside; this module never configures any other address and sends no traffic.
Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

_counter = itertools.count()
NETNS_DIR = "/run/netns"


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
    """Run `argv` (no shell) and return its stdout; RuntimeError with its stderr on failure."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def unique(prefix: str) -> str:
    """A short name unique to this process and call (interface names max 15 chars)."""
    return f"{prefix}{os.getpid() % 10000}{next(_counter)}"[:15]


def ip_batch(lines: Iterable[str], *, netns: str | None = None, timeout: float = 120) -> None:
    """Run `ip [-n NETNS] -batch FILE` with one ip command (without `ip`) per line.

    `-force` goes on after a failing line, so one bad line cannot leave the rest undone
    (a cleanup batch must delete everything it can); the failure is still raised.
    """
    text = "".join(line.rstrip("\n") + "\n" for line in lines)
    if not text:
        return
    with tempfile.NamedTemporaryFile("w", prefix="ip-batch-", suffix=".txt") as batch:
        batch.write(text)
        batch.flush()
        where = ["-n", netns] if netns else []
        run(["ip", *where, "-force", "-batch", batch.name], timeout=timeout)


def namespaces() -> list[str]:
    """Names of the named network namespaces (`ip netns list`, without ids)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


@dataclass
class Netns:
    name: str

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        return run(self.argv(*argv), check=check, timeout=timeout)

    def popen(self, *argv: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = subprocess.Popen(self.argv(*argv), **kwargs)
        return process


@dataclass
class Guest:
    ns: Netns
    mac: str
    ifname: str = "eth0"


@dataclass
class BridgeNetwork:
    """A Dom0 namespace with bridge `br0` holding `gateway`/`prefix`, and guests on it."""

    dom0: Netns
    bridge: str
    gateway: str
    prefix: int
    guests: list[Guest] = field(default_factory=list)
    _cleanup: list[list[str]] = field(default_factory=list)

    def add_guest(self, mac: str, address: str | None = None) -> Guest:
        """A guest namespace on the bridge; with `address`, configured statically and
        routed to the metadata address through the gateway, as a DHCP lease would."""
        ns = Netns(unique("g"))
        run(["ip", "netns", "add", ns.name])
        self._cleanup.append(["ip", "netns", "delete", ns.name])
        host_end = unique("vh")
        run(
            [
                "ip",
                "link",
                "add",
                host_end,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name,
            ]
        )
        run(["ip", "link", "set", host_end, "netns", self.dom0.name])
        self.dom0.run("ip", "link", "set", host_end, "master", self.bridge, "up")
        ns.run("ip", "link", "set", "eth0", "address", mac)
        ns.run("ip", "link", "set", "lo", "up")
        ns.run("ip", "link", "set", "eth0", "up")
        guest = Guest(ns=ns, mac=mac)
        self.guests.append(guest)
        if address is not None:
            ns.run("ip", "addr", "add", f"{address}/{self.prefix}", "dev", "eth0")
            ns.run("ip", "route", "add", "169.254.169.254/32", "via", self.gateway)
        return guest

    def add_metadata_address(self) -> None:
        """Put 169.254.169.254/32 on the bridge, as the server's --bridge option does."""
        self.dom0.run("ip", "addr", "add", "169.254.169.254/32", "dev", self.bridge)

    def close(self) -> None:
        for argv in reversed(self._cleanup):
            run(argv, check=False)
        self._cleanup.clear()


@contextlib.contextmanager
def bridge_network(gateway: str = "198.18.0.1", prefix: int = 24) -> Iterator[BridgeNetwork]:
    """Dom0 namespace + bridge; yields the network; removes every namespace on exit."""
    dom0 = Netns(unique("d0"))
    run(["ip", "netns", "add", dom0.name])
    net = BridgeNetwork(dom0=dom0, bridge="br0", gateway=gateway, prefix=prefix)
    net._cleanup.append(["ip", "netns", "delete", dom0.name])
    try:
        dom0.run("ip", "link", "set", "lo", "up")
        dom0.run("ip", "link", "add", "br0", "type", "bridge")
        dom0.run("ip", "addr", "add", f"{gateway}/{prefix}", "dev", "br0")
        dom0.run("ip", "link", "set", "br0", "up")
        yield net
    finally:
        net.close()


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    # os.setns arrives in Python 3.12; Debian 12 has 3.11.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run this thread in network namespace `name` (e.g. to bind a server there).

    Sockets keep the namespace they were made in, so a server started inside this block
    goes on serving in `name` after it ends.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(own)
        os.close(own)
        os.close(target)
