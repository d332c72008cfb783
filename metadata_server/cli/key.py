"""`metadata-server key show`: the public half of the document signing key, as PEM.

Made (0600) when the server has not made it yet, so a master image can be prepared with
the key before the first `serve`. The private half is never printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from metadata_server.config import Settings
from metadata_server.signing import ensure_key


def add_parsers(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = commands.add_parser("show", help="print the public signing key (PEM) for verify_key=")
    add_common(p)
    p.add_argument("--db", help="the registry (its directory holds the key by default)")
    p.set_defaults(handler=show)


def show(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    settings = settings_from(args, {"db": args.db})
    print(ensure_key(settings.guest.signing_key).public_pem(), end="")
    return 0
