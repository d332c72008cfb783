"""The OpenStack metadata of one guest: `meta_data.json`, `network_data.json`,
`user_data`, `vendor_data.json`, `vendor_data2.json`, as cloud-init 22.4's OpenStack
readers (metadata service and config drive) read them. Pure.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from metadata_server.cloud.options import CloudOptions
from metadata_server.cloud.userdata import combined_user_data
from metadata_server.documents import GuestView

# The dated versions cloud-init 22.4 knows, oldest first; it takes the newest listed.
OPENSTACK_VERSIONS = (
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "latest",
)
VERSIONS_LISTING = "\n".join(OPENSTACK_VERSIONS).encode()


def meta_data(view: GuestView, options: CloudOptions) -> dict[str, Any]:
    names = [f"key-{index}" for index in range(len(view.ssh_keys))]
    return {
        "uuid": view.instance_id,
        "name": view.hostname,
        "hostname": view.fqdn,
        "public_keys": dict(zip(names, view.ssh_keys, strict=True)),
        "keys": [
            {"name": name, "type": "ssh", "data": key}
            for name, key in zip(names, view.ssh_keys, strict=True)
        ],
        "availability_zone": options.availability_zone,
        "meta": dict(view.metadata),
        "launch_index": 0,
        "project_id": "local",
        "devices": [],
    }


def network_data(view: GuestView) -> dict[str, Any]:
    network = ipaddress.IPv4Interface(f"{view.address}/{view.prefix}").network
    routes = []
    if view.gateway:
        routes.append({"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": view.gateway})  # noqa: S104 (the default route, not a bind)
    return {
        "links": [
            {"id": "interface0", "type": "phy", "ethernet_mac_address": view.mac, "mtu": None}
        ],
        "networks": [
            {
                "id": "network0",
                "type": "ipv4",
                "link": "interface0",
                "ip_address": view.address,
                "netmask": str(network.netmask),
                "routes": routes,
                "network_id": str(network),
            }
        ],
        "services": [{"type": "dns", "address": server} for server in view.dns],
    }


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode()


def openstack_files(view: GuestView, options: CloudOptions) -> dict[str, bytes]:
    """The files of one version directory (every version serves the same)."""
    return {
        "meta_data.json": _json(meta_data(view, options)),
        "network_data.json": _json(network_data(view)),
        "user_data": combined_user_data(view),
        "vendor_data.json": b"{}",
        "vendor_data2.json": b"{}",
    }
