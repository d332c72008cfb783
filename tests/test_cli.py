"""The `metadata-server` command, run as a real subprocess against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from metadata_server import __version__
from metadata_server.app import MetadataService
from tests.support.records import SAMPLE_KEY, guest_body, mac_of
from tests.support.service import ADMIN_TOKEN


async def cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("METADATA_SERVER_")}
    full_env.update(env if env is not None else {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "metadata_server",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
    )
    out, err = await process.communicate(stdin.encode())
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def url(service: MetadataService) -> str:
    assert service.admin_address is not None
    return service.admin_address.url


async def test_version() -> None:
    code, out, _ = await cli("--version")
    assert code == 0 and out.strip() == f"metadata-server {__version__}"


async def test_vm_lifecycle(url: str, tmp_path: Path, service: MetadataService) -> None:
    keyfile = tmp_path / "keys.pub"
    keyfile.write_text(SAMPLE_KEY + "\n")
    code, out, err = await cli(
        "vm", "add", "02-00-00-00-00-0A", "--url", url, "--hostname", "web1",
        "--ip", "198.18.0.10/24", "--gateway", "198.18.0.1", "--dns", "198.18.0.1",
        "--ssh-key-file", str(keyfile), "--meta", "role=web", "--password-stdin",
        stdin="typed-secret\n",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("registered 02:00:00:00:00:0a (web1, 198.18.0.10)")
    assert "typed-secret" not in out and "generated" not in out

    code, out, _ = await cli("vm", "list", "--url", url)
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["MAC", "HOSTNAME", "IPV4", "STATE", "HOST", "UPDATED"]
    assert row.split()[:5] == ["02:00:00:00:00:0a", "web1", "198.18.0.10/24", "registered", "-"]

    code, out, _ = await cli("vm", "list", "--url", url, "--json")
    assert json.loads(out)["vms"][0]["metadata"] == {"role": "web"}

    code, out, _ = await cli("vm", "show", "02:00:00:00:00:0a", "--url", url)
    assert "password:     set" in out and "ssh keys:     1" in out

    code, out, _ = await cli("vm", "rearm", "02:00:00:00:00:0a", "--url", url)
    assert code == 0 and out.startswith("re-armed 02:00:00:00:00:0a: instance ")

    code, out, _ = await cli("vm", "status", "02:00:00:00:00:0a", "--url", url, "--json")
    assert json.loads(out)["state"] == "registered"

    code, out, _ = await cli("vm", "rm", "02:00:00:00:00:0a", "--url", url)
    assert code == 0 and out.strip() == "removed 02:00:00:00:00:0a"
    assert await service.store.list() == []


async def test_add_without_password_shows_the_generated_one_once(url: str) -> None:
    code, out, _ = await cli(
        "vm", "add", mac_of(1), "--url", url, "--hostname", "a", "--ip", "198.18.0.20/24"
    )  # fmt: skip
    assert code == 0
    assert "generated root password (shown once): " in out


async def test_import_reports_every_bad_row(
    url: str, tmp_path: Path, service: MetadataService
) -> None:
    rows = [{"mac": mac_of(n), **guest_body(n)} for n in range(1, 4)]
    rows[2]["hostname"] = "no_underscores"
    path = tmp_path / "guests.json"
    path.write_text(json.dumps(rows))
    code, out, err = await cli("vm", "import", str(path), "--url", url)
    assert code == 1
    assert err.splitlines() == [
        "metadata-server: 1 row is invalid; nothing was imported [HTTP 400]",
        "  row 2: hostname: 'no_underscores' is not a valid host name (one RFC 1123 label: "
        "1-63 letters, digits and '-', not at either end)",
    ]
    assert await service.store.list() == []
    del rows[2]
    path.write_text(json.dumps(rows))
    code, out, err = await cli("vm", "import", str(path), "--url", url)
    assert code == 0 and out.startswith("imported 2 guests (2 new)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["vm", "show", "nonsense"], "is not a MAC address"),
        (
            ["vm", "show", "02:00:00:00:00:09"],
            "no guest with MAC 02:00:00:00:00:09 (mac) [HTTP 404]",
        ),
        (
            ["vm", "add", "02:00:00:00:00:09", "--hostname", "x", "--ip", "198.18.0.5"],
            "--ip must be",
        ),
        (["vm", "import", "/nonexistent.json"], "cannot read the import file"),
    ],
    ids=["bad-mac", "unknown-guest", "bad-ip-flag", "missing-file"],
)
async def test_errors_are_one_clear_line(url: str, args: list[str], message: str) -> None:
    code, out, err = await cli(*args, "--url", url)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert "Traceback" not in err


async def test_wrong_token_and_unreachable_server(url: str) -> None:
    code, _, err = await cli(
        "vm", "list", "--url", url, env={"METADATA_SERVER_ADMIN_TOKEN": "x" * 20}
    )
    assert code == 1 and "a valid bearer token is required" in err
    code, _, err = await cli("vm", "list", "--url", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the admin API at http://127.0.0.1:9" in err


async def test_unknown_environment_setting_is_an_error(url: str) -> None:
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN, "METADATA_SERVER_COLOUR": "blue"}
    code, _, err = await cli("vm", "list", "--url", url, env=env)
    assert code == 1 and "unknown setting in the environment: METADATA_SERVER_COLOUR" in err


async def test_a_guests_timeline_and_the_slow_ones(url: str, service: MetadataService) -> None:
    from metadata_server.model import State

    registry = service.registry
    assert registry is not None
    for n in (1, 2):
        await registry.put(mac_of(n), guest_body(n))
    await registry.mark_leased(mac_of(1), "198.18.0.11")
    await registry.mark_fetched(mac_of(1))
    await registry.set_state(mac_of(1), State.CONFIGURED, "ok")
    await registry.mark_leased(mac_of(2), "198.18.0.12")

    code, out, err = await cli("vm", "timeline", mac_of(1), "--url", url)
    assert code == 0, err
    states = [line.split()[0] for line in out.splitlines()[1:]]
    assert states == ["registered", "leased", "fetched", "configured"]
    code, out, _ = await cli("vm", "timeline", mac_of(1), "--url", url, "--json")
    steps = json.loads(out)["steps"]
    assert steps[0]["after_previous_s"] is None
    assert all(step["after_previous_s"] >= 0 for step in steps[1:])

    await asyncio.sleep(1.1)
    code, out, _ = await cli("vm", "list", "--slow", "1", "--url", url, "--json")
    assert [vm["mac"] for vm in json.loads(out)["vms"]] == [mac_of(2)], "leased, not configured"
    code, out, _ = await cli("vm", "list", "--slow", "3600", "--url", url, "--json")
    assert json.loads(out)["vms"] == []
    code, _, err = await cli("vm", "list", "--slow", "٣", "--url", url)
    assert code == 2 and "٣" in err
