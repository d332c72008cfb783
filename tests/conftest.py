"""Shared fixtures: a real service on port 0 with a fresh SQLite registry, and clients.
The helpers they use live in tests/support/ (service.py, records.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.config import Settings
from tests.support.requirements import MARKED_ROOT
from tests.support.service import ADMIN_TOKEN, Api, make_settings

# Fixtures that several test packages share, kept with their helpers in tests/support/.
pytest_plugins = ["tests.support.xen_standins"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a fixture needing root gets the `root` marker."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        for definitions in info.name2fixturedefs.values():
            if any(getattr(d.func, "__needs_root__", False) for d in definitions):
                item.add_marker(pytest.mark.root)
                break


@pytest.fixture(autouse=True)
def _root_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    token = MARKED_ROOT.set(request.node.get_closest_marker("root") is not None)
    yield
    MARKED_ROOT.reset(token)


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
