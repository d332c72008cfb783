"""The stand-in xenstored, driven by Debian's real xenstore-utils (and, where the tools
cannot tell, by the wire client): round trips, permissions, watches, domains, bad input."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from metadata_server_testbed.xen.xenstored import XenstoredServer
from metadata_server_testbed.xen.xs_client import XsClient
from metadata_server_testbed.xen.xs_wire import MsgType, XsError

from tests.support.requirements import need_tools
from tests.support.xen_standins import (
    TOOL_TIMEOUT,
    XENSTORE_TOOLS,
    ServerThread,
    WatchProcess,
    ok,
    tool,
)

WatchFactory = Callable[..., WatchProcess]


# --- round trips ------------------------------------------------------------------------


def test_write_read_list_ls_rm(xenstored: ServerThread) -> None:
    ok(xenstored, "xenstore-write", "/t/a", "one", "/t/b", "two words")
    assert ok(xenstored, "xenstore-read", "/t/a", "/t/b") == "one\ntwo words\n"
    assert ok(xenstored, "xenstore-list", "/t") == "a\nb\n"
    assert ok(xenstored, "xenstore-ls", "-f", "/t") == '/t/a = "one"\n/t/b = "two words"\n'
    ok(xenstored, "xenstore-exists", "/t/a")
    ok(xenstored, "xenstore-rm", "/t/a")
    assert tool(xenstored, "xenstore-exists", "/t/a").returncode == 1
    assert ok(xenstored, "xenstore-list", "/t") == "b\n"


def test_values_are_escaped_like_xenstored(xenstored: ServerThread) -> None:
    ok(xenstored, "xenstore-write", "/esc", "tab\\there\\x41")
    assert ok(xenstored, "xenstore-read", "-R", "/esc") == "tab\there" + "A"
    assert ok(xenstored, "xenstore-read", "/esc") == "tab\\thereA\n"


def test_chmod_and_permissions_listing(xenstored: ServerThread) -> None:
    ok(xenstored, "xenstore-write", "/p/q", "v")
    ok(xenstored, "xenstore-chmod", "-r", "/p", "n0", "r5", "b6")
    assert ok(xenstored, "xenstore-ls", "-p", "/p").split("(")[1] == "n0,r5,b6)\n"
    assert ok(xenstored, "xenstore-read", "/p/q", domid=5) == "v\n"


def test_guest_domain_layout(xenstored: ServerThread) -> None:
    listing = ok(xenstored, "xenstore-ls", "-p", "/local/domain/5")
    lines = {line.split(" = ")[0].strip(): line.rsplit("(", 1)[1] for line in listing.splitlines()}
    assert lines == {
        "domid": "n0,r5)",
        "name": "n0,r5)",
        "device": "n0,r5)",
        "control": "n0,r5)",
        "data": "n5)",
    }


def test_long_directory_goes_through_directory_part(xenstored: ServerThread) -> None:
    names = [f"child-{i:03d}-" + "x" * 40 for i in range(120)]  # > 4096 bytes of names

    async def fill() -> None:
        client = await XsClient.connect(xenstored.socket())
        try:
            for name in names:
                await client.write(f"/big/{name}", b"")
            with pytest.raises(XsError, match="E2BIG"):
                await client.directory("/big")
        finally:
            await client.close()

    xenstored.call(fill())
    assert ok(xenstored, "xenstore-list", "/big").split() == names


# --- permissions, as xenstored enforces them --------------------------------------------


@pytest.fixture
def granted(xenstored: ServerThread) -> ServerThread:
    """/granted: Dom0's, domain 5 may write (not read), nobody else anything."""
    ok(xenstored, "xenstore-write", "/granted", "")
    ok(xenstored, "xenstore-chmod", "/granted", "n0", "w5")
    ok(xenstored, "xenstore-write", "/local/domain/6/data/secret", "six")
    return xenstored


