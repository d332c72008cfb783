"""`metadata-server iso ...`: the ISO fallback, through the admin API.

    iso build --mac MAC --out FILE [--layout nocloud|configdrive]
    iso provision --mac MAC [--domid N] [--timeout SECONDS] [--layout ...]

`build` fetches the guest's ISO (GET /api/v1/vms/{mac}/iso) and writes it to FILE with
mode 0600 (it holds the password hash and user-data), through a temporary file renamed
into place, so FILE is either the whole image or untouched. `provision` runs the whole
flow on the server (POST /api/v1/vms/{mac}/iso-provision) and prints the final state;
it exits 1 with the reason when the flow failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metadata_server.cli.client import AdminClient, CommandError
from metadata_server.cli.vm import run_admin_command
from metadata_server.digits import integer, number

LAYOUTS = ("nocloud", "configdrive")
DOWNLOAD_TIMEOUT = 60.0
REPLY_MARGIN = 60.0  # seconds the client waits past the flow's own timeout


def add_parsers(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    def new(name: str, help_text: str, handler: Callable[..., Any]) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        add_common(p)
        p.add_argument("--url", help="admin API URL (default: from admin.listen)")
        p.add_argument("--json", action="store_true", help="print JSON for scripts")
        p.add_argument("--mac", required=True, help="the guest's MAC address")
        p.add_argument("--layout", choices=LAYOUTS, help="default: the server's (nocloud)")
        p.set_defaults(
            handler=lambda args, settings_from: run_admin_command(args, settings_from, handler)
        )
        return p

    p = new("build", "write a guest's configuration ISO to a file (mode 0600)", _build)
    p.add_argument("--out", required=True, type=Path, metavar="FILE")

    p = new("provision", "configure a guest from an ISO: attach, wait, detach", _provision)
    p.add_argument("--domid", type=integer, help="the guest's domain (default: found by its MAC)")
    p.add_argument("--timeout", type=number, metavar="SECONDS", help="default: the server's")


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` (0600) through a temporary file in the same directory."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(partial, flags, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(data)
        finally:
            os.close(fd)
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


async def _build(client: AdminClient, args: argparse.Namespace) -> str:
    params = {"layout": args.layout} if args.layout else {}
    _, data = await client.request_bytes(
        "GET", f"/api/v1/vms/{args.mac}/iso", params=params, timeout=DOWNLOAD_TIMEOUT
    )
    await asyncio.to_thread(_write_private, args.out, data)
    if args.json:
        return json.dumps({"mac": args.mac, "out": str(args.out), "bytes": len(data)})
    return f"wrote {args.out} ({len(data)} bytes)"


async def _provision(client: AdminClient, args: argparse.Namespace) -> str:
    body: dict[str, Any] = {}
    if args.domid is not None:
        body["domid"] = args.domid
    if args.timeout is not None:
        body["timeout"] = args.timeout
    if args.layout:
        body["layout"] = args.layout
    wait = (args.timeout if args.timeout is not None else 3600.0) + REPLY_MARGIN
    reply = await client.request(
        "POST", f"/api/v1/vms/{args.mac}/iso-provision", json_body=body, timeout=wait
    )
    result = reply.body
    if args.json:
        return json.dumps(result, indent=2)
    text = f"{result['mac']}: {result['state']} (domain {result['domid']}, {result['layout']})"
    return text + (f": {result['message']}" if result.get("message") else "")
