"""Turning stored records back into `VM` values and out again, shared by backends.

Records were validated on their way in, so reading them back trusts their shape; a
record that does not fit is a corrupt database and raises. A record is one JSON
document in both backends, so a field added here (`launch`, for guests `vm launch`
made) needs no schema change; records without it read as before.
"""

from __future__ import annotations

import json
from typing import Any

from metadata_server.model import (
    VM,
    IPv4Config,
    State,
    VMSpec,
    launch_from_json,
    launch_to_json,
    spec_to_json,
)


def vm_to_record(vm: VM) -> str:
    data: dict[str, Any] = {
        "spec": spec_to_json(vm.spec, secrets=True),
        "instance_id": vm.instance_id,
        "state": vm.state.value,
        "state_times": dict(vm.state_times),
        "message": vm.message,
        "created_at": vm.created_at,
        "updated_at": vm.updated_at,
    }
    if vm.launch is not None:  # absent, not null, for guests not launched: older records match
        data["launch"] = launch_to_json(vm.launch)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def vm_from_record(text: str) -> VM:
    data = json.loads(text)
    spec = data["spec"]
    ipv4 = spec["ipv4"]
    return VM(
        spec=VMSpec(
            mac=spec["mac"],
            hostname=spec["hostname"],
            ipv4=IPv4Config(
                address=ipv4["address"], prefix=ipv4["prefix"], gateway=ipv4["gateway"]
            ),
            domain=spec["domain"],
            dns=tuple(spec["dns"]),
            password_hash=spec["password_hash"],
            ssh_keys=tuple(spec["ssh_keys"]),
            user_data=spec["user_data"],
            metadata=dict(spec["metadata"]),
            host=spec["host"],
        ),
        instance_id=data["instance_id"],
        state=State(data["state"]),
        state_times={key: float(value) for key, value in data["state_times"].items()},
        message=data["message"],
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        launch=launch_from_json(data["launch"]) if data.get("launch") is not None else None,
    )


def name_key(vm: VM) -> str:
    """The unique key of hostname+domain (a record without a domain uses the default)."""
    return f"{vm.spec.hostname}.{vm.spec.domain or ''}"