@pytest.mark.parametrize(
    ("domid", "argv", "allowed"),
    [
        (5, ["xenstore-write", "/local/domain/5/data/mine", "x"], True),
        (5, ["xenstore-write", "data/relative", "x"], True),
        (5, ["xenstore-write", "/local/domain/6/data/x", "x"], False),
        (5, ["xenstore-write", "/local/domain/5/not-granted", "x"], False),
        (5, ["xenstore-write", "/granted/child", "x"], True),
        (6, ["xenstore-write", "/granted/child", "x"], False),
        (5, ["xenstore-read", "/granted"], False),
        (5, ["xenstore-read", "/local/domain/6/data/secret"], False),
        (6, ["xenstore-read", "data/secret"], True),
        (5, ["xenstore-read", "/local/domain/5/name"], True),
        (5, ["xenstore-rm", "/local/domain/5/domid"], False),
        (5, ["xenstore-chmod", "/granted", "n0", "b5"], False),
        (6, ["xenstore-chmod", "data/secret", "n5"], False),
        (6, ["xenstore-chmod", "data/secret", "n6", "r5"], True),
        (0, ["xenstore-read", "/local/domain/6/data/secret"], True),
        (0, ["xenstore-write", "/local/domain/6/data/q", "x" * 2048], True),
        (0, ["xenstore-write", "/local/domain/6/data/q", "y" * 2049], False),
    ],
    ids=[
        "own-data",
        "own-data-relative",
        "other-domains-data",
        "own-dir-is-read-only",
        "granted-write",
        "not-granted",
        "write-grant-is-not-read",
        "other-domains-secret",
        "own-secret",
        "own-name",
        "rm-read-only",
        "chmod-not-owner",
        "give-away",
        "owner-chmod",
        "dom0-reads-all",
        "value-at-quota",
        "value-over-quota",
    ],
)
def test_permissions(granted: ServerThread, domid: int, argv: list[str], allowed: bool) -> None:
    result = tool(granted, argv[0], *argv[1:], domid=domid)
    assert (result.returncode == 0) == allowed, result.stderr


def test_relative_write_lands_under_the_domain(xenstored: ServerThread) -> None:
    ok(xenstored, "xenstore-write", "data/x", "rel", domid=5)
    assert ok(xenstored, "xenstore-read", "/local/domain/5/data/x") == "rel\n"


@pytest.mark.parametrize(
    ("domid", "path", "error"),
    [
        (5, "/local/domain/6/data/secret", "Permission denied"),
        (5, "/local/domain/6/data/nothing", "Permission denied"),
        (5, "/local/domain/5/nothing", "No such file or directory"),
        (0, "/nothing", "No such file or directory"),
    ],
    ids=["unreadable", "missing-under-unreadable", "missing-under-readable", "dom0-missing"],
)
def test_errors_leak_nothing(granted: ServerThread, domid: int, path: str, error: str) -> None:
    result = tool(granted, "xenstore-ls", path, domid=domid)
    assert result.returncode == 1 and error in result.stderr


@pytest.mark.parametrize(
    ("domid", "kind", "payload", "expected"),
    [
        (5, MsgType.READ, b"/local/domain/6/data/secret\0", "EACCES"),
        (5, MsgType.READ, b"/granted\0", "EACCES"),
        (5, MsgType.READ, b"data/nothing\0", "ENOENT"),
        (5, MsgType.SET_PERMS, b"data\0n6\0", "EPERM"),
        (5, MsgType.INTRODUCE, b"7\0" + b"0\0" + b"1\0", "EACCES"),
        (5, MsgType.RELEASE, b"6\0", "EACCES"),
        (5, MsgType.CONTROL, b"release\x006\0", "EACCES"),
        (0, MsgType.RELEASE, b"0\0", "EINVAL"),
        (0, MsgType.RELEASE, b"9\0", "ENOENT"),
        (0, MsgType.TRANSACTION_END, b"T\0", "ENOENT"),
        (0, MsgType.UNWATCH, b"/x\0tok\0", "ENOENT"),
    ],
    ids=[
        "read-other-domain",
        "read-write-only-grant",
        "missing",
        "give-away",
        "guest-introduce",
        "guest-release",
        "guest-control",
        "release-dom0",
        "release-unknown",
        "end-without-transaction",
        "unwatch-unknown",
    ],
)
def test_error_names_on_the_wire(
    granted: ServerThread, domid: int, kind: int, payload: bytes, expected: str
) -> None:
    async def ask() -> str:
        client = await XsClient.connect(granted.socket(domid))
        try:
            with pytest.raises(XsError) as caught:
                await client.request(kind, payload)
            return caught.value.name
        finally:
            await client.close()

    assert granted.call(ask()) == expected


