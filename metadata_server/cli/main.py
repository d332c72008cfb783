"""Argument parsing and dispatch for the `metadata-server` command.

Every command exits 0 on success, 1 with one clear line on stderr on failure, and 2 on a
usage error (argparse's own convention).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metadata_server import __version__

if TYPE_CHECKING:
    from metadata_server.config import Settings

# The subcommands are imported when the parser is built, not here: the DHCP lease hook
# runs once per lease and must start fast (see main()).
PLUGIN_GROUP = "metadata_server.commands"


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--admin-token-file", help="file holding the admin bearer token")


def build_parser() -> argparse.ArgumentParser:
    from metadata_server.cli import db, dhcp, image, iso, key, serve, vm

    parser = argparse.ArgumentParser(
        prog="metadata-server",
        description="First-boot configuration for Xen guests: registry, guest API, admin API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("serve", help="run the service")
    _add_common(p)
    serve.add_arguments(p)
    p.set_defaults(handler=serve.run)

    p = commands.add_parser("vm", help="manage guests through the admin API")
    vm_commands = p.add_subparsers(dest="vm_command", required=True, metavar="ACTION")
    vm.add_parsers(vm_commands, _add_common)

    p = commands.add_parser("dhcp", help="DHCP files from the registry; the lease hook")
    dhcp_commands = p.add_subparsers(dest="dhcp_command", required=True, metavar="ACTION")
    dhcp.add_parsers(dhcp_commands, _add_common)

    p = commands.add_parser("db", help="the registry database itself: migrate, export, import")
    db_commands = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db.add_parsers(db_commands, _add_common)

    p = commands.add_parser("iso", help="the ISO fallback through the admin API")
    iso_commands = p.add_subparsers(dest="iso_command", required=True, metavar="ACTION")
    iso.add_parsers(iso_commands, _add_common)

    p = commands.add_parser("key", help="the document signing key")
    key_commands = p.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    key.add_parsers(key_commands, _add_common)

    p = commands.add_parser("image", help="master images and the guests' delta disks")
    image_commands = p.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    image.add_parsers(image_commands, _add_common)

    for plugin in entry_points(group=PLUGIN_GROUP):
        # Commands installed by other distributions, such as the test bench's `compare`.
        plugin.load()(commands)
    return parser


def settings_from(
    args: argparse.Namespace, flags: dict[str, Any], *, demo: bool = False
) -> Settings:
    from metadata_server.config import build_settings

    flags = dict(flags)
    if getattr(args, "admin_token_file", None):
        flags["admin.token_file"] = args.admin_token_file
    return build_settings(config_file=args.config, env=os.environ, flags=flags, demo=demo)


# Files the commands create (the registry and its -wal and -shm, exports, DHCP files,
# the admin token, ISOs) hold hashes, user-data and guest names: none gets group or
# other bits, whichever code creates it.
PRIVATE_UMASK = 0o077


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """The command runs under PRIVATE_UMASK; the caller's umask comes back after (for
    main() called in-process, as tests do)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def main(argv: Sequence[str] | None = None) -> int:
    with private_files():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:2] == ["dhcp", "lease-hook"]:
        from metadata_server.cli.lease_hook import quick

        quick_result = quick(words[2:], os.environ)
        if quick_result is not None:
            return quick_result
    from metadata_server.cli.client import CommandError
    from metadata_server.errors import MetadataError

    parser = build_parser()
    args = parser.parse_args(words)
    try:
        code: int = args.handler(args, settings_from)
        return code
    except CommandError as exc:
        print(f"metadata-server: {exc.message}", file=sys.stderr)
        for line in exc.details:
            print(f"  {line}", file=sys.stderr)
        return 1
    except MetadataError as exc:
        print(f"metadata-server: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
