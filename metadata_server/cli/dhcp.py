"""`metadata-server dhcp ...`: render the DHCP files from the registry, check them with
the daemon's own checker, and the lease hook that DHCP daemons run.

`render` and `check` read the registry directly (the database named by `--db` or the
configuration), so they work whether or not the server runs. `lease-hook` reports a
lease to the running server's admin API.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from metadata_server.admin_token import load_client_token
from metadata_server.cli.client import CommandError
from metadata_server.cli.lease_hook import LeaseHookError, lease_reports, report_lease
from metadata_server.cli.vm import url_of
from metadata_server.config import Settings
from metadata_server.dhcp.commands import DaemonError
from metadata_server.dhcp.render import DAEMON_FILES, DAEMONS, Rendered, render
from metadata_server.dhcp.service import daemon_for, dhcp_plan
from metadata_server.dhcp.templates import template_environment
from metadata_server.store import open_store

LEASE_TIMEOUT = 5.0


def add_parsers(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p: argparse.ArgumentParser = commands.add_parser(
        "render", help="print (or write) the DHCP files the registry gives"
    )
    add_common(p)
    p.add_argument("--db", help="registry (default: from the configuration)")
    p.add_argument("--daemon", choices=DAEMONS, help="default: dhcp.daemon")
    p.add_argument(
        "--out", type=Path, help="a file (kea, dhcpd), or a directory for dnsmasq's two files"
    )
    p.set_defaults(handler=_render)

    p = commands.add_parser("check", help="render and check with the daemon's own checker")
    add_common(p)
    p.add_argument("--db", help="registry (default: from the configuration)")
    p.add_argument("--daemon", choices=DAEMONS, help="default: dhcp.daemon")
    p.set_defaults(handler=_check)

    p = commands.add_parser(
        "lease-hook",
        help="report a lease (dnsmasq --dhcp-script, Kea run_script)",
        description="dnsmasq runs it as: lease-hook add|old|del MAC IP [HOSTNAME]; "
        "Kea's run_script hook as: lease-hook EVENT (leases in LEASE4_*/LEASES4_AT<n>_*).",
    )
    add_common(p)
    p.add_argument("--url", help="admin API URL (default: from admin.listen)")
    p.add_argument("event")
    p.add_argument("args", nargs="*")
    p.set_defaults(handler=_lease_hook)


async def _files(settings: Settings, daemon: str) -> Rendered:
    store = open_store(settings.db)
    await store.open()
    try:
        vms = await store.list()
    finally:
        await store.close()
    return render(daemon, vms, dhcp_plan(settings), template_environment(settings.dhcp.templates))


def _left_out(rendered: Rendered) -> list[str]:
    return [f"guest {g.mac} ({g.address}) left out: {g.reason}" for g in rendered.left_out]


def _settings(
    args: argparse.Namespace, settings_from: Callable[..., Settings]
) -> tuple[Settings, str]:
    settings = settings_from(args, {"db": args.db})
    daemon = args.daemon or settings.dhcp.daemon
    if daemon == "none":
        raise CommandError("no DHCP daemon: give --daemon or set dhcp.daemon")
    if not settings.dhcp.subnets:
        raise CommandError("no subnets: configure [[dhcp.subnets]]")
    return settings, daemon


def _render(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    settings, daemon = _settings(args, settings_from)
    rendered = asyncio.run(_files(settings, daemon))
    for line in _left_out(rendered):  # the files hold every other guest
        print(f"metadata-server: {line}", file=sys.stderr)
    files = rendered.files
    if args.out is None:
        for name, text in files.items():
            if len(files) > 1:
                print(f"# ==> {name} <==")
            sys.stdout.write(text)
        return 0
    try:
        if len(DAEMON_FILES[daemon]) > 1:
            args.out.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (args.out / name).write_text(text)
        else:
            args.out.write_text(next(iter(files.values())))
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror}") from None
    return 0


def _check(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    settings, daemon = _settings(args, settings_from)
    settings = _with_daemon(settings, daemon)

    async def check() -> Rendered:
        rendered = await _files(settings, daemon)
        await daemon_for(settings).check(rendered.files)
        return rendered

    try:
        rendered = asyncio.run(check())
    except DaemonError as exc:
        raise CommandError(exc.detail) from None
    count = len(rendered.files)
    if rendered.left_out:  # the daemon would run, but without these guests
        raise CommandError("; ".join(_left_out(rendered)))
    print(f"{daemon}: the rendered configuration passes its checker ({count} file(s))")
    return 0


def _with_daemon(settings: Settings, daemon: str) -> Settings:
    return replace(settings, dhcp=replace(settings.dhcp, daemon=daemon))


def _lease_hook(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    """The hook without --url/--admin-token-file: both come from the configuration.
    (With both given, cli/main.py runs lease_hook.quick without loading this module.)"""
    reports = [
        (mac, ip)
        for mac, ip in lease_reports(args.event, args.args, dict(os.environ))
        if mac and ip
    ]
    if not reports:
        return 0
    settings = settings_from(args, {})
    url, token = args.url or url_of(settings), load_client_token(settings)
    try:
        for mac, address in reports:
            report_lease(url, token, mac, address)
    except LeaseHookError as exc:
        raise CommandError(str(exc)) from None
    return 0