def test_privileged_wire_requests(xenstored: ServerThread) -> None:
    async def talk() -> list[bytes]:
        client = await XsClient.connect(xenstored.socket())
        try:
            return [
                await client.request(MsgType.GET_DOMAIN_PATH, b"12\0"),
                await client.request(MsgType.IS_DOMAIN_INTRODUCED, b"5\0"),
                await client.request(MsgType.IS_DOMAIN_INTRODUCED, b"8\0"),
                await client.request(MsgType.INTRODUCE, b"8\x000\x001\0"),
                await client.request(MsgType.IS_DOMAIN_INTRODUCED, b"8\0"),
            ]
        finally:
            await client.close()

    assert xenstored.call(talk()) == [b"/local/domain/12\0", b"T\0", b"F\0", b"OK\0", b"T\0"]
    assert xenstored.socket(8).exists()  # a wire INTRODUCE opens the domain's socket
    assert tool(xenstored, "xenstore-exists", "/local/domain/8").returncode == 1  # no nodes


def test_transactions(xenstored: ServerThread) -> None:
    async def talk() -> None:
        client = await XsClient.connect(xenstored.socket())
        other = await XsClient.connect(xenstored.socket())
        try:
            tx = int((await client.request(MsgType.TRANSACTION_START, b"\0")).rstrip(b"\0"))
            await client.write("/tx", b"inside", tx)
            with pytest.raises(XsError, match="ENOENT"):
                await other.read("/tx")
            assert await client.read("/tx", tx) == b"inside"
            await client.request(MsgType.TRANSACTION_END, b"T\0", tx)
            assert await other.read("/tx") == b"inside"

            tx = int((await client.request(MsgType.TRANSACTION_START, b"\0")).rstrip(b"\0"))
            await client.write("/tx", b"loser", tx)
            await other.write("/elsewhere", b"meanwhile")
            with pytest.raises(XsError, match="EAGAIN"):
                await client.request(MsgType.TRANSACTION_END, b"T\0", tx)
            assert await other.read("/tx") == b"inside"
        finally:
            await client.close()
            await other.close()

    xenstored.call(talk())


# --- watches --------------------------------------------------------------------------


def test_watch_fires_at_setup_and_on_changes_below(
    xenstored: ServerThread, watch: WatchFactory
) -> None:
    ok(xenstored, "xenstore-write", "/w", "")
    events = watch("/w")
    assert events.line() == "/w"  # once when set up
    ok(xenstored, "xenstore-write", "/w/a", "1")
    ok(xenstored, "xenstore-write", "/sibling", "not watched")
    ok(xenstored, "xenstore-write", "/w", "changed")
    ok(xenstored, "xenstore-chmod", "/w/a", "n0", "r5")
    ok(xenstored, "xenstore-rm", "/w/a")
    assert events.lines(4) == ["/w/a", "/w", "/w/a", "/w/a"]
    assert events.line(timeout=0.3) is None


def test_watch_on_removed_subtree_reports_the_watched_path(
    xenstored: ServerThread, watch: WatchFactory
) -> None:
    ok(xenstored, "xenstore-write", "/r/deep/leaf", "x")
    events = watch("/r/deep/leaf")
    assert events.line() == "/r/deep/leaf"
    ok(xenstored, "xenstore-rm", "/r")
    assert events.line() == "/r/deep/leaf"


