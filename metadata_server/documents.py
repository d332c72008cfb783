"""One guest record → the documents the guest reads.

The native views live here: `/v1/config` (JSON) and `/v1/config.txt` (one `key value`
per line, for a POSIX sh reader). Later views (EC2, OpenStack, NoCloud, the ISO) are
rendered from the same `GuestView`, so no two paths can disagree about a guest.

Pure: takes the record and the options, returns bytes; no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from metadata_server.cloud.tree import FileTree
from metadata_server.model import VM, State, has_forbidden_characters

TEXT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class DocumentOptions:
    """Server-wide settings that shape every document."""

    default_domain: str | None
    public_url: str  # how guests reach this server, e.g. http://169.254.169.254
    serve_secrets_once: bool = True


@dataclass(frozen=True)
class GuestView:
    """The facts a guest may see about itself, secrets already withheld if they must be."""

    mac: str
    instance_id: str
    hostname: str
    domain: str | None
    fqdn: str
    address: str
    prefix: int
    gateway: str | None
    dns: tuple[str, ...]
    password_hash: str | None
    ssh_keys: tuple[str, ...]
    user_data: str | None
    metadata: dict[str, str]
    secrets_withheld: bool
    status_url: str
    user_data_url: str
    armed_at: float  # when the current instance id was issued (EC2's pendingTime)
    image_id: str | None = None  # the master's id, for a guest `vm launch` made


@dataclass(frozen=True)
class GuestDocument:
    """Everything the guest fast path serves for one guest, rendered once.

    `later` holds what is rendered from it on first use (the cloud trees, the
    signature); a new record gets a new document, so nothing in it can go stale.
    """

    view: GuestView
    state: State
    json_body: bytes
    text_body: bytes
    etag: str
    user_data: bytes | None
    later: Renderings = field(default_factory=lambda: Renderings(), compare=False, repr=False)


@dataclass(slots=True)
class Renderings:
    """What is rendered from a guest's document when first asked for, and kept with it."""

    ec2: FileTree | None = None
    openstack: FileTree | None = None
    nocloud: FileTree | None = None
    signature: bytes | None = None


def guest_view(vm: VM, options: DocumentOptions) -> GuestView:
    spec = vm.spec
    withheld = options.serve_secrets_once and vm.state is State.CONFIGURED
    domain = spec.domain or options.default_domain
    base = options.public_url.rstrip("/")
    return GuestView(
        mac=spec.mac,
        instance_id=vm.instance_id,
        hostname=spec.hostname,
        domain=domain,
        fqdn=spec.fqdn(options.default_domain),
        address=spec.ipv4.address,
        prefix=spec.ipv4.prefix,
        gateway=spec.ipv4.gateway,
        dns=spec.dns,
        password_hash=None if withheld else spec.password_hash,
        ssh_keys=spec.ssh_keys,
        user_data=None if withheld else spec.user_data,
        metadata=dict(spec.metadata),
        secrets_withheld=withheld,
        status_url=f"{base}/v1/status",
        user_data_url=f"{base}/v1/user-data",
        armed_at=vm.state_times.get(State.REGISTERED.value, vm.created_at),
        image_id=vm.launch.image_id if vm.launch is not None else None,
    )


def config_json(view: GuestView) -> dict[str, Any]:
    """The `/v1/config` document; withheld secrets are absent, not null."""
    doc: dict[str, Any] = {
        "instance_id": view.instance_id,
        "hostname": view.hostname,
        "fqdn": view.fqdn,
        "domain": view.domain,
        "ssh_keys": list(view.ssh_keys),
        "network": {
            "mac": view.mac,
            "address": view.address,
            "prefix": view.prefix,
            "gateway": view.gateway,
            "dns": list(view.dns),
        },
        "metadata": view.metadata,
        "status_url": view.status_url,
    }
    if view.password_hash is not None:
        doc["password_hash"] = view.password_hash
    if view.user_data is not None:
        doc["user_data"] = view.user_data
    return doc


def config_text(view: GuestView) -> str:
    """`/v1/config.txt`: `key value` lines, lists as repeated keys, `end` last.

    Every value is a single line of printable text that the model already validated;
    none needs quoting or evaluation. A record stored before a check existed may still
    hold a control character or line separator: such a line is left out, never split
    into two (a guest missing a line it needs refuses the document and says why). The
    final `end` line lets a reader tell a whole document from a cut one.
    """
    lines = [
        f"format {TEXT_FORMAT_VERSION}",
        f"instance_id {view.instance_id}",
        f"hostname {view.hostname}",
        f"fqdn {view.fqdn}",
    ]
    if view.domain:
        lines.append(f"domain {view.domain}")
    lines += [f"mac {view.mac}", f"address {view.address}", f"prefix {view.prefix}"]
    if view.gateway:
        lines.append(f"gateway {view.gateway}")
    lines += [f"dns {server}" for server in view.dns]
    if view.password_hash is not None:
        lines.append(f"password_hash {view.password_hash}")
    lines += [f"ssh_key {key}" for key in view.ssh_keys]
    lines += [f"metadata.{key} {value}" for key, value in view.metadata.items()]
    if view.user_data is not None:
        lines.append(f"user_data_url {view.user_data_url}")
    lines.append(f"status_url {view.status_url}")
    lines = [line for line in lines if not has_forbidden_characters(line)]
    lines.append("end")
    return "\n".join(lines) + "\n"


def render_guest_document(vm: VM, options: DocumentOptions) -> GuestDocument:
    view = guest_view(vm, options)
    body = json.dumps(config_json(view), separators=(",", ":"), sort_keys=True).encode()
    text = config_text(view).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    user_data = view.user_data.encode() if view.user_data is not None else None
    return GuestDocument(
        view=view, state=vm.state, json_body=body, text_body=text, etag=etag, user_data=user_data
    )
