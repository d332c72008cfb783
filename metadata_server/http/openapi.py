"""The OpenAPI 3 description of the admin API, served at /api/v1/openapi.json.

Written by hand next to the routes; a test checks that every route in the app is here
and every path here is a route, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from metadata_server import __version__
from metadata_server.http.guard import OPENAPI_PATHS as GUARD_PATHS
from metadata_server.http.iso import OPENAPI_PATHS as ISO_PATHS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid input; nothing changed",
        401: "Missing or wrong bearer token",
        404: "No such guest",
        409: "A unique field is held by another guest; nothing changed",
        413: "Request body too large",
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
    "schema": {"type": "string", "example": "02:00:c6:12:00:0a"},
}
_VM = {"$ref": "#/components/schemas/VM"}
_VM_INPUT = {"$ref": "#/components/schemas/VMInput"}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "short code, e.g. invalid, conflict"},
            "field": {"type": "string", "nullable": True},
            "detail": {"type": "string"},
            "holder": {"type": "string", "description": "409: the MAC that holds the field"},
            "rows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "field": {"type": "string", "nullable": True},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    },
    "IPv4": {
        "type": "object",
        "required": ["address", "prefix"],
        "additionalProperties": False,
        "properties": {
            "address": {"type": "string", "format": "ipv4"},
            "prefix": {"type": "integer", "minimum": 1, "maximum": 32},
            "gateway": {"type": "string", "format": "ipv4", "nullable": True},
        },
    },
    "VMInput": {
        "type": "object",
        "required": ["hostname", "ipv4"],
        "additionalProperties": False,
        "properties": {
            "mac": {"type": "string", "description": "optional; must match the URL"},
            "hostname": {"type": "string", "description": "one RFC 1123 label"},
            "domain": {"type": "string", "nullable": True},
            "ipv4": {"$ref": "#/components/schemas/IPv4"},
            "dns": {"type": "array", "items": {"type": "string", "format": "ipv4"}},
            "password": {
                "type": "string",
                "writeOnly": True,
                "description": "plain; hashed at once (SHA-512 crypt), never stored or shown",
            },
            "password_hash": {
                "type": "string",
                "writeOnly": True,
                "description": "a crypt string ($6$, $5$, $y$, $2b$, $1$) or ! / * (locked)",
            },
            "ssh_keys": {"type": "array", "items": {"type": "string"}},
            "user_data": {"type": "string", "maxLength": 65536},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "host": {"type": "string", "nullable": True, "description": "the Dom0 that runs it"},
        },
    },
    "VM": {
        "type": "object",
        "properties": {
            "mac": {"type": "string"},
            "hostname": {"type": "string"},
            "domain": {"type": "string", "nullable": True},
            "ipv4": {"$ref": "#/components/schemas/IPv4"},
            "dns": {"type": "array", "items": {"type": "string"}},
            "ssh_keys": {"type": "array", "items": {"type": "string"}},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "host": {"type": "string", "nullable": True},
            "password_set": {"type": "boolean"},
            "user_data_bytes": {"type": "integer"},
            "instance_id": {"type": "string", "format": "uuid"},
            "state": {"$ref": "#/components/schemas/State"},
            "state_times": {"type": "object", "additionalProperties": {"type": "string"}},
            "message": {"type": "string", "nullable": True},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "generated_password": {
                "type": "string",
                "description": "only in the response that created the guest without a password",
            },
        },
    },
    "State": {
        "type": "string",
        "enum": ["registered", "leased", "fetched", "configured", "failed"],
    },
    "Status": {
        "type": "object",
        "properties": {
            "mac": {"type": "string"},
            "instance_id": {"type": "string"},
            "state": {"$ref": "#/components/schemas/State"},
            "state_times": {"type": "object", "additionalProperties": {"type": "string"}},
            "message": {"type": "string", "nullable": True},
        },
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "metadata-server admin API",
            "version": __version__,
            "description": "Register Xen guests by MAC and follow them to their first boot.",
        },
        "components": {
            "schemas": _SCHEMAS,
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
                        **_errors(400, 401),
                    },
                }
            },
            "/api/v1/vms/import": {
                "post": {
                    "summary": "Create or replace many guests: all of them or none",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"type": "array", "items": _VM_INPUT}},
                            "application/x-ndjson": {"schema": {"type": "string"}},
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
                        **_errors(400, 401, 409, 413),
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
                        "content": {"application/json": {"schema": _VM_INPUT}},
                    },
                    "responses": {
                        "200": _json(_VM, "Replaced"),
                        "201": _json(_VM, "Created"),
                        **_errors(400, 401, 409, 413),
                    },
                },
                "patch": {
                    "summary": "Change some fields (JSON merge patch; null removes a field)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/merge-patch+json": {"schema": _VM_INPUT}},
                    },
                    "responses": {"200": _json(_VM, "Changed"), **_errors(400, 401, 404, 409, 413)},
                },
                "get": {
                    "summary": "One guest",
                    "responses": {"200": _json(_VM, "The guest"), **_errors(400, 401, 404)},
                },
                "delete": {
                    "summary": "Remove a guest",
                    "responses": {"204": {"description": "Removed"}, **_errors(400, 401, 404)},
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
                        **_errors(400, 401, 404),
                    },
                },
            },
            "/api/v1/vms/{mac}/rearm": {
                "parameters": [_MAC_PARAM],
                "post": {
                    "summary": "New instance id, state registered, secrets served again",
                    "responses": {"200": _json(_VM, "Re-armed"), **_errors(400, 401, 404)},
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
                            "description": "seconds to wait for the state to change (0-300)",
                            "schema": {"type": "number", "minimum": 0, "maximum": 300},
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
                        **_errors(400, 401, 404),
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
                                    "properties": {"address": {"type": "string", "format": "ipv4"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Status"}, "State"),
                        **_errors(400, 401, 404),
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
                                    "ok": {"type": "boolean", "nullable": True},
                                    "error": {"type": "string", "nullable": True},
                                    "guests": {"type": "integer"},
                                    "renders": {"type": "integer"},
                                    "writes": {"type": "integer"},
                                    "reloads": {"type": "integer"},
                                    "last_attempt": {"type": "number", "nullable": True},
                                    "last_success": {"type": "number", "nullable": True},
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
            **GUARD_PATHS,
        },
    }
