"""A scripted metadata server for the guest script's tests: it serves what a case says.

It stands in for a compromised, broken, overloaded or token-demanding server, which the real
server cannot be made to be on purpose. It serves one document (`/v1/config.txt`), optionally
user-data and the document's signature (`/v1/config.txt.sig`), records every request and every
status report, and can
- want IMDSv2 session tokens (`tokens=True`): every route but `PUT /latest/api/token` answers
  401 without a token it issued, as the real server does with `ec2.tokens = "required"`;
- fail a route's first requests (`failures={"status": [Reply(507, ...)]}`), the way a server
  with a full disk or under a boot storm does.
"""

from __future__ import annotations

import itertools
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.records import SAMPLE_HASH, SAMPLE_KEY

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
GOOD = [
    "format 1",
    "instance_id 7d1b6c2e-0c4f-4a55-b1e0-3d7b9d2a6f10",
    "hostname stubguest",
    "fqdn stubguest.example.test",
    "domain example.test",
    "mac 02:00:c6:12:00:01",
    "address 198.18.0.11",
    "prefix 24",
    "gateway 198.18.0.1",
    "dns 198.18.0.1",
    f"password_hash {SAMPLE_HASH}",
    f"ssh_key {SAMPLE_KEY}",
    "metadata.role web",
    "status_url http://169.254.169.254/v1/status",
    "end",
]
USER_DATA_URL = "user_data_url http://169.254.169.254/v1/user-data"


def doc(*changes: str, drop: tuple[str, ...] = (), tail: str = "\n") -> bytes:
    """GOOD with the lines whose key is in `drop` removed and `changes` put before `end`."""
    lines = [line for line in GOOD[:-1] if line.split(" ", 1)[0] not in drop]
    return ("\n".join([*lines, *changes, "end"]) + tail).encode()


def replaced(key: str, value: str) -> bytes:
    return doc(f"{key} {value}", drop=(key,))


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"


def json_error(status: int, error: str, detail: str) -> Reply:
    """An error as the real server words it: {"error", "field", "detail"}."""
    body = json.dumps({"error": error, "field": None, "detail": detail}).encode()
    return Reply(status, body, "application/json")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    token: str | None  # the X-aws-ec2-metadata-token header, when sent


@dataclass
class Stub:
    document: bytes
    user_data: bytes | None = None
    signature: bytes | None = None
    content_type: str = "text/plain"
    tokens: bool = False
    forget_tokens_after: str | None = (
        None  # a route: then every token is unknown, as after a restart
    )
    failures: dict[str, list[Reply]] = field(default_factory=dict)
    reports: list[dict[str, str]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    url: str = ""
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/config.txt", self._route("config", self._config)),
            web.get("/v1/config.txt.sig", self._route("signature", self._signature)),
            web.get("/v1/user-data", self._route("user-data", self._user_data)),
            web.post("/v1/status", self._route("status", self._status)),
            web.put("/latest/api/token", self._route("token", self._token, needs_token=False)),
        ]

    def requests_to(self, path: str) -> list[Request]:
        return [request for request in self.requests if request.path == path]

    def _route(
        self,
        name: str,
        handler: Callable[[web.Request], Awaitable[Reply]],
        *,
        needs_token: bool = True,
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            self.requests.append(
                Request(request.method, request.path, request.headers.get(TOKEN_HEADER))
            )
            reply = await self._answer(name, handler, request, needs_token=needs_token)
            return web.Response(
                status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type}
            )

        return route

    async def _answer(
        self,
        name: str,
        handler: Callable[[web.Request], Awaitable[Reply]],
        request: web.Request,
        *,
        needs_token: bool,
    ) -> Reply:
        pending = self.failures.get(name, [])
        if pending:
            return pending.pop(0)
        token = request.headers.get(TOKEN_HEADER)
        if needs_token and (token is not None or self.tokens) and token not in self.issued:
            return Reply(401, b"a session token is required (PUT /latest/api/token)\n")
        reply = await handler(request)
        if name == self.forget_tokens_after:
            self.issued.clear()
        return reply

    async def _config(self, request: web.Request) -> Reply:
        return Reply(200, self.document, self.content_type)

    async def _signature(self, request: web.Request) -> Reply:
        if self.signature is None:
            return Reply(404, b"Not Found\n")
        return Reply(200, self.signature, "application/octet-stream")

    async def _user_data(self, request: web.Request) -> Reply:
        if self.user_data is None:
            return Reply(404, b"Not Found\n")
        return Reply(200, self.user_data, "application/octet-stream")

    async def _status(self, request: web.Request) -> Reply:
        body = (await request.read()).decode()
        self.reports.append(dict(urllib.parse.parse_qsl(body, keep_blank_values=True)))
        return Reply(204)

    async def _token(self, request: web.Request) -> Reply:
        ttl = request.headers.get(TTL_HEADER, "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return Reply(400, b"bad TTL\n")
        token = f"stub-token-{next(self._serial)}"
        self.issued.append(token)
        return Reply(200, token.encode())
