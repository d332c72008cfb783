"""One guest must not hurt the others: a hostile guest floods the real server (a process
under systemd's default limit of 1024 file descriptors) while a quiet guest keeps asking.
Every quiet request succeeds; the flood is refused before it is parsed. The figures
(latency against a baseline, memory) are printed by benchmarks/guest_isolation.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.isolation import Bench, isolation_bench, outcome, slowest
from tests.support.requirements import need_root, need_tools, root_fixture

FLOODS = [
    # mode, count, what the hostile guest's connections may see
    ("idle", 1500, {"503", "no answer", "reset", "closed", "refused at connect"}),
    ("slowloris", 1500, {"503", "408", "reset", "closed", "refused at connect"}),
    ("bigheads", 1000, {"431", "503", "reset", "closed"}),
    ("manyheaders", 300, {"431", "503", "reset", "closed"}),
]


@pytest.fixture(scope="module")
@root_fixture
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    need_root()
    need_tools("ip", "curl", "prlimit")
    tmp = tmp_path_factory.mktemp("isolation")
    with isolation_bench(tmp, extra="request_timeout = 2.0") as it:
        yield it


@pytest.mark.parametrize(("mode", "count", "allowed"), FLOODS, ids=[f[0] for f in FLOODS])
def test_a_flood_from_one_guest_leaves_the_others_served(
    bench: Bench, mode: str, count: int, allowed: set[str]
) -> None:
    flood = bench.flood(mode, count, hold=4.0)
    answers = bench.ask_while(flood)
    seen = outcome(flood)
    print(
        f"{mode}: hostile saw {seen}; quiet: {len(answers)} answers, slowest {slowest(answers):.3f} s"
    )
    assert {status for status, _ in answers} == {200}
    assert set(seen) <= allowed, seen
    refusal = {"idle": "503", "slowloris": "408", "bigheads": "431", "manyheaders": "431"}[mode]
    assert seen.get(refusal, 0) > 0, seen
    assert bench.ask()[0] == 200, "the server is still up"
