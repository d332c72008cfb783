"""Typed keys for what the composition root puts into the aiohttp applications."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from metadata_server.cloud.options import CloudOptions
from metadata_server.config import Settings
from metadata_server.dhcp.service import DhcpService
from metadata_server.identity import IdentityResolver
from metadata_server.registry import Registry
from metadata_server.signing import SigningKey
from metadata_server.snapshot import GuestSnapshot

if TYPE_CHECKING:  # guest.py imports these keys
    from metadata_server.http.guest import GuestAccess

REGISTRY = web.AppKey("registry", Registry)
SNAPSHOT = web.AppKey("snapshot", GuestSnapshot)
IDENTITY = web.AppKey("identity", IdentityResolver)
SETTINGS = web.AppKey("settings", Settings)
TOKEN_SECRET = web.AppKey("token_secret", bytes)
CLOUD_OPTIONS = web.AppKey("cloud_options", CloudOptions)
SIGNER = web.AppKey("signer", SigningKey)
DHCP = web.AppKey("dhcp", DhcpService)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
ACCESS: web.AppKey[GuestAccess] = web.AppKey("access")
