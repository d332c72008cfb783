"""`vm launch`: from a name and a master image to a running guest that configures
itself, every step undone on any failure or cancellation.

`plan()` checks everything first and makes nothing: the name is free (no guest, no
domain, no launch directory), the address is in a configured subnet and free (or the
next free one is taken), the image is a prepared qcow2 master, qemu-img, xl and the
kernel (pvgrub2, or the admin's) are there. `run()` then does the steps, each pushing
its undo:

1. the launch directory `<state>/launched/NAME/` (0700) and its launch record (0600);
2. the registration (a new record only, never a replacement; its `launch` holds the
   image id, the guest's EC2 `ami-id`);
3. the delta, cloned from the master by `images.clone` on a worker thread;
4. the xl config (0600);
5. `xl create`;
6. the wait for `configured` or `failed` (a progress line per state), until `wait`
   seconds have passed: a guest still booting then is left running, not a failure.

On any exception, `asyncio.CancelledError` included, the undos run in reverse order
(`xl destroy` if the domain exists, the config, the delta once its clone thread is
done, the registration, the record, the directory) unless `keep`. The rollback runs to
its end even if the caller is cancelled again meanwhile; each undo runs even if an
earlier one failed, and their failures are reported together (`CleanupIncomplete`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from metadata_server.dhcp.subnets import Subnet
from metadata_server.errors import ConfigError, Conflict, MetadataError, NotFound
from metadata_server.images.clone import clone_master
from metadata_server.images.errors import ImageError, ImageToolFailed
from metadata_server.images.record import MasterRecord, read_master
from metadata_server.images.tools import find_tools
from metadata_server.launch import allocate
from metadata_server.launch.boot import PVGRUB, Boot, choose_boot
from metadata_server.launch.errors import (
    CleanupIncomplete,
    LaunchFailed,
    LaunchInProgress,
    ToolMissing,
)
from metadata_server.launch.record import (
    LaunchPaths,
    LaunchRecord,
    paths_for,
    remove_dir,
    remove_file,
    write_record,
)
from metadata_server.launch.record import write_private as write_private_file
from metadata_server.launch.request import LaunchRequest
from metadata_server.launch.xl import Xl
from metadata_server.launch.xl_config import DomainConfig, render
from metadata_server.model import VM, Launch, State, parse_vm
from metadata_server.registry import PutResult, Registry

log = logging.getLogger(__name__)
T = TypeVar("T")
HEARTBEAT = 10.0  # seconds between progress lines while the guest boots
Progress = Callable[[dict[str, Any]], Awaitable[None]]
Undo = tuple[str, Callable[[], Awaitable[None]]]


async def _quiet(event: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class LaunchSettings:
    directory: Path  # where launch directories go: <state directory>/launched
    subnets: tuple[Subnet, ...]
    dom0_addresses: frozenset[str]
    bridge: str | None = None  # the server's bridge, for a subnet that names none
    host: str | None = None  # this Dom0's name in a cluster: the guests' `host`
    pvgrub: Path = PVGRUB


@dataclass(frozen=True)
class Plan:
    request: LaunchRequest = field(repr=False)
    mac: str
    address: ipaddress.IPv4Address
    subnet: Subnet
    bridge: str
    master: MasterRecord
    image: str  # the master's real path
    boot: Boot
    paths: LaunchPaths
    uuid: str
    host: str | None = None  # this Dom0's name in a cluster

    def body(self) -> dict[str, Any]:
        """The guest's registration, as an admin would PUT it."""
        body: dict[str, Any] = {
            "mac": self.mac,
            "hostname": self.request.name,
            "ipv4": {
                "address": str(self.address),
                "prefix": self.subnet.cidr.prefixlen,
                "gateway": str(self.subnet.gateway),
            },
            "dns": list(self.subnet.dns),
            "ssh_keys": list(self.request.ssh_keys),
        }
        if self.subnet.domain is not None:
            body["domain"] = self.subnet.domain
        if self.host is not None:
            body["host"] = self.host
        if self.request.password is not None:
            body["password"] = self.request.password
        return body

    def launch(self) -> Launch:
        return Launch(
            image=self.image,
            image_id=self.master.image_id,
            delta=str(self.paths.delta),
            xl_config=str(self.paths.config),
        )


@dataclass(frozen=True)
class LaunchResult:
    vm: VM
    plan: Plan
    configured: bool
    generated_password: str | None = field(default=None, repr=False)
    steps: tuple[tuple[str, float], ...] = ()  # each step and its seconds


