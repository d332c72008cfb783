"""The whole comparison: the sweep of runs, the faults, the outputs, and the cleanup.

`run_comparison(options)` builds the shared guest image in a fresh work directory under
/tmp (short paths: unix sockets live there), runs every (N, method) of the sweep and,
with `faults`, every fault for every method, then writes DIR/report.md, the charts
(PNG), and the raw data (raw.json, runs.csv, guests.csv; Dom0's logs in DIR/logs/).

Cleanup happens in layers: each run removes what it made in `finally` (also when
cancelled); SIGINT, SIGTERM and SIGHUP cancel the comparison so those `finally` blocks
run; then a last sweep (`leftovers.sweep`) removes whatever is still there under this
comparison's prefix and directory, and the final leftover check that the report shows
runs after it. A comparison killed outright takes its processes with it (they die with
their parent) but leaves namespaces and files: the next comparison removes them first
(`sweep_stale`), and its report says so. The outputs are written even after an
interruption (with what finished).

Must not touch namespaces, links, loop devices, mounts, processes or files that are not
this comparison's, and sends no traffic anywhere but the namespaces it makes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metadata_server_testbed.compare import faults as fault_runs
from metadata_server_testbed.compare import neighbour_table, procstats
from metadata_server_testbed.compare.cpu_share import MODES as CPU_MODES
from metadata_server_testbed.compare.image import build_image, image_tools, kernel_has
from metadata_server_testbed.compare.leftovers import Scope, find_leftovers, sweep
from metadata_server_testbed.compare.progress import Progress
from metadata_server_testbed.compare.report import render
from metadata_server_testbed.compare.results import Comparison, guests_csv, runs_csv, to_json
from metadata_server_testbed.compare.runner import SCENARIOS, Harness, RunOptions, execute
from metadata_server_testbed.compare.xen_guests import XenImage, destroy_all
from metadata_server_testbed.compare.xen_runner import execute_xen

log = logging.getLogger(__name__)

DOM0_TOOLS = (
    "ip", "unshare", "nsenter", "setpriv", "chroot", "losetup", "dnsmasq", "mount", "umount",
    "xenstore-read", "xenstore-write", "xenstore-rm", "xenstore-chmod", "xenstore-ls",
    "xenstore-exists", "xenstore-watch",
)  # fmt: skip
XEN_DOM0_TOOLS = ("ip", "unshare", "setpriv", "dnsmasq", "qemu-img", "xl", "xenstore-read")
HYPERVISORS = ("standin", "xen")
OWNER = "harness.json"  # in the work directory: which process and prefix it belongs to
WORK_PREFIX = "msc-"


@dataclass(frozen=True)
class Options:
    methods: tuple[str, ...] = ("network", "iso")
    sweep: tuple[int, ...] = (10,)
    concurrency: int = 20
    out: Path = Path("compare-report")
    faults: bool = False
    fault_guests: int = 2
    hypervisor: str = "standin"
    guest_cpu: str = "grouped"
    guest_timeout: float = 60.0
    flow_timeout: float = 60.0
    signal_timeout: float = 3.0  # the ISO flow's timeout in the never-signals fault
    work_parent: Path = Path("/tmp")  # noqa: S108 (its own unique subdirectory)
    xen_image: XenImage | None = None  # --hypervisor xen: what the domUs boot

    def run_options(self) -> RunOptions:
        return RunOptions(
            concurrency=self.concurrency,
            guest_timeout=self.guest_timeout,
            flow_timeout=self.flow_timeout,
            hypervisor=self.hypervisor,
            guest_cpu=self.guest_cpu,
        )


def missing_requirements(options: Options) -> list[str]:
    """Why the comparison cannot run here ([] if it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("it needs root (namespaces, loop devices, mounts)")
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    xen = options.hypervisor == "xen"
    tools = XEN_DOM0_TOOLS if xen else (*DOM0_TOOLS, *image_tools())
    for tool in tools:
        if shutil.which(tool, path=path) is None:
            problems.append(f"{tool} is not installed")
    if xen:
        problems += _xen_problems(options)
    elif options.hypervisor not in HYPERVISORS:
        problems.append(f"--hypervisor must be one of {', '.join(HYPERVISORS)}")
    if options.guest_cpu not in CPU_MODES:
        problems.append(f"--guest-cpu must be one of {', '.join(CPU_MODES)}")
    for method in options.methods:
        if method not in SCENARIOS:
            problems.append(f"unknown method {method!r}")
    return problems


def _xen_problems(options: Options) -> list[str]:
    problems = []
    if options.xen_image is None:
        problems.append(
            "--hypervisor xen needs --xen-image and --xen-kernel (the domUs' disk and kernel)"
        )
    else:
        problems += options.xen_image.problems()
    if options.faults:
        problems.append("--faults runs on the stand-ins only (not with --hypervisor xen)")
    if shutil.which("xl") is not None:
        info = subprocess.run(
            ["xl", "info"], capture_output=True, text=True, timeout=60, check=False
        )
        if info.returncode != 0:
            problems.append(
                f"`xl info` failed: this is not a running Xen Dom0 ({info.stderr.strip()[-200:]})"
            )
    return problems


def host_facts(options: Options) -> dict[str, Any]:
    return {
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "iso9660_in_kernel": kernel_has("iso9660"),
        "hypervisor": options.hypervisor,
    }


def _settings(options: Options) -> dict[str, Any]:
    return {
        "methods": list(options.methods),
        "sweep": list(options.sweep),
        "concurrency": options.concurrency,
        "guest_cpu": options.guest_cpu,
        "faults": options.faults,
        "fault_guests": options.fault_guests,
        "hypervisor": options.hypervisor,
        "guest_timeout": options.guest_timeout,
        "flow_timeout": options.flow_timeout,
        "signal_timeout": options.signal_timeout,
    }


async def _comparison(
    options: Options,
    comparison: Comparison,
    harness: Harness,
    progress: Callable[[str, int], Progress],
) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, task.cancel)
    run_options = options.run_options()
    for n in options.sweep:
        for method in options.methods:
            if options.xen_image is not None and options.hypervisor == "xen":
                record = await execute_xen(
                    harness, options.xen_image, SCENARIOS[method], n, run_options, progress=progress
                )
            else:
                record = await execute(
                    harness, SCENARIOS[method], n, run_options, progress=progress
                )
            comparison.runs.append(record)
    if options.faults:
        for fault in fault_runs.FAULTS:
            for method in options.methods:
                scenario = fault_runs.scenario(fault, method, options.signal_timeout)
                record = await execute(
                    harness, scenario, options.fault_guests, run_options, progress=progress
                )
                comparison.faults.append(fault_runs.judge(fault, method, record))


