"""Shared fixtures: a real service on port 0 with a fresh SQLite registry, and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.config import Settings, build_settings

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def make_settings(tmp_path: Path, **flags: Any) -> Settings:
    base: dict[str, Any] = {
        "db": str(tmp_path / "registry.db"),
        "guest.listen": ["127.0.0.1:0"],
        "admin.listen": "127.0.0.1:0",
        "admin.token": ADMIN_TOKEN,
        "public_url": "http://169.254.169.254",
        # Most tests are guests on 127.0.0.x, calling a server on this host.
        "guest.allow_loopback": True,
    }
    base.update(flags)
    return build_settings(config_file=None, env={}, flags=base)


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    return lambda **flags: make_settings(tmp_path, **flags)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[MetadataService]:
    svc = MetadataService(make_settings(tmp_path))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


class Api:
    """A thin test client: `await api.put("/api/v1/vms/..", json=...)` → (status, body)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session = session
        self.base = base
        self.token = token

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as r:
            raw = await r.read()
            if r.content_type == "application/json" and raw:
                return r.status, await r.json()
            return r.status, raw

    def __getattr__(self, method: str) -> Callable[..., Any]:
        return lambda path, **kwargs: self.call(method.upper(), path, **kwargs)


@pytest.fixture
async def admin(service: MetadataService) -> AsyncIterator[Api]:
    assert service.admin_address is not None
    async with aiohttp.ClientSession() as session:
        yield Api(session, service.admin_address.url, ADMIN_TOKEN)


@pytest.fixture
async def guest(service: MetadataService) -> AsyncIterator[Api]:
    """The guest API as seen from 127.0.0.1."""
    async with aiohttp.ClientSession() as session:
        yield Api(session, service.guest_addresses[0].url, None)


def guest_body(n: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid guest object on 198.18.0.0/24, number `n`."""
    body: dict[str, Any] = {
        "hostname": f"guest{n}",
        "ipv4": {"address": f"198.18.0.{n + 10}", "prefix": 24, "gateway": "198.18.0.1"},
        "dns": ["198.18.0.1"],
        "password_hash": SAMPLE_HASH,
        "ssh_keys": [SAMPLE_KEY],
    }
    body.update(overrides)
    return body


def mac_of(n: int) -> str:
    return f"02:00:c6:12:{n // 256:02x}:{n % 256:02x}"


SAMPLE_HASH = (
    "$6$saltsaltsaltsalt$"
    "ZNEGiETZH5IxhTYbBVcX6nYtZ8o6kEQLoLDhzkUpBsS9hFV59IXFADy5Hi1nYThvMJ1aoFpXV.wJtLtDjs6Hm."
)
SAMPLE_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@example"
)


async def start_in_netns(settings: Settings, netns: str) -> MetadataService:
    """Start a service whose sockets (HTTP and netlink) live in namespace `netns`."""
    from tests.support.netns import in_netns

    service = MetadataService(settings)
    with in_netns(netns):
        await service.start()
    return service
