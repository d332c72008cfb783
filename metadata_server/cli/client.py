"""A small client for the admin API, over TCP or a unix socket, for the CLI commands.

Turns transport failures and error responses into `CommandError` with one clear line
(and, for a bulk import, the bad rows), so the CLI never prints a traceback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

DEFAULT_TIMEOUT = 30.0


class CommandError(Exception):
    """What the CLI prints on stderr before exiting 1."""

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


@dataclass
class Reply:
    status: int
    body: Any


class AdminClient:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        if url.startswith("unix:"):
            self._base = "http://localhost"
            self._unix: str | None = url.removeprefix("unix:")
        else:
            self._base = url.rstrip("/")
            self._unix = None

    async def request(self, method: str, path: str, **options: Any) -> Reply:
        """The answer with its body decoded (JSON, else text); CommandError on failure.
        `options` are request_bytes's."""
        status, raw = await self.request_bytes(method, path, **options)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        return Reply(status, body)

    async def request_bytes(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> tuple[int, bytes]:
        """The status and the raw body (an ISO image, say); CommandError on failure."""
        headers = {"Content-Type": content_type} if content_type else {}
        options = {"json": json_body, "data": data, "params": params, "headers": headers}
        async with self._response(method, path, timeout, **options) as response:
            return response.status, await response.read()

    async def stream_lines(
        self, method: str, path: str, *, json_body: Any = None, timeout: float = DEFAULT_TIMEOUT
    ) -> AsyncIterator[Any]:
        """Each JSON line of an NDJSON answer as it comes (`POST /api/v1/launch`'s
        progress); CommandError on failure, an error answer included."""
        headers = {"Accept": "application/x-ndjson"}
        async with self._response(
            method, path, timeout, json=json_body, headers=headers
        ) as response:
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)

    @contextlib.asynccontextmanager
    async def _response(
        self, method: str, path: str, timeout: float, **options: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A response below 400, with the token sent; CommandError otherwise, and for
        an API that cannot be reached or does not answer within `timeout` seconds."""
        options["headers"] = {"Authorization": f"Bearer {self.token}", **options["headers"]}
        connector = aiohttp.UnixConnector(path=self._unix) if self._unix else None
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as session,
                session.request(method, self._base + path, **options) as response,
            ):
                if response.status >= 400:
                    raw = await response.read()
                    try:
                        error: Any = json.loads(raw)
                    except ValueError:
                        error = None
                    raise _error_from(response.status, error)
                yield response
        except aiohttp.ClientConnectionError as exc:
            raise CommandError(f"cannot reach the admin API at {self.url}: {exc}") from None
        except TimeoutError:
            raise CommandError(
                f"the admin API at {self.url} did not answer in {timeout:g} s"
            ) from None


def _error_from(status: int, body: Any) -> CommandError:
    if isinstance(body, dict) and "detail" in body:
        where = f" ({body['field']})" if body.get("field") else ""
        rows = [
            f"row {row['index']}: {row.get('field') or '-'}: {row['reason']}"
            for row in body.get("rows", [])
        ]
        return CommandError(f"{body['detail']}{where} [HTTP {status}]", rows)
    return CommandError(f"the admin API answered HTTP {status}")
