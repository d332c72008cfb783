"""`vm destroy NAME`: undo a launch. `xl destroy` if the domain runs, then remove the xl
config, the delta, the launch record and directory, and the registration (or, with
`keep_record`, keep it and mark its launch destroyed).

A guest without a launch record here was not launched by this Dom0 (someone made its
domain and disk by hand, or another Dom0 of the cluster launched it): refused, unless
`force`, which then destroys the domain NAME if it runs and removes the registration of
the guest named NAME, and whatever a cut-short launch left in its directory.

If `xl destroy` fails, nothing else is touched: the domain still runs on its delta.
Otherwise every other step runs even if one fails, and the failures are reported
together (`CleanupIncomplete`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from metadata_server.errors import MetadataError, NotFound
from metadata_server.launch.errors import CleanupIncomplete, NotLaunched
from metadata_server.launch.record import (
    LaunchRecord,
    paths_for,
    read_record,
    remove_dir,
    remove_file,
)
from metadata_server.launch.request import DestroyRequest
from metadata_server.launch.xl import Xl
from metadata_server.model import VM, parse_hostname
from metadata_server.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DestroyResult:
    name: str
    mac: str | None  # the registration's, when there was one
    domain_destroyed: bool
    removed: tuple[str, ...]  # files and directories removed
    record: str  # "deleted", "kept", or "none"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "mac": self.mac,
            "domain_destroyed": self.domain_destroyed,
            "removed": list(self.removed),
            "record": self.record,
        }


async def destroy(
    registry: Registry,
    xl: Xl,
    launched: Path,
    name: str,
    request: DestroyRequest,
    *,
    clock: Callable[[], float] = time.time,
) -> DestroyResult:
    name = parse_hostname(name, "name")
    paths = paths_for(launched, name)
    try:
        record = read_record(paths)
    except ValueError as exc:
        if not request.force:
            raise NotLaunched(f"{exc}; --force destroys {name} anyway", field="name") from None
        record = None
    if record is None and not request.force:
        raise NotLaunched(
            f"{name} was not launched by this Dom0 (no launch record {paths.record}): "
            "--force destroys its domain and registration anyway",
            field="name",
        )
    vm = await _find(registry, name, record)
    xl.check_installed()
    domain_destroyed = await xl.destroy_if_running(name)  # raises: nothing else touched
    problems: list[str] = []
    removed: list[str] = []
    files = [paths.config, paths.delta, paths.record]
    if record is not None:
        files = [Path(record.xl_config), Path(record.delta), paths.record]
    for path in dict.fromkeys(files):
        try:
            if path.exists():
                remove_file(path)
                removed.append(str(path))
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
    try:
        if paths.directory.exists():
            remove_dir(paths.directory)
            removed.append(str(paths.directory))
    except OSError as exc:
        problems.append(f"{paths.directory}: {exc.strerror or exc}")
    outcome = "none"
    if vm is not None:
        try:
            if request.keep_record:
                if vm.launch is not None:
                    await registry.set_launch(vm.mac, replace(vm.launch, destroyed_at=clock()))
                outcome = "kept"
            else:
                with contextlib.suppress(NotFound):
                    await registry.delete(vm.mac)
                outcome = "deleted"
        except MetadataError as exc:
            problems.append(f"registration {vm.mac}: {exc.detail}")
    log.info("destroyed %s (domain %s, record %s)", name, domain_destroyed, outcome)
    if problems:
        raise CleanupIncomplete(f"{name} was destroyed only in part", problems)
    return DestroyResult(
        name=name,
        mac=vm.mac if vm is not None else None,
        domain_destroyed=domain_destroyed,
        removed=tuple(removed),
        record=outcome,
    )


async def _find(registry: Registry, name: str, record: LaunchRecord | None) -> VM | None:
    """The registration: the launch record's MAC, else the guest named `name`."""
    if record is not None:
        vm = await registry.store.get(record.mac)
        if vm is not None:
            return vm
    for vm in await registry.list():
        if vm.spec.hostname == name:
            return vm
    return None
