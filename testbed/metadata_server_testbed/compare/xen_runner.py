"""One run of the comparison on real Xen (`--hypervisor xen`): N PV domUs booting by
one method against a fresh Dom0 server, measured like the stand-in runs
(runner.execute), then destroyed and checked for leftovers.

Dom0 is the host's own network namespace (the toolstack's vif-bridge script puts every
vif on a bridge there): the run makes two bridges named after its prefix, one with the
gateway address where the server runs dnsmasq (the network method), one with nothing
(the ISO method: the guest cannot reach the server, and Dom0 provisions it with `iso
provision` through the real `xl block-attach` as soon as `xl create` returned). The
server is the real `metadata-server serve` in a PID namespace of its own, as in the
stand-in runs, so Dom0's cost is measured the same way; `xl create` itself is the
harness's (the toolstack's), not counted. A guest is done when the server records it
`configured` or `failed`, or at `guest_timeout`; then it is destroyed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from metadata_server.metrics import histogram_quantile
from metadata_server_testbed.compare.admin import AdminError
from metadata_server_testbed.compare.dom0 import Dom0, Dom0Paths
from metadata_server_testbed.compare.leftovers import Scope, find_leftovers
from metadata_server_testbed.compare.plan import plan_guests
from metadata_server_testbed.compare.progress import Progress
from metadata_server_testbed.compare.results import GuestRecord, RunRecord
from metadata_server_testbed.compare.runner import (
    DHCP_SYNC_TIMEOUT,
    ISO_MESSAGE,
    Harness,
    RunOptions,
    Scenario,
    _cost,
    _epoch,
    _wait_quiet,
    keep_logs,
    unmeasured_run,
)
from metadata_server_testbed.compare.xen_guests import XenGuest, XenImage, destroy_all

log = logging.getLogger(__name__)

SETTLED = ("configured", "failed")
POLL_SECONDS = 2.0  # under TCG every admin call costs Dom0 CPU the guests need


def run_prefix(harness: Harness, number: int) -> str:
    """The run's bridge and domain prefix: bridge names have at most 15 characters."""
    return f"{harness.prefix}{number % 16:x}"


async def execute_xen(
    harness: Harness,
    image: XenImage,
    scenario: Scenario,
    guests: int,
    options: RunOptions,
    *,
    progress: Callable[[str, int], Progress] | None = None,
) -> RunRecord:
    number = harness.next_run()
    prefix = run_prefix(harness, number)
    run_dir = harness.work / f"run{number}-{scenario.name}-{guests}"
    dom0 = Dom0(
        Dom0Paths(run_dir / "dom0"),
        prefix,
        harness.token,
        iso=scenario.iso_dom0,
        dhcp=scenario.dhcp,
        hypervisor="xen",
        flow_timeout=options.flow_timeout,
        connections=options.concurrency + 8,
        host_network=True,
    )
    bridge = dom0.isolated_bridge if scenario.method == "iso" else dom0.bridge
    extra = image.iso_extra if scenario.method == "iso" else ""
    fleet = [
        XenGuest(plan, f"{prefix}g{plan.index}", run_dir / "guests", bridge, image, extra)
        for plan in plan_guests(guests)
    ]
    record = unmeasured_run(
        scenario.method, guests, options.concurrency, "real PV domUs, on vCPUs of their own"
    )
    bar = progress(f"[xen {scenario.name} N={guests}]", guests) if progress else None
    try:
        await _run(scenario, options, dom0, fleet, record, bar)
    except asyncio.CancelledError:
        record.errors.append("interrupted")
        raise
    except Exception as error:  # a run that cannot go on is a result, not a crash
        log.exception("run %s N=%s on Xen failed", scenario.name, guests)
        record.errors.append(f"{type(error).__name__}: {error}")
    finally:
        for guest in fleet:
            with contextlib.suppress(Exception):
                await guest.destroy()
        record.guests_cpu_s = round(sum(guest.cpu_s for guest in fleet), 3)
        await _teardown(harness, dom0, run_dir)
        record.leftovers = await asyncio.to_thread(find_leftovers, Scope(prefix, run_dir))
        record.leftovers += [
            f"domain {name}" for name in await asyncio.to_thread(destroy_all, prefix)
        ]
    return record


