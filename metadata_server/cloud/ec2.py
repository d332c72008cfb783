"""The EC2 instance metadata tree of one guest: what `/latest/` and the dated versions
serve. EC2 conventions: text, one listing entry per line, directories end in `/`,
public keys listed as `0=name` with the key at `0/openssh-key`. It holds the keys every
real instance has (`ami-id`, `reservation-id`, `security-groups`, `block-device-mapping/`,
`ami-launch-index`), so clients that read them do not fail. Pure.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json

from metadata_server.cloud.options import CloudOptions
from metadata_server.cloud.tree import FileTree
from metadata_server.documents import GuestView

# The dated versions EC2 clients probe (cloud-init 22.4 tries 2021-03-23, then 2009-04-04).
EC2_VERSIONS = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-09-24",
    "2024-04-11",
    "latest",
)
VERSIONS_LISTING = "\n".join(EC2_VERSIONS).encode()
IDENTITY_DOCUMENT_VERSION = "2017-09-30"


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(timestamp), tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_name(key: str, index: int) -> str:
    parts = key.split(None, 2)
    comment = parts[2] if len(parts) == 3 else ""
    # A listing line cannot hold a newline or '=' would be misread; the model already
    # refused control characters, so only spaces need a stand-in.
    return comment.replace(" ", "_") if comment else f"key-{index}"


def image_id(view: GuestView, options: CloudOptions) -> str:
    """The guest's master image id: its own for a guest `vm launch` made from a master,
    else `options.image_id` (the same for every guest: "no image known")."""
    return view.image_id or options.image_id


def reservation_id(view: GuestView) -> str:
    """EC2's `r-` and 17 hex digits, derived from the instance id: the same on every read
    and on the ISO, new with each re-arm (a new launch, as on EC2)."""
    return "r-" + hashlib.sha256(f"reservation {view.instance_id}".encode()).hexdigest()[:17]


def identity_document(view: GuestView, options: CloudOptions) -> dict[str, object]:
    return {
        "instanceId": view.instance_id,
        "privateIp": view.address,
        "availabilityZone": options.availability_zone,
        "instanceType": options.instance_type,
        "region": options.region,
        "pendingTime": _iso(view.armed_at),
        "version": IDENTITY_DOCUMENT_VERSION,
        "architecture": "x86_64",
        "imageId": image_id(view, options),
        "kernelId": None,
        "ramdiskId": None,
        "accountId": None,
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
    }


def ec2_tree(view: GuestView, options: CloudOptions) -> FileTree:
    """Everything under one version root: `meta-data/...`, `user-data`, `dynamic/...`."""
    mac = view.mac
    subnet = str(ipaddress.IPv4Interface(f"{view.address}/{view.prefix}").network)
    meta = "meta-data/"
    iface = f"{meta}network/interfaces/macs/{mac}/"
    root_device = options.root_device.encode()
    files: dict[str, bytes] = {
        f"{meta}ami-id": image_id(view, options).encode(),
        f"{meta}ami-launch-index": b"0",
        f"{meta}block-device-mapping/ami": root_device,
        f"{meta}block-device-mapping/root": root_device,
        f"{meta}hostname": view.fqdn.encode(),
        f"{meta}instance-id": view.instance_id.encode(),
        f"{meta}instance-type": options.instance_type.encode(),
        f"{meta}local-hostname": view.fqdn.encode(),
        f"{meta}local-ipv4": view.address.encode(),
        f"{meta}mac": mac.encode(),
        f"{meta}reservation-id": reservation_id(view).encode(),
        f"{meta}security-groups": options.security_group.encode(),
        f"{iface}device-number": b"0",
        f"{iface}local-hostname": view.fqdn.encode(),
        f"{iface}local-ipv4s": view.address.encode(),
        f"{iface}mac": mac.encode(),
        f"{iface}subnet-ipv4-cidr-block": subnet.encode(),
        f"{meta}placement/availability-zone": options.availability_zone.encode(),
        f"{meta}placement/region": options.region.encode(),
        f"{meta}services/domain": (view.domain or "localdomain").encode(),
        f"{meta}services/partition": b"aws",
    }
    listings: dict[str, bytes] = {}
    for index, key in enumerate(view.ssh_keys):
        files[f"{meta}public-keys/{index}/openssh-key"] = key.encode()
    if view.ssh_keys:
        listings[f"{meta}public-keys"] = "\n".join(
            f"{index}={_key_name(key, index)}" for index, key in enumerate(view.ssh_keys)
        ).encode()
    files["dynamic/instance-identity/document"] = json.dumps(
        identity_document(view, options), indent=2
    ).encode()
    if view.user_data is not None:
        files["user-data"] = view.user_data.encode()
    return FileTree(files, listings)
