"""`python -m lab.builder [--rebuild] [--cache DIR] [--mirror URL] [--security-mirror URL]`:
build the lab's images (or find them cached) and print where they are and how long it took."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.builder.apt import Mirrors
from lab.builder.build import build
from lab.builder.cache import CACHE_ENV, cache_dir
from lab.builder.commands import BuildError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab/build", description=__doc__)
    parser.add_argument("--rebuild", action="store_true", help="build every layer again")
    parser.add_argument(
        "--cache",
        type=Path,
        help=f"cache directory (default: ${CACHE_ENV} or /var/cache/metadata-server-lab)",
    )
    parser.add_argument("--mirror", default=Mirrors.debian, help="Debian mirror")
    parser.add_argument(
        "--security-mirror", default=Mirrors.security, help="Debian security mirror"
    )
    args = parser.parse_args(argv)
    try:
        report = build(
            cache_root=cache_dir(args.cache),
            mirrors=Mirrors(args.mirror, args.security_mirror),
            rebuild=args.rebuild,
        )
    except (BuildError, ValueError) as error:
        print(f"lab/build: {error}", file=sys.stderr)
        return 1
    lab = report.lab

    def said(seconds: float | None) -> str:
        return "cached" if seconds is None else f"built in {seconds:.1f} s"

    print(f"base layer {lab.base_key}: {said(report.base_seconds)}")
    print(f"project layer {lab.project_key}: {said(report.project_seconds)}")
    print(
        f"lab ready in {report.total_seconds:.1f} s: {lab.dom0_image.parent}, {lab.project_image}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
