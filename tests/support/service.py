"""A real service for tests: its settings (port 0, a fresh SQLite registry, the test
admin token), a thin admin/guest HTTP client, and a service started inside a network
namespace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

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


async def start_in_netns(settings: Settings, netns: str) -> MetadataService:
    """Start a service whose sockets (HTTP and netlink) live in namespace `netns`."""
    from tests.support.netns import in_netns

    service = MetadataService(settings)
    with in_netns(netns):
        await service.start()
    return service
