"""Guest records for the ISO tests, built without a registry (no clock, no randomness)."""

from __future__ import annotations

from typing import Any

from metadata_server.documents import DocumentOptions, GuestView, guest_view
from metadata_server.model import VM, State, parse_vm
from tests.support.records import guest_body, mac_of

ARMED_AT = 1_700_000_000.25  # 2023-11-14 22:13:20 UTC
INSTANCE_ID = "6f1c0b1e-3b0a-4d7e-9a51-2f0d3c4b5a69"
NONCE = "0123456789abcdef0123456789abcdef"
OPTIONS = DocumentOptions(default_domain="guests.internal", public_url="http://169.254.169.254")


def make_vm(n: int = 1, state: State = State.REGISTERED, **overrides: Any) -> VM:
    spec = parse_vm(guest_body(n, **overrides), mac=mac_of(n)).spec
    times = {State.REGISTERED.value: ARMED_AT}
    if state is not State.REGISTERED:
        times[state.value] = ARMED_AT + 5
    return VM(
        spec=spec,
        instance_id=INSTANCE_ID,
        state=state,
        state_times=times,
        message=None,
        created_at=ARMED_AT,
        updated_at=ARMED_AT + 5,
    )


def make_view(n: int = 1, state: State = State.REGISTERED, **overrides: Any) -> GuestView:
    return guest_view(make_vm(n, state, **overrides), OPTIONS)
