"""Admin routes of the ISO fallback.

- `GET /api/v1/vms/{mac}/iso?layout=nocloud|configdrive`: the guest's ISO image, with a
  fresh nonce (in `X-Metadata-Init-Nonce`), for an admin who attaches it by hand.
  Changes nothing.
- `POST /api/v1/vms/{mac}/iso-provision`, optional JSON body `{"domid": N, "timeout": S,
  "layout": "nocloud"}`: runs the whole flow and answers when it is over (synchronous:
  the flow is bounded by `timeout`, at most 3600 s) with the guest's status and the
  domain. An error answer carries the reason. Errors found before the flow starts
  change nothing: a malformed request (400 `invalid`), an unknown guest (404
  `not_found`), a flow already running or a configured guest (409 `iso_conflict`). Once
  it started, the guest's state becomes `failed` with the reason: the domain named is
  not the guest's (400 `wrong_domain`), no such domain (404 `no_such_domain`), Xen, the
  guest or the ISO directory failed (503 `xen...`, `iso_store`). A client that
  disconnects does not stop the flow.

Thin handlers: the `Provisioner` (in `app[PROVISIONER]`) does the work; without one
(the fallback not configured) both routes answer 503.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from metadata_server.errors import InvalidInput, Unavailable
from metadata_server.http.keys import SETTINGS
from metadata_server.http.middleware import decode_text, parse_json, read_body
from metadata_server.iso.layout import LABELS
from metadata_server.iso.provision import Provisioner
from metadata_server.registry import status_json

PROVISIONER = web.AppKey("provisioner", Provisioner)
PROVISION_FIELDS = frozenset({"domid", "timeout", "layout"})
DEFAULT_BODY_LIMIT = 4096


def _provisioner(request: web.Request) -> Provisioner:
    provisioner = request.app.get(PROVISIONER)
    if provisioner is None:
        raise Unavailable("the ISO fallback is not configured on this server")
    return provisioner


async def get_iso(request: web.Request) -> web.Response:
    for name in request.query:
        if name != "layout":
            raise InvalidInput(f"unknown query parameter {name!r}", field=name)
    built = await _provisioner(request).build(
        request.match_info["mac"], request.query.get("layout")
    )
    filename = f"{built.vm.mac.replace(':', '-')}-{LABELS[built.layout]}.iso"
    return web.Response(
        body=built.data,
        content_type="application/x-iso9660-image",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Metadata-Init-Nonce": built.nonce,
            "Cache-Control": "no-store",
        },
    )


async def provision_iso(request: web.Request) -> web.Response:
    provisioner = _provisioner(request)
    settings = request.app.get(SETTINGS)
    limit = settings.admin.max_body_bytes if settings is not None else DEFAULT_BODY_LIMIT
    text = decode_text(await read_body(request, limit))
    body = parse_json(text) if text.strip() else {}
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    for name in body:
        if name not in PROVISION_FIELDS:
            raise InvalidInput(f"unknown field {name!r}", field=name)
    result = await provisioner.provision(
        request.match_info["mac"],
        domid=body.get("domid"),
        timeout=body.get("timeout"),
        layout=body.get("layout"),
    )
    payload = status_json(result.vm)
    payload.update({"domid": result.domid, "layout": result.layout.value, "detail": result.detail})
    return web.json_response(payload)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/vms/{mac}/iso", get_iso)
    app.router.add_post("/api/v1/vms/{mac}/iso-provision", provision_iso)


_MAC = {
    "name": "mac",
    "in": "path",
    "required": True,
    "description": "MAC address; `02-00-..` and upper case are accepted",
    "schema": {"type": "string", "example": "02:00:c6:12:00:0a"},
}
_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_LAYOUT = {"type": "string", "enum": ["nocloud", "configdrive"], "default": "nocloud"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _ERROR}


# The OpenAPI path items of the routes above, for http/openapi.py's `paths`.
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/vms/{mac}/iso": {
        "parameters": [_MAC],
        "get": {
            "summary": "The guest's configuration ISO (fresh nonce), to attach by hand",
            "parameters": [{"name": "layout", "in": "query", "schema": _LAYOUT}],
            "responses": {
                "200": {
                    "description": "An ISO 9660 image (label cidata or config-2); the nonce "
                    "is in X-Metadata-Init-Nonce",
                    "content": {
                        "application/x-iso9660-image": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "400": _error("Invalid input"),
                "401": _error("Missing or wrong bearer token"),
                "404": _error("No such guest"),
                "503": _error("The ISO fallback is not configured"),
            },
        },
    },
    "/api/v1/vms/{mac}/iso-provision": {
        "parameters": [_MAC],
        "post": {
            "summary": "Configure the guest from an ISO: attach, wait for its signal, detach",
            "description": "Answers when the flow is over. On an error answer the guest's "
            "state is failed with the reason, except for 400, 404 and 409, which change "
            "nothing. The ISO and the xenstore keys are removed on every path.",
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "domid": {"type": "integer", "minimum": 1, "maximum": 32751},
                                "timeout": {
                                    "type": "number",
                                    "exclusiveMinimum": 0,
                                    "maximum": 3600,
                                },
                                "layout": _LAYOUT,
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "The guest's status at the end",
                    "content": {
                        "application/json": {
                            "schema": {
                                "allOf": [
                                    {"$ref": "#/components/schemas/Status"},
                                    {
                                        "type": "object",
                                        "properties": {
                                            "domid": {"type": "integer"},
                                            "layout": _LAYOUT,
                                            "detail": {"type": "string"},
                                        },
                                    },
                                ]
                            }
                        }
                    },
                },
                "400": _error(
                    "invalid: a malformed request, nothing changed; wrong_domain: the domain "
                    "named is not the guest's, the state is failed"
                ),
                "401": _error("Missing or wrong bearer token"),
                "404": _error(
                    "not_found: no such guest, nothing changed; no_such_domain: the state is failed"
                ),
                "409": _error(
                    "iso_conflict: provisioned already, configured or re-armed; nothing changed"
                ),
                "413": _error("Request body too large"),
                "503": _error("Xen, the guest or the ISO directory failed; the state is failed"),
            },
        },
    },
}
