"""`metadata-server serve`: run the service until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import signal
import sys
from collections.abc import Callable
from typing import Any

from metadata_server.app import MetadataService
from metadata_server.config import Settings
from metadata_server.demo import demo_instructions, ensure_demo_guest
from metadata_server.errors import ConfigError

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="registry: an SQLite path or a postgresql:// URL")
    p.add_argument("--host-name", help="this Dom0's name: serve and DHCP only its own guests")
    p.add_argument("--guest-listen", action="append", help="guest API HOST:PORT (repeatable)")
    p.add_argument("--admin-listen", help="admin API HOST:PORT or unix:/path")
    p.add_argument("--trust-proxy", action="append", help="CIDR whose X-Forwarded-For counts")
    p.add_argument("--verify-neighbour", choices=("auto", "always", "never"))
    p.add_argument(
        "--serve-secrets-once",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="withhold the password hash and user-data once a guest is configured",
    )
    p.add_argument(
        "--imds-tokens",
        choices=("optional", "required"),
        help="IMDSv2 session tokens on the EC2 routes",
    )
    p.add_argument("--domain", help="default DNS domain of guests")
    p.add_argument("--bridge", help="Dom0 bridge that gets the metadata address")
    p.add_argument("--public-url", help="how guests reach the guest API")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--demo", action="store_true", help="register a demo guest on 127.0.0.1")


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "db": args.db,
        "host_name": args.host_name,
        "guest.listen": args.guest_listen,
        "admin.listen": args.admin_listen,
        "guest.trust_proxy": args.trust_proxy,
        "guest.verify_neighbour": args.verify_neighbour,
        "guest.serve_secrets_once": args.serve_secrets_once,
        "ec2.tokens": args.imds_tokens,
        "domain": args.domain,
        "bridge": args.bridge,
        "public_url": args.public_url,
        "log_level": args.log_level,
    }


async def serve(settings: Settings, *, demo: bool) -> None:
    service = MetadataService(settings)
    try:
        await service.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen: {exc.strerror or exc}") from None
    # Everything loaded at start lives as long as the process: keep it out of the
    # collector's scans, which otherwise grow with the number of guests.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        if demo:
            assert service.registry is not None
            assert service.admin_address is not None
            password = await ensure_demo_guest(service.registry)
            token_source = (
                f"cat {settings.admin.token_file}"
                if settings.admin.token_file
                else f"cat {settings.db_dir / 'admin-token'}"
            )
            print(
                demo_instructions(
                    service.guest_addresses[0].url, service.admin_address.url, token_source
                ),
                flush=True,
            )
            if password:
                print(f"The demo guest's generated root password (shown once): {password}\n")
        await stop.wait()
        log.info("stopping")
    finally:
        await service.stop()


def raise_open_file_limit() -> int:
    """Every connection is a file descriptor: take the hard limit, not the soft default
    (1024 under systemd), so many guests at once never run the server out of them.
    Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 1 << 20)  # unlimited is capped by the kernel's nr_open anyway
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open file limit from %d: %s", soft, exc)
            return soft
        return wanted
    return soft


def run(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    settings = settings_from(args, _flags(args), demo=args.demo)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    log.debug("open file limit: %d", raise_open_file_limit())
    asyncio.run(serve(settings, demo=args.demo))
    return 0
