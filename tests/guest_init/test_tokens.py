"""IMDSv2 session tokens: with `ec2.tokens = "required"` every guest route answers 401 without
one, so the script asks without a token, and on a 401 gets one (PUT /latest/api/token) and
sends it with every later request; against a server in optional mode it never asks for one.

Each HTTP client the script can use: curl, GNU wget (PUT through --method), and busybox wget,
which cannot PUT at all: such a guest is refused a token and says why in its log.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from metadata_server.app import MetadataService
from metadata_server.model import State
from tests.guest_init.conftest import MAC, Guest, Serve, guest_url, loopback_guest
from tests.guest_init.stub import USER_DATA_URL, Stub, doc
from tests.support.records import SAMPLE_HASH
from tests.support.service import make_settings

USER_DATA = "#!/bin/sh\ntouch /tmp/user-data-ran\n"
TOKEN = re.compile(r"\d{9,}\.[A-Za-z0-9_-]{20,}")  # what the real server's tokens look like


@dataclass(frozen=True)
class Client:
    shell: str
    binaries: tuple[str, ...]
    can_put: bool


CLIENTS = {
    "curl": Client("bash", ("curl",), can_put=True),
    "gnu-wget": Client("dash", ("wget",), can_put=True),
    "busybox-wget": Client("busybox", (), can_put=False),
}


@pytest.fixture
async def required_server(tmp_path: Path) -> AsyncIterator[MetadataService]:
    service = MetadataService(make_settings(tmp_path, **{"ec2.tokens": "required"}))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.mark.parametrize("client", list(CLIENTS))
async def test_the_real_server_requiring_tokens(
    client: str, required_server: MetadataService, make_guest: Callable[..., Guest]
) -> None:
    registry = required_server.registry
    assert registry is not None
    await registry.put(MAC, loopback_guest(user_data=USER_DATA))
    spec = CLIENTS[client]
    guest = make_guest(spec.shell, spec.binaries)
    guest.configure(
        metadata_url=guest_url(required_server), timeout=5, retry_total=0, run_user_data="yes"
    )
    boot = await guest.boot()
    log = guest.log()
    assert not TOKEN.search(log)  # a token is a secret too
    if not spec.can_put:
        assert boot.returncode == 1
        assert "busybox wget cannot PUT" in log
        assert (await registry.get(MAC)).state is not State.CONFIGURED
        return
    assert boot.returncode == 0, log
    assert boot.hostname == "guest1"
    assert guest.shadow_hash() == SAMPLE_HASH
    assert guest.rootfs.read("/var/lib/metadata-init/user-data") == USER_DATA
    assert guest.rootfs.file("/tmp/user-data-ran").exists()
    assert (await registry.get(MAC)).state is State.CONFIGURED  # the report carried it too
    assert "asks for a session token" in log


@pytest.mark.parametrize("mode", ["optional", "required"])
@pytest.mark.parametrize("client", list(CLIENTS))
async def test_a_token_only_when_asked_and_then_on_every_request(
    client: str, mode: str, make_guest: Callable[..., Guest], serve: Serve
) -> None:
    stub = await serve(Stub(doc(USER_DATA_URL), user_data=b"data", tokens=mode == "required"))
    spec = CLIENTS[client]
    guest = make_guest(spec.shell, spec.binaries)
    guest.configure(metadata_url=stub.url, timeout=5, retry_total=0)
    boot = await guest.boot()
    puts = stub.requests_to("/latest/api/token")
    if mode == "optional":
        assert boot.returncode == 0, guest.log()
        assert puts == []
        assert {request.token for request in stub.requests} == {None}
        return
    if not spec.can_put:
        assert boot.returncode == 1
        assert puts == []
        return
    assert boot.returncode == 0, guest.log()
    assert [request.path for request in stub.requests] == [
        "/v1/config.txt",  # 401
        "/latest/api/token",
        "/v1/config.txt",
        "/v1/user-data",
        "/v1/status",
    ]
    assert [request.token for request in stub.requests[2:]] == [stub.issued[0]] * 3
    assert [report["state"] for report in stub.reports] == ["configured"]


async def test_a_token_the_server_forgot_is_replaced(
    make_guest: Callable[..., Guest], serve: Serve
) -> None:
    """A restarted server knows no token it issued before: the next 401 gets a new one."""
    stub = Stub(doc(USER_DATA_URL), user_data=b"data", tokens=True, forget_tokens_after="user-data")
    await serve(stub)
    guest = make_guest("bash")
    guest.configure(metadata_url=stub.url, timeout=5, retry_total=0)
    boot = await guest.boot()
    assert boot.returncode == 0, guest.log()
    assert len(stub.issued) == 1 and len(stub.requests_to("/latest/api/token")) == 2
    assert stub.requests[-1].token == stub.issued[0]
    assert [report["state"] for report in stub.reports] == ["configured"]
