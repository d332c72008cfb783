"""The user-data cloud-init gets on the NoCloud and OpenStack paths: a `#cloud-config`
that sets root's password from the stored hash and installs the SSH keys, combined with
the admin's own user-data: merged when that is cloud-config, as a MIME multipart when it
is anything else (a script, a boothook). Deterministic for the same input. Pure.
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from typing import Any

from metadata_server.cloud.yamltext import YAMLError, dump, load
from metadata_server.documents import GuestView

CLOUD_CONFIG = "#cloud-config"
LOCKED = frozenset({"!", "*", "!*"})


def base_cloud_config(view: GuestView) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if view.password_hash is not None and view.password_hash not in LOCKED:
        config["chpasswd"] = {
            "expire": False,
            "users": [{"name": "root", "password": view.password_hash, "type": "hash"}],
        }
    if view.ssh_keys:
        config["disable_root"] = False
        config["ssh_authorized_keys"] = list(view.ssh_keys)
    return config


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """cloud-init's usual merge: mappings recurse, lists append, the admin's scalars win."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + value
        else:
            out[key] = value
    return out


def dump_cloud_config(config: dict[str, Any]) -> str:
    body = dump(config) if config else "{}\n"
    return f"{CLOUD_CONFIG}\n{body}"


def parse_cloud_config(text: str) -> dict[str, Any] | None:
    """The mapping in a `#cloud-config` text, or None when it is not one."""
    if not text.startswith(CLOUD_CONFIG):
        return None
    try:
        loaded = load(text)
    except YAMLError:
        return None
    if loaded is None:
        return {}
    return loaded if isinstance(loaded, dict) else None


def _part_type(text: str) -> str:
    if text.startswith("#!"):
        return "x-shellscript"
    if text.startswith("#cloud-boothook"):
        return "cloud-boothook"
    if text.startswith("#include"):
        return "x-include-url"
    return "plain"  # cloud-init guesses the type of a text/plain part from its start


def combined_user_data(view: GuestView) -> bytes:
    base = base_cloud_config(view)
    admin = view.user_data
    if admin is None:
        return dump_cloud_config(base).encode()
    parsed = parse_cloud_config(admin)
    if parsed is not None:
        return dump_cloud_config(merge(base, parsed)).encode()
    boundary = "==" + hashlib.sha256(admin.encode()).hexdigest()[:32] + "=="
    message = MIMEMultipart(boundary=boundary)
    for text, subtype, name in (
        (dump_cloud_config(base), "cloud-config", "metadata-server.cfg"),
        (admin, _part_type(admin), "user-data"),
    ):
        part = EmailMessage()
        # 8bit, not base64: an admin reading what the guest got sees the text itself.
        part.set_content(text, subtype=subtype, cte="8bit", disposition="attachment", filename=name)
        message.attach(part)
    return message.as_bytes()
