"""Numbers read from text take ASCII digits only: `int()`, `float()` and `str.isdigit()`
take '٣' (ARABIC-INDIC THREE) as 3, '²' passes isdigit() and then makes int() raise (a
500), and float() reads 'nan', '1e3' and '1_0'. The helper's table, then every place
that reads a number from a guest, the admin, the environment, a file or a command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from metadata_server.app import MetadataService
from metadata_server.cli.lease_hook import lease_reports
from metadata_server.config import build_settings
from metadata_server.dhcp.commands import DaemonError
from metadata_server.dhcp.daemons import Dnsmasq
from metadata_server.digits import ascii_decimal, ascii_int, integer, number
from metadata_server.errors import ConfigError
from metadata_server.store import dsn
from metadata_server.tokens import parse_ttl
from metadata_server.xen.xenstore import unescape
from tests.support.records import guest_body, mac_of
from tests.support.service import ADMIN_TOKEN

ARABIC_THREE = "\u0663"
NOT_NUMBERS = [
    "", "\u0663", "\u00b2", "\u00b9", "\u00bd", "\uff16", "\u0967", "5 ", " 5", "+5", "-5",
    "1_000", "0x10", "5.0.0", "9" * 19,
]  # fmt: skip
NOT_NUMBER_IDS = [
    "empty", "arabic-indic-3", "superscript-2", "superscript-1", "one-half", "fullwidth-6",
    "devanagari-1", "trailing-space", "leading-space", "plus", "minus", "underscore", "hex",
    "two-points", "19-digits",
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("5", 5), ("0005", 5), ("9" * 18, 10**18 - 1)],
    ids=["zero", "five", "leading-zeros", "18-digits"],
)
def test_ascii_int_takes_ascii_digits(text: str, value: int) -> None:
    assert ascii_int(text) == value and integer(text) == value


@pytest.mark.parametrize("text", [*NOT_NUMBERS, "5.0"], ids=[*NOT_NUMBER_IDS, "decimal"])
def test_ascii_int_refuses_everything_else(text: str) -> None:
    assert ascii_int(text) is None
    with pytest.raises(ValueError, match="not a whole number"):
        integer(text)


@pytest.mark.parametrize(
    ("text", "value"), [("5", 5.0), ("0.25", 0.25), ("300", 300.0)], ids=["int", "fraction", "300"]
)
def test_ascii_decimal_takes_digits_and_a_fraction(text: str, value: float) -> None:
    assert ascii_decimal(text) == value and number(text) == value


@pytest.mark.parametrize(
    "text",
    [*NOT_NUMBERS, ".5", "5.", "1e3", "nan", "inf", "\u0663.\u0663", "1,5"],
    ids=[*NOT_NUMBER_IDS, "no-whole", "no-fraction", "exponent", "nan", "inf", "arabic", "comma"],
)
def test_ascii_decimal_refuses_everything_else(text: str) -> None:
    assert ascii_decimal(text) is None


def test_argparse_reports_a_bad_number_as_a_usage_error() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--wait", type=number)
    with pytest.raises(argparse.ArgumentError, match="invalid number value"):
        parser.parse_args(["--wait", ARABIC_THREE])


# --- the guest API, byte for byte (a client library would re-encode the header) ---------


async def raw_request(url: str, method: str, target: str, headers: dict[str, str]) -> int:
    """One HTTP/1.1 request with UTF-8 header values, as a hostile guest can send it."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


@pytest.fixture
async def loopback_guest(service: MetadataService) -> str:
    assert service.registry is not None
    await service.registry.put(mac_of(1), guest_body(1, ipv4={"address": "127.0.0.1", "prefix": 8}))
    return service.guest_addresses[0].url


TTL = "X-aws-ec2-metadata-token-ttl-seconds"


@pytest.mark.parametrize(
    ("ttl", "status"),
    [("60", 200), ("\u00b2", 400), (ARABIC_THREE, 400), ("\uff16\uff10", 400), ("6 0", 400)],
    ids=["ascii", "superscript-was-500", "arabic-was-200", "fullwidth", "inner-space"],
)
async def test_the_token_ttl_header(loopback_guest: str, ttl: str, status: int) -> None:
    assert await raw_request(loopback_guest, "PUT", "/latest/api/token", {TTL: ttl}) == status
    assert parse_ttl(ttl) == (60 if status == 200 else None)


async def test_a_token_with_other_digits_is_not_a_token(loopback_guest: str) -> None:
    """The same token with its expiry spelt in Arabic-Indic digits was accepted."""
    reader, writer = await asyncio.open_connection(*loopback_guest[7:].rsplit(":", 1))
    request = f"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{TTL}: 60\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    token = (await reader.read()).split(b"\r\n\r\n", 1)[1].decode()
    writer.close()
    path = "/latest/meta-data/instance-id"
    header = "X-aws-ec2-metadata-token"
    assert await raw_request(loopback_guest, "GET", path, {header: token}) == 200
    expiry, _, signature = token.partition(".")
    other = "".join(chr(0x0660 + int(d)) for d in expiry) + "." + signature
    assert await raw_request(loopback_guest, "GET", path, {header: other}) == 401