class Launcher:
    def __init__(
        self,
        registry: Registry,
        settings: LaunchSettings,
        xl: Xl,
        *,
        random_bytes: Callable[[int], bytes],
        running_macs: Callable[[], Awaitable[Collection[str]]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.xl = xl
        self._random = random_bytes
        self._running_macs = running_macs
        self._clock = clock
        # Addresses and MACs of plans not registered yet: two launches at once never
        # pick the same ones.
        self._pending: dict[str, Plan] = {}

    # --- checking ------------------------------------------------------------------------

    async def plan(self, request: LaunchRequest) -> Plan:
        """Everything checked, nothing made: MetadataError naming what is wrong."""
        name = request.name
        guests = await self.registry.list()
        for vm in guests:
            if vm.spec.hostname == name:
                raise Conflict(f"a guest named {name} is registered", field="name", holder=vm.mac)
        if name in self._pending:
            raise LaunchInProgress(f"a launch of {name} is already running", field="name")
        paths = paths_for(self.settings.directory, name)
        if _exists(paths.directory):
            raise LaunchInProgress(
                f"{paths.directory} exists: {name} was launched here, or a launch was cut "
                f"short (`metadata-server vm destroy {name} --force` removes it)",
                field="name",
            )
        try:
            find_tools("qemu-img")
        except ImageToolFailed as exc:
            raise ToolMissing(exc.detail) from None
        self.xl.check_installed()
        master = await asyncio.to_thread(read_master, Path(request.image))
        if master.format != "qcow2":
            raise ImageError(
                f"{request.image} is a {master.format} master: a launched guest runs on a "
                "qcow2 delta (qdisk); prepare a qcow2 master",
                field="image",
            )
        boot = choose_boot(
            request.kernel, request.ramdisk, root=master.root, pvgrub=self.settings.pvgrub
        )
        if await self.xl.exists(name):
            raise Conflict(f"a Xen domain named {name} exists", field="name", holder=name)

        reserved = {vm.spec.ipv4.address: vm.mac for vm in guests}
        reserved |= {str(p.address): p.mac for p in self._pending.values()}
        dom0 = self.settings.dom0_addresses
        subnets = self.settings.subnets
        if request.ip is not None:
            address, subnet = allocate.parse_requested(request.ip, subnets)
            allocate.check_address(address, subnet, reserved=reserved, dom0=dom0)
        else:
            if not subnets:
                allocate.subnet_of(ipaddress.IPv4Address("0.0.0.1"), subnets)  # the error
            subnet = subnets[0]
            address = allocate.next_free_address(subnet, reserved=reserved, dom0=dom0)
        bridge = subnet.bridge or self.settings.bridge
        if bridge is None:
            raise ConfigError(
                f"the subnet {subnet.cidr} names no bridge (dhcp.subnets[].bridge) and no "
                "bridge is set: a launched guest's vif needs one"
            )
        taken = {vm.mac for vm in guests} | {p.mac for p in self._pending.values()}
        taken |= {mac.lower() for mac in await self._running_macs()}
        mac = allocate.new_mac(taken, self._random)
        plan = Plan(
            request=request,
            mac=mac,
            address=address,
            subnet=subnet,
            bridge=bridge,
            master=master,
            image=_real(request.image),
            boot=boot,
            paths=paths,
            uuid=str(uuid.UUID(bytes=self._random(16), version=4)),
            host=self.settings.host,
        )
        parse_vm(plan.body(), rules=self.registry.address_rules)  # the registration's rules
        self._pending[name] = plan
        return plan

    def release(self, plan: Plan) -> None:
        """Forget a plan that was not run (or is registered now)."""
        if self._pending.get(plan.request.name) is plan:
            del self._pending[plan.request.name]

    # --- doing -------------------------------------------------------------------------

    async def launch(self, request: LaunchRequest, progress: Progress = _quiet) -> LaunchResult:
        return await self.run(await self.plan(request), progress)

    async def run(self, plan: Plan, progress: Progress = _quiet) -> LaunchResult:
        undo: list[Undo] = []
        steps: list[tuple[str, float]] = []
        try:
            return await self._steps(plan, progress, undo, steps)
        except BaseException as exc:
            if plan.request.keep:
                log.warning("launch of %s failed; kept for a look: %s", plan.request.name, exc)
                raise
            problems = await finish(_undo_all(undo))
            if not problems:
                log.info("launch of %s rolled back", plan.request.name)
                raise
            log.error("launch of %s: rollback incomplete: %s", plan.request.name, problems)
            if not isinstance(exc, Exception):  # cancellation goes on; the log says the rest
                raise
            reason = exc.detail if isinstance(exc, MetadataError) else str(exc)
            raise CleanupIncomplete(
                f"launch of {plan.request.name} failed ({reason}) and was rolled back", problems
            ) from exc
        finally:
            self.release(plan)

    async def _steps(
        self,
        plan: Plan,
        progress: Progress,
        undo: list[Undo],
        steps: list[tuple[str, float]],
    ) -> LaunchResult:
        request, paths = plan.request, plan.paths
        name = request.name
        started = time.monotonic()

        async def step(what: str, detail: str) -> None:
            nonlocal started
            now = time.monotonic()
            if steps:
                steps[-1] = (steps[-1][0], now - started)
            started = now
            steps.append((what, 0.0))
            await progress({"step": what, "detail": detail})

        await step("directory", f"launch directory {paths.directory}")
        self.settings.directory.mkdir(mode=0o700, exist_ok=True)
        try:
            paths.directory.mkdir(mode=0o700)
        except FileExistsError:
            raise LaunchInProgress(f"{paths.directory} appeared meanwhile", field="name") from None
        undo.append((f"directory {paths.directory}", _remove_dir(paths.directory)))
        undo.append((f"launch record {paths.record}", _remove_file(paths.record)))
        write_record(
            paths,
            LaunchRecord(
                name=name,
                mac=plan.mac,
                address=str(plan.address),
                uuid=plan.uuid,
                image=plan.image,
                image_id=plan.master.image_id,
                delta=str(paths.delta),
                xl_config=str(paths.config),
                launched_at=self._clock(),
            ),
        )

        await step("register", f"guest {plan.mac} at {plan.address}, ami-id {plan.master.image_id}")
        registering = asyncio.ensure_future(self.registry.create(plan.body(), launch=plan.launch()))
        undo.append((f"registration {plan.mac}", self._unregister(registering)))
        created = await asyncio.shield(registering)
        self.release(plan)  # the registry holds its address and MAC now

        await step("clone", f"delta {paths.delta} on {plan.image}")
        clone = asyncio.ensure_future(
            asyncio.to_thread(clone_master, Path(plan.image), paths.delta, fmt="qcow2")
        )
        undo.append((f"delta {paths.delta}", _remove_delta(clone, paths.delta)))
        await asyncio.shield(clone)

        await step("config", f"xl config {paths.config}")
        undo.append((f"xl config {paths.config}", _remove_file(paths.config)))
        config = DomainConfig(
            name=name,
            uuid=plan.uuid,
            memory=request.memory,
            vcpus=request.vcpus,
            boot=plan.boot,
            delta=str(paths.delta),
            mac=plan.mac,
            bridge=plan.bridge,
        )
        write_private_file(paths.config, render(config))

        await step("create", f"xl create {paths.config}")
        undo.append((f"domain {name}", self._destroy_domain(name)))
        await self.xl.create(str(paths.config))

        vm = created.vm
        if request.wait > 0:
            await step("wait", f"up to {request.wait:g} s for {name} to configure itself")
            vm = await self._wait(plan, vm, progress)
        steps[-1] = (steps[-1][0], time.monotonic() - started)
        if vm.state is State.FAILED:
            raise LaunchFailed(f"{name} reported failure: {vm.message or '(no reason given)'}")
        return LaunchResult(
            vm=vm,
            plan=plan,
            configured=vm.state is State.CONFIGURED,
            generated_password=created.generated_password,
            steps=tuple(steps),
        )

    async def _wait(self, plan: Plan, vm: VM, progress: Progress) -> VM:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + plan.request.wait
        state = vm.state
        while state not in (State.CONFIGURED, State.FAILED):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            found = await self.registry.wait(
                plan.mac, _moved_from(state), min(remaining, HEARTBEAT)
            )
            if found is None:
                raise LaunchFailed(f"the registration of {plan.request.name} was deleted")
            changed = found.state is not state
            vm, state = found, found.state
            await progress({"step": "state", "state": state.value, "changed": changed})
        return vm

    # --- undoing -------------------------------------------------------------------------

    def _unregister(self, registering: asyncio.Future[PutResult]) -> Callable[[], Awaitable[None]]:
        async def undo() -> None:
            # Only a registration this launch made: one refused (the MAC or address taken
            # meanwhile) is someone else's record. A cancelled launch still waits for it.
            try:
                created = await registering
            except Exception:
                return
            with contextlib.suppress(NotFound):
                await self.registry.delete(created.vm.mac)

        return undo

    def _destroy_domain(self, name: str) -> Callable[[], Awaitable[None]]:
        async def undo() -> None:
            await self.xl.destroy_if_running(name)

        return undo


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _moved_from(state: State) -> Callable[[VM | None], bool]:
    return lambda record: record is None or record.state is not state


def _remove_file(path: Path) -> Callable[[], Awaitable[None]]:
    async def undo() -> None:
        remove_file(path)

    return undo


def _remove_dir(path: Path) -> Callable[[], Awaitable[None]]:
    async def undo() -> None:
        remove_dir(path)

    return undo


def _remove_delta(clone: asyncio.Future[Any], delta: Path) -> Callable[[], Awaitable[None]]:
    async def undo() -> None:
        # The clone's thread cannot be stopped: wait until it is over, so a delta it
        # links into place after a cancellation is still removed.
        with contextlib.suppress(Exception):
            await clone
        remove_file(delta)

    return undo


async def _undo_all(undo: Sequence[Undo]) -> list[str]:
    """Every undo in reverse order, each whatever the others did; what failed, in words."""
    problems: list[str] = []
    for what, action in reversed(undo):
        try:
            await action()
        except Exception as exc:
            reason = exc.detail if isinstance(exc, MetadataError) else str(exc)
            problems.append(f"{what}: {reason}")
    return problems


async def finish(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end even if the caller is cancelled meanwhile; a cancellation
    that came is raised after it."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
