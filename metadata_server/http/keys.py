"""Typed keys for what the composition root puts into the aiohttp applications."""

from __future__ import annotations

from aiohttp import web

from metadata_server.config import Settings
from metadata_server.identity import IdentityResolver
from metadata_server.registry import Registry
from metadata_server.snapshot import GuestSnapshot

REGISTRY = web.AppKey("registry", Registry)
SNAPSHOT = web.AppKey("snapshot", GuestSnapshot)
IDENTITY = web.AppKey("identity", IdentityResolver)
SETTINGS = web.AppKey("settings", Settings)