@pytest.mark.parametrize(
    "timeout",
    [ARABIC_THREE, "\u00b2", "1e1", "nan", "0x1"],
    ids=["arabic", "superscript", "exponent", "nan", "hex"],
)
async def test_a_change_wait_takes_ascii_seconds(loopback_guest: str, timeout: str) -> None:
    target = f"/v1/config?wait_for_change=true&timeout_sec={quote(timeout)}"
    assert await raw_request(loopback_guest, "GET", target, {}) == 400


async def test_the_admin_status_wait_takes_ascii_seconds(service: MetadataService) -> None:
    assert service.registry is not None and service.admin_address is not None
    await service.registry.put(mac_of(1), guest_body(1))
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    base = f"/api/v1/vms/{mac_of(1)}/status?wait="
    assert await raw_request(service.admin_address.url, "GET", base + "0", auth) == 200
    for wait in (ARABIC_THREE, "1e0", "inf"):
        assert await raw_request(service.admin_address.url, "GET", base + quote(wait), auth) == 400


# --- settings, files and commands -------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"METADATA_SERVER_DNS_TTL": ARABIC_THREE, "METADATA_SERVER_DNS_LISTEN": "127.0.0.1:0"}, "dns.ttl"),
        ({"METADATA_SERVER_PASSWORD_ROUNDS": "\u0661\u0660\u0660\u0660\u0660"}, "password_rounds"),
        ({"METADATA_SERVER_GUEST_RATE_LIMIT": "nan"}, "guest.rate_limit"),
        ({"METADATA_SERVER_GUEST_RATE_LIMIT": "1e3"}, "guest.rate_limit"),
        ({"METADATA_SERVER_DNS_UPSTREAM_TIMEOUT": ARABIC_THREE}, "dns.upstream_timeout"),
        ({"METADATA_SERVER_GUEST_LISTEN": "127.0.0.1:\u0668\u0660"}, "guest.listen"),
        ({"METADATA_SERVER_ADMIN_LISTEN": "127.0.0.1:\u00b2"}, "admin.listen"),
        ({"METADATA_SERVER_DNS_LISTEN": "127.0.0.1:\u0665\u0663", "METADATA_SERVER_DOMAIN": "x.test"}, "dns.listen"),
    ],
    ids=["int", "int-arabic", "float-nan", "float-exponent", "float-arabic", "guest-port",
         "admin-port", "dns-port"],
)  # fmt: skip
def test_settings_take_ascii_numbers(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        build_settings(config_file=None, env=env, flags={})


def test_a_database_url_port_takes_ascii_digits() -> None:
    dsn.check("postgresql://u@db.example:5432/x")
    with pytest.raises(ConfigError, match="bad port"):
        dsn.check("postgresql://u@db.example:\u0665\u0664\u0663\u0662/x")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_toml_nan_or_inf_is_not_a_number_of_seconds(tmp_path: Path, value: str) -> None:
    """TOML spells them natively; `nan < 0` is False, so nan used to pass (and a nan rate
    limit switched the limiter off)."""
    path = tmp_path / "c.toml"
    path.write_text(f"[guest]\nrate_limit = {value}\n")
    with pytest.raises(ConfigError, match=r"guest.rate_limit"):
        build_settings(config_file=path, env={}, flags={})


def test_a_lease_count_takes_ascii_digits() -> None:
    env = {
        "LEASES4_SIZE": "\u0662",
        **{f"LEASES4_AT{i}_HWADDR": mac_of(i) for i in range(2)},
        **{f"LEASES4_AT{i}_ADDRESS": f"198.18.0.{i + 5}" for i in range(2)},
    }
    assert lease_reports("leases4_committed", [], env) == []
    assert len(lease_reports("leases4_committed", [], {**env, "LEASES4_SIZE": "2"})) == 2


async def test_a_pid_file_takes_ascii_digits(tmp_path: Path) -> None:
    """A pid file in other digits named some other process; 0 and 1 are never signalled."""
    pid_file = tmp_path / "dnsmasq.pid"
    for text in ("\u0669\u0669\u0669\u0669\u0669\u0669\u0669", "1", "0"):
        pid_file.write_text(text + "\n")
        with pytest.raises(DaemonError, match="does not hold a process id"):
            await Dnsmasq(pid_file).reload(set())


def test_xenstore_escapes_take_ascii_digits() -> None:
    assert unescape("a\\101b\\x41c") == "aAbAc"
    assert unescape("a\\\u0663\u0663\u0663b") == "a\u0663\u0663\u0663b"


async def run_cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "metadata_server", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["vm", "add", "02:00:00:00:00:09", "--hostname", "x", "--ip", "198.18.0.5/\u0662\u0664"], "--ip must be ADDRESS/PREFIX"),
        (["vm", "status", "02:00:00:00:00:09", "--wait", ARABIC_THREE], "invalid number value"),
    ],
    ids=["vm-add-prefix", "vm-status-wait"],
)  # fmt: skip
async def test_command_line_numbers_take_ascii_digits(
    service: MetadataService, args: list[str], words: Any
) -> None:
    assert service.admin_address is not None
    code, err = await run_cli(*args, "--url", service.admin_address.url)
    assert code != 0 and words in err, err
