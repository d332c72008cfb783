"""DNS fixtures: a real SQLite registry, responders on 127.0.0.1 port 0, stub upstreams."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from metadata_server.dns.service import DnsService
from metadata_server.dns.settings import DnsSettings
from metadata_server.registry import Registry
from metadata_server.store import Store, open_store
from tests.dns.support import ZONE, StubUpstream, dns_settings


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    the_store = open_store(str(tmp_path / "registry.db"))
    await the_store.open()
    try:
        yield the_store
    finally:
        await the_store.close()


@pytest.fixture
def registry(store: Store) -> Registry:
    return Registry(store, clock=time.time, random_bytes=os.urandom, password_rounds=1000)


StartResponder = Callable[..., Awaitable[DnsService]]


@pytest.fixture
async def start_responder(store: Store) -> AsyncIterator[StartResponder]:
    started: list[DnsService] = []

    async def start(
        settings: DnsSettings | None = None, default_domain: str | None = ZONE, **kw: Any
    ) -> DnsService:
        service = DnsService(settings or dns_settings(**kw), store, default_domain)
        await service.start()
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in reversed(started):
            await service.stop()


StartUpstream = Callable[[str], Awaitable[StubUpstream]]


@pytest.fixture
async def start_upstream() -> AsyncIterator[StartUpstream]:
    started: list[StubUpstream] = []

    async def start(mode: str = "answer") -> StubUpstream:
        stub = StubUpstream(mode)
        await stub.start()
        started.append(stub)
        return stub

    try:
        yield start
    finally:
        for stub in started:
            await stub.stop()
