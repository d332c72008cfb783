"""A slow or full server: every request (token, document, user-data, status report) is retried
with the same back-off (1 2 4 8 15 ... s) within retry_total; a guest fails only once that
budget is spent, with the reason; a report that never gets through keeps the configuration.

The server answers as the real one does when its disk is full or it is overloaded: 503 or 507
with a JSON error. Each case runs under busybox wget (the token's under curl and GNU wget, which
can PUT); the status and user-data cases under all three, since each client shows the status of
an error differently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.guest_init.conftest import Guest, Serve
from tests.guest_init.stub import USER_DATA_URL, Reply, Stub, doc, json_error

FULL = json_error(507, "storage", "the registry's disk is full")
BUSY = json_error(503, "unavailable", "try again")
CLIENTS = {
    "busybox-wget": ("busybox", ()),
    "curl": ("bash", ("curl",)),
    "gnu-wget": ("dash", ("wget",)),
}


@dataclass(frozen=True)
class Case:
    failures: dict[str, list[Reply]]
    tokens: bool = False
    retry_total: int = 10
    reason: str | None = None  # the failed report's message; None: configured
    reported: bool = True  # the server got the final report
    clients: tuple[str, ...] = ("busybox-wget",)
    waited: float = 0  # at least this many seconds of back-off
    requests: dict[str, int] = field(default_factory=dict)  # path → how many


CASES = {
    "document-busy": Case({"config": [BUSY, BUSY]}, waited=3, requests={"/v1/config.txt": 3}),
    "token-busy": Case(
        {"token": [BUSY, BUSY]},
        tokens=True,
        clients=("curl", "gnu-wget"),  # busybox wget cannot PUT
        waited=3,
        requests={"/latest/api/token": 3},
    ),
    "user-data-busy": Case(
        {"user-data": [BUSY, BUSY]},
        clients=tuple(CLIENTS),
        waited=3,
        requests={"/v1/user-data": 3},
    ),
    "status-disk-full": Case(
        {"status": [FULL, FULL, FULL]},
        clients=tuple(CLIENTS),
        waited=7,
        requests={"/v1/status": 4},
    ),
    "user-data-never": Case(
        {"user-data": [BUSY] * 20},
        retry_total=3,
        reason="user-data could not be fetched (HTTP 503, retried for 3s)",
        waited=3,
    ),
    "status-never": Case({"status": [FULL] * 20}, retry_total=3, reported=False, waited=3),
}


@pytest.mark.parametrize(
    ("name", "client"), [(name, client) for name, case in CASES.items() for client in case.clients]
)
async def test_retried_within_the_budget(
    name: str, client: str, make_guest: Callable[..., Guest], serve: Serve
) -> None:
    case = CASES[name]
    stub = Stub(doc(USER_DATA_URL), user_data=b"#!/bin/sh\n", tokens=case.tokens)
    stub.failures = {route: list(replies) for route, replies in case.failures.items()}
    await serve(stub)
    shell, binaries = CLIENTS[client]
    guest = make_guest(shell, binaries)
    before = guest.files()
    guest.configure(metadata_url=stub.url, timeout=5, retry_total=case.retry_total)
    started = time.monotonic()
    boot = await guest.boot()
    took = time.monotonic() - started
    log = guest.log()
    assert took >= case.waited
    for path, count in case.requests.items():
        assert len(stub.requests_to(path)) == count, stub.requests
    if case.reason is not None:
        assert boot.returncode == 1, log
        assert guest.files() == before
        assert [report["state"] for report in stub.reports] == ["failed"]
        assert case.reason in stub.reports[0]["message"]
        return
    assert boot.returncode == 0, log
    assert boot.hostname == "stubguest"
    assert guest.state()["instance_id"] == "7d1b6c2e-0c4f-4a55-b1e0-3d7b9d2a6f10"
    if case.reported:
        assert [report["state"] for report in stub.reports] == ["configured"]
    else:
        assert stub.reports == []
        assert "could not report configured" in log and "the configuration stays" in log
