"""A small xenstored for hosts without Xen: the real `xenstore-*` tools talk to it.

Debian's xenstore-utils (libxenstore) connect to the unix socket named by the
environment variable XENSTORED_PATH and speak the xenstored wire protocol
(`xs_wire`); this server answers with the semantics of Xen 4.17's xenstored (`xs_tree`):
permissions, relative paths, transactions, watches that fire once when set up and on
every change at or below their path, and the special watches @introduceDomain and
@releaseDomain.

One process on one unix socket looks like Dom0 to a real xenstored, so **each domain
gets its own socket**: `<dir>/socket` is Dom0's (privileged), and introducing domain N
creates `<dir>/domain-<N>.sock`, where every connection *is* domain N (unprivileged,
relative paths under /local/domain/N). A test plays guest N by running the real tool
with `XENSTORED_PATH=<dir>/domain-<N>.sock`. Releasing N closes that socket and drops
its connections.

Control, besides the wire protocol's own INTRODUCE/RELEASE (which, as in xenstored,
create no nodes):

- Python: `XenstoredServer.introduce_domain(N)` does what `xl create` does to the store
  (libxl's layout: /local/domain/N readable by N, data/ owned by N, ...) and introduces
  N; `release_domain(N)` does what a dying guest and `xl destroy` do (xenstored deletes
  what N owned and fires @releaseDomain, then the toolstack removes /local/domain/N).
- Wire: a CONTROL request `introduce|N|[name|]` or `release|N|` on Dom0's socket does
  the same; the CLI below sends it.
- CLI: `python -m metadata_server_testbed.xen.xenstored --dir DIR [--domain N]...` serves
  until SIGTERM or SIGINT (printing `XENSTORED_PATH=DIR/socket` when ready);
  `... --dir DIR introduce N` and `... --dir DIR release N` control a running one.

Bad input never takes the server down: an oversized length closes that connection (as
xenstored does), a malformed request gets an error reply, and a client that stops
reading its watch events is dropped. This is a test and comparison stand-in: it keeps
everything in memory and must never be pointed at by a real Xen host's tools.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from metadata_server.digits import integer
from metadata_server_testbed.xen.xs_tree import (
    MAX_TRANSACTIONS,
    MAX_VALUE_SIZE,
    MAX_WATCHES,
    Caller,
    Change,
    Store,
    Transaction,
    is_under,
    may_see,
)
from metadata_server_testbed.xen.xs_wire import (
    DOMID_SELF,
    HEADER_SIZE,
    PAYLOAD_MAX,
    Header,
    MsgType,
    XsError,
    c_atoi,
    error_frame,
    frame,
    join_strings,
    one_arg,
    parse_header,
    strings,
)

log = logging.getLogger(__name__)

DOM0_SOCKET = "socket"
MAX_PENDING_OUTPUT = 1 << 20  # a client this far behind on its events is dropped
MAX_SOCKET_PATH = 107  # sizeof(sockaddr_un.sun_path) - 1
OK = b"OK\0"


def domain_socket_name(domid: int) -> str:
    return DOM0_SOCKET if domid == 0 else f"domain-{domid}.sock"


@dataclass
class Watch:
    path: str  # absolute, or @special
    token: bytes
    prefix: str | None  # set up with a relative path: events are reported relative to it

    def shown(self, path: str) -> str:
        if self.prefix is not None and path.startswith(self.prefix):
            return path[len(self.prefix) :]
        return path


class Connection(asyncio.Protocol):
    """One client socket, acting as domain `domid`."""

    def __init__(self, server: XenstoredServer, domid: int) -> None:
        self.server = server
        self.domid = domid
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.watches: list[Watch] = []
        self.transactions: dict[int, Transaction] = {}
        self.next_tx_id = 1
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        while not self.closed and len(self.buffer) >= HEADER_SIZE:
            header = parse_header(bytes(self.buffer[:HEADER_SIZE]))
            if header.length > PAYLOAD_MAX:
                log.warning(
                    "domain %s sent a %s-byte payload (limit %s): dropping the connection",
                    self.domid,
                    header.length,
                    PAYLOAD_MAX,
                )
                self.abort()
                return
            end = HEADER_SIZE + header.length
            if len(self.buffer) < end:
                return
            payload = bytes(self.buffer[HEADER_SIZE:end])
            del self.buffer[:end]
            self.server.handle(self, header, payload)

    def send(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() > MAX_PENDING_OUTPUT:
            log.warning("domain %s does not read its replies: dropping the connection", self.domid)
            self.abort()
            return
        self.transport.write(data)

    def send_event(self, path: str, token: bytes) -> None:
        payload = path.encode() + b"\0" + token + b"\0"
        if len(payload) <= PAYLOAD_MAX:  # xenstored drops over-long events too
            self.send(frame(MsgType.WATCH_EVENT, 0, 0, payload))

    def abort(self) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.transport is not None:
            self.transport.abort()


@dataclass
class _Listener:
    path: Path
    sock: socket.socket
    task: asyncio.Task[asyncio.Server]


Handler = Callable[[Connection, Header, bytes, Transaction | None], bytes | None]


@dataclass(frozen=True)
class _Route:
    handler: Handler
    privileged: bool = False
    ignores_tx: bool = False  # XS_FLAG_NOTID: the tx_id of the request is not looked up


class XenstoredServer:
    """The daemon: a store, Dom0's socket, one socket per introduced domain."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.store = Store()
        self.connections: set[Connection] = set()
        self._listeners: dict[int, _Listener] = {}
        self._routes: dict[int, _Route] = {
            MsgType.CONTROL: _Route(self._control, privileged=True),
            MsgType.DIRECTORY: _Route(self._directory),
            MsgType.READ: _Route(self._read),
            MsgType.GET_PERMS: _Route(self._get_perms),
            MsgType.WATCH: _Route(self._watch, ignores_tx=True),
            MsgType.UNWATCH: _Route(self._unwatch, ignores_tx=True),
            MsgType.TRANSACTION_START: _Route(self._transaction_start),
            MsgType.TRANSACTION_END: _Route(self._transaction_end),
            MsgType.INTRODUCE: _Route(self._introduce, privileged=True),
            MsgType.RELEASE: _Route(self._release, privileged=True),
            MsgType.GET_DOMAIN_PATH: _Route(self._get_domain_path),
            MsgType.WRITE: _Route(self._write),
            MsgType.MKDIR: _Route(self._mkdir),
            MsgType.RM: _Route(self._rm),
            MsgType.SET_PERMS: _Route(self._set_perms),
            MsgType.IS_DOMAIN_INTRODUCED: _Route(self._is_domain_introduced, privileged=True),
            MsgType.RESUME: _Route(self._resume, privileged=True),
            MsgType.SET_TARGET: _Route(self._set_target, privileged=True),
            MsgType.RESET_WATCHES: _Route(self._reset_watches),
            MsgType.DIRECTORY_PART: _Route(self._directory_part),
        }

    # --- the control API -------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        """Dom0's socket: XENSTORED_PATH for the host's own tools."""
        return self.directory / DOM0_SOCKET

    def domain_socket(self, domid: int) -> Path:
        """Where domain `domid` connects (Dom0's socket for 0)."""
        return self.directory / domain_socket_name(domid)

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._listen(0)
        await self._listeners[0].task
        log.info("xenstored stand-in listening on %s", self.socket_path)

    async def stop(self) -> None:
        for domid in list(self._listeners):
            self._close_domain(domid)
        for conn in list(self.connections):
            conn.abort()
        await asyncio.sleep(0)  # let the transports run their connection_lost

    async def introduce_domain(self, domid: int, name: str | None = None) -> Path:
        """Create domain `domid` as `xl create` would, and return its socket."""
        self.create_domain(domid, name)
        await self._listeners[domid].task
        return self.domain_socket(domid)

    async def release_domain(self, domid: int) -> None:
        """Destroy domain `domid` as a guest dying and `xl destroy` would."""
        self.destroy_domain(domid)
        await asyncio.sleep(0)

    def create_domain(self, domid: int, name: str | None = None) -> None:
        """Synchronous core of introduce_domain (its socket accepts connections at once,
        the server starts serving them on the next loop iteration)."""
        if self.store.is_introduced(domid):
            raise XsError("EEXIST")
        introduced = self.store.introduce(domid)
        dom0 = Caller(0)
        base = f"/local/domain/{domid}"
        readable = [b"n0", f"r{domid}".encode()]  # libxl's roperm: Dom0's, N may read
        owned = [f"n{domid}".encode()]  # libxl's rwperm: N's own
        values = {"domid": str(domid).encode(), "name": (name or f"domain{domid}").encode()}
        changes = self.store.rm(dom0, base)
        changes += self.store.mkdir(dom0, base)
        changes += self.store.set_perms(dom0, base, readable)
        for key, value in values.items():
            changes += self.store.write(dom0, f"{base}/{key}", value)
        for sub, perms in (("device", readable), ("control", readable), ("data", owned)):
            changes += self.store.mkdir(dom0, f"{base}/{sub}")
            changes += self.store.set_perms(dom0, f"{base}/{sub}", perms)
        self._listen(domid)
        self._fire([*changes, *introduced])
        log.info("domain %s introduced on %s", domid, self.domain_socket(domid))

    def destroy_domain(self, domid: int) -> None:
        """Synchronous core of release_domain."""
        self._close_domain(domid)
        changes = self.store.release(domid)
        changes += self.store.rm(Caller(0), f"/local/domain/{domid}")
        self._fire(changes)
        log.info("domain %s released", domid)

    # --- sockets -----------------------------------------------------------------------

    def _listen(self, domid: int) -> None:
        path = self.domain_socket(domid)
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ValueError(f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a killed server
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_unix_server(lambda: Connection(self, domid), sock=sock))
        self._listeners[domid] = _Listener(path, sock, task)

    def _close_domain(self, domid: int) -> None:
        listener = self._listeners.pop(domid, None)
        if listener is not None:
            if listener.task.done() and not listener.task.cancelled():
                if listener.task.exception() is None:
                    listener.task.result().close()
            else:
                listener.task.cancel()
            listener.sock.close()
            with contextlib.suppress(FileNotFoundError):
                listener.path.unlink()
        for conn in list(self.connections):
            if conn.domid == domid:
                conn.abort()

    # --- requests ----------------------------------------------------------------------

    def handle(self, conn: Connection, header: Header, payload: bytes) -> None:
        """Answer one request; whatever goes wrong, the server keeps running."""
        try:
            reply = self._dispatch(conn, header, payload)
        except XsError as error:
            conn.send(error_frame(header.req_id, header.tx_id, error.name))
            return
        except Exception:
            log.exception("request %s from domain %s failed", header.type, conn.domid)
            conn.send(error_frame(header.req_id, header.tx_id, "EIO"))
            return
        if reply is None:
            return
        if len(reply) > PAYLOAD_MAX:
            conn.send(error_frame(header.req_id, header.tx_id, "E2BIG"))
            return
        conn.send(frame(header.type, header.req_id, header.tx_id, reply))

    def _dispatch(self, conn: Connection, header: Header, payload: bytes) -> bytes | None:
        route = self._routes.get(header.type)
        if route is None:  # unknown, removed (RESTRICT), or only sent by the daemon
            raise XsError("ENOSYS")
        if route.privileged and conn.domid != 0:
            raise XsError("EACCES")
        tx = None
        if not route.ignores_tx and header.tx_id != 0:
            tx = conn.transactions.get(header.tx_id)
            if tx is None:
                raise XsError("ENOENT")
        return route.handler(conn, header, payload, tx)

    def _caller(self, conn: Connection) -> Caller:
        return self.store.caller(conn.domid)

    def _path(self, conn: Connection, raw: bytes | None, *, special: bool = False) -> str:
        return self.store.canonical(self._caller(conn), raw, special=special)

    def _fire(self, changes: Sequence[Change]) -> None:
        for change in changes:
            for conn in list(self.connections):
                if conn.closed or not conn.watches:
                    continue
                if not may_see(self._caller(conn), change, self.store.special_perms):
                    continue
                for watch in list(conn.watches):
                    hit = (
                        watch.path == change.path
                        if change.exact
                        else is_under(change.path, watch.path)
                    )
                    if hit:
                        conn.send_event(watch.shown(change.path), watch.token)

    def _control(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        args = strings(payload)
        if not args:
            raise XsError("EINVAL")
        command, rest = args[0], args[1:]
        if command == b"help":
            return b"introduce <domid> [name]\nrelease <domid>\n\0"
        if command == b"introduce" and rest:
            name = rest[1].decode("utf-8", "replace") if len(rest) > 1 else None
            self.create_domain(_domid(rest[0]), name)
            return OK
        if command == b"release" and rest:
            self.destroy_domain(_domid(rest[0]))
            return OK
        raise XsError("EINVAL")

    def _directory(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        path = self._path(conn, one_arg(payload))
        children = self.store.directory(self._caller(conn), path, tx)
        return join_strings([name.encode() for name in children])

    def _directory_part(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        if payload.count(b"\0") != 2:
            raise XsError("EINVAL")
        raw_path, raw_offset = strings(payload)
        path = self._path(conn, raw_path)
        caller = self._caller(conn)
        listing = join_strings([name.encode() for name in self.store.directory(caller, path, tx)])
        generation = str(self.store.generation(caller, path, tx)).encode() + b"\0"
        offset = max(c_atoi(raw_offset), 0)
        if offset >= len(listing):
            return generation + b"\0"
        room = PAYLOAD_MAX - len(generation) - 1
        end = offset
        while end < len(listing):
            nul = listing.index(b"\0", end)
            if nul - offset >= room:
                break
            end = nul + 1
        part = generation + listing[offset:end]
        return part + b"\0" if end == len(listing) else part

    def _read(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        return self.store.read(self._caller(conn), self._path(conn, one_arg(payload)), tx)

    def _get_perms(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        path = self._path(conn, one_arg(payload), special=True)
        perms = self.store.get_perms(self._caller(conn), path, tx)
        return join_strings([str(perm).encode() for perm in perms])

    def _watch(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> None:
        args = strings(payload)
        if len(args) != 2:
            raise XsError("EINVAL")
        raw_path, token = args
        relative = not raw_path.startswith((b"/", b"@"))
        path = self._path(conn, raw_path, special=True)
        if any(w.path == path and w.token == token for w in conn.watches):
            raise XsError("EEXIST")
        if conn.domid != 0 and len(conn.watches) > MAX_WATCHES:
            raise XsError("E2BIG")
        watch = Watch(path, token, f"/local/domain/{conn.domid}/" if relative else None)
        conn.watches.append(watch)
        conn.send(frame(header.type, header.req_id, header.tx_id, OK))
        conn.send_event(watch.shown(path), token)  # every watch fires once when set up
        return None

    def _unwatch(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        args = strings(payload)
        if len(args) != 2:
            raise XsError("EINVAL")
        path = self._path(conn, args[0], special=True)
        for watch in conn.watches:
            if watch.path == path and watch.token == args[1]:
                conn.watches.remove(watch)
                return OK
        raise XsError("ENOENT")

    def _transaction_start(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        if tx is not None:
            raise XsError("EBUSY")  # no nested transactions
        if conn.domid != 0 and len(conn.transactions) > MAX_TRANSACTIONS:
            raise XsError("ENOSPC")
        while conn.next_tx_id == 0 or conn.next_tx_id in conn.transactions:
            conn.next_tx_id = (conn.next_tx_id + 1) & 0xFFFFFFFF
        tx_id = conn.next_tx_id
        conn.next_tx_id = (tx_id + 1) & 0xFFFFFFFF
        conn.transactions[tx_id] = self.store.begin(tx_id)
        return str(tx_id).encode() + b"\0"

    def _transaction_end(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        arg = one_arg(payload)
        if arg not in (b"T", b"F"):
            raise XsError("EINVAL")
        if tx is None:
            raise XsError("ENOENT")
        del conn.transactions[tx.id]
        if arg == b"T":
            self._fire(self.store.commit(tx))
        return OK

    def _introduce(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        args = strings(payload)
        if len(args) < 3 or c_atoi(args[2]) <= 0:  # domid, gfn, event channel
            raise XsError("EINVAL")
        domid = c_atoi(args[0])
        changes = self.store.introduce(domid)
        if domid not in self._listeners:
            self._listen(domid)
        self._fire(changes)
        return OK

    def _release(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        arg = one_arg(payload)
        if arg is None:
            raise XsError("EINVAL")
        domid = c_atoi(arg)
        if domid == 0:
            raise XsError("EINVAL")
        if not self.store.is_introduced(domid):
            raise XsError("ENOENT")
        self._close_domain(domid)  # xenstored drops the domain's watches first
        self._fire(self.store.release(domid))
        return OK

    def _get_domain_path(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        arg = one_arg(payload)
        if arg is None:
            raise XsError("EINVAL")
        return f"/local/domain/{c_atoi(arg) & 0xFFFFFFFF}".encode() + b"\0"

    def _write(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        if b"\0" not in payload:
            raise XsError("EINVAL")
        raw_path, value = payload.split(b"\0", 1)
        path = self._path(conn, raw_path)
        if len(value) > MAX_VALUE_SIZE:
            raise XsError("E2BIG")
        self._fire(self.store.write(self._caller(conn), path, value, tx))
        return OK

    def _mkdir(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        path = self._path(conn, one_arg(payload))
        self._fire(self.store.mkdir(self._caller(conn), path, tx))
        return OK

    def _rm(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        path = self._path(conn, one_arg(payload))
        self._fire(self.store.rm(self._caller(conn), path, tx))
        return OK

    def _set_perms(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        args = strings(payload)
        if len(args) < 2:
            raise XsError("EINVAL")
        path = self._path(conn, args[0], special=True)
        self._fire(self.store.set_perms(self._caller(conn), path, args[1:], tx))
        return OK

    def _is_domain_introduced(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        arg = one_arg(payload)
        if arg is None:
            raise XsError("EINVAL")
        domid = c_atoi(arg)
        return b"T\0" if domid == DOMID_SELF or self.store.is_introduced(domid) else b"F\0"

    def _resume(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        arg = one_arg(payload)
        if arg is None or c_atoi(arg) == 0:
            raise XsError("EINVAL")
        if not self.store.is_introduced(c_atoi(arg)):
            raise XsError("ENOENT")
        return OK

    def _set_target(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        args = strings(payload)
        if len(args) < 2:
            raise XsError("EINVAL")
        self.store.set_target(c_atoi(args[0]), c_atoi(args[1]))
        return OK

    def _reset_watches(
        self, conn: Connection, header: Header, payload: bytes, tx: Transaction | None
    ) -> bytes:
        conn.watches.clear()
        conn.transactions.clear()
        return OK


def _domid(raw: bytes) -> int:
    if not raw.isdigit():
        raise XsError("EINVAL")
    return int(raw)


# --- command line ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m metadata_server_testbed.xen.xenstored",
        description="A xenstored stand-in for hosts without Xen (tests, comparison harness).",
    )
    p.add_argument("--dir", required=True, type=Path, help="directory for the sockets")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning"))
    p.add_argument(
        "--domain", type=integer, action="append", default=[], help="serve with domain N created"
    )
    sub = p.add_subparsers(dest="command")
    sub.add_parser("serve", help="run until SIGTERM or SIGINT (the default)")
    introduce = sub.add_parser("introduce", help="create domain N on a running server")
    introduce.add_argument("domid", type=integer)
    introduce.add_argument("--name")
    release = sub.add_parser("release", help="destroy domain N on a running server")
    release.add_argument("domid", type=integer)
    return p


async def _serve(directory: Path, domains: list[int]) -> None:
    server = XenstoredServer(directory)
    await server.start()
    try:
        for domid in domains:
            await server.introduce_domain(domid)
        print(f"XENSTORED_PATH={server.socket_path}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await server.stop()


async def _control(directory: Path, *args: str) -> None:
    from metadata_server_testbed.xen.xs_client import XsClient

    client = await XsClient.connect(directory / DOM0_SOCKET)
    try:
        await client.control(*args)
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "introduce":
            extra = [args.name] if args.name else []
            asyncio.run(_control(args.dir, "introduce", str(args.domid), *extra))
        elif args.command == "release":
            asyncio.run(_control(args.dir, "release", str(args.domid)))
        else:
            asyncio.run(_serve(args.dir, args.domain))
    except (OSError, ValueError, XsError) as error:
        print(f"xenstored: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
