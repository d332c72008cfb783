"""The admin REST API: register, change, list, import, re-arm and watch guests.

Handlers are thin: parse the request, call the registry, serialise the answer. The API
listens apart from the guest API and every route but `/healthz` and the OpenAPI
description needs the bearer token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence

from aiohttp import hdrs, web

from metadata_server.digits import ascii_decimal
from metadata_server.errors import InvalidInput, MethodNotAllowed, NotFound
from metadata_server.http.guard import add_routes as add_guard_routes
from metadata_server.http.guard import guard_summary
from metadata_server.http.import_body import import_rows
from metadata_server.http.iso import add_routes as add_iso_routes
from metadata_server.http.keys import DHCP, REGISTRY, SETTINGS, SNAPSHOT
from metadata_server.http.launch import add_routes as add_launch_routes
from metadata_server.http.metrics import PATH as METRICS_PATH
from metadata_server.http.metrics import add_routes as add_metrics_routes
from metadata_server.http.middleware import (
    Handler,
    bearer_auth,
    json_errors,
    read_body,
    read_json,
)
from metadata_server.http.openapi import openapi_document
from metadata_server.model import VM, State, parse_ipv4, parse_mac, vm_to_json
from metadata_server.registry import status_json
from metadata_server.store.base import Change
from metadata_server.store.health import health_of

log = logging.getLogger(__name__)
MAX_WAIT_SECONDS = 300.0
SSE_HEARTBEAT_SECONDS = 15.0
SSE_MAX_BACKLOG = 1000  # batches not yet written to one reader
SSE_CHUNK = 500  # events written between two turns of the event loop
PUBLIC_PATHS = frozenset({"/healthz", "/api/v1/openapi.json"})


def _only_params(request: web.Request, allowed: set[str]) -> None:
    for name in request.query:
        if name not in allowed:
            raise InvalidInput(f"unknown query parameter {name!r}", field=name)


def _float_param(request: web.Request, name: str, default: float, maximum: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    value = ascii_decimal(text)
    if value is None:
        raise InvalidInput(f"{name} must be a number of seconds", field=name)
    if not 0 <= value <= maximum:
        raise InvalidInput(f"{name} must be between 0 and {maximum:g}", field=name)
    return value


async def healthz(request: web.Request) -> web.Response:
    """200 while guests are served, even from memory during a registry outage
    (`degraded`, with the store's report)."""
    health = health_of(request.app[REGISTRY].store)
    guard = guard_summary(request.app)
    healthy = health.healthy and guard.get("ok") is not False
    return web.json_response(
        {
            "status": "ok" if healthy else "degraded",
            "guests": len(request.app[SNAPSHOT]),
            "store": health.to_json(),
            "guard": guard,
        }
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def put_vm(request: web.Request) -> web.Response:
    limit = request.app[SETTINGS].admin.max_body_bytes
    body = await read_json(request, limit)
    result = await request.app[REGISTRY].put(request.match_info["mac"], body)
    payload = vm_to_json(result.vm)
    if result.generated_password is not None:
        payload["generated_password"] = result.generated_password
    status = 201 if result.created else 200
    log.info("%s guest %s", "registered" if result.created else "replaced", result.vm.mac)
    response = web.json_response(payload, status=status)
    if result.created:
        response.headers["Location"] = f"/api/v1/vms/{result.vm.mac}"
    return response


async def patch_vm(request: web.Request) -> web.Response:
    body = await read_json(request, request.app[SETTINGS].admin.max_body_bytes)
    vm = await request.app[REGISTRY].patch(request.match_info["mac"], body)
    log.info("patched guest %s", vm.mac)
    return web.json_response(vm_to_json(vm))


async def get_vm(request: web.Request) -> web.Response:
    _only_params(request, set())
    vm = await request.app[REGISTRY].get(request.match_info["mac"])
    return web.json_response(vm_to_json(vm))


async def get_vm_user_data(request: web.Request) -> web.Response:
    vm = await request.app[REGISTRY].get(request.match_info["mac"])
    if vm.spec.user_data is None:
        raise NotFound(f"guest {vm.mac} has no user-data")
    return web.Response(body=vm.spec.user_data.encode(), content_type="application/octet-stream")


async def list_vms(request: web.Request) -> web.Response:
    _only_params(request, {"state", "host"})
    vms = await request.app[REGISTRY].list(
        state=request.query.get("state"), host=request.query.get("host")
    )
    body = await asyncio.to_thread(_listing, vms)  # about a second for 50,000 guests
    return web.Response(body=body, content_type="application/json")


def _listing(vms: Sequence[VM]) -> bytes:
    """`{"count", "vms"}`, one guest at a time: one json.dumps of the whole list would
    hold the interpreter lock, and so the event loop, until it is done."""
    guests = ", ".join(json.dumps(vm_to_json(vm)) for vm in vms)
    return f'{{"count": {len(vms)}, "vms": [{guests}]}}'.encode()


async def delete_vm(request: web.Request) -> web.Response:
    await request.app[REGISTRY].delete(request.match_info["mac"])
    log.info("deleted guest %s", parse_mac(request.match_info["mac"]))
    return web.Response(status=204)


async def import_vms(request: web.Request) -> web.Response:
    _only_params(request, set())
    body = await read_body(request, request.app[SETTINGS].admin.max_import_bytes)
    rows = await asyncio.to_thread(import_rows, body)  # seconds for 50,000 rows
    if not rows:
        raise InvalidInput("the import holds no guests")
    result = await request.app[REGISTRY].import_rows(rows)
    log.info("imported %d guests (%d new)", result.created + result.updated, result.created)
    return web.json_response(
        {
            "created": result.created,
            "updated": result.updated,
            "generated_passwords": result.generated_passwords,
        }
    )


async def rearm_vm(request: web.Request) -> web.Response:
    vm = await request.app[REGISTRY].rearm(request.match_info["mac"])
    log.info("re-armed guest %s", vm.mac)
    return web.json_response(vm_to_json(vm))


async def vm_status(request: web.Request) -> web.Response:
    _only_params(request, {"wait", "state"})
    registry = request.app[REGISTRY]
    wait = _float_param(request, "wait", 0.0, MAX_WAIT_SECONDS)
    unlike: State | None = None
    if "state" in request.query:
        try:
            unlike = State(request.query["state"])
        except ValueError:
            raise InvalidInput("state must be a guest state", field="state") from None
    if wait <= 0:
        vm = await registry.get(request.match_info["mac"])
    else:
        vm = await registry.wait_for_state(request.match_info["mac"], unlike=unlike, timeout=wait)
    return web.json_response(status_json(vm))


async def dhcp_status(request: web.Request) -> web.Response:
    service = request.app.get(DHCP)
    status = service.status() if service is not None else None
    if status is None:
        return web.json_response({"daemon": "none", "ok": None})
    return web.json_response(status.to_json())


async def report_lease(request: web.Request) -> web.Response:
    """The DHCP lease hook's report: the guest holds a lease (registered → leased)."""
    body = await read_json(request, 4096)
    if not isinstance(body, dict) or set(body) - {"address"} or "address" not in body:
        raise InvalidInput('a lease report is {"address": "..."}')
    address = str(parse_ipv4(body["address"], "address"))
    vm = await request.app[REGISTRY].mark_leased(request.match_info["mac"], address)
    return web.json_response(status_json(vm))


def _sse(event: str, data: Mapping[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _event(change: Change) -> bytes:
    data: dict[str, object] = {"mac": change.mac}
    if change.vm is not None:
        data["vm"] = vm_to_json(change.vm)
    return _sse(change.event, data)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one per committed change (`created`, `updated`, `state`, `deleted`)."""
    queue: asyncio.Queue[Sequence[Change] | None] = asyncio.Queue()
    cut_off = False

    def listener(changes: Sequence[Change]) -> None:
        nonlocal cut_off
        if cut_off:
            return
        if queue.qsize() >= SSE_MAX_BACKLOG:  # a reader this slow is cut off and reconnects
            cut_off = True
            queue.put_nowait(None)
            return
        queue.put_nowait(changes)

    unsubscribe = request.app[REGISTRY].subscribe(listener)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    try:
        await response.prepare(request)
        await response.write(b": connected\n\n")
        while True:
            try:
                batch = await asyncio.wait_for(queue.get(), SSE_HEARTBEAT_SECONDS)
            except TimeoutError:
                await response.write(b": ping\n\n")
                continue
            if batch is None:
                break
            for start in range(0, len(batch), SSE_CHUNK):
                await response.write(b"".join(_event(c) for c in batch[start : start + SSE_CHUNK]))
                await asyncio.sleep(0)  # an import is one batch of 50,000: let guests in
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        unsubscribe()
    return response


# Each path with its methods. A path is one resource that answers every method itself
# (see `close_resources`), so `/api/v1/vms/import` never falls through to `{mac}`.
ROUTES: tuple[tuple[str, Mapping[str, Handler]], ...] = (
    ("/healthz", {"GET": healthz}),
    ("/api/v1/openapi.json", {"GET": openapi}),
    ("/api/v1/vms", {"GET": list_vms}),
    ("/api/v1/vms/import", {"POST": import_vms}),
    ("/api/v1/vms/{mac}", {"PUT": put_vm, "PATCH": patch_vm, "GET": get_vm, "DELETE": delete_vm}),
    ("/api/v1/vms/{mac}/user-data", {"GET": get_vm_user_data}),
    ("/api/v1/vms/{mac}/rearm", {"POST": rearm_vm}),
    ("/api/v1/vms/{mac}/status", {"GET": vm_status}),
    ("/api/v1/events", {"GET": events}),
    ("/api/v1/dhcp/status", {"GET": dhcp_status}),
    ("/api/v1/vms/{mac}/lease", {"POST": report_lease}),
)


def _other_methods(allowed: tuple[str, ...]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={"Allow": ", ".join(allowed)})
        raise MethodNotAllowed(
            f"{request.method} is not allowed here (allowed: {', '.join(allowed)})",
            allowed=allowed,
        )

    return handler


def close_resources(app: web.Application) -> None:
    """Give every resource a route for the methods it lacks: OPTIONS lists its methods
    (204 with Allow), any other is a 405 with Allow. aiohttp would otherwise go on to the
    next resource whose pattern matches: GET on `/api/v1/vms/import` reached `{mac}`."""
    for resource in app.router.resources():
        if not isinstance(resource, web.Resource):
            continue  # static files and sub-apps: none here
        methods = {route.method for route in resource}
        allowed = tuple(method for method in _METHOD_ORDER if method in methods)
        resource.add_route(hdrs.METH_ANY, _other_methods(allowed))


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def add_routes(app: web.Application) -> None:
    for path, methods in ROUTES:
        resource = app.router.add_resource(path)
        for method, handler in methods.items():
            resource.add_route(method, handler)
            if method == "GET":
                resource.add_route("HEAD", handler)
    add_iso_routes(app)
    add_launch_routes(app)
    add_guard_routes(app)
    add_metrics_routes(app)
    close_resources(app)


def make_admin_app(token: str, *, public_metrics: bool = False) -> web.Application:
    # Bodies are read through read_body with per-route limits; this is only the ceiling.
    public = PUBLIC_PATHS | {METRICS_PATH} if public_metrics else PUBLIC_PATHS
    app = web.Application(middlewares=[json_errors, bearer_auth(token, public)])
    add_routes(app)
    return app
