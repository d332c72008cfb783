"""The NoCloud seed of one guest: `meta-data`, `user-data`, `vendor-data` and
`network-config` (version 2), as cloud-init's NoCloud reader wants them, over HTTP
(`/nocloud/`) and on the `cidata` ISO alike. Pure.
"""

from __future__ import annotations

from typing import Any

from metadata_server.cloud.userdata import combined_user_data
from metadata_server.cloud.yamltext import dump
from metadata_server.documents import GuestView
from metadata_server.model import METADATA_ADDRESS


def meta_data(view: GuestView) -> dict[str, Any]:
    data: dict[str, Any] = {
        "instance-id": view.instance_id,
        "local-hostname": view.fqdn,
    }
    if view.ssh_keys:
        data["public-keys"] = list(view.ssh_keys)
    return data


def network_config(view: GuestView) -> dict[str, Any]:
    """Netplan-style version 2: the reserved address, static, matched by MAC."""
    ethernet: dict[str, Any] = {
        "match": {"macaddress": view.mac},
        "addresses": [f"{view.address}/{view.prefix}"],
    }
    if view.gateway:
        ethernet["routes"] = [
            {"to": "0.0.0.0/0", "via": view.gateway},
            {"to": f"{METADATA_ADDRESS}/32", "via": view.gateway},
        ]
    nameservers: dict[str, Any] = {}
    if view.dns:
        nameservers["addresses"] = list(view.dns)
    if view.domain:
        nameservers["search"] = [view.domain]
    if nameservers:
        ethernet["nameservers"] = nameservers
    return {"version": 2, "ethernets": {"primary": ethernet}}


def _yaml(data: dict[str, Any]) -> bytes:
    return dump(data).encode()


def nocloud_files(view: GuestView) -> dict[str, bytes]:
    return {
        "meta-data": _yaml(meta_data(view)),
        "user-data": combined_user_data(view),
        "vendor-data": b"",
        "network-config": _yaml(network_config(view)),
    }
