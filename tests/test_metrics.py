"""`GET /metrics` on the admin listener: Prometheus text that moves as a guest boots
(guests by state, guest requests and their latency by route family, time to configured),
no token needed on a loopback listener, the token on any other."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.metrics import histogram_quantile
from tests.support.records import guest_body, mac_of
from tests.support.service import ADMIN_TOKEN, make_settings

LOCAL = {"address": "127.0.0.1", "prefix": 8, "gateway": "127.0.0.254"}


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.text()


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_the_numbers_move_as_a_guest_boots(tmp_path: Path) -> None:
    service = MetadataService(make_settings(tmp_path))
    await service.start()
    try:
        assert service.registry is not None and service.admin_address is not None
        admin = service.admin_address.url
        guest = service.guest_addresses[0].url
        await service.registry.put(mac_of(1), guest_body(1, ipv4=LOCAL))
        status, before = await get(admin + "/metrics")
        assert status == 200
        assert value(before, 'metadata_guests{state="registered"}') == 1
        assert value(before, 'metadata_guests{state="configured"}') == 0

        assert (await get(guest + "/v1/config.txt"))[0] == 200
        assert (await get(guest + "/latest/meta-data/instance-id"))[0] == 200
        assert (await get(guest + "/nope"))[0] == 404
        async with (
            aiohttp.ClientSession() as session,
            session.post(guest + "/v1/status", data={"state": "configured"}) as response,
        ):
            assert response.status == 204

        _, after = await get(admin + "/metrics")
        assert value(after, 'metadata_guests{state="configured"}') == 1
        assert value(after, 'metadata_guests{state="registered"}') == 0
        assert value(after, 'metadata_guest_requests_total{family="v1",status="200"}') == 1
        assert value(after, 'metadata_guest_requests_total{family="v1",status="204"}') == 1
        assert value(after, 'metadata_guest_requests_total{family="ec2",status="200"}') == 1
        assert value(after, 'metadata_guest_requests_total{family="ec2",status="404"}') == 1
        assert value(after, 'metadata_guest_request_seconds_count{family="v1"}') == 2
        assert histogram_quantile(after, "metadata_guest_request_seconds", 0.99) is not None
        assert value(after, 'metadata_time_to_configured_seconds_count{since="registered"}') == 1
        assert value(after, "metadata_store_healthy") == 1
        assert "mac" not in after.lower().replace("machine", "")  # no per-guest labels
    finally:
        await service.stop()


@pytest.mark.parametrize(("listen", "needs_token"), [("127.0.0.1:0", False), ("0.0.0.0:0", True)])
async def test_the_token_is_needed_off_loopback(
    tmp_path: Path, listen: str, needs_token: bool
) -> None:
    service = MetadataService(make_settings(tmp_path, **{"admin.listen": listen}))
    await service.start()
    try:
        assert service.admin_address is not None
        url = f"http://127.0.0.1:{service.admin_address.port}/metrics"
        assert (await get(url))[0] == (401 if needs_token else 200)
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert (await get(url, auth))[0] == 200
    finally:
        await service.stop()
