"""The guest API: each guest reads its own configuration and reports how applying it went.

Every request is answered from the in-memory snapshot; the only database writes are the
once-per-boot `fetched` mark and the guest's status report. The caller is identified by
`IdentityResolver`; nothing here ever looks a guest up by anything the request says.

Each route is a view of the caller's document wrapped by `guest_route` (or
`guest_action` when the view must await): the wrapper asks `GuestAccess` who the caller
is, marks a first read `fetched`, and turns a MetadataError into its response.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import hdrs, web

from metadata_server.digits import ascii_decimal
from metadata_server.documents import GuestDocument
from metadata_server.errors import (
    Conflict,
    Gone,
    InvalidInput,
    MetadataError,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from metadata_server.http.connections import proof_of
from metadata_server.http.keys import ACCESS, REGISTRY, SIGNER, SNAPSHOT
from metadata_server.http.middleware import decode_text, error_response, parse_json, read_body
from metadata_server.http.paths import GUEST_ROUTES, install
from metadata_server.identity import Caller, IdentityResolver
from metadata_server.metrics import Metrics
from metadata_server.model import GUEST_REPORTABLE_STATES, State, parse_message
from metadata_server.ratelimit import TokenBuckets
from metadata_server.tokens import issue_token, token_is_valid

log = logging.getLogger(__name__)
MAX_STATUS_BODY = 4096
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 (a header name)
STATUS_FIELDS = frozenset({"state", "message", "instance_id"})


def unfetched(state: State) -> bool:
    """Registered or leased: the next read marks the guest fetched."""
    return state in (State.REGISTERED, State.LEASED)


SyncView = Callable[[web.Request, Caller], web.StreamResponse]
AsyncView = Callable[[web.Request, Caller], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SessionTokens:
    """IMDSv2 session tokens as every guest route sees them: a token given must be valid
    for this guest; in `required` mode a request without one is refused too (so an SSRF
    in a guest that can only send plain GETs reaches nothing, the /v1 routes included)."""

    __slots__ = ("clock", "required", "secret")

    def __init__(self, secret: bytes, clock: Callable[[], float], *, required: bool) -> None:
        self.secret = secret
        self.clock = clock
        self.required = required

    @staticmethod
    def subject(caller: Caller) -> str:
        return f"{caller.document.view.mac}|{caller.document.view.instance_id}"

    def issue(self, caller: Caller, ttl: int) -> str:
        return issue_token(self.secret, self.subject(caller), now=self.clock(), ttl=ttl)

    def check(self, request: web.Request, caller: Caller) -> None:
        token = request.headers.get(TOKEN_HEADER)
        if token is None:
            if self.required:
                raise Unauthorized("a session token is required (PUT /latest/api/token)")
            return
        if not token_is_valid(self.secret, token, self.subject(caller), now=self.clock()):
            raise Unauthorized("the session token is unknown or expired")


@dataclass(frozen=True, slots=True)
class GuestAccess:
    """What every guest request is checked against, in this order: the caller's request
    bucket (429), who the caller is (404 unknown, 403 holding another's address), and its
    session token (401)."""

    identity: IdentityResolver
    limiter: TokenBuckets | None
    tokens: SessionTokens

    async def caller(self, request: web.Request, *, needs_token: bool = True) -> Caller:
        peer = request.remote or ""
        forwarded: Sequence[str] = ()
        if self.identity.reads_forwarded_for:
            forwarded = request.headers.getall(hdrs.X_FORWARDED_FOR, ())
        if self.limiter is not None:
            key = self.identity.client_address(peer, forwarded)[0]
            retry_after = self.limiter.take(key)
            if retry_after is not None:
                raise TooManyRequests("too many requests from this guest", retry_after=retry_after)
        caller = await self.identity.resolve(peer, forwarded, proof_of(request))
        if needs_token:
            self.tokens.check(request, caller)
        return caller


# What a guest gets for a fault of the server's own (the log has the cause): the same
# shape as every other error, never aiohttp's plain-text 500.
INTERNAL_ERROR = MetadataError("internal error; see the server log")


def _unexpected(request: web.Request) -> MetadataError:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return INTERNAL_ERROR


def text_error_response(error: MetadataError) -> web.Response:
    """EC2-style errors: the status and a line of text, nothing else."""
    response = web.Response(
        status=error.http_status, text=error.detail + "\n", content_type="text/plain"
    )
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return response


def guest_route(
    view: SyncView,
    *,
    marks_fetch: bool = False,
    text: bool = False,
    with_query: Handler | None = None,
) -> Handler:
    """A read route: check the caller (GuestAccess), mark a first read as `fetched` when
    asked to, run the (synchronous) view, and turn a MetadataError into its response
    (JSON, or a line of text for the EC2-style routes). A request with a query string
    goes to `with_query` instead, when given."""
    to_response = text_error_response if text else error_response

    @functools.wraps(view)
    async def handler(request: web.Request) -> web.StreamResponse:
        if with_query is not None and request.query_string:
            return await with_query(request)
        try:
            caller = await request.app[ACCESS].caller(request)
            if marks_fetch and unfetched(caller.document.state):
                await request.app[REGISTRY].mark_fetched(caller.document.view.mac)
            return view(request, caller)
        except MetadataError as exc:
            return to_response(exc)
        except Exception:
            return to_response(_unexpected(request))

    return handler


def guest_action(view: AsyncView, *, text: bool = False, needs_token: bool = True) -> Handler:
    """A route whose view must await: like guest_route otherwise. `needs_token=False` only
    for the route that hands tokens out."""
    to_response = text_error_response if text else error_response

    @functools.wraps(view)
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            caller = await request.app[ACCESS].caller(request, needs_token=needs_token)
            return await view(request, caller)
        except MetadataError as exc:
            return to_response(exc)
        except Exception:
            return to_response(_unexpected(request))

    return handler


def _not_modified(request: web.Request, document: GuestDocument) -> bool:
    tags = request.headers.get(hdrs.IF_NONE_MATCH)  # an istr: no case folding per request
    return tags is not None and document.etag in (tag.strip() for tag in tags.split(","))


def _headers(document: GuestDocument, content_type: str) -> dict[str, str]:
    return {"Content-Type": content_type, "ETag": document.etag, "Cache-Control": "no-store"}


def config_json(request: web.Request, caller: Caller) -> web.StreamResponse:
    document = caller.document
    if _not_modified(request, document):
        return web.Response(status=304, headers=_headers(document, "application/json"))
    return web.Response(body=document.json_body, headers=_headers(document, "application/json"))


MAX_CHANGE_WAIT = 300.0


async def config_json_waiting(request: web.Request, caller: Caller) -> web.StreamResponse:
    """GCE-style change notification: `?wait_for_change=true&last_etag=E&timeout_sec=N`
    holds the answer until the document's ETag differs from E, or N seconds pass."""
    query = request.query
    for name in query:
        if name not in ("wait_for_change", "last_etag", "timeout_sec"):
            raise InvalidInput(f"unknown query parameter {name!r}", field=name)
    if query.get("wait_for_change", "false").lower() not in ("true", "false"):
        raise InvalidInput("wait_for_change must be true or false", field="wait_for_change")
    document = caller.document
    if unfetched(document.state):
        await request.app[REGISTRY].mark_fetched(document.view.mac)
    if query.get("wait_for_change", "false").lower() == "true":
        timeout = ascii_decimal(query.get("timeout_sec", "60"))
        if timeout is None or not 0 <= timeout <= MAX_CHANGE_WAIT:
            raise InvalidInput(
                f"timeout_sec must be a number from 0 to {MAX_CHANGE_WAIT:g}", field="timeout_sec"
            )
        last = query.get("last_etag", document.etag)
        if not last.startswith('"'):
            last = f'"{last}"'
        changed = await request.app[SNAPSHOT].wait_for_change(document.view.mac, last, timeout)
        if changed is None:
            raise NotFound("no configuration for this address")
        document = changed
        caller = caller._replace(document=document)
    return config_json(request, caller)


def config_text(request: web.Request, caller: Caller) -> web.StreamResponse:
    document = caller.document
    return web.Response(
        body=document.text_body, headers=_headers(document, "text/plain; charset=utf-8")
    )


def config_text_signature(request: web.Request, caller: Caller) -> web.StreamResponse:
    """The Ed25519 signature of this guest's exact /v1/config.txt bytes (64 bytes)."""
    document = caller.document
    signature = document.later.signature
    if signature is None:
        signature = document.later.signature = request.app[SIGNER].sign(document.text_body)
    return web.Response(
        body=signature,
        headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"},
    )


def user_data(request: web.Request, caller: Caller) -> web.StreamResponse:
    document = caller.document
    if document.view.secrets_withheld:
        raise Gone("user-data was served already; ask the admin to re-arm this guest")
    if document.user_data is None:
        raise NotFound("this guest has no user-data")
    return web.Response(
        body=document.user_data,
        headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"},
    )


def _status_fields(request: web.Request, text: str) -> dict[str, object]:
    if request.content_type == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
        except ValueError:
            raise InvalidInput("the form body is malformed") from None
        return dict(pairs)
    body = parse_json(text)
    if not isinstance(body, dict):
        raise InvalidInput('a status must be a JSON object {"state", "message"}')
    return body


async def post_status(request: web.Request, caller: Caller) -> web.StreamResponse:
    fields = _status_fields(request, decode_text(await read_body(request, MAX_STATUS_BODY)))
    for name in fields:
        if name not in STATUS_FIELDS:
            raise InvalidInput(f"unknown field {name}", field=name)
    reported = fields.get("state")
    state = State(reported) if reported in {s.value for s in GUEST_REPORTABLE_STATES} else None
    if not isinstance(reported, str) or state is None:
        raise InvalidInput('state must be "configured" or "failed"', field="state")
    message = parse_message(fields.get("message", ""))
    instance_id = fields.get("instance_id")
    view = caller.document.view
    if instance_id is not None and instance_id != view.instance_id:
        raise Conflict(
            "this report is for an older instance id; fetch the configuration again",
            field="instance_id",
            holder=view.mac,
        )
    await request.app[REGISTRY].set_state(view.mac, state, message or None)
    log.info("guest %s reported %s", view.mac, state.value)
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def add_routes(app: web.Application) -> None:
    routes = app[GUEST_ROUTES]
    waiting = guest_action(config_json_waiting)
    routes.add_get("/v1/config", guest_route(config_json, marks_fetch=True, with_query=waiting))
    routes.add_get("/v1/config.txt", guest_route(config_text, marks_fetch=True))
    routes.add_get("/v1/config.txt.sig", guest_route(config_text_signature))
    routes.add_get("/v1/user-data", guest_route(user_data))
    routes.add_post("/v1/status", guest_action(post_status))
    routes.add_get("/healthz", healthz)


def timed(metrics: Metrics) -> Any:
    """A middleware that times every guest request for /metrics (by route family; a
    GCE-style long-poll is its own family, `wait`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        family = "wait" if "wait_for_change" in request.query_string else None
        metrics.observe_request(
            request.path, response.status, time.perf_counter() - started, family
        )
        return response

    return middleware


def make_guest_app(metrics: Metrics | None = None) -> web.Application:
    """The guest app; its routes (these and the cloud ones) go in `app[GUEST_ROUTES]`,
    which matches paths as IMDS does (see http/paths.py)."""
    middlewares = [timed(metrics)] if metrics is not None else []
    app = web.Application(client_max_size=64 * 1024, middlewares=middlewares)
    install(app)
    add_routes(app)
    return app
