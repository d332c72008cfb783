"""The guest API: each guest reads its own configuration and reports how applying it went.

Every request is answered from the in-memory snapshot; the only database writes are the
once-per-boot `fetched` mark and the guest's status report. The caller is identified by
`IdentityResolver`; nothing here ever looks a guest up by anything the request says.

Guest routes are wrapped by `guest_route` instead of an app middleware: it resolves the
caller and maps errors in one coroutine layer, which keeps the hot path close to a bare
aiohttp handler.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qsl

from aiohttp import hdrs, web

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
from metadata_server.http.keys import GATE, REGISTRY, SNAPSHOT
from metadata_server.http.middleware import decode_text, error_response, parse_json, read_body
from metadata_server.identity import Caller, IdentityResolver
from metadata_server.model import GUEST_REPORTABLE_STATES, State, parse_message
from metadata_server.ratelimit import TokenBuckets
from metadata_server.registry import Registry
from metadata_server.tokens import issue_token, token_is_valid

log = logging.getLogger(__name__)
MAX_STATUS_BODY = 4096
TOKEN_HEADER = "X-aws-ec2-metadata-token"
STATUS_FIELDS = frozenset({"state", "message", "instance_id"})


def unfetched(state: State) -> bool:
    """Registered or leased: the next read marks the guest fetched. (Identity tests, not
    a set: an Enum hashes in Python code, which is measurable on the hot path.)"""
    return state is State.REGISTERED or state is State.LEASED


SyncView = Callable[[web.Request, Caller], web.StreamResponse]
AsyncView = Callable[[web.Request, Caller], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GuestGate:
    """What every guest request passes first: its rate limit, then its identity.

    One object under one app key, so the hot path does one lookup, not three.
    """

    __slots__ = ("identity", "limiter", "registry", "reads_forwarded_for", "tokens")

    def __init__(
        self,
        identity: IdentityResolver,
        limiter: TokenBuckets | None,
        registry: Registry,
        tokens: SessionTokens,
    ) -> None:
        self.identity = identity
        self.limiter = limiter
        self.registry = registry
        self.tokens = tokens
        self.reads_forwarded_for = identity.reads_forwarded_for

    def _peer(self, request: web.Request) -> tuple[str, Sequence[str]]:
        peer = request.remote or ""
        if self.reads_forwarded_for:
            return peer, request.headers.getall("X-Forwarded-For", [])
        return peer, ()

    def admit(self, request: web.Request) -> Caller | None:
        """Take a token from the caller's bucket (429 when there is none), then the caller
        if it is known without waiting (None: use `resolve`). Raises 403 or 404.
        On every guest request: no allocation it can avoid."""
        if self.reads_forwarded_for:
            peer, forwarded = self._peer(request)
            key = self.identity.client_address(peer, forwarded)[0] if forwarded else peer
        else:
            peer = key = request.remote or ""
            forwarded = ()
        limiter = self.limiter
        if limiter is not None:
            retry_after = limiter.take(key)
            if retry_after is not None:
                raise TooManyRequests("too many requests from this guest", retry_after=retry_after)
        return self.identity.resolve_now(peer, forwarded)

    async def resolve(self, request: web.Request) -> Caller:
        """The caller after asking the neighbour table (admit said None). No token taken."""
        peer, forwarded = self._peer(request)
        return await self.identity.resolve(peer, forwarded)

    async def caller(self, request: web.Request) -> Caller:
        caller = self.admit(request) or await self.resolve(request)
        self.tokens.check(request, caller)
        return caller


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
    if isinstance(error, TooManyRequests):
        response.headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return response


def guest_route(
    view: SyncView,
    *,
    marks_fetch: bool = False,
    text: bool = False,
    with_query: Handler | None = None,
) -> Handler:
    """A read route: rate-limit and resolve the caller, mark a first read as `fetched`
    when asked to, run the (synchronous) view, and turn a MetadataError into its
    response (JSON, or a line of text for the EC2-style routes). A request with a query
    string goes to `with_query` instead, when given."""
    to_response = text_error_response if text else error_response

    @functools.wraps(view)
    async def handler(request: web.Request) -> web.StreamResponse:
        if with_query is not None and request.query_string:
            return await with_query(request)  # the rare variant (a long-poll), elsewhere
        try:
            gate = request.app[GATE]
            # No extra coroutine when the caller is known at once (most calls).
            caller = gate.admit(request) or await gate.resolve(request)
            gate.tokens.check(request, caller)
            if marks_fetch and unfetched(caller.document.state):
                await gate.registry.mark_fetched(caller.document.view.mac)
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
            gate = request.app[GATE]
            if needs_token:
                return await view(request, await gate.caller(request))
            return await view(request, gate.admit(request) or await gate.resolve(request))
        except MetadataError as exc:
            return to_response(exc)
        except Exception:
            return to_response(_unexpected(request))

    return handler


def _not_modified(request: web.Request, document: GuestDocument) -> bool:
    tags = request.headers.get(hdrs.IF_NONE_MATCH)  # an istr: no case folding per request
    return tags is not None and document.etag in (tag.strip() for tag in tags.split(","))


def _headers(document: GuestDocument, content_type: str) -> dict[str, str]:
    """The response headers of a document view, made once per document and kept with it.
    One dict with the content type in it is the cheapest way aiohttp builds a response
    (it copies the dict, so the kept one is never changed)."""
    headers: dict[str, str] | None = document.derived.get(content_type)
    if headers is None:
        headers = {"Content-Type": content_type, "ETag": document.etag, "Cache-Control": "no-store"}
        document.derived[content_type] = headers
    return headers


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
        try:
            timeout = float(query.get("timeout_sec", "60"))
        except ValueError:
            timeout = -1.0
        if not 0 <= timeout <= MAX_CHANGE_WAIT:
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
    waiting = guest_action(config_json_waiting)
    app.router.add_get("/v1/config", guest_route(config_json, marks_fetch=True, with_query=waiting))
    app.router.add_get("/v1/config.txt", guest_route(config_text, marks_fetch=True))
    app.router.add_get("/v1/user-data", guest_route(user_data))
    app.router.add_post("/v1/status", guest_action(post_status))
    app.router.add_get("/healthz", healthz)


def make_guest_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    add_routes(app)
    return app
