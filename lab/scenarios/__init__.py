"""The scenarios the lab's dom0 runs, by name (`lab.scenario=A+B`). Each takes the shared
`Dom0` and returns True when every one of its checks passed."""

from __future__ import annotations

from collections.abc import Callable

from lab.scenarios import compare, iso, launch, network, xenstore
from lab.scenarios.common import Dom0

SCENARIOS: dict[str, Callable[[Dom0], bool]] = {
    "network": network.run_scenario,
    "launch": launch.run_scenario,
    "xenstore": xenstore.run_scenario,
    "iso": iso.run_iso,
    "fallback": iso.run_fallback,
    "compare": compare.run_scenario,
}
