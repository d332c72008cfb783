"""A throwaway busybox root filesystem for tests: the harness's module, re-exported (see
metadata_server_testbed/compare/rootfs.py for what it lays out and how a command runs in it)."""

from metadata_server_testbed.compare.rootfs import (
    BUSYBOX,
    SHELLS,
    Overlay,
    Rootfs,
    build_rootfs,
    environment,
    shared_libraries,
)

__all__ = [
    "BUSYBOX",
    "SHELLS",
    "Overlay",
    "Rootfs",
    "build_rootfs",
    "environment",
    "shared_libraries",
]
