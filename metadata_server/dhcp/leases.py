"""The DHCP daemons' own lease databases, read: which MAC holds which address now.

Every daemon already keeps one, so the server learns leases from it instead of running a
process per lease:

- dnsmasq's lease file: one `expiry MAC address hostname client-id` line per lease,
  the whole file rewritten on every change (expiry 0: never);
- Kea's memfile CSV (`address,hwaddr,client_id,valid_lifetime,expire,...,state,...`):
  a row appended per change, the last row of an address wins (state 0 is a live lease);
  now and then Kea's cleanup (LFC) rewrites it;
- ISC dhcpd's dhcpd.leases: `lease ADDRESS { ... }` blocks appended per change, the last
  block of an address wins (`binding state active`); now and then rewritten whole.

`LeaseFile.read(now)` gives the live leases by MAC. Appended formats are read
from where the last read stopped; a file that shrank or was replaced (another inode) is
read from the start again. Only whole lines (whole blocks for dhcpd) are read, so a row
the daemon is still writing waits for the next read. Malformed lines are skipped and
counted. Pure but for the one file it is given.
"""

from __future__ import annotations

import calendar
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_IPV4_RE = re.compile(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}")
_DHCPD_BLOCK_RE = re.compile(r"lease ([0-9.]+) \{(.*?)\n\}", re.S)
_DHCPD_ENDS_RE = re.compile(r"^\s*ends\s+(?:never|[0-9] ([0-9/]+ [0-9:]+));", re.M)
_DHCPD_STATE_RE = re.compile(r"^\s*binding state (\w+);", re.M)
_DHCPD_MAC_RE = re.compile(r"^\s*hardware ethernet ([0-9a-fA-F:]+);", re.M)
MAX_BYTES = 64 * 1024 * 1024  # a lease database past this is not read (logged by the caller)


@dataclass(frozen=True)
class Lease:
    mac: str
    address: str
    expires: float | None  # None: never


def _mac(text: str) -> str | None:
    mac = text.strip().lower()
    return mac if _MAC_RE.fullmatch(mac) else None


def _address(text: str) -> str | None:
    text = text.strip()
    if not _IPV4_RE.fullmatch(text) or any(int(part) > 255 for part in text.split(".")):
        return None
    return text


def _ascii_int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None


def dnsmasq_leases(text: str) -> tuple[list[Lease], int]:
    leases, bad = [], 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "duid":
            continue  # DHCPv6 server identity line
        expiry = _ascii_int(parts[0]) if parts else None
        mac = _mac(parts[1]) if len(parts) >= 3 else None
        address = _address(parts[2]) if len(parts) >= 3 else None
        if expiry is None or mac is None or address is None:
            bad += 1 if line.strip() else 0
            continue
        leases.append(Lease(mac, address, float(expiry) if expiry else None))
    return leases, bad


def kea_rows(text: str) -> tuple[list[tuple[Lease, bool]], int]:
    """(lease, live) per data row of a Kea memfile, in file order; live = state 0 and a
    lifetime above 0 (a release is written as a row with lifetime 0)."""
    rows, bad = [], 0
    for line in text.splitlines():
        if not line.strip() or line.startswith("address,"):
            continue
        fields = line.split(",")
        if len(fields) < 10:
            bad += 1
            continue
        address, mac = _address(fields[0]), _mac(fields[1])
        lifetime, expire, state = (
            _ascii_int(fields[3]),
            _ascii_int(fields[4]),
            _ascii_int(fields[9]),
        )
        if address is None or mac is None or lifetime is None or expire is None or state is None:
            bad += 1
            continue
        rows.append((Lease(mac, address, float(expire)), state == 0 and lifetime > 0))
    return rows, bad


def dhcpd_blocks(text: str) -> tuple[list[tuple[Lease, bool]], int]:
    """(lease, live) per `lease` block of dhcpd.leases, in file order."""
    blocks, bad = [], 0
    for match in _DHCPD_BLOCK_RE.finditer(text):
        address, body = _address(match.group(1)), match.group(2)
        mac_match, state_match = _DHCPD_MAC_RE.search(body), _DHCPD_STATE_RE.search(body)
        mac = _mac(mac_match.group(1)) if mac_match else None
        if address is None or mac is None or state_match is None:
            bad += 1
            continue
        ends = _DHCPD_ENDS_RE.search(body)
        expires: float | None = None
        if ends is not None and ends.group(1):
            try:
                expires = float(calendar.timegm(time.strptime(ends.group(1), "%Y/%m/%d %H:%M:%S")))
            except ValueError:
                bad += 1
                continue
        blocks.append((Lease(mac, address, expires), state_match.group(1) == "active"))
    return blocks, bad


@dataclass
class LeaseFile:
    """One daemon's lease database, read again and again."""

    kind: str  # dnsmasq | kea | dhcpd
    path: Path
    malformed: int = 0
    rereads: int = 0  # reads from the start after a rewrite, truncation or rotation
    _inode: int | None = None
    _offset: int = 0
    _by_address: dict[str, tuple[Lease, bool]] = field(default_factory=dict)

    def read(self, now: float) -> dict[str, Lease]:
        """The live leases now, by MAC (the last written, where a MAC has several). A
        missing file holds no lease."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._reset()
            return {}
        if stat.st_size > MAX_BYTES:
            raise OSError(f"{self.path} is larger than {MAX_BYTES} bytes")
        if self.kind == "dnsmasq" or stat.st_ino != self._inode or stat.st_size < self._offset:
            if self._inode is not None and self.kind != "dnsmasq":
                self.rereads += 1
            self._reset()
            self._inode = stat.st_ino
        self._read_new()
        live: dict[str, Lease] = {}
        for lease, alive in self._by_address.values():
            if alive and (lease.expires is None or lease.expires > now):
                live[lease.mac] = lease
        return live

    def _reset(self) -> None:
        self._inode, self._offset = None, 0
        self._by_address = {}

    def _read_new(self) -> None:
        with self.path.open("rb") as handle:
            os.lseek(handle.fileno(), self._offset, os.SEEK_SET)
            data = handle.read()
        end = data.rfind(b"\n}\n" if self.kind == "dhcpd" else b"\n")
        if end < 0:
            return  # nothing whole yet
        end += 3 if self.kind == "dhcpd" else 1
        text = data[:end].decode("utf-8", "replace")
        self._offset += end
        if self.kind == "dnsmasq":
            leases, bad = dnsmasq_leases(text)
            entries = [(lease, True) for lease in leases]
        elif self.kind == "kea":
            entries, bad = kea_rows(text)
        else:
            entries, bad = dhcpd_blocks(text)
        self.malformed += bad
        for lease, alive in entries:
            self._by_address[lease.address] = (lease, alive)
