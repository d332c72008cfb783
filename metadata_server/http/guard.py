"""Admin route of the bridge guard: `GET /api/v1/guard`, its state and drop counters.

Answers `{"enabled": false, ...}` with the reason when there is no guard (no `bridge`, or
`guard.enabled = false`, which also carries a warning); otherwise the guard's status:
its table, the guest ports and the MAC each is bound to, guests left out and why, when
the sets were last replaced, and packets dropped per sender and kind (read afresh).
The same summary goes into `/healthz`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from metadata_server.guard.service import BridgeGuard

GUARD = web.AppKey("guard", BridgeGuard)
GUARD_OFF = web.AppKey("guard_off", str)  # why there is no guard
OFF_WARNING = (
    "the bridge guard is off: any guest on the bridge can impersonate Dom0, the DHCP "
    "server or another guest"
)


def guard_summary(app: web.Application) -> dict[str, Any]:
    """For /healthz: whether the guard is on and in force, and a warning when not."""
    guard = app.get(GUARD)
    if guard is None:
        reason = app.get(GUARD_OFF, "no bridge is set")
        summary: dict[str, Any] = {"enabled": False, "reason": reason}
        if reason != "no bridge is set":
            summary["warning"] = OFF_WARNING
        return summary
    status = guard.status
    return {"enabled": True, "ok": status.ok, "error": status.error, "guests": status.guests}


async def get_guard(request: web.Request) -> web.Response:
    guard = request.app.get(GUARD)
    if guard is None:
        return web.json_response(guard_summary(request.app))
    await guard.read_counters()
    return web.json_response(guard.status.to_json())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/guard", get_guard)


_NULLABLE_TEXT = {"type": ["string", "null"]}

# The OpenAPI path item of the route above, for http/openapi.py's `paths`.
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/guard": {
        "get": {
            "summary": "The bridge guard's state and drop counters",
            "responses": {
                "200": {
                    "description": "The guard's status, or why there is none",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["enabled"],
                                "properties": {
                                    "enabled": {"type": "boolean"},
                                    "reason": {"type": "string"},
                                    "warning": {"type": "string"},
                                    "bridge": {"type": "string"},
                                    "table": {"type": "string"},
                                    "ok": {"type": ["boolean", "null"]},
                                    "error": _NULLABLE_TEXT,
                                    "guests": {"type": "integer"},
                                    "ports": {
                                        "type": "object",
                                        "additionalProperties": {"type": ["string", "null"]},
                                    },
                                    "left_out": {"type": "array", "items": {"type": "string"}},
                                    "applies": {"type": "integer"},
                                    "last_applied": {"type": ["number", "null"]},
                                    "xen_vifs": {"type": "boolean"},
                                    "drops": {
                                        "type": "object",
                                        "additionalProperties": {
                                            "type": "object",
                                            "additionalProperties": {"type": "integer"},
                                        },
                                    },
                                    "unregistered_drops": {"type": "integer"},
                                },
                            }
                        }
                    },
                },
                "401": {
                    "description": "Missing or wrong bearer token",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
    }
}