def test_relative_watch_reports_relative_paths(
    xenstored: ServerThread, watch: WatchFactory
) -> None:
    events = watch("data", domid=5)
    assert events.line() == "data"
    ok(xenstored, "xenstore-write", "data/x", "1", domid=5)
    assert events.line() == "data/x"


def test_watch_does_not_leak_unreadable_changes(
    xenstored: ServerThread, watch: WatchFactory
) -> None:
    events = watch("/local/domain/5/data/secret", "data/marker", domid=6)
    assert sorted(map(str, events.lines(2))) == ["/local/domain/5/data/secret", "data/marker"]
    ok(xenstored, "xenstore-write", "/local/domain/5/data/secret", "hidden from 6")
    ok(xenstored, "xenstore-write", "/local/domain/6/data/marker", "visible")
    assert events.line() == "data/marker"
    assert events.line(timeout=0.3) is None


def test_release_domain_watch(xenstored: ServerThread, watch: WatchFactory) -> None:
    dom0 = watch("@releaseDomain", "@introduceDomain")
    guest = watch("@releaseDomain", domid=5)
    assert sorted(map(str, dom0.lines(2))) == ["@introduceDomain", "@releaseDomain"]
    assert guest.line() == "@releaseDomain"
    xenstored.release(6)
    assert dom0.line() == "@releaseDomain"
    xenstored.introduce(7)
    assert dom0.line() == "@introduceDomain"
    assert guest.line(timeout=0.3) is None  # special events are Dom0's unless granted


def test_release_removes_the_domain(xenstored: ServerThread) -> None:
    ok(xenstored, "xenstore-write", "/shared", "")
    ok(xenstored, "xenstore-chmod", "/shared", "n0", "w6")
    ok(xenstored, "xenstore-write", "/shared/by-six", "x", domid=6)
    ok(xenstored, "xenstore-write", "/acl", "")
    ok(xenstored, "xenstore-chmod", "/acl", "n0", "r6")
    xenstored.release(6)
    assert tool(xenstored, "xenstore-exists", "/local/domain/6").returncode == 1
    assert tool(xenstored, "xenstore-exists", "/shared/by-six").returncode == 1
    assert not xenstored.socket(6).exists()
    assert tool(xenstored, "xenstore-read", "/acl", domid=6).returncode != 0
    xenstored.introduce(6)  # the same domid again inherits no old grant
    assert tool(xenstored, "xenstore-read", "/acl", domid=6).returncode == 1


def test_release_drops_the_domains_connections(xenstored: ServerThread) -> None:
    async def talk() -> None:
        client = await XsClient.connect(xenstored.socket(5))
        try:
            assert await client.read("domid") == b"5"
            await xenstored_release(5)
            with pytest.raises(ConnectionError):
                await client.read("domid")
        finally:
            await client.close()

    async def xenstored_release(domid: int) -> None:
        await xenstored.server.release_domain(domid)

    xenstored.call(talk())


# --- bad input ------------------------------------------------------------------------

HEADER = struct.Struct("=IIII")


