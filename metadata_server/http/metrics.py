"""`GET /metrics` on the admin listener: the Prometheus text format.

Without a token when the admin listener is a unix socket or loopback (only this host can
reach it, as for a node exporter); with the bearer token otherwise, as every other admin
route. What it holds is described in metadata_server/metrics.py and the README.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from metadata_server.metrics import CONTENT_TYPE, Metrics

METRICS = web.AppKey("metrics", Metrics)
PATH = "/metrics"


async def get_metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, get_metrics)


OPENAPI_PATHS: dict[str, Any] = {
    PATH: {
        "get": {
            "summary": "Prometheus metrics (no token on a loopback or unix-socket listener)",
            # The token is asked for only where the listener is not local: both are allowed.
            "security": [{}, {"bearer": []}],
            "responses": {
                "200": {
                    "description": "The Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": {
                    "description": "Missing or wrong bearer token (on a non-loopback listener)",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
    }
}
