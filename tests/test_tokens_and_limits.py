"""IMDSv2 session tokens and per-guest token buckets, with the clock pinned."""

from __future__ import annotations

import pytest

from metadata_server.ratelimit import SWEEP_SECONDS, TokenBuckets
from metadata_server.tokens import issue_token, parse_ttl, token_is_valid

SECRET = b"k" * 32


@pytest.mark.parametrize(
    ("text", "ttl"),
    [("1", 1), ("21600", 21600), (" 60 ", 60), ("0", None), ("21601", None), ("-5", None),
     ("1.5", None), ("", None), (None, None), ("9" * 30, None)],
    ids=["min", "max", "spaces", "zero", "too-big", "negative", "fraction", "empty", "missing",
         "huge"],
)  # fmt: skip
def test_ttl_header(text: str | None, ttl: int | None) -> None:
    assert parse_ttl(text) == ttl


def test_token_is_bound_to_its_subject_and_expires() -> None:
    token = issue_token(SECRET, "mac-a|instance-1", now=1000.0, ttl=60)
    assert token_is_valid(SECRET, token, "mac-a|instance-1", now=1059.0)
    assert not token_is_valid(SECRET, token, "mac-a|instance-1", now=1060.0)
    assert not token_is_valid(SECRET, token, "mac-b|instance-1", now=1001.0)
    assert not token_is_valid(SECRET, token, "mac-a|instance-2", now=1001.0), "re-arm ends it"
    assert not token_is_valid(b"x" * 32, token, "mac-a|instance-1", now=1001.0)


@pytest.mark.parametrize(
    "token",
    ["", ".", "abc", "1060.", ".sig", "99999999999999.sig", "1060.not-the-signature"],
    ids=["empty", "dot", "no-dot", "no-sig", "no-expiry", "long-expiry", "forged"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert not token_is_valid(SECRET, token, "s", now=1000.0)


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=10.0, burst=5, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(5)] == [None] * 5
    retry = buckets.take("a")
    assert retry == pytest.approx(0.1)
    assert buckets.take("b") is None, "one guest's bucket is not another's"
    now[0] += 0.1
    assert buckets.take("a") is None
    assert buckets.take("a") is not None


def test_full_buckets_are_forgotten() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=10.0, burst=5, clock=lambda: now[0])
    for n in range(100):
        buckets.take(f"guest{n}")
    assert len(buckets) == 100
    now[0] += 1.0  # every bucket is full again, but sweeps are rare
    buckets.take("fresh")
    assert len(buckets) == 101
    now[0] += SWEEP_SECONDS
    buckets.take("fresh")
    assert len(buckets) == 1


def test_bucket_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        TokenBuckets(rate=0, burst=5, clock=lambda: 0.0)
