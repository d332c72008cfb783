"""The record's `launch` field: stored with a launched guest, absent (not null) from a
stored record of a guest not launched, so records written before it read and compare
as they were; read back equal, `destroyed_at` included."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from metadata_server.model import VM, IPv4Config, Launch, State, VMSpec, vm_to_json
from metadata_server.store.records import vm_from_record, vm_to_record

PLAIN = VM(
    spec=VMSpec(mac="00:16:3e:00:00:01", hostname="web1", ipv4=IPv4Config("198.18.0.3", 29, None)),
    instance_id="6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab",
    state=State.REGISTERED,
    state_times={"registered": 1.0},
    message=None,
    created_at=1.0,
    updated_at=1.0,
)
LAUNCH = Launch(
    image="/srv/master.qcow2",
    image_id="ami-0123456789abcdef0",
    delta="/var/lib/metadata-server/launched/web1/disk.qcow2",
    xl_config="/var/lib/metadata-server/launched/web1/web1.cfg",
)


def test_a_guest_not_launched_has_no_launch_in_its_stored_record() -> None:
    assert "launch" not in json.loads(vm_to_record(PLAIN))
    assert vm_from_record(vm_to_record(PLAIN)) == PLAIN
    assert vm_to_json(PLAIN)["launch"] is None


@pytest.mark.parametrize("destroyed_at", [None, 1733097600.5])
def test_a_launched_guest_reads_back_equal(destroyed_at: float | None) -> None:
    vm = replace(PLAIN, launch=replace(LAUNCH, destroyed_at=destroyed_at))
    assert vm_from_record(vm_to_record(vm)) == vm
    shown = vm_to_json(vm)["launch"]
    assert shown["image_id"] == LAUNCH.image_id
    assert (shown["destroyed_at"] is None) == (destroyed_at is None)