def sweep_stale(parent: Path) -> list[str]:
    """Remove what an earlier comparison left when it was killed outright (SIGKILL, a
    crash: its `finally` never ran): each `msc-*` work directory whose owner is no
    longer running, with its namespaces. Returns what was removed."""
    removed = []
    for directory in sorted(parent.glob(WORK_PREFIX + "*")):
        try:
            owner = json.loads((directory / OWNER).read_text())
            pid, prefix, started = int(owner["pid"]), str(owner["prefix"]), owner["started"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a harness's, or it is still being made
        if procstats.start_time(pid) == started or not prefix.startswith("msc"):
            continue  # its owner still runs
        scope = Scope(prefix, directory)
        found = find_leftovers(scope)
        sweep(scope)
        log.warning("removed the leftovers of a killed comparison: %s", found)
        removed += found
    return removed


@contextmanager
def _no_interruptions() -> Iterator[None]:
    """While the last cleanup runs, Ctrl-C and SIGTERM wait (they would cut it short)."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def write_outputs(comparison: Comparison, out: Path) -> list[str]:
    """report.md, the charts and the raw data in `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    charts: list[str] = []
    try:
        from metadata_server_testbed.compare.charts import draw_all  # matplotlib: the compare extra

        charts = draw_all(comparison, comparison.settings.get("methods", []), out)
    except ImportError as error:
        comparison.notes.append(f"no charts: {error} (install the `charts` extra)")
    written += charts
    (out / "raw.json").write_text(json.dumps(to_json(comparison), indent=1) + "\n")
    (out / "runs.csv").write_text(runs_csv(comparison))
    (out / "guests.csv").write_text(guests_csv(comparison))
    (out / "report.md").write_text(render(comparison, charts))
    return [*written, "raw.json", "runs.csv", "guests.csv", "report.md"]


def _largest_run(options: Options) -> int:
    return max([*options.sweep, options.fault_guests if options.faults else 0])


def run_comparison(options: Options, *, stream: Any = None) -> tuple[Comparison, int]:
    """Run everything (see the module docstring); returns the comparison and the exit
    status: 0 done with nothing left behind, 1 errors or leftovers, 130 interrupted."""
    started = time.time()
    comparison = Comparison(
        started=started, finished=started, settings=_settings(options), host=host_facts(options)
    )
    stale = sweep_stale(options.work_parent)
    if stale:
        comparison.settings["stale_removed"] = stale
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=options.work_parent))
    os.chmod(work, 0o755)  # dnsmasq reads its files below it as its own user  # noqa: S103 (dnsmasq reads below it)
    prefix = f"msc{os.getpid() % 100000}{secrets.token_hex(2)}"
    owner = {"pid": os.getpid(), "started": procstats.start_time(os.getpid()), "prefix": prefix}
    (work / OWNER).write_text(json.dumps(owner))
    comparison.settings.update(work=str(work), prefix=prefix)
    scope = Scope(prefix, work)
    harness: Harness | None = None

    def progress(label: str, total: int) -> Progress:
        return Progress(label, total, stream)

    try:
        image = None if options.hypervisor == "xen" else build_image(work / "image")
        harness = Harness(image, work, prefix, secrets.token_hex(24), logs=options.out / "logs")
        with neighbour_table.raised_for(_largest_run(options)) as (before, during):
            comparison.host["neighbour_table"] = [before.describe(), during.describe()]
            asyncio.run(_comparison(options, comparison, harness, progress))
    except (KeyboardInterrupt, asyncio.CancelledError):
        comparison.interrupted = True
    except Exception as error:
        log.exception("the comparison failed")
        comparison.errors.append(f"{type(error).__name__}: {error}")
    finally:
        with _no_interruptions():
            if harness is not None:
                for dom0, fleet in list(harness.active):
                    fleet.destroy()
                    dom0.kill_now()
            if options.hypervisor == "xen":
                destroy_all(prefix)  # a run cut short leaves its domains
            sweep(scope)
            comparison.leftovers = find_leftovers(scope)
    comparison.finished = time.time()
    write_outputs(comparison, options.out)
    if comparison.interrupted:
        return comparison, 130
    failed = bool(comparison.errors or comparison.leftovers)
    failed = failed or any(run.errors or run.leftovers for run in comparison.runs)
    return comparison, 1 if failed else 0
