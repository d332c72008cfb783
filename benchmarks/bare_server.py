"""The baseline: a bare aiohttp handler that returns fixed bytes (run as a child process)."""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    port = int(sys.argv[1])
    body = Path(sys.argv[2]).read_bytes()
    headers = {"ETag": '"0123456789abcdef0123456789abcdef"', "Cache-Control": "no-store"}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json", headers=headers)

    app = web.Application()
    app.router.add_get("/v1/config", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
