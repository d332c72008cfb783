"""The configuration ISO of one guest: which files it holds, under which label.

Two layouts, both rendered from the same `GuestView` as the HTTP views:

- `nocloud` (label `cidata`): `meta-data`, `user-data`, `vendor-data`, `network-config`,
  as cloud-init's NoCloud reader wants them (`cloud.nocloud.nocloud_files`);
- `configdrive` (label `config-2`): `openstack/latest/meta_data.json`,
  `network_data.json`, `user_data`, `vendor_data.json`, `vendor_data2.json`, as
  cloud-init's ConfigDrive reader wants them (`cloud.openstack.openstack_files`).

Both also carry what the guest boot script (guest_init/metadata-init) reads:
`metadata-init.txt`, the `/v1/config.txt` document with a `nonce TOKEN` line before its
final `end` (the token it writes back through xenstore), and, when the admin gave
user-data, `metadata-init.user-data`: that user-data as given, as `/v1/user-data` serves
it (the top-level `user-data` belongs to cloud-init and wraps it in a cloud-config).

Pure: view and nonce in, bytes out (the image itself comes from `isoimage`).
"""

from __future__ import annotations

import re

from metadata_server.cloud.nocloud import nocloud_files
from metadata_server.cloud.openstack import openstack_files
from metadata_server.cloud.options import CloudOptions
from metadata_server.documents import GuestView, config_text
from metadata_server.errors import InvalidInput
from metadata_server.iso.image import build_image
from metadata_server.iso.settings import Layout, parse_layout  # noqa: F401 (also imported from here)

INIT_DOCUMENT = "metadata-init.txt"
INIT_USER_DATA = "metadata-init.user-data"
CONFIG_DRIVE_DIR = "openstack/latest"
_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")


LABELS = {Layout.NOCLOUD: "cidata", Layout.CONFIGDRIVE: "config-2"}


def check_nonce(nonce: str) -> None:
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise InvalidInput("the nonce must be 32 lowercase hex digits", field="nonce")


def init_document(view: GuestView, nonce: str) -> bytes:
    """`metadata-init.txt`: config_text(view) with `nonce TOKEN` before the final `end`."""
    check_nonce(nonce)
    text = config_text(view)
    head, end = text[: -len("end\n")], text[-len("end\n") :]
    if end != "end\n":
        raise ValueError("config_text must end with an end line")
    return f"{head}nonce {nonce}\n{end}".encode()


def iso_files(view: GuestView, nonce: str, layout: Layout, cloud: CloudOptions) -> dict[str, bytes]:
    """Relative path → content of every file on the guest's ISO."""
    files = {INIT_DOCUMENT: init_document(view, nonce)}
    if view.user_data is not None:
        files[INIT_USER_DATA] = view.user_data.encode()
    if layout is Layout.NOCLOUD:
        files.update(nocloud_files(view))
    else:
        for name, data in openstack_files(view, cloud).items():
            files[f"{CONFIG_DRIVE_DIR}/{name}"] = data
    return files


def config_iso(
    view: GuestView,
    nonce: str,
    layout: Layout = Layout.NOCLOUD,
    cloud: CloudOptions | None = None,
) -> bytes:
    """The guest's ISO image. Every timestamp in it is the moment its instance id was
    issued, so the same record and nonce always give the same bytes."""
    files = iso_files(view, nonce, layout, cloud or CloudOptions())
    return build_image(files, label=LABELS[layout], date=view.armed_at)
