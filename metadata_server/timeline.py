"""A guest's boot as people read it: its states in order (registered → leased → fetched
→ configured, or failed) with when each came and how long after the one before, and
which guests are stuck (leased or fetched for longer than N seconds, not configured).

Works on the admin API's JSON of a guest (`state_times` as ISO 8601 times). Pure: the
time now comes in as an argument.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ORDER = ("registered", "leased", "fetched", "configured", "failed")
WAITING = ("leased", "fetched")  # the guest is up and on its way, not yet done


@dataclass(frozen=True)
class Step:
    state: str
    at: float  # seconds since the epoch
    after_previous: float | None
    after_registered: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "at": _iso(self.at),
            "after_previous_s": _round(self.after_previous),
            "after_registered_s": _round(self.after_registered),
        }


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _iso(at: float) -> str:
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def steps(state_times: Mapping[str, str]) -> list[Step]:
    """The guest's states in boot order, with the time between them."""
    times = {state: parse_time(state_times[state]) for state in ORDER if state in state_times}
    registered = times.get("registered")
    result: list[Step] = []
    previous: float | None = None
    for state in ORDER:
        at = times.get(state)
        if at is None:
            continue
        result.append(
            Step(
                state,
                at,
                at - previous if previous is not None else None,
                at - registered if registered is not None else None,
            )
        )
        previous = at
    return result


def stuck_for(vm: Mapping[str, Any], now: float) -> float | None:
    """How long a leased or fetched guest has been in that state, else None."""
    state = vm.get("state")
    since = vm.get("state_times", {}).get(state)
    if state not in WAITING or not isinstance(since, str):
        return None
    return now - parse_time(since)
