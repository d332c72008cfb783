"""The cloud-compatible guest routes: the EC2 tree (with IMDSv2 tokens), OpenStack and
NoCloud, each answering the caller's own data only, from the in-memory documents.

Paths arrive canonical (http/paths.py: no empty segments, no trailing slash, no encoded
slash) and are matched exactly against the caller's own tree, so `..`, `.` or another
guest's MAC under `network/interfaces/macs/` simply find nothing (404).
"""

from __future__ import annotations

import logging
import socket

from aiohttp import hdrs, web

from metadata_server.cloud.ec2 import EC2_VERSIONS, ec2_tree
from metadata_server.cloud.ec2 import VERSIONS_LISTING as EC2_LISTING
from metadata_server.cloud.nocloud import nocloud_files
from metadata_server.cloud.openstack import OPENSTACK_VERSIONS, openstack_files
from metadata_server.cloud.openstack import VERSIONS_LISTING as OPENSTACK_LISTING
from metadata_server.cloud.tree import FileTree
from metadata_server.errors import Forbidden, InvalidInput, NotFound
from metadata_server.http.guest import guest_action, guest_route
from metadata_server.http.keys import ACCESS, CLOUD_OPTIONS, SETTINGS
from metadata_server.http.paths import GUEST_ROUTES
from metadata_server.identity import Caller
from metadata_server.tokens import parse_ttl

log = logging.getLogger(__name__)
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
_VERSIONS = frozenset(EC2_VERSIONS)
_OPENSTACK_VERSIONS = frozenset(OPENSTACK_VERSIONS)
TEXT = "text/plain; charset=utf-8"


def _text(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": TEXT, "Cache-Control": "no-store"})


def _ec2(request: web.Request, caller: Caller) -> FileTree:
    later = caller.document.later
    if later.ec2 is None:
        later.ec2 = ec2_tree(caller.document.view, request.app[CLOUD_OPTIONS])
    return later.ec2


def _openstack(request: web.Request, caller: Caller) -> FileTree:
    later = caller.document.later
    if later.openstack is None:
        options = request.app[CLOUD_OPTIONS]
        later.openstack = FileTree(openstack_files(caller.document.view, options))
    return later.openstack


def _nocloud(caller: Caller) -> FileTree:
    later = caller.document.later
    if later.nocloud is None:
        later.nocloud = FileTree(nocloud_files(caller.document.view))
    return later.nocloud


# --- EC2 -------------------------------------------------------------------------------


def ec2_versions(request: web.Request, caller: Caller) -> web.StreamResponse:
    return _text(EC2_LISTING)


def ec2_path(request: web.Request, caller: Caller) -> web.StreamResponse:
    version = request.match_info["version"]
    if version not in _VERSIONS:
        raise NotFound("Not Found")
    path = request.match_info.get("path", "")
    tree = _ec2(request, caller)
    if path == "user-data" and caller.document.view.user_data is None:
        raise NotFound("Not Found")
    body = tree.lookup(path)
    if body is None:
        raise NotFound("Not Found")
    return _text(body)


async def ec2_token(request: web.Request, caller: Caller) -> web.StreamResponse:
    """IMDSv2: PUT /latest/api/token. The reply leaves with a low IP TTL (hop limit), so
    a token cannot be fetched through a NAT or container hop and relayed."""
    if hdrs.X_FORWARDED_FOR in request.headers or hdrs.FORWARDED in request.headers:
        raise Forbidden("Forbidden")  # a proxy relays; a token must not cross one
    ttl = parse_ttl(request.headers.get(TTL_HEADER))
    if ttl is None:
        raise InvalidInput(f"{TTL_HEADER} must be an integer from 1 to 21600")
    token = request.app[ACCESS].tokens.issue(caller, ttl)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, request.app[SETTINGS].ec2.token_hop_limit)
    # The connection ends with this reply, so the low TTL never touches another answer.
    return web.Response(
        body=token.encode(),
        headers={"Content-Type": TEXT, TTL_HEADER: str(ttl), "Connection": "close"},
    )


async def ec2_token_elsewhere(request: web.Request, caller: Caller) -> web.StreamResponse:
    raise Forbidden("Forbidden")


# --- OpenStack and NoCloud -------------------------------------------------------------


def openstack_versions(request: web.Request, caller: Caller) -> web.StreamResponse:
    return _text(OPENSTACK_LISTING)


def openstack_path(request: web.Request, caller: Caller) -> web.StreamResponse:
    if request.match_info["version"] not in _OPENSTACK_VERSIONS:
        raise NotFound("Not Found")
    body = _openstack(request, caller).lookup(request.match_info.get("path", ""))
    if body is None:
        raise NotFound("Not Found")
    return _text(body)


def nocloud_path(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = _nocloud(caller).lookup(request.match_info.get("path", ""))
    if body is None:
        raise NotFound("Not Found")
    return _text(body)


def add_routes(app: web.Application) -> None:
    """Register after the native /v1 routes: `/{version}` would otherwise match them.
    Paths arrive canonical (http/paths.py): `/openstack/` is `/openstack`, and so on."""
    routes = app[GUEST_ROUTES]
    routes.add_get("/", guest_route(ec2_versions, marks_fetch=True, text=True))
    routes.add_get("/openstack", guest_route(openstack_versions, text=True))
    routes.add_get("/openstack/{version}", guest_route(openstack_path, marks_fetch=True, text=True))
    routes.add_get(
        "/openstack/{version}/{path:.*}", guest_route(openstack_path, marks_fetch=True, text=True)
    )
    routes.add_get("/nocloud", guest_route(nocloud_path, marks_fetch=True, text=True))
    routes.add_get("/nocloud/{path:.*}", guest_route(nocloud_path, marks_fetch=True, text=True))
    routes.add_put("/latest/api/token", guest_action(ec2_token, text=True, needs_token=False))
    routes.add_put(
        "/{version}/api/token", guest_action(ec2_token_elsewhere, text=True, needs_token=False)
    )
    routes.add_get("/{version}", guest_route(ec2_path, marks_fetch=True, text=True))
    routes.add_get("/{version}/{path:.*}", guest_route(ec2_path, marks_fetch=True, text=True))
