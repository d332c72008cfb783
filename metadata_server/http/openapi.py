"""The OpenAPI 3 description of the admin API, served at /api/v1/openapi.json.

Written by hand next to the routes; a test checks that every route in the app is here
and every path here is a route, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from metadata_server import __version__
from metadata_server.http.guard import OPENAPI_PATHS as GUARD_PATHS
from metadata_server.http.iso import OPENAPI_PATHS as ISO_PATHS
from metadata_server.http.launch import OPENAPI_PATHS as LAUNCH_PATHS
from metadata_server.http.metrics import OPENAPI_PATHS as METRICS_PATHS
from metadata_server.http.openapi_schemas import MAC, SCHEMAS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid input; nothing changed",
        401: "Missing or wrong bearer token",
        404: "No such guest",
        409: "A unique field is held by another guest; nothing changed",
        413: "Request body too large",
        503: "The registry database cannot be used now (read-only, failing, locked); "
        "nothing changed",
        507: "The registry's disk is full; nothing changed",
    }
    return {
        str(code): {"description": text[code], "content": {"application/json": {"schema": _ERROR}}}
        for code in codes
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_MAC_PARAM = {
    "name": "mac",
    "in": "path",
    "required": True,
    "description": "MAC address; `02-00-..` and upper case are accepted",
    "schema": MAC,
}
_VM = {"$ref": "#/components/schemas/VM"}
_IPV4_ADDRESS = SCHEMAS["VMInput"]["properties"]["ipv4"]["properties"]["address"]


# 0 to 300 as the server reads a number from text: ASCII digits, an optional fraction.
SECONDS_UP_TO_300 = r"^(?:300(?:\.0{1,18})?|(?:[12][0-9]{2}|[1-9]?[0-9])(?:\.[0-9]{1,18})?)$"


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "metadata-server admin API",
            "version": __version__,
            "description": "Register Xen guests by MAC and follow them to their first boot.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness; no token needed",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "Serving")},
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document; no token needed",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")},
                }
            },
            "/api/v1/vms": {
                "get": {
                    "summary": "List guests",
                    "parameters": [
                        {
                            "name": "state",
                            "in": "query",
                            "schema": {"$ref": "#/components/schemas/State"},
                        },
                        {"name": "host", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "count": {"type": "integer"},
                                    "vms": {"type": "array", "items": _VM},
                                },
                            },
                            "Guests, ordered by MAC",
                        ),
                        **_errors(400, 401, 503),
                    },
                }
            },
            "/api/v1/vms/import": {
                "post": {
                    "summary": "Create or replace many guests: all of them or none",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"$ref": "#/components/schemas/VMImportRow"},
                                }
                            },
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "string",
                                    "description": "one VMImportRow object per line",
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "created": {"type": "integer"},
                                    "updated": {"type": "integer"},
                                    "generated_passwords": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string"},
                                    },
                                },
                            },
                            "Imported",
                        ),
                        **_errors(400, 401, 409, 413, 503, 507),
                    },
                }
            },
            "/api/v1/vms/{mac}": {
                "parameters": [_MAC_PARAM],
                "put": {
                    "summary": "Create or replace a guest",
                    "description": "Without password or password_hash, a new guest gets a "
                    "generated password (returned once); a replaced guest keeps its hash.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/VMInput"}}
                        },
                    },
                    "responses": {
                        "200": _json(_VM, "Replaced"),
                        "201": _json(_VM, "Created"),
                        **_errors(400, 401, 409, 413, 503, 507),
                    },
                },
                "patch": {
                    "summary": "Change some fields (JSON merge patch; null removes a field)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/merge-patch+json": {
                                "schema": {"$ref": "#/components/schemas/VMPatch"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json(_VM, "Changed"),
                        **_errors(400, 401, 404, 409, 413, 503, 507),
                    },
                },
                "get": {
                    "summary": "One guest",
                    "responses": {"200": _json(_VM, "The guest"), **_errors(400, 401, 404, 503)},
                },
                "delete": {
                    "summary": "Remove a guest",
                    "responses": {
                        "204": {"description": "Removed"},
                        **_errors(400, 401, 404, 503, 507),
                    },
                },
            },
            "/api/v1/vms/{mac}/user-data": {
                "parameters": [_MAC_PARAM],
                "get": {
                    "summary": "The guest's user-data, raw",
                    "responses": {
                        "200": {
                            "description": "user-data",
                            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 404, 503),
                    },
                },
            },
            "/api/v1/vms/{mac}/rearm": {
                "parameters": [_MAC_PARAM],
                "post": {
                    "summary": "New instance id, state registered, secrets served again",
                    "responses": {
                        "200": _json(_VM, "Re-armed"),
                        **_errors(400, 401, 404, 503, 507),
                    },
                },
            },
            "/api/v1/vms/{mac}/status": {
                "parameters": [_MAC_PARAM],
                "get": {
                    "summary": "The guest's state; with wait, long-polls for a change",
                    "parameters": [
                        {
                            "name": "wait",
                            "in": "query",
                            "description": "seconds to wait for the state to change, 0 to 300 "
                            "in ASCII digits with an optional fraction",
                            "schema": {"type": "string", "pattern": SECONDS_UP_TO_300},
                        },
                        {
                            "name": "state",
                            "in": "query",
                            "description": "the state you last saw (default: the state now)",
                            "schema": {"$ref": "#/components/schemas/State"},
                        },
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Status"}, "State"),
                        **_errors(400, 401, 404, 503),
                    },
                },
            },
            "/api/v1/vms/{mac}/lease": {
                "parameters": [_MAC_PARAM],
                "post": {
                    "summary": "The DHCP lease hook's report: registered → leased",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["address"],
                                    "additionalProperties": False,
                                    "properties": {"address": _IPV4_ADDRESS},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Status"}, "State"),
                        **_errors(400, 401, 404, 503, 507),
                    },
                },
            },
            "/api/v1/dhcp/status": {
                "get": {
                    "summary": "The DHCP configuration: last render, check, write and reload",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "daemon": {"type": "string"},
                                    "ok": {"type": ["boolean", "null"]},
                                    "error": {"type": ["string", "null"]},
                                    "guests": {"type": "integer"},
                                    "renders": {"type": "integer"},
                                    "writes": {"type": "integer"},
                                    "reloads": {"type": "integer"},
                                    "last_attempt": {"type": ["number", "null"]},
                                    "last_success": {"type": ["number", "null"]},
                                },
                            },
                            "Status",
                        ),
                        **_errors(401),
                    },
                }
            },
            "/api/v1/events": {
                "get": {
                    "summary": "Server-sent events: created, updated, state, deleted",
                    "responses": {
                        "200": {
                            "description": "An event stream; `data` is JSON {mac, vm}",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(401),
                    },
                }
            },
            **ISO_PATHS,
            **LAUNCH_PATHS,
            **GUARD_PATHS,
            **METRICS_PATHS,
        },
    }
