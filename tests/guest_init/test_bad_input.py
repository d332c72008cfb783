"""Hostile and broken input: the script refuses, changes nothing, reports why, runs nothing.

A stub (tests/guest_init/stub.py) stands in for a compromised or broken metadata server: it
serves whatever the case says and records the status report. Every case plants shell syntax
that would create a canary file if anything ever evaluated it. The same holds for a hostile
guest environment: a symlink planted at the log's path, a kernel that refuses the hostname,
and (with verify_key) a document without a valid signature.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.guest_init.conftest import Guest, Serve
from tests.guest_init.stub import GOOD, USER_DATA_URL, Stub, doc, replaced
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY
from tests.support.requirements import need_tools

CANARY = "/tmp/pwned"
IID = GOOD[1].split()[1]
PLANT = f"$(touch {CANARY})"


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
    "metadata-key-empty": Case(doc("metadata. x"), "metadata key"),
    "hostname-with-a-space": Case(replaced("hostname", "stub guest"), "hostname"),
    "indented-second-hostname": Case(doc(" hostname other"), "appears twice"),
    "instance-id-too-long": Case(replaced("instance_id", "a" * 129), "instance_id"),
    "fqdn-label-too-long": Case(replaced("fqdn", "a" * 64 + ".test"), "fqdn"),
    "domain-too-long": Case(replaced("domain", ".".join(["a" * 63] * 4)), "too long"),
    "address-octet-256": Case(replaced("address", "198.18.0.256"), "address"),
    "address-five-octets": Case(replaced("address", "198.18.0.1.1"), "address"),
    "gateway-signed": Case(replaced("gateway", "+198.18.0.1"), "gateway"),
    "prefix-zero": Case(replaced("prefix", "0"), "prefix"),
    "hash-bang-inside": Case(replaced("password_hash", "$6$salt$ab!cd"), "password_hash"),
    "hash-no-id": Case(replaced("password_hash", "$$salt$abcd"), "password_hash"),
    "ssh-key-unknown-type": Case(replaced("ssh_key", "ssh-dss AAAAB3NzaC1kc3M= x"), "ssh_key"),
    "ssh-key-no-blob": Case(replaced("ssh_key", "ssh-ed25519"), "ssh_key"),
    "user-data-too-large": Case(
        doc(USER_DATA_URL),
        "user-data is larger",
        user_data=b"#!/bin/sh\n" + b"#" * 70000,
    ),
}


def stub_for(case: Case) -> Stub:
    return Stub(case.body, user_data=case.user_data, content_type=case.content_type)


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
    assert report.get("instance_id") in (None, IID)  # never a value that was refused
    assert SAMPLE_HASH not in log and "hunter2" not in log


@pytest.mark.parametrize("name", list(CASES))
async def test_refused(name: str, make_guest: Callable[..., Guest], serve: Serve) -> None:
    case = CASES[name]
    stub = await serve(stub_for(case))
    await refuses(make_guest("busybox"), stub, case.reason)


@pytest.mark.parametrize("shell", ["dash", "bash"])
@pytest.mark.parametrize(
    "name", ["hostname-command-substitution", "hash-injection", "ssh-key-with-options", "garbage"]
)
async def test_refused_under_other_shells(
    name: str, shell: str, make_guest: Callable[..., Guest], serve: Serve
) -> None:
    case = CASES[name]
    stub = await serve(stub_for(case))
    await refuses(make_guest(shell), stub, case.reason)


async def test_shell_syntax_in_free_text_is_applied_as_text(
    make_guest: Callable[..., Guest], serve: Serve
) -> None:
    """Metadata values and key comments are free text: stored, never evaluated."""
    body = doc(
        f"metadata.note {PLANT} `touch {CANARY}`; touch {CANARY}", drop=("ssh_key",)
    ).replace(b"end\n", f"ssh_key {SAMPLE_KEY} {PLANT}\nend\n".encode())
    stub = await serve(Stub(body))
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
    user_data = f"#!/bin/sh\ntouch {CANARY}\n".encode()
    stub = await serve(Stub(doc(USER_DATA_URL), user_data=user_data))
    guest = make_guest("busybox")
    guest.configure(metadata_url=stub.url, timeout=2, retry_total=0)  # run_user_data: default no
    boot = await guest.boot()
    assert boot.returncode == 0, guest.log()
    assert stub.reports[0]["state"] == "configured"
    assert not guest.rootfs.file(CANARY).exists()
    saved = guest.rootfs.file("/var/lib/metadata-init/user-data")
    assert saved.read_bytes() == user_data
    assert saved.stat().st_mode & 0o777 == 0o600
    assert "not run" in guest.log()


async def test_a_step_that_fails_is_reported_and_not_recorded(
    make_guest: Callable[..., Guest], serve: Serve
) -> None:
    """No root entry in /etc/shadow: the rest is applied, the report says what failed, and
    no state is kept, so the next boot tries again."""
    stub = await serve(Stub(doc()))
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


# --- a hostile or broken guest -------------------------------------------------------------

# Runs metadata-init where the kernel refuses a new hostname, as in a container: /proc/sys is
# read-only and CAP_SYS_ADMIN is gone (util-linux setpriv; busybox's cannot drop it).
NO_SYS_ADMIN = [
    "/bin/sh",
    "-c",
    "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "
    'exec /usr/bin/setpriv --bounding-set -sys_admin --inh-caps -sys_admin "$@"',
    "no-sys-admin",
]


async def test_a_hostname_the_kernel_refuses_applies_nothing(
    make_guest: Callable[..., Guest], serve: Serve
) -> None:
    """All or nothing, as for a refused value: no password, no key, no file, no state."""
    stub = await serve(Stub(doc()))
    guest = make_guest("busybox", ("setpriv",))
    before = guest.files()
    guest.configure(metadata_url=stub.url, timeout=2, retry_total=0)
    boot = await guest.boot(wrap=NO_SYS_ADMIN)
    assert boot.returncode == 1, (guest.log(), boot.stdout, boot.stderr)
    assert boot.hostname == "template", (boot.stdout, boot.stderr)
    assert guest.files() == before
    assert not list(guest.rootfs.file("/etc").glob("*.mi-new"))
    assert [report["state"] for report in stub.reports] == ["failed"]
    assert "could not set the hostname" in stub.reports[0]["message"]


@pytest.mark.parametrize("target", ["existing-file", "dangling"])
async def test_a_symlink_planted_at_the_log_is_not_followed(
    target: str, make_guest: Callable[..., Guest], serve: Serve
) -> None:
    """/var/log may be group-writable: the log must not write, create or chmod through a link."""
    stub = await serve(Stub(doc()))
    guest = make_guest("busybox")
    precious = guest.rootfs.file("/etc/precious")
    if target == "existing-file":
        guest.rootfs.write("/etc/precious", "keep me\n", mode=0o644)
    log = guest.rootfs.file("/var/log/metadata-init.log")
    log.symlink_to("/etc/precious")
    guest.configure(metadata_url=stub.url, timeout=2, retry_total=0)
    boot = await guest.boot()
    assert boot.returncode == 0, boot.stderr
    if target == "existing-file":
        assert precious.read_text() == "keep me\n"
        assert precious.stat().st_mode & 0o777 == 0o644
    else:
        assert not precious.exists()
    assert not log.is_symlink()
    assert log.stat().st_mode & 0o777 == 0o600
    assert "applied instance" in log.read_text()
    assert [path.name for path in log.parent.iterdir()] == [log.name]  # no temporary file left


# --- signed documents (verify_key) ---------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """An Ed25519 key pair made by the real openssl, and the base64 line verify_key takes."""

    private: Path
    public_line: str


def make_keys(directory: Path, openssl: str) -> Keys:
    private = directory / "key.pem"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(private)], check=True)
    public = subprocess.run(
        [openssl, "pkey", "-in", str(private), "-pubout"], check=True, capture_output=True
    ).stdout.decode()
    [line] = [line for line in public.splitlines() if not line.startswith("-----")]
    return Keys(private, line)


def sign(keys: Keys, document: bytes, directory: Path, openssl: str) -> bytes:
    (directory / "document").write_bytes(document)
    subprocess.run(
        [
            openssl,
            "pkeyutl",
            "-sign",
            "-inkey",
            str(keys.private),
            "-rawin",
            "-in",
            str(directory / "document"),
            "-out",
            str(directory / "signature"),
        ],
        check=True,
    )
    return (directory / "signature").read_bytes()


@dataclass(frozen=True)
class Signed:
    signature: str  # "good", "none", "other-key", "other-document", "cut"
    verify_key: str = "the key"  # or "unset", or a literal value
    openssl_in_guest: bool = True
    reason: str | None = None  # None: configured


SIGNED = {
    "good": Signed("good"),
    "unsigned": Signed("none", reason="the document is not signed"),
    "signed-by-another-key": Signed("other-key", reason="signature does not match"),
    "signature-of-another-document": Signed("other-document", reason="signature does not match"),
    "cut-signature": Signed("cut", reason="signature does not match"),
    "verify-key-garbage": Signed("good", verify_key="$(touch /tmp/pwned)", reason="does not match"),
    "no-openssl": Signed("good", openssl_in_guest=False, reason="openssl is not installed"),
    "unset-needs-no-signature": Signed("none", verify_key="unset"),
}


@pytest.mark.parametrize("name", list(SIGNED))
async def test_verify_key(
    name: str, tmp_path: Path, make_guest: Callable[..., Guest], serve: Serve
) -> None:
    openssl = need_tools("openssl")["openssl"]
    case = SIGNED[name]
    (tmp_path / "other").mkdir()
    keys, other = make_keys(tmp_path, openssl), make_keys(tmp_path / "other", openssl)
    served = doc()
    signature = {
        "good": lambda: sign(keys, served, tmp_path, openssl),
        "none": lambda: None,
        "other-key": lambda: sign(other, served, tmp_path, openssl),
        "other-document": lambda: sign(keys, replaced("hostname", "other"), tmp_path, openssl),
        "cut": lambda: sign(keys, served, tmp_path, openssl)[:-1],
    }[case.signature]()
    stub = await serve(Stub(served, signature=signature))
    guest = make_guest("busybox", ("openssl",) if case.openssl_in_guest else ())
    settings: dict[str, object] = {"metadata_url": stub.url, "timeout": 2, "retry_total": 0}
    if case.verify_key != "unset":
        settings["verify_key"] = (
            keys.public_line if case.verify_key == "the key" else case.verify_key
        )
    if case.reason is None:
        guest.configure(**settings)
        boot = await guest.boot()
        assert boot.returncode == 0, guest.log()
        assert boot.hostname == "stubguest"
        assert [report["state"] for report in stub.reports] == ["configured"]
    else:
        before = guest.files()
        guest.configure(**settings)
        boot = await guest.boot()
        assert boot.returncode == 1, guest.log()
        assert boot.hostname == "template"
        assert guest.files() == before
        assert [report["state"] for report in stub.reports] == ["failed"]
        assert case.reason in stub.reports[0]["message"]
        assert case.reason in guest.log()
        assert not guest.rootfs.file(CANARY).exists()
    assert len(stub.requests_to("/v1/config.txt.sig")) == (case.verify_key != "unset")
