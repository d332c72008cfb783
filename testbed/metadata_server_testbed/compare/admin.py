"""The harness's client of a Dom0 server's admin API, over its unix socket.

Only the calls the harness makes: bulk import, list, DHCP status, health, and the ISO
fallback's provision route. Every call has a timeout; an error status raises
`AdminError` with the server's answer. Never logs the token.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

TIMEOUT = 30.0
PROVISION_GRACE = 30.0  # seconds the provision call waits past the flow's own timeout


class AdminError(Exception):
    def __init__(self, status: int, body: object) -> None:
        super().__init__(f"admin API answered {status}: {body}")
        self.status = status
        self.body = body


class AdminApi:
    def __init__(self, socket_path: str, token: str, *, connections: int = 0) -> None:
        self._socket_path = socket_path
        self._token = token
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self._socket_path, limit=self._connections),
                headers={"Authorization": f"Bearer {self._token}"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, method: str, path: str, body: object = None, *, timeout: float = TIMEOUT
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self._client().request(
            method,
            "http://dom0" + path,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            raw = await response.read()
            answer: Any = json.loads(raw) if raw and response.content_type.endswith("json") else raw
            if response.status >= 400:
                raise AdminError(response.status, answer)
            return answer

    async def healthz(self) -> Any:
        return await self.call("GET", "/healthz", timeout=5)

    async def import_guests(self, records: list[dict[str, Any]]) -> Any:
        return await self.call("POST", "/api/v1/vms/import", records, timeout=300)

    async def metrics(self) -> str:
        """The Prometheus exposition text of GET /metrics."""
        answer = await self.call("GET", "/metrics", timeout=10)
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    async def vms(self) -> list[dict[str, Any]]:
        answer = await self.call("GET", "/api/v1/vms")
        vms: list[dict[str, Any]] = answer["vms"]
        return vms

    async def vm(self, mac: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.call("GET", f"/api/v1/vms/{mac}")
        return answer

    async def dhcp_status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.call("GET", "/api/v1/dhcp/status")
        return status

    async def provision(self, mac: str, domid: int | None, timeout: float) -> dict[str, Any]:
        """POST .../iso-provision: the whole ISO flow; returns when it is over."""
        body: dict[str, Any] = {"timeout": timeout}
        if domid is not None:
            body["domid"] = domid
        answer: dict[str, Any] = await self.call(
            "POST", f"/api/v1/vms/{mac}/iso-provision", body, timeout=timeout + PROVISION_GRACE
        )
        return answer