def _closed_by_server(sock: socket.socket) -> bool:
    """Reads until the server closes the connection (True) or goes quiet (False)."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (HEADER.pack(MsgType.READ, 1, 0, 4097), "closed"),
        (HEADER.pack(MsgType.WRITE, 1, 0, 0xFFFFFFFF), "closed"),
        (HEADER.pack(999, 1, 0, 0), "ENOSYS"),
        (HEADER.pack(20, 1, 0, 0), "ENOSYS"),
        (HEADER.pack(MsgType.WATCH_EVENT, 1, 0, 0), "ENOSYS"),
        (HEADER.pack(MsgType.ERROR, 1, 0, 0), "ENOSYS"),
        (HEADER.pack(MsgType.READ, 1, 0, 3) + b"abc", "EINVAL"),
        (HEADER.pack(MsgType.READ, 1, 0, 4) + b"a\0b\0", "EINVAL"),
        (HEADER.pack(MsgType.READ, 1, 0, 5) + b"/a b\0", "EINVAL"),
        (HEADER.pack(MsgType.READ, 1, 0, 3) + b"/\xff\0", "EINVAL"),
        (HEADER.pack(MsgType.READ, 1, 0, 5) + b"/a//\0", "EINVAL"),
        (HEADER.pack(MsgType.READ, 1, 77, 7) + b"/local\0", "ENOENT"),
        (HEADER.pack(MsgType.WATCH, 1, 0, 3) + b"/a\0", "EINVAL"),
        (HEADER.pack(MsgType.SET_PERMS, 1, 0, 6) + b"/x\0zz\0", "EINVAL"),
        (HEADER.pack(MsgType.WRITE, 1, 0, 2) + b"/a", "EINVAL"),
        (HEADER.pack(MsgType.DIRECTORY_PART, 1, 0, 2) + b"/\0", "EINVAL"),
        (HEADER.pack(MsgType.TRANSACTION_END, 1, 0, 2) + b"X\0", "EINVAL"),
        (HEADER.pack(MsgType.CONTROL, 1, 0, 4) + b"zap\0", "EINVAL"),
        (HEADER.pack(MsgType.READ, 1, 0, 8)[:10], "silent"),
        (bytes(range(256)) * 64, "closed"),
    ],
    ids=[
        "oversized-length",
        "huge-length",
        "unknown-type",
        "removed-restrict",
        "client-watch-event",
        "client-error",
        "no-nul",
        "two-strings",
        "space-in-path",
        "non-ascii",
        "double-slash",
        "unknown-transaction",
        "watch-without-token",
        "bad-permission",
        "write-without-nul",
        "directory-part-without-offset",
        "transaction-end-not-t-or-f",
        "unknown-control",
        "truncated-header",
        "garbage",
    ],
)
def test_bad_input_never_takes_the_server_down(
    xenstored: ServerThread, data: bytes, expected: str
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TOOL_TIMEOUT)
        sock.connect(str(xenstored.socket()))
        sock.sendall(data)
        if expected == "silent":
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(64)
        elif expected == "closed":
            assert _closed_by_server(sock)
        else:
            reply = sock.recv(64)
            kind, req_id, _, length = HEADER.unpack(reply[:16])
            assert (kind, req_id) == (MsgType.ERROR, 1)
            assert reply[16 : 16 + length] == expected.encode() + b"\0"
    assert ok(xenstored, "xenstore-read", "/local/domain/0/name") == "Domain-0\n"


def test_socket_path_too_long_is_refused(short_tmp: Path) -> None:
    server = XenstoredServer(short_tmp / ("d" * 120))
    with pytest.raises(ValueError, match="longer than"):
        asyncio.run(server.start())


# --- the command line -----------------------------------------------------------------


def test_cli_serves_until_terminated(short_tmp: Path) -> None:
    need_tools(*XENSTORE_TOOLS)
    directory = short_tmp / "cli"
    base = [sys.executable, "-m", "metadata_server_testbed.xen.xenstored", "--dir", str(directory)]
    proc = subprocess.Popen(
        [*base, "--domain", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"XENSTORED_PATH={directory}/socket"
        env5 = {**os.environ, "XENSTORED_PATH": str(directory / "domain-5.sock")}
        read = subprocess.run(
            ["xenstore-read", "domid"], env=env5, capture_output=True, text=True, timeout=10
        )
        assert read.stdout == "5\n"
        control = subprocess.run([*base, "introduce", "7"], capture_output=True, timeout=30)
        assert control.returncode == 0, control.stderr
        assert (directory / "domain-7.sock").exists()
        control = subprocess.run([*base, "release", "5"], capture_output=True, timeout=30)
        assert control.returncode == 0, control.stderr
        assert not (directory / "domain-5.sock").exists()
        control = subprocess.run([*base, "release", "5"], capture_output=True, timeout=30)
        assert control.returncode == 1 and b"ENOENT" in control.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not list(directory.glob("*sock*"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
