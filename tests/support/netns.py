"""Network namespaces for tests: the harness's module, re-exported (see
metadata_server_testbed/compare/netns.py): a Dom0 side with a bridge, guests joined by veth
pairs, everything removed on exit."""

from metadata_server_testbed.compare.netns import (
    CLONE_NEWNET,
    BridgeNetwork,
    Guest,
    Netns,
    bridge_network,
    in_netns,
    ip_batch,
    run,
    unique,
)

__all__ = [
    "CLONE_NEWNET",
    "BridgeNetwork",
    "Guest",
    "Netns",
    "bridge_network",
    "in_netns",
    "ip_batch",
    "run",
    "unique",
]
