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

import aiohttp

from metadata_server.admin_token import load_client_token
from metadata_server.cli.client import AdminClient, CommandError
from metadata_server.cli.vm import url_of
from metadata_server.config import Settings

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
        p.set_defaults(handler=lambda args, settings_from: _run(args, settings_from, handler))
        return p

    p = new("build", "write a guest's configuration ISO to a file (mode 0600)", _build)
    p.add_argument("--out", required=True, type=Path, metavar="FILE")

    p = new("provision", "configure a guest from an ISO: attach, wait, detach", _provision)
    p.add_argument("--domid", type=int, help="the guest's domain (default: found by its MAC)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="default: the server's")


def _run(
    args: argparse.Namespace,
    settings_from: Callable[..., Settings],
    handler: Callable[[AdminClient, argparse.Namespace], Any],
) -> int:
    settings = settings_from(args, {})
    url = args.url or url_of(settings)
    client = AdminClient(url, load_client_token(settings))
    result = asyncio.run(handler(client, args))
    if result is not None:
        print(result)
    return 0


async def _download(client: AdminClient, path: str, params: dict[str, str]) -> bytes:
    """GET `path` and return the raw body (AdminClient decodes bodies as text)."""
    unix = client.url.removeprefix("unix:") if client.url.startswith("unix:") else None
    base = "http://localhost" if unix else client.url.rstrip("/")
    connector = aiohttp.UnixConnector(path=unix) if unix else None
    headers = {"Authorization": f"Bearer {client.token}"}
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT)
            ) as session,
            session.get(base + path, params=params, headers=headers) as response,
        ):
            body = await response.read()
            status = response.status
    except aiohttp.ClientConnectionError as exc:
        raise CommandError(f"cannot reach the admin API at {client.url}: {exc}") from None
    except TimeoutError:
        raise CommandError(f"the admin API at {client.url} did not answer in time") from None
    if status >= 400:
        try:
            error = json.loads(body)
            detail = f"{error['detail']} [HTTP {status}]"
        except (ValueError, KeyError, TypeError):
            detail = f"the admin API answered HTTP {status}"
        raise CommandError(detail)
    return body


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
    data = await _download(client, f"/api/v1/vms/{args.mac}/iso", params)
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
