"""The OpenAPI description matches the routes the admin app really has."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from metadata_server.http.admin import make_admin_app
from metadata_server.http.openapi import openapi_document


def test_every_route_is_described_and_every_description_is_a_route() -> None:
    app = make_admin_app("x" * 32)
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        routes.add((route.method.lower(), re.sub(r"\{(\w+)\}", r"{\1}", path)))
    described = {
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in ("get", "put", "post", "patch", "delete")
    }
    assert routes == described


def test_document_is_valid_openapi() -> None:
    validate(openapi_document())
