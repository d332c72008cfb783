"""The guest API: each guest reads its own configuration and reports how applying it went.

Every request is answered from the in-memory snapshot; the only database writes are the
once-per-boot `fetched` mark and the guest's status report. The caller is identified by
`IdentityResolver`; nothing here ever looks a guest up by anything the request says.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from aiohttp import web

from metadata_server.documents import GuestDocument
from metadata_server.errors import Conflict, Gone, InvalidInput, NotFound
from metadata_server.http.keys import IDENTITY, REGISTRY
from metadata_server.http.middleware import decode_text, json_errors, parse_json, read_body
from metadata_server.identity import Caller
from metadata_server.model import GUEST_REPORTABLE_STATES, State, parse_message

log = logging.getLogger(__name__)
MAX_STATUS_BODY = 4096
STATUS_FIELDS = frozenset({"state", "message", "instance_id"})


async def caller_of(request: web.Request) -> Caller:
    peer = request.remote or ""
    forwarded = request.headers.getall("X-Forwarded-For", [])
    return await request.app[IDENTITY].resolve(peer, forwarded)


async def _note_fetch(request: web.Request, document: GuestDocument) -> None:
    if document.state in (State.REGISTERED, State.LEASED):
        await request.app[REGISTRY].mark_fetched(document.view.mac)


def _not_modified(request: web.Request, document: GuestDocument) -> bool:
    tags = request.headers.get("If-None-Match", "")
    return document.etag in (tag.strip() for tag in tags.split(","))


async def get_config(request: web.Request) -> web.StreamResponse:
    caller = await caller_of(request)
    document = caller.document
    await _note_fetch(request, document)
    headers = {"ETag": document.etag, "Cache-Control": "no-store"}
    if _not_modified(request, document):
        return web.Response(status=304, headers=headers)
    return web.Response(body=document.json_body, content_type="application/json", headers=headers)


async def get_config_text(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    await _note_fetch(request, caller.document)
    return web.Response(
        body=caller.document.text_body,
        content_type="text/plain",
        charset="utf-8",
        headers={"ETag": caller.document.etag, "Cache-Control": "no-store"},
    )


async def get_user_data(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    document = caller.document
    if document.view.secrets_withheld:
        raise Gone("user-data was served already; ask the admin to re-arm this guest")
    if document.user_data is None:
        raise NotFound("this guest has no user-data")
    return web.Response(
        body=document.user_data,
        content_type="application/octet-stream",
        headers={"Cache-Control": "no-store"},
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


async def post_status(request: web.Request) -> web.Response:
    caller = await caller_of(request)
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
    if instance_id is not None and instance_id != caller.document.view.instance_id:
        raise Conflict(
            "this report is for an older instance id; fetch the configuration again",
            field="instance_id",
            holder=caller.document.view.mac,
        )
    await request.app[REGISTRY].set_state(caller.document.view.mac, state, message or None)
    log.info("guest %s reported %s", caller.document.view.mac, state.value)
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/config", get_config)
    app.router.add_get("/v1/config.txt", get_config_text)
    app.router.add_get("/v1/user-data", get_user_data)
    app.router.add_post("/v1/status", post_status)
    app.router.add_get("/healthz", healthz)


def make_guest_app() -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=64 * 1024)
    add_routes(app)
    return app
