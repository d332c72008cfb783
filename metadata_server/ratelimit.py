"""Per-guest token buckets, so one noisy guest cannot starve the rest of a boot storm.

Each key (a guest's address) gets `burst` tokens, refilled at `rate` per second; a
request takes one. A refused request learns how long until a token is back. Buckets
that are full again are forgotten, so memory follows the number of busy guests. Pure:
the clock is passed in.
"""

from __future__ import annotations

from collections.abc import Callable

SWEEP_SECONDS = 10.0


class TokenBuckets:
    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, when last taken]
        self._last_sweep = clock()
        # A bucket is full again `burst / rate` seconds after its last use: such buckets
        # are forgotten, looked for every few seconds.
        self._sweep_every = max(self.burst / rate, SWEEP_SECONDS)

    def take(self, key: str) -> float | None:
        """None when the request may go on, else the seconds until it may retry."""
        now = self._clock()
        entry = self._buckets.get(key)
        if entry is None:
            entry = self._buckets[key] = [self.burst, now]
        tokens = entry[0] + (now - entry[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        entry[1] = now
        if tokens < 1.0:
            entry[0] = tokens
            return (1.0 - tokens) / self.rate
        entry[0] = tokens - 1.0
        if now - self._last_sweep > self._sweep_every:
            self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        full_after = self.burst / self.rate
        self._buckets = {
            key: entry for key, entry in self._buckets.items() if now - entry[1] < full_after
        }
        self._last_sweep = now

    def __len__(self) -> int:
        return len(self._buckets)
