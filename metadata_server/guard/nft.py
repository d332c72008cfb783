"""The `nft` command, for the bridge guard: one JSON batch per change (nftables applies a
batch as one transaction: all of it or none), and the drop counters read back.

Every call has a timeout; a batch the kernel refuses raises `NftError` with nft's own
words, and nothing of it takes effect.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from metadata_server.guard.rules import DROP_KINDS, FAMILY, Json, table_name

TIMEOUT = 20.0


class NftError(Exception):
    """nft is missing, failed, or refused a batch."""


@dataclass(frozen=True)
class DropCounts:
    """Packets dropped so far: per kind, per sender (a MAC; a port for the `port` kind),
    and from unregistered senders."""

    by_kind: dict[str, dict[str, int]]
    unregistered: int


class Nft:
    def __init__(self, argv: Sequence[str] = ("nft",), timeout: float = TIMEOUT) -> None:
        self.argv = list(argv)
        self.timeout = timeout

    def available(self) -> bool:
        return shutil.which(self.argv[0]) is not None

    async def _run(self, *args: str, stdin: str | None = None) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise NftError(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        try:
            out, err = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), self.timeout
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise NftError(f"nft did not answer in {self.timeout:g} s") from None
        if process.returncode != 0:
            words = " ".join(err.decode(errors="replace").split())[:500]
            raise NftError(words or f"nft exited with {process.returncode}")
        return out.decode(errors="replace")

    async def apply(self, commands: list[Json]) -> None:
        """Run `commands` as one batch (`nft -j -f -`)."""
        await self._run("-j", "-f", "-", stdin=json.dumps({"nftables": commands}))

    async def drop_counts(self, bridge: str) -> DropCounts:
        text = await self._run("-j", "list", "table", FAMILY, table_name(bridge))
        return parse_drop_counts(json.loads(text))

    async def has_table(self, bridge: str) -> bool:
        text = await self._run("-j", "list", "tables", FAMILY)
        name = table_name(bridge)
        return any(
            "table" in item and item["table"].get("name") == name
            for item in json.loads(text).get("nftables", [])
        )


def parse_drop_counts(document: dict[str, Any]) -> DropCounts:
    """Counters out of `nft -j list table`: the drop sets' elements and `unregistered`."""
    by_kind: dict[str, dict[str, int]] = {kind: {} for kind in DROP_KINDS}
    unregistered = 0
    for item in document.get("nftables", []):
        if "counter" in item and item["counter"].get("name") == "unregistered":
            unregistered = int(item["counter"].get("packets", 0))
        named = item.get("set", {})
        kind = str(named.get("name", "")).removeprefix("drops_")
        if not str(named.get("name", "")).startswith("drops_") or kind not in by_kind:
            continue
        for element in named.get("elem", []):
            entry = element.get("elem", {}) if isinstance(element, dict) else {}
            key = entry.get("val")
            packets = entry.get("counter", {}).get("packets", 0)
            if isinstance(key, str):
                by_kind[kind][key] = int(packets)
    return DropCounts(by_kind=by_kind, unregistered=unregistered)
