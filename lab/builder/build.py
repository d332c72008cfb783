"""Build the lab, or find it in the cache: resolve the package versions, compute each
layer's key, build what is missing (into a temporary name, renamed when complete), and
say what the runner boots."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.builder import base, project
from lab.builder.apt import Mirrors, PrivateApt
from lab.builder.cache import Cache, digest, files_digest, prune_logs, remove_tree
from lab.builder.commands import BuildError, Runner, need_program
from lab.builder.tree import project_root, tree_digest

HOST_PROGRAMS = {
    "debootstrap": "debootstrap",
    "qemu-img": "qemu-utils",
    "mkfs.ext4": "e2fsprogs",
    "chroot": "coreutils",
    "mount": "mount",
}


@dataclass(frozen=True)
class Lab:
    """What one boot of the lab needs: the files QEMU is given."""

    base_key: str
    project_key: str
    xen: Path
    vmlinuz: Path
    initrd: Path
    dom0_image: Path
    project_image: Path


@dataclass(frozen=True)
class BuildReport:
    lab: Lab
    base_seconds: float | None  # None: found in the cache
    project_seconds: float | None
    total_seconds: float


def base_key(mirrors: Mirrors, recipe_digest: str, versions: dict[str, str]) -> str:
    """The base layer's key: where packages come from, the recipe's files, and every
    package version apt resolved."""
    return digest(
        [mirrors.sources_list(), recipe_digest, *(f"{n}={v}" for n, v in sorted(versions.items()))]
    )


def project_key(base: str, tree_digest_: str) -> str:
    """The project layer's key: the base it is built on and the project's tree."""
    return digest([base, tree_digest_])


def _timed(step: Callable[[], None], scratch: Path) -> float:
    """Run one layer's build; on failure its scratch directory goes too."""
    start = time.monotonic()
    try:
        step()
    except BaseException:
        with contextlib.suppress(OSError, RuntimeError):
            remove_tree(scratch)
        raise
    return time.monotonic() - start


def build(
    *,
    cache_root: Path,
    mirrors: Mirrors | None = None,
    tree: Path | None = None,
    rebuild: bool = False,
    say: Callable[[str], None] = print,
) -> BuildReport:
    """The lab for `tree` (default: this working tree), built as needed."""
    start = time.monotonic()
    if os.geteuid() != 0:
        raise BuildError("building the lab needs root (debootstrap, chroot, mounts)")
    for program, package in HOST_PROGRAMS.items():
        need_program(program, package)
    mirrors = mirrors or Mirrors()
    tree = (tree or project_root()).resolve()
    cache = Cache(cache_root)
    with cache.locked():
        prune_logs(cache_root / "logs")
        runner = Runner(cache_root / "logs" / f"build-{time.strftime('%Y%m%d-%H%M%S')}.log")
        apt = PrivateApt(cache_root / "apt", mirrors, runner)
        apt.update()
        versions = apt.resolve(apt.required() + base.all_packages())
        recipe = files_digest(base.HERE.parent, base.recipe_files())
        key = base_key(mirrors, recipe, versions)
        base_seconds = project_seconds = None
        base_layer = None if rebuild else cache.complete("base", key)
        if base_layer is None:
            say(f"lab: building the base layer {key} (debootstrap, apt; a few minutes)")
            scratch = cache.scratch("base", key)
            base_seconds = _timed(
                lambda: base.build_base(runner, mirrors, scratch, cache_root / "debs", versions),
                scratch,
            )
            base_layer = cache.publish("base", key, scratch)
            say(f"lab: base layer built in {base_seconds:.0f} s")
        pkey = project_key(key, tree_digest(tree))
        project_layer = None if rebuild else cache.complete("project", pkey)
        if project_layer is None:
            say(f"lab: building the project layer {pkey} from {tree}")
            scratch = cache.scratch("project", pkey)
            project_seconds = _timed(
                lambda: project.build_project(
                    runner, tree, base_layer, scratch, cache_root / "wheels", pkey
                ),
                scratch,
            )
            project_layer = cache.publish("project", pkey, scratch)
            say(f"lab: project layer built in {project_seconds:.0f} s")
    lab = Lab(
        base_key=key,
        project_key=pkey,
        xen=base_layer / "xen",
        vmlinuz=base_layer / "vmlinuz",
        initrd=base_layer / "initrd-dom0.img",
        dom0_image=base_layer / "dom0.img",
        project_image=project_layer / "project.img",
    )
    return BuildReport(lab, base_seconds, project_seconds, time.monotonic() - start)