async def _run(
    scenario: Scenario,
    options: RunOptions,
    dom0: Dom0,
    fleet: list[XenGuest],
    record: RunRecord,
    bar: Progress | None,
) -> None:
    await dom0.start()
    assert dom0.admin is not None
    syncs = (await dom0.admin.dhcp_status()).get("syncs", 0) if scenario.dhcp else 0
    await dom0.admin.import_guests([guest.plan.record() for guest in fleet])
    if scenario.dhcp:
        await _wait_dhcp(dom0, len(fleet), syncs)
    for guest in fleet:
        await asyncio.to_thread(guest.make)
    baseline = set(await asyncio.to_thread(dom0.processes))
    before = await asyncio.to_thread(dom0.snapshot)
    semaphore = asyncio.Semaphore(options.concurrency)
    creating = asyncio.Lock()  # one `xl create` at a time
    provisions: dict[str, str] = {}  # MAC -> the ISO flow's error ("" when it ended well)

    async def one(guest: XenGuest) -> None:
        async with semaphore:
            async with creating:
                created = await guest.create()
            if created:
                flow = None
                if scenario.provision and guest.domid is not None:
                    assert dom0.iso_admin is not None
                    flow = asyncio.create_task(
                        dom0.iso_admin.provision(guest.plan.mac, guest.domid, options.flow_timeout)
                    )
                await _wait_settled(dom0, guest, options.guest_timeout)
                if flow is not None:
                    try:
                        await flow
                        provisions[guest.plan.mac] = ""
                    except (AdminError, aiohttp.ClientError, TimeoutError) as error:
                        provisions[guest.plan.mac] = f"ISO flow: {error}"
            await guest.destroy()
            if bar is not None:
                bar.update(configured=not guest.error)

    await asyncio.gather(*(one(guest) for guest in fleet))
    boot_end = await asyncio.to_thread(dom0.snapshot)
    quiet_at, _ = await _wait_quiet(dom0, baseline, 0, options.quiet_timeout)
    after = await asyncio.to_thread(dom0.snapshot)
    vms = {vm["mac"]: vm for vm in await dom0.admin.vms()}
    leased = sum(1 for vm in vms.values() if "leased" in vm["state_times"])
    exposition = await dom0.admin.metrics()
    record.server_p50_s = histogram_quantile(exposition, "metadata_guest_request_seconds", 0.5)
    record.server_p99_s = histogram_quantile(exposition, "metadata_guest_request_seconds", 0.99)
    record.dom0 = _cost(before, boot_end, after, [], len(provisions), leased)
    _records(record, fleet, vms, provisions)
    first = min((guest.started for guest in fleet if guest.started), default=record.started)
    done = [g.configured_at for g in record.guest_records if g.configured_at is not None]
    record.boot_wall_s = round(max(done) - first, 3) if done else 0.0
    record.quiet_wall_s = round(quiet_at - first, 3)


async def _wait_dhcp(dom0: Dom0, guests: int, syncs_before: int) -> None:
    assert dom0.admin is not None
    deadline = time.monotonic() + DHCP_SYNC_TIMEOUT * 4  # TCG: dnsmasq starts slowly
    while time.monotonic() < deadline:
        status = await dom0.admin.dhcp_status()
        if status.get("syncs", 0) > syncs_before and status.get("guests") == guests:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("dnsmasq did not get the reservations in time")


async def _wait_settled(dom0: Dom0, guest: XenGuest, timeout: float) -> None:
    assert dom0.admin is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(AdminError, aiohttp.ClientError, TimeoutError):
            vm = await dom0.admin.vm(guest.plan.mac)
            if vm["state"] in SETTLED:
                if vm["state"] != "configured":
                    guest.error = f"state {vm['state']} ({vm.get('message', '')})"
                return
        await asyncio.sleep(POLL_SECONDS)
    guest.error = f"not configured within {timeout:g} s of its xl create"


def _records(
    record: RunRecord,
    fleet: list[XenGuest],
    vms: dict[str, dict[str, object]],
    provisions: dict[str, str],
) -> None:
    for guest in fleet:
        vm = vms.get(guest.plan.mac)
        configured_at = None
        state = "missing"
        message = ""
        if isinstance(vm, dict):
            state = str(vm["state"])
            message = str(vm.get("message") or "")
            times = vm["state_times"]
            if state == "configured" and isinstance(times, dict):
                configured_at = _epoch(str(times["configured"]))
        via = ""
        if configured_at is not None:
            via = "iso" if message.startswith(ISO_MESSAGE) else "network"
        problem = "" if configured_at is not None else guest.error or f"state {state}"
        if guest.retried:
            log.warning("%s: xl create ran twice (%s)", guest.name, guest.retried)
        if provisions.get(guest.plan.mac):
            problem = "; ".join(p for p in (problem, provisions[guest.plan.mac]) if p)
        record.guest_records.append(
            GuestRecord(
                method=record.method,
                guests=record.guests,
                index=guest.plan.index,
                mac=guest.plan.mac,
                boot_start=round(guest.started, 6),
                configured_at=configured_at,
                seconds=round(configured_at - guest.started, 4)
                if configured_at is not None and guest.started
                else None,
                state=state,
                via=via,
                exit_code=None,
                problem=problem,
            )
        )
    record.configured = sum(1 for g in record.guest_records if g.configured_at is not None)
    record.failed = len(record.guest_records) - record.configured


async def _teardown(harness: Harness, dom0: Dom0, run_dir: Path) -> None:
    try:
        await dom0.stop()
    except Exception:
        log.exception("stopping Dom0 failed")
        dom0.kill_now()
    keep_logs(harness, dom0, run_dir)
    await asyncio.to_thread(shutil.rmtree, run_dir, True)
