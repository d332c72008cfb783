"""The review's newline attack, end to end: a metadata key `"note\\n"` whose value is an
`ssh_key` line made the real guest script install a root SSH key that the server never
checked. It is refused at registration (400) and so never reaches a guest; a record
that holds it from before the check loses that line instead of gaining a key. The real
metadata-init runs chrooted in a busybox guest against the real server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from metadata_server.app import MetadataService
from tests.guest_init.conftest import MAC, Guest, ed25519_key, guest_url, key_id, loopback_guest
from tests.support.records import SAMPLE_KEY
from tests.support.service import Api

ATTACKER_KEY = ed25519_key(7, "attacker@elsewhere")
ATTACK = {"note\n": f"ssh_key {ATTACKER_KEY}"}


async def boot_and_read_keys(service: MetadataService, guest: Guest) -> str:
    guest.configure(metadata_url=guest_url(service), timeout=5, retry_total=2)
    boot = await guest.boot()
    assert boot.returncode == 0, guest.log()
    return guest.rootfs.read("/root/.ssh/authorized_keys")


async def test_the_attack_is_refused_at_registration_and_never_reaches_a_guest(
    service: MetadataService, admin: Api, make_guest: Callable[..., Guest]
) -> None:
    status, _ = await admin.put(f"/api/v1/vms/{MAC}", json=loopback_guest())
    assert status == 201
    status, body = await admin.put(f"/api/v1/vms/{MAC}", json=loopback_guest(metadata=ATTACK))
    assert status == 400 and body["field"] == "metadata", body
    status, body = await admin.patch(f"/api/v1/vms/{MAC}", json={"metadata": ATTACK})
    assert status == 400 and body["field"] == "metadata", body

    keys = await boot_and_read_keys(service, make_guest("busybox"))
    assert key_id(SAMPLE_KEY) in keys
    assert key_id(ATTACKER_KEY) not in keys


async def test_a_record_holding_it_from_before_loses_the_line_not_gains_a_key(
    service: MetadataService, admin: Api, make_guest: Callable[..., Guest]
) -> None:
    assert (await admin.put(f"/api/v1/vms/{MAC}", json=loopback_guest()))[0] == 201
    stored = await service.store.get(MAC)
    assert stored is not None
    # Written straight to the store, as an older server's registry may hold it.
    await service.store.replace(
        replace(stored, spec=replace(stored.spec, metadata={**ATTACK, "role": "web"}))
    )

    keys = await boot_and_read_keys(service, make_guest("busybox"))
    assert key_id(SAMPLE_KEY) in keys
    assert key_id(ATTACKER_KEY) not in keys
