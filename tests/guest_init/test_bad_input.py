"""Hostile and broken documents: the script refuses, changes nothing, reports why, runs nothing.

A stub stands in for a compromised or broken metadata server: it serves whatever the case
says and records the status report. Every case plants shell syntax that would create a
canary file if anything ever evaluated it.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from tests.conftest import SAMPLE_HASH, SAMPLE_KEY
from tests.guest_init.conftest import Guest

CANARY = "/tmp/pwned"
PLANT = f"$(touch {CANARY})"
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


def doc(*changes: str, drop: tuple[str, ...] = (), tail: str = "\n") -> bytes:
    """GOOD with the lines whose key is in `drop` removed and `changes` put before `end`."""
    lines = [line for line in GOOD[:-1] if line.split(" ", 1)[0] not in drop]
    return ("\n".join([*lines, *changes, "end"]) + tail).encode()


def replaced(key: str, value: str) -> bytes:
    return doc(f"{key} {value}", drop=(key,))


@dataclass
class Case:
    body: bytes
    reason: str
    content_type: str = "text/plain"
    user_data: bytes | None = None


CASES = {
    "garbage": Case(b"\x00\x01\x02\xff\xfe garbage\n", "control characters"),
    "html": Case(
        b"<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n",
        "HTML page",
        content_type="text/html",
    ),
    "empty": Case(b"", "empty"),
    "huge": Case(doc(*(f"metadata.k{i} {'x' * 1000}" for i in range(600))), "larger than"),
    "truncated": Case(doc().removesuffix(b"end\n"), "truncated"),
    "no-final-newline": Case(doc(tail=""), "truncated"),
    "no-format-line": Case(doc(drop=("format",)), "format 1"),
    "data-after-end": Case(doc() + f"hostname {PLANT}\n".encode(), "after end"),
    "escape-sequence": Case(replaced("hostname", "stub\x1b[2Jguest"), "control characters"),
    "carriage-return": Case(doc().replace(b"\n", b"\r\n"), "control characters"),
    "hostname-command-substitution": Case(replaced("hostname", PLANT), "hostname"),
    "hostname-semicolon": Case(replaced("hostname", f"x; touch {CANARY}"), "hostname"),
    "hostname-backticks": Case(replaced("hostname", f"`touch {CANARY}`"), "hostname"),
    "hostname-invalid-label": Case(replaced("hostname", "-under_score-"), "RFC 1123"),
    "hostname-too-long": Case(replaced("hostname", "a" * 64), "RFC 1123"),
    "hostname-twice": Case(doc("hostname other"), "appears twice"),
    "fqdn-injection": Case(replaced("fqdn", f"a.{PLANT}.test"), "fqdn"),
    "hash-plain-password": Case(replaced("password_hash", "hunter2"), "password_hash"),
    "hash-injection": Case(replaced("password_hash", f"$6$salt$x;touch {CANARY}"), "password_hash"),
    "hash-with-colon": Case(replaced("password_hash", "$6$salt$abc:0:0::"), "password_hash"),
    "ssh-key-with-options": Case(
        replaced("ssh_key", f'command="touch {CANARY}" {SAMPLE_KEY}'), "ssh_key"
    ),
    "ssh-key-bad-base64": Case(replaced("ssh_key", f"ssh-ed25519 AAAA;{PLANT} x"), "ssh_key"),
    "address-not-a-quad": Case(replaced("address", "300.1.2.3"), "address"),
    "dns-injection": Case(doc(f"dns 198.18.0.1;touch {CANARY}"), "dns"),
    "prefix-out-of-range": Case(replaced("prefix", "33"), "prefix"),
    "instance-id-injection": Case(replaced("instance_id", f"id{PLANT}"), "instance_id"),
    "metadata-key-injection": Case(doc(f"metadata.{PLANT} x"), "metadata key"),
    "user-data-too-large": Case(
        doc("user_data_url http://169.254.169.254/v1/user-data"),
        "user-data is larger",
        user_data=b"#!/bin/sh\n" + b"#" * 70000,
    ),
}


@dataclass
class Stub:
    """Serves one case and records status reports, like a hostile metadata server would."""

    case: Case
    reports: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def config(self, request: web.Request) -> web.Response:
        return web.Response(body=self.case.body, headers={"Content-Type": self.case.content_type})

    async def user_data(self, request: web.Request) -> web.Response:
        if self.case.user_data is None:
            raise web.HTTPNotFound()
        return web.Response(body=self.case.user_data)

    async def status(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        self.reports.append(dict(urllib.parse.parse_qsl(body, keep_blank_values=True)))
        return web.Response(status=204)


Serve = Callable[[Case], Awaitable[Stub]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(case: Case) -> Stub:
        stub = Stub(case)
        app = web.Application()
        app.router.add_get("/v1/config.txt", stub.config)
        app.router.add_get("/v1/user-data", stub.user_data)
        app.router.add_post("/v1/status", stub.status)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        stub.url = f"http://127.0.0.1:{port}"
        return stub

    yield start
    for runner in runners:
        await runner.cleanup()


async def refuses(guest: Guest, stub: Stub, reason: str) -> None:
    before = guest.files()
    guest.configure(metadata_url=stub.url, timeout=2, retry_total=0, run_user_data="yes")
    boot = await guest.boot()
    log = guest.log()
    assert boot.returncode == 1, log
    assert boot.hostname == "template"
    assert guest.files() == before
    assert not guest.rootfs.file(CANARY).exists()
    assert not guest.rootfs.file("/var/lib/metadata-init/user-data").exists()
    assert len(stub.reports) == 1, log
    report = stub.reports[0]
    assert report["state"] == "failed"
    assert reason in report["message"], report
    assert "\n" not in report["message"]
    assert SAMPLE_HASH not in log and "hunter2" not in log


@pytest.mark.parametrize("name", list(CASES))
async def test_refused(name: str, make_guest: Callable[..., Guest], serve: Serve) -> None:
    case = CASES[name]
    stub = await serve(case)
    await refuses(make_guest("busybox"), stub, case.reason)


@pytest.mark.parametrize("shell", ["dash", "bash"])
@pytest.mark.parametrize(
    "name", ["hostname-command-substitution", "hash-injection", "ssh-key-with-options", "garbage"]
)
async def test_refused_under_other_shells(
    name: str, shell: str, make_guest: Callable[..., Guest], serve: Serve
) -> None:
    case = CASES[name]
    stub = await serve(case)
    await refuses(make_guest(shell), stub, case.reason)


async def test_shell_syntax_in_free_text_is_applied_as_text(
    make_guest: Callable[..., Guest], serve: Serve
) -> None:
    """Metadata values and key comments are free text: stored, never evaluated."""
    body = doc(
        f"metadata.note {PLANT} `touch {CANARY}`; touch {CANARY}", drop=("ssh_key",)
    ).replace(b"end\n", f"ssh_key {SAMPLE_KEY} {PLANT}\nend\n".encode())
    stub = await serve(Case(body, reason=""))
    guest = make_guest("busybox")
    guest.configure(metadata_url=stub.url, timeout=2, retry_total=0)
    boot = await guest.boot()
    assert boot.returncode == 0, guest.log()
    assert boot.hostname == "stubguest"
    assert stub.reports and stub.reports[0]["state"] == "configured"
    assert not guest.rootfs.file(CANARY).exists()
    assert PLANT in guest.rootfs.read("/root/.ssh/authorized_keys")
    assert PLANT in guest.rootfs.read("/var/lib/metadata-init/config.txt")


async def test_user_data_is_not_run_unless_enabled(
    make_guest: Callable[..., Guest], serve: Serve
) -> None:
    case = Case(
        doc("user_data_url http://169.254.169.254/v1/user-data"),
        reason="",
        user_data=f"#!/bin/sh\ntouch {CANARY}\n".encode(),
    )
    stub = await serve(case)
    guest = make_guest("busybox")
    guest.configure(metadata_url=stub.url, timeout=2, retry_total=0)  # run_user_data: default no
    boot = await guest.boot()
    assert boot.returncode == 0, guest.log()
    assert stub.reports[0]["state"] == "configured"
    assert not guest.rootfs.file(CANARY).exists()
    saved = guest.rootfs.file("/var/lib/metadata-init/user-data")
    assert saved.read_bytes() == case.user_data
    assert saved.stat().st_mode & 0o777 == 0o600
    assert "not run" in guest.log()


async def test_a_step_that_fails_is_reported_and_not_recorded(
    make_guest: Callable[..., Guest], serve: Serve
) -> None:
    """No root entry in /etc/shadow: the rest is applied, the report says what failed, and
    no state is kept, so the next boot tries again."""
    stub = await serve(Case(doc(), reason=""))
    guest = make_guest("busybox")
    guest.rootfs.write("/etc/shadow", "daemon:*:19000:0:99999:7:::\n", mode=0o640)
    guest.configure(metadata_url=stub.url, timeout=2, retry_total=0)
    boot = await guest.boot()
    assert boot.returncode == 1
    assert stub.reports[0]["state"] == "failed"
    assert "could not set the root password" in stub.reports[0]["message"]
    assert guest.rootfs.read("/etc/shadow") == "daemon:*:19000:0:99999:7:::\n"
    assert not guest.rootfs.file("/etc/shadow.mi-new").exists()
    assert guest.state() == {}
