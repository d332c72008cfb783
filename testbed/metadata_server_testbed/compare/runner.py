"""One run of the comparison: N guests booting by one method (or one fault's variant of
it) against a fresh Dom0, measured, then everything removed and checked for leftovers.

A `Scenario` says what Dom0 runs (the plain server, or the server with the ISO
fallback; DHCP or not; the guest API reachable or not) and what each guest does (its
`compare-boot` options, whether Dom0 provisions it by ISO when it boots, whether the
harness kills it at some stage). `execute()` does the run:

1. Dom0 starts (its namespace, bridge and server); the guests are registered in one bulk
   import; with DHCP, the run waits until dnsmasq has their reservations.
2. The guests' namespaces, overlays and (ISO) domains are made; Dom0 is measured.
3. The guests boot, at most `concurrency` at a time (each one's boot start is when the
   harness starts its init; for the ISO method Dom0's flow starts at the same moment).
4. Dom0 is measured again once it is quiet (no process besides its long-lived ones for
   a second, every lease reported): lease hooks and flows that run after the guests
   are done still count.
5. The server's records give each guest's `configured` time; then the guests, Dom0 and
   the run's directory are removed and the leftover check runs.

Never raises for a guest's or Dom0's failure: those are results (`RunRecord.errors`,
failed guests). Cleans up in `finally`, also when cancelled (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from metadata_server.metrics import histogram_quantile
from metadata_server_testbed.compare.admin import PROVISION_GRACE, AdminError
from metadata_server_testbed.compare.cpu_share import GuestCpu
from metadata_server_testbed.compare.dom0 import Dom0, Dom0Paths, Dom0Snapshot
from metadata_server_testbed.compare.guests import XENSTORED_SOCKET, BootOutcome, Fleet, GuestSlot
from metadata_server_testbed.compare.leftovers import Scope, find_leftovers
from metadata_server_testbed.compare.plan import plan_guests
from metadata_server_testbed.compare.progress import Progress
from metadata_server_testbed.compare.results import Dom0Cost, GuestRecord, RunRecord
from metadata_server_testbed.compare.rootfs import Rootfs

log = logging.getLogger(__name__)

QUIET_SECONDS = 1.0  # Dom0 counts as quiet after this long with only its daemons
DHCP_SYNC_TIMEOUT = 30.0
ISO_MESSAGE = "configured from the ISO"


@dataclass(frozen=True)
class Scenario:
    name: str  # "network", "iso", or "<fault>-<method>"
    method: str  # the path the guests take first: "network" or "iso"
    iso_dom0: bool  # Dom0 runs the ISO fallback
    dhcp: bool  # Dom0 runs dnsmasq
    boot_options: tuple[str, ...]
    provision: bool = False  # Dom0 provisions each guest by ISO at its boot start
    guest_api: bool = True
    kill_at_stage: str | None = None
    destroy_killed: bool = False  # the toolstack destroys a killed guest's domain
    guest_conf: str | None = None  # the guests' /etc/metadata-init.conf
    flow_timeout: float | None = None  # this scenario's ISO flow timeout


NETWORK = Scenario("network", "network", iso_dom0=False, dhcp=True, boot_options=("--dhcp",))
ISO = Scenario(
    "iso", "iso", iso_dom0=True, dhcp=False, boot_options=("--disk", "--", "--iso"), provision=True
)
SCENARIOS = {"network": NETWORK, "iso": ISO}


@dataclass(frozen=True)
class RunOptions:
    concurrency: int = 20
    guest_timeout: float = 60.0  # a guest's init must end within this
    flow_timeout: float = 60.0  # Dom0's ISO flow timeout
    quiet_timeout: float = 60.0  # + 2 s per guest: wait for Dom0 to be quiet
    hypervisor: str = "standin"
    guest_cpu: str = "grouped"  # see cpu_share


@dataclass
class Harness:
    """What all runs share: the guest image, the work directory, the names' prefix,
    the admin token, and the runs still being set up or torn down (for the last-resort
    cleanup)."""

    image: Rootfs | None  # the simulated guests' root (None on Xen: real domUs)
    work: Path
    prefix: str
    token: str
    logs: Path | None = None  # where each run's Dom0 logs are kept
    active: list[tuple[Dom0, Fleet]] = field(default_factory=list)
    _runs: int = 0

    def next_run(self) -> int:
        self._runs += 1
        return self._runs


@dataclass
class _GuestResult:
    slot: GuestSlot
    outcome: BootOutcome | None = None
    provision: dict[str, Any] | None = None
    provision_error: str = ""


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _wait_dhcp(dom0: Dom0, guests: int, syncs_before: int) -> None:
    assert dom0.admin is not None
    deadline = time.monotonic() + DHCP_SYNC_TIMEOUT
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = await dom0.admin.dhcp_status()
        if status.get("syncs", 0) > syncs_before and status.get("guests") == guests:
            if not status.get("ok"):
                raise RuntimeError(f"DHCP sync failed: {status.get('error')}")
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"dnsmasq did not get the reservations in time: {status}")


async def _wait_quiet(
    dom0: Dom0, baseline: set[int], leases: int, timeout: float
) -> tuple[float, int]:
    """Wait until only Dom0's long-lived processes run (for QUIET_SECONDS) and `leases`
    guests have their lease recorded; returns (when, leases recorded)."""
    assert dom0.admin is not None
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    recorded = 0
    while time.monotonic() < deadline:
        extra = set(await asyncio.to_thread(dom0.processes)) - baseline
        now = time.monotonic()
        if extra:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= QUIET_SECONDS:
            if leases:
                vms = await dom0.admin.vms()
                recorded = sum(1 for vm in vms if "leased" in vm["state_times"])
            if recorded >= leases:
                return time.time() - QUIET_SECONDS, recorded
            quiet_since = None
        await asyncio.sleep(0.1)
    log.warning("Dom0 was not quiet within %g s", timeout)
    return time.time(), recorded


def _cost(
    before: Dom0Snapshot,
    boot_end: Dom0Snapshot,
    after: Dom0Snapshot,
    xl: list[dict[str, Any]],
    provisions: int,
    leases: int,
) -> Dom0Cost:
    server = after.server - before.server
    return Dom0Cost(
        cpu_s=round(server.cpu_seconds, 3),
        cpu_boot_s=round((boot_end.server - before.server).cpu_seconds, 3),
        standin_cpu_s=round(sum(float(entry.get("cpu_s", 0.0)) for entry in xl), 3),
        xenstored_cpu_s=round((after.xenstored - before.xenstored).cpu_seconds, 3),
        dhcp_cpu_s=round((after.dnsmasq - before.dnsmasq).cpu_seconds, 3),
        write_bytes=server.write_bytes,
        cancelled_write_bytes=server.cancelled_write_bytes,
        wchar=server.wchar,
        iso_bytes=sum(int(entry.get("iso_bytes", 0)) for entry in xl),
        # each of the two later snapshots' `cat` took one PID
        tasks=after.last_pid - before.last_pid - 2,
        http_requests=after.counters.get("Tcp.PassiveOpens", 0)
        - before.counters.get("Tcp.PassiveOpens", 0),
        dhcp_datagrams=after.counters.get("Udp.InDatagrams", 0)
        - before.counters.get("Udp.InDatagrams", 0),
        xl_calls=len(xl),
        provision_calls=provisions,
        leases_recorded=leases,
    )


def _problem(result: _GuestResult, vm: dict[str, Any] | None) -> str:
    parts = []
    if vm is None:
        parts.append("not in the registry")
    elif vm["state"] != "configured":
        parts.append(f"state {vm['state']}" + (f" ({vm['message']})" if vm.get("message") else ""))
    outcome = result.outcome
    if outcome is not None:
        if outcome.killed:
            parts.append(outcome.killed)
        elif outcome.returncode:
            tail = " | ".join(outcome.output.strip().splitlines()[-3:])
            parts.append(f"init exited {outcome.returncode}: {tail}")
    if result.provision_error:
        parts.append(f"ISO flow: {result.provision_error}")
    return "; ".join(parts)


def unmeasured_run(method: str, guests: int, concurrency: int, guest_cpu: str) -> RunRecord:
    """A run about to start: every guest counts as failed until the server says otherwise."""
    return RunRecord(
        method=method,
        guests=guests,
        concurrency=concurrency,
        started=time.time(),
        boot_wall_s=0.0,
        quiet_wall_s=0.0,
        configured=0,
        failed=guests,
        dom0=Dom0Cost(),
        guest_cpu=guest_cpu,
    )


async def execute(
    harness: Harness,
    scenario: Scenario,
    guests: int,
    options: RunOptions,
    *,
    progress: Callable[[str, int], Progress] | None = None,
) -> RunRecord:
    number = harness.next_run()
    prefix = f"{harness.prefix}r{number}-"
    run_dir = harness.work / f"run{number}-{scenario.name}-{guests}"
    plans = plan_guests(guests)
    flow_timeout = scenario.flow_timeout or options.flow_timeout
    dom0 = Dom0(
        Dom0Paths(run_dir / "dom0"),
        f"{prefix}d0",
        harness.token,
        iso=scenario.iso_dom0,
        dhcp=scenario.dhcp,
        guest_api=scenario.guest_api,
        hypervisor=options.hypervisor,
        flow_timeout=flow_timeout,
        connections=options.concurrency + 8,
    )
    cpu = GuestCpu.make(options.guest_cpu)
    assert harness.image is not None, "the simulated guests need their image"
    fleet = Fleet(harness.image, run_dir / "guests", dom0.netns, prefix, plans, cpu)
    method = scenario.method if scenario.name in SCENARIOS else scenario.name
    record = unmeasured_run(method, guests, options.concurrency, cpu.how)
    harness.active.append((dom0, fleet))
    bar = progress(f"[{scenario.name} N={guests}]", guests) if progress else None
    try:
        await _run(harness, scenario, options, dom0, fleet, record, flow_timeout, bar)
    except asyncio.CancelledError:
        record.errors.append("interrupted")
        raise
    except Exception as error:  # a run that cannot go on is a result, not a crash
        log.exception("run %s N=%s failed", scenario.name, guests)
        record.errors.append(f"{type(error).__name__}: {error}")
    finally:
        await _teardown(harness, dom0, fleet, run_dir, scenario, guests)
        harness.active.remove((dom0, fleet))
        scope = Scope(prefix, run_dir)
        record.leftovers = await asyncio.to_thread(find_leftovers, scope)
    return record


async def _run(
    harness: Harness,
    scenario: Scenario,
    options: RunOptions,
    dom0: Dom0,
    fleet: Fleet,
    record: RunRecord,
    flow_timeout: float,
    bar: Progress | None,
) -> None:
    await dom0.start()
    assert dom0.admin is not None
    assert dom0.server_pid is not None
    syncs = (await dom0.admin.dhcp_status()).get("syncs", 0) if scenario.dhcp else 0
    await dom0.admin.import_guests([plan.record() for plan in fleet.plans])
    if scenario.dhcp:
        await _wait_dhcp(dom0, len(fleet.plans), syncs)
    standin = options.hypervisor == "standin"
    hotplug = dom0.paths.hotplug if scenario.iso_dom0 and standin else None
    await asyncio.to_thread(fleet.create, hotplug)
    for slot in fleet.slots:
        if scenario.guest_conf is not None:
            path = slot.overlay.file("/etc/metadata-init.conf")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(scenario.guest_conf)
        if scenario.iso_dom0:
            socket = await dom0.create_domain(slot.plan.domid, slot.plan.mac)
            if socket is not None:
                os.link(socket, slot.xen / XENSTORED_SOCKET)
    env = {"XENSTORED_PATH": f"/run/xen/{XENSTORED_SOCKET}"} if scenario.iso_dom0 else None

    baseline = set(await asyncio.to_thread(dom0.processes))
    before = await asyncio.to_thread(dom0.snapshot)
    semaphore = asyncio.Semaphore(options.concurrency)
    results = [_GuestResult(slot) for slot in fleet.slots]

    async def one(result: _GuestResult) -> None:
        async with semaphore:
            slot = result.slot
            flow = None
            if scenario.provision:
                assert dom0.iso_admin is not None
                flow = asyncio.create_task(
                    dom0.iso_admin.provision(slot.plan.mac, slot.plan.domid, flow_timeout)
                )
            try:
                result.outcome = await fleet.boot(
                    slot,
                    scenario.boot_options,
                    timeout=options.guest_timeout,
                    kill_at_stage=scenario.kill_at_stage,
                    env=env,
                )
                if result.outcome.killed and scenario.destroy_killed:
                    await dom0.destroy_domain(slot.plan.domid)  # the guest died: xl destroy
                if flow is not None:
                    result.provision = await flow
            except (AdminError, aiohttp.ClientError) as error:
                body = getattr(error, "body", None)
                detail = body.get("detail") if isinstance(body, dict) else None
                result.provision_error = str(detail or error)
            except TimeoutError:
                # this guest's failure, not the run's: the flow outlived the admin call
                waited = flow_timeout + PROVISION_GRACE
                result.provision_error = f"the admin API did not end the ISO flow in {waited:g} s"
            finally:
                if flow is not None and not flow.done():
                    flow.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await flow
            if bar is not None:
                outcome = result.outcome
                ok = outcome is not None and outcome.returncode == 0 and not result.provision_error
                bar.update(configured=ok)

    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tasks = [asyncio.create_task(one(result)) for result in results]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The guests are this process's children and are reaped by now; Dom0 runs on.
    record.guests_cpu_s = round(
        (children_after.ru_utime + children_after.ru_stime)
        - (children_before.ru_utime + children_before.ru_stime),
        3,
    )
    boot_end = await asyncio.to_thread(dom0.snapshot)
    leases = sum(
        1 for result in results if scenario.dhcp and result.slot.stage() not in ("", "started")
    )
    quiet_at, leased = await _wait_quiet(
        dom0, baseline, leases, options.quiet_timeout + 2.0 * len(results)
    )
    after = await asyncio.to_thread(dom0.snapshot)
    vms = {vm["mac"]: vm for vm in await dom0.admin.vms()}
    exposition = await dom0.admin.metrics()
    for quantile, attribute in ((0.5, "server_p50_s"), (0.99, "server_p99_s")):
        value = histogram_quantile(exposition, "metadata_guest_request_seconds", quantile)
        setattr(record, attribute, value)
    provisions = sum(1 for r in results if r.provision is not None or r.provision_error)
    record.dom0 = _cost(before, boot_end, after, dom0.xl_costs(), provisions, leased)
    for key in await dom0.signal_keys():
        record.leftovers.append(f"xenstore key {key}")
    _records(record, scenario, results, vms)
    first = min((r.outcome.started for r in results if r.outcome), default=record.started)
    done = [g.configured_at for g in record.guest_records if g.configured_at is not None]
    record.boot_wall_s = round(max(done) - first, 3) if done else 0.0
    record.quiet_wall_s = round(quiet_at - first, 3)
    try:
        await dom0.admin.healthz()
    except (AdminError, OSError, TimeoutError) as error:
        record.errors.append(f"Dom0 unhealthy after the run: {error}")


def _records(
    record: RunRecord,
    scenario: Scenario,
    results: list[_GuestResult],
    vms: dict[str, dict[str, Any]],
) -> None:
    for result in results:
        plan = result.slot.plan
        vm = vms.get(plan.mac)
        outcome = result.outcome
        started = outcome.started if outcome is not None else 0.0
        configured_at = None
        if vm is not None and vm["state"] == "configured":
            configured_at = _epoch(vm["state_times"]["configured"])
        via = ""
        if configured_at is not None:
            via = "iso" if (vm or {}).get("message", "").startswith(ISO_MESSAGE) else "network"
        record.guest_records.append(
            GuestRecord(
                method=record.method,
                guests=record.guests,
                index=plan.index,
                mac=plan.mac,
                boot_start=round(started, 6),
                configured_at=configured_at,
                seconds=round(configured_at - started, 4)
                if configured_at is not None and outcome is not None
                else None,
                state=vm["state"] if vm is not None else "missing",
                via=via,
                exit_code=outcome.returncode if outcome is not None else None,
                problem="" if configured_at is not None else _problem(result, vm),
            )
        )
    record.configured = sum(1 for g in record.guest_records if g.configured_at is not None)
    record.failed = len(record.guest_records) - record.configured


async def _teardown(
    harness: Harness, dom0: Dom0, fleet: Fleet, run_dir: Path, scenario: Scenario, guests: int
) -> None:
    with contextlib.suppress(Exception):
        await asyncio.to_thread(fleet.destroy)
    try:
        await dom0.stop()
    except Exception:
        log.exception("stopping Dom0 failed")
        dom0.kill_now()
    keep_logs(harness, dom0, run_dir)
    await asyncio.to_thread(shutil.rmtree, run_dir, True)


def keep_logs(harness: Harness, dom0: Dom0, run_dir: Path) -> None:
    """Dom0's logs of the run into the harness's log directory (the run's goes away)."""
    if harness.logs is None:
        return
    harness.logs.mkdir(parents=True, exist_ok=True)
    for name in ("server.log", "xenstored.log"):
        source = dom0.paths.root / name
        if source.exists():
            with contextlib.suppress(OSError):
                shutil.copyfile(source, harness.logs / f"{run_dir.name}-{name}")
