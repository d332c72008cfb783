"""Cross-cutting HTTP behaviour: errors to responses, request bodies, admin auth.

One place maps the `MetadataError` tree (and aiohttp's own 404/405/413) to a response, so
handlers stay thin and every error has the same `{"error", "field", "detail"}` shape.
Unexpected exceptions become a 500 that says nothing about the cause; the log has it.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from metadata_server.errors import (
    ErrorCode,
    InvalidInput,
    MetadataError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: MetadataError) -> web.Response:
    response = web.json_response(error.to_json(), status=error.http_status)
    if isinstance(error, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="metadata-server"'
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(error.retry_after)))
    if isinstance(error, MethodNotAllowed) and error.allowed:
        response.headers["Allow"] = ", ".join(error.allowed)
    return response


def _from_http_exception(exc: web.HTTPException) -> MetadataError:
    if exc.status == 404:
        return NotFound("no such resource")
    if exc.status == 405:
        return MethodNotAllowed("this method is not allowed here")
    if exc.status == 413:
        return PayloadTooLarge("the request body is too large")
    error = MetadataError(exc.reason or "error")
    error.http_status = exc.status
    error.code = ErrorCode.HTTP
    return error


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MetadataError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_from_http_exception(exc))
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return web.json_response(
            {"error": "internal", "field": None, "detail": "internal error; see the server log"},
            status=500,
        )


def bearer_credentials(header: str) -> bytes | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None for another scheme.

    RFC 9110 (11.1, 11.4): the scheme is case-insensitive and one or more spaces
    separate it from the credentials; the token itself is compared exactly.
    """
    scheme, _, credentials = header.partition(" ")
    if not scheme.isascii() or scheme.lower() != "bearer":
        return None
    return credentials.lstrip(" ").encode("utf-8", "replace")


def bearer_auth(token: str, public_paths: frozenset[str]) -> Any:
    expected = token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in public_paths:
            given = bearer_credentials(request.headers.get("Authorization", ""))
            # compare_digest runs in constant time for equal lengths; a wrong scheme is
            # compared too, so its answer takes as long as a wrong token's.
            if not hmac.compare_digest(given or b"", expected) or given is None:
                raise Unauthorized("a valid bearer token is required")
        return await handler(request)

    return middleware


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: JSON parsers disagree on which of two
    equal keys wins, so a body that has them means two things and is refused."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key if len(key) <= 64 else key[:61] + "..."
                raise InvalidInput(f"the key {shown!r} appears twice in one JSON object")
            seen.add(key)
    return obj


def _number(text: str) -> float | int:
    """A JSON number with a fraction or exponent: `24.0` and `2.4e1` are the integer 24,
    as JSON (one number type) and the OpenAPI document's JSON Schema count them."""
    value = float(text)
    return int(value) if value.is_integer() else value


# One decoder for every JSON body: no NaN/Infinity, no repeated keys, integral numbers
# as integers.
JSON_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, object_pairs_hook=_unique_keys, parse_float=_number
)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or 413 once it passes `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    return bytes(body)


def decode_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the request body is not UTF-8 (byte {exc.start})") from None


def parse_json(text: str) -> object:
    try:
        return JSON_DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidInput("the request body nests too deeply") from None


async def read_json(request: web.Request, limit: int) -> object:
    return parse_json(decode_text(await read_body(request, limit)))
