"""The kernel's view of who is on the wire, over rtnetlink: the only package that
imports pyroute2.

- `neighbours`: which MAC holds a peer address (guest identity), and when that changes;
- `bridge`: the bridge's ports and addresses (the bridge guard, the metadata address);
- `events`: the event subscriptions both keep current with.
"""

from metadata_server.netlink.bridge import (
    BridgeAddressError,
    BridgePorts,
    ensure_address,
    remove_address,
)
from metadata_server.netlink.neighbours import NOBODY, LookupTimeout, NetlinkNeighbours, PeerLink

__all__ = [
    "NOBODY",
    "BridgeAddressError",
    "BridgePorts",
    "LookupTimeout",
    "NetlinkNeighbours",
    "PeerLink",
    "ensure_address",
    "remove_address",
]
