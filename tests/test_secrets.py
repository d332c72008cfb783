"""A plain password given at registration shows up nowhere: not in a log line, a listing,
an error, an event or the database files."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.support.records import guest_body, mac_of
from tests.support.server_process import server_process
from tests.support.service import ADMIN_TOKEN

PLAIN = "Plain-Secret-7f3a9c"


async def test_plain_password_is_nowhere(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    args = ["--db", str(db), "--guest-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    args += ["--log-level", "debug"]
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}
    seen: list[str] = []
    with server_process(args, tmp_path / "server.log", env=env) as server:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            base = server.admin_url

            async def call(method: str, path: str, **kwargs: object) -> None:
                async with session.request(method, base + path, **kwargs) as response:  # type: ignore[arg-type]
                    seen.append(
                        f"{response.status} {dict(response.headers)} {await response.text()}"
                    )

            good = guest_body(1, password=PLAIN, password_hash=None)
            await call("PUT", f"/api/v1/vms/{mac_of(1)}", json=good)
            # The same password in requests that fail, in every way a request can fail:
            await call("PUT", f"/api/v1/vms/{mac_of(2)}", json={**good, "hostname": "bad_name"})
            await call("PUT", f"/api/v1/vms/{mac_of(2)}", json={**good, "password": PLAIN + "\n"})
            await call("PUT", f"/api/v1/vms/{mac_of(3)}", json={**good, "password_hash": PLAIN})
            await call("PUT", f"/api/v1/vms/{mac_of(2)}", json=good)  # clash on the hostname
            await call("PATCH", f"/api/v1/vms/{mac_of(1)}", json={"password": PLAIN, "bogus": 1})
            await call("POST", "/api/v1/vms/import", json=[good, {**good, "ipv4": "x"}])
            await call("GET", "/api/v1/vms")
            await call("GET", f"/api/v1/vms/{mac_of(1)}")
            await call("GET", f"/api/v1/vms/{mac_of(1)}/status")
    assert len(seen) == 10 and seen[0].startswith("201")
    assert all(PLAIN not in response for response in seen)
    assert PLAIN not in server.log()
    assert "$6$" not in server.log(), "not even the hash is logged"
    for path in tmp_path.iterdir():
        if path.name.startswith("registry.db"):
            assert PLAIN.encode() not in path.read_bytes(), path.name
    listing = json.loads(seen[7].split(" ", 1)[1].split("} ", 1)[1])
    assert listing["vms"][0]["password_set"] is True


async def test_generated_admin_token_is_a_0600_file_whose_path_is_logged(tmp_path: Path) -> None:
    db = tmp_path / "state" / "registry.db"
    args = ["--db", str(db), "--guest-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    with server_process(args, tmp_path / "server.log", env={}) as server:
        token_file = db.parent / "admin-token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o777 == 0o600 and len(token) >= 32
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session,
            session.get(server.admin_url + "/api/v1/vms") as response,
        ):
            assert response.status == 200
    log = server.log()
    assert str(token_file) in log and token not in log
    # A restart reads the same file: the token stays.
    with server_process(args, tmp_path / "server2.log", env={}):
        assert token_file.read_text().strip() == token
