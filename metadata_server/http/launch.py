"""Admin routes of on-request launch.

- `POST /api/v1/launch`, body `{name, image, ip?, memory?, vcpus?, ssh_keys?, password?,
  wait?, keep?, kernel?, ramdisk?}`: everything is checked before anything is made (400
  bad input, an address outside every subnet or an image that is not a prepared master;
  409 a name or address taken; 503 `tool_missing` naming xl, qemu-img or pvgrub2). Then
  the launch runs: with `Accept: application/x-ndjson` the answer is a stream of one
  JSON object per line, a progress line per step (`{"step", "detail"}`, and `{"step":
  "state", ...}` while waiting), then `{"result": ...}` or `{"error": {error, field,
  detail}}`; a client that goes away rolls the launch back. Otherwise one JSON answer at
  the end: 201 with the result, or the error.
- `POST /api/v1/launched/{name}/destroy`, optional body `{keep_record?, force?}`: 200
  with what was removed; 409 `not_launched` for a guest this Dom0 did not launch.

Thin handlers: the `Launcher` (in `app[LAUNCHER]`) does the work; without one both
routes answer 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from metadata_server.errors import MetadataError, Unavailable
from metadata_server.http.keys import SETTINGS
from metadata_server.http.middleware import decode_text, parse_json, read_body
from metadata_server.launch.destroy import destroy
from metadata_server.launch.launcher import Launcher, LaunchResult
from metadata_server.launch.request import parse_destroy, parse_launch
from metadata_server.model import vm_to_json
from metadata_server.timeline import steps

log = logging.getLogger(__name__)
LAUNCHER = web.AppKey("launcher", Launcher)
DEFAULT_BODY_LIMIT = 256 * 1024
NDJSON = "application/x-ndjson"
GONE_CHECK = 0.25  # seconds between two looks at a streaming client's connection


def _launcher(request: web.Request) -> Launcher:
    launcher = request.app.get(LAUNCHER)
    if launcher is None:
        raise Unavailable("on-request launch is not configured on this server")
    return launcher


async def _body(request: web.Request) -> object:
    settings = request.app.get(SETTINGS)
    limit = settings.admin.max_body_bytes if settings is not None else DEFAULT_BODY_LIMIT
    text = decode_text(await read_body(request, limit))
    return parse_json(text) if text.strip() else None


def result_json(result: LaunchResult, default_domain: str | None) -> dict[str, Any]:
    vm, plan = result.vm, result.plan
    guest = vm_to_json(vm)
    body: dict[str, Any] = {
        "name": plan.request.name,
        "mac": vm.mac,
        "address": vm.spec.ipv4.address,
        "prefix": vm.spec.ipv4.prefix,
        "fqdn": vm.spec.fqdn(default_domain),
        "uuid": plan.uuid,
        "image": plan.image,
        "image_id": plan.master.image_id,
        "delta": str(plan.paths.delta),
        "xl_config": str(plan.paths.config),
        "kernel": "pvgrub2" if plan.boot.pvgrub else plan.boot.kernel,
        "state": vm.state.value,
        "configured": result.configured,
        "steps": [{"step": name, "seconds": round(took, 3)} for name, took in result.steps],
        "timeline": [step.to_json() for step in steps(guest["state_times"])],
        "vm": guest,
    }
    if result.generated_password is not None:
        body["generated_password"] = result.generated_password
    return body


def _line(obj: object) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


async def launch(request: web.Request) -> web.StreamResponse:
    launcher = _launcher(request)
    wanted = parse_launch(await _body(request))
    settings = request.app.get(SETTINGS)
    domain = settings.domain if settings is not None else None
    plan = await launcher.plan(wanted)  # every check; nothing made yet
    if NDJSON not in request.headers.get("Accept", ""):
        try:
            result = await launcher.run(plan)
        finally:
            launcher.release(plan)
        log.info("launched %s as %s", wanted.name, result.vm.mac)
        return web.json_response(result_json(result, domain), status=201)

    response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-store"})
    try:
        await response.prepare(request)
    except BaseException:
        launcher.release(plan)
        raise

    async def progress(event: dict[str, Any]) -> None:
        await response.write(_line(event))  # fails once the client is gone: rolls back

    running = asyncio.ensure_future(launcher.run(plan, progress))
    watcher = asyncio.ensure_future(_cancel_when_gone(request, running))
    try:
        result = await running
    except ConnectionResetError:
        log.warning("the client of the launch of %s went away: rolled back", wanted.name)
        return response
    except asyncio.CancelledError:
        if not watcher.done() or watcher.cancelled() or not watcher.result():
            raise  # the server is stopping: the launch was rolled back in its task
        log.warning("the client of the launch of %s went away: rolled back", wanted.name)
        return response
    except MetadataError as exc:
        await response.write(_line({"error": exc.to_json()}))
    except Exception:
        log.exception("launch of %s failed", wanted.name)
        internal = {"error": "internal", "field": None, "detail": "internal error (see the log)"}
        await response.write(_line({"error": internal}))
    else:
        log.info("launched %s as %s", wanted.name, result.vm.mac)
        await response.write(_line({"result": result_json(result, domain)}))
    finally:
        watcher.cancel()
    await response.write_eof()
    return response


async def _cancel_when_gone(request: web.Request, running: asyncio.Future[Any]) -> bool:
    """Cancel the launch (so it rolls back) once its client's connection closes, even
    between two progress lines (a long `xl create`, the clone); whether it did."""
    while not running.done():
        transport = request.transport
        if transport is None or transport.is_closing():
            running.cancel()
            return True
        await asyncio.sleep(GONE_CHECK)
    return False


async def destroy_launched(request: web.Request) -> web.Response:
    launcher = _launcher(request)
    wanted = parse_destroy(await _body(request))
    result = await destroy(
        launcher.registry,
        launcher.xl,
        launcher.settings.directory,
        request.match_info["name"],
        wanted,
    )
    return web.json_response(result.to_json())


ROUTES = (
    ("/api/v1/launch", {"POST": launch}),
    ("/api/v1/launched/{name}/destroy", {"POST": destroy_launched}),
)

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _ERROR}


_PATH = {"type": "string", "pattern": "^/[^\"'\\\\]*$"}
LAUNCH_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name", "image"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "description": "host name and xl domain name (a label)"},
        "image": {**_PATH, "description": "a prepared qcow2 master (`image prepare`)"},
        "ip": {"type": "string", "description": "ADDRESS or ADDRESS/PREFIX in a DHCP subnet"},
        "memory": {"type": "integer", "minimum": 64, "maximum": 1048576, "default": 512},
        "vcpus": {"type": "integer", "minimum": 1, "maximum": 128, "default": 1},
        "ssh_keys": {"type": "array", "items": {"type": "string"}},
        "password": {"type": "string", "writeOnly": True},
        "wait": {"type": "number", "minimum": 0, "maximum": 3600, "default": 0},
        "keep": {"type": "boolean", "default": False},
        "kernel": {**_PATH, "description": "a kernel on Dom0 (default: pvgrub2)"},
        "ramdisk": _PATH,
    },
}

# The OpenAPI path items of the routes above, for http/openapi.py's `paths`.
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/launch": {
        "post": {
            "summary": "Launch a guest from a master: register, clone, xl create, wait",
            "description": "Checks everything before it makes anything; any later failure "
            "rolls back (domain, config, delta, registration) unless keep. With Accept: "
            "application/x-ndjson, a progress line per step, then the result or the error.",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": LAUNCH_BODY}},
            },
            "responses": {
                "201": {
                    "description": "Launched (configured, or still booting when wait ended)",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        NDJSON: {"schema": {"type": "string"}},
                    },
                },
                "400": _error("Invalid input, an address outside every subnet, not a master"),
                "401": _error("Missing or wrong bearer token"),
                "409": _error("The name or address is taken; nothing was made"),
                "500": _error("The launch failed (rolled back), or its rollback left something"),
                "503": _error("A tool is missing (xl, qemu-img, pvgrub2), or Xen failed"),
            },
        }
    },
    "/api/v1/launched/{name}/destroy": {
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "post": {
            "summary": "Destroy a launched guest: its domain, delta, config and registration",
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "keep_record": {"type": "boolean"},
                                "force": {"type": "boolean"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Destroyed",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": _error("Invalid input"),
                "401": _error("Missing or wrong bearer token"),
                "409": _error("Not launched by this Dom0 (force destroys it anyway)"),
                "500": _error("Destroyed only in part: the problems are listed"),
                "503": _error("xl is missing or failed; nothing was removed"),
            },
        },
    },
}


def add_routes(app: web.Application) -> None:
    for path, methods in ROUTES:
        resource = app.router.add_resource(path)
        for method, handler in methods.items():
            resource.add_route(method, handler)
