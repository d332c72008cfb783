"""The project layer: this project, from the working tree, on a disk of its own.

`project.img` (ext4, label lab-project, mounted at /opt/metadata-server in dom0) holds
- `venv/`: a virtualenv made by dom0's own Python (in a chroot on an overlay of the base
  dom0 tree, so the tree stays as it was) with the project, its test bench (for
  `metadata-server compare --hypervisor xen`) and their dependencies
  installed from wheels built on the host (QEMU has no network: everything is in the
  image before it boots);
- `src/lab/`: the scenarios dom0 runs;
- `images/master.qcow2`: the master guest image, the base guest tree with the project's
  guest boot script installed the way a user installs it into a master
  (`guest_init/install.sh --root`);
- `images/prepared.qcow2`: the base guest tree made a master by `metadata-server image
  prepare` (its record beside it), for the `vm launch` scenario.
It takes seconds to rebuild, so it is rebuilt on every change of the tree.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from lab.builder.base import PROJECT_MOUNT
from lab.builder.chroot import chroot_mounts
from lab.builder.commands import BuildError, Runner
from lab.builder.images import ext4_image, overlay, qcow2_from_raw

CHROOT_WHEELS = "/tmp/lab-wheels"  # noqa: S108 (a path inside the dom0 image being built)

PROJECT_IMAGE_SIZE = "2G"
MASTER_RAW_SIZE = "2G"
LAB_FILES = ("__init__.py", "markers.py", "scenarios", "templates")


def build_wheels(runner: Runner, tree: Path, wheelhouse: Path, into: Path) -> Path:
    """The project's wheel (into `into`) and its dependencies' (into the shared
    `wheelhouse`, reused by later builds), with the host's pip. Returns the project wheel."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    into.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    runner.run(
        "pip wheel (the project)",
        [*pip, "wheel", "-q", "--no-deps", "-w", str(into), str(tree)],
        heavy=True,
    )
    runner.run(
        "pip wheel (the test bench, for the comparison on real Xen)",
        [*pip, "wheel", "-q", "--no-deps", "-w", str(into), str(tree / "testbed")],
        heavy=True,
    )
    wheels = sorted(into.glob("metadata_server-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"pip built {wheels} from {tree}, not one metadata_server wheel")
    deps = [
        *pip,
        "wheel",
        "-q",
        "--find-links",
        str(wheelhouse),
        "-w",
        str(wheelhouse),
        str(wheels[0]),
    ]
    # The wheelhouse holds dependencies only: an earlier build's project wheel there has
    # the same name and version, and pip would take it (and its older requirements).
    _drop_project_wheels(wheelhouse)
    try:  # the wheelhouse of an earlier build usually has them all
        runner.run(
            "pip wheel (the dependencies, from the wheelhouse)", [*deps, "--no-index"], heavy=True
        )
    except BuildError:
        runner.run("pip wheel (the dependencies, from PyPI or pip's cache)", deps, heavy=True)
    finally:
        _drop_project_wheels(wheelhouse)
    return wheels[0]


def _drop_project_wheels(wheelhouse: Path) -> None:
    for stale in wheelhouse.glob("metadata_server-*.whl"):
        stale.unlink()


def _copy_lab(tree: Path, target: Path) -> None:
    for name in LAB_FILES:
        source = tree / "lab" / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def build_master(runner: Runner, tree: Path, base: Path, scratch: Path, out: Path) -> None:
    """master.qcow2: the base guest tree plus the guest boot script, installed by the
    project's own installer into the image's root."""
    with overlay(base / "guest-root", scratch / "guest-overlay") as (merged, _upper):
        runner.run(
            "guest_init/install.sh --root (into the master)",
            ["sh", str(tree / "guest_init/install.sh"), "--root", str(merged)],
        )
        raw = scratch / "master.raw"
        ext4_image(runner, merged, raw, "lab-master", MASTER_RAW_SIZE)
    out.parent.mkdir(parents=True, exist_ok=True)
    qcow2_from_raw(runner, raw, out)
    raw.unlink()


def build_prepared_master(runner: Runner, tree: Path, base: Path, scratch: Path, out: Path) -> None:
    """prepared.qcow2 (with its record next to it): the base guest tree made a master by
    `metadata-server image prepare`, as an admin makes one, for `vm launch`."""
    raw = scratch / "guest.raw"
    ext4_image(runner, base / "guest-root", raw, "lab-prepared", MASTER_RAW_SIZE)
    out.parent.mkdir(parents=True, exist_ok=True)
    runner.run(
        "metadata-server image prepare (the launch master)",
        [sys.executable, "-m", "metadata_server", "image", "prepare", str(raw), "--out", str(out)],
        heavy=True,
        cwd=tree,
        env={"PYTHONPATH": str(tree)},
    )
    raw.unlink()


def build_venv(
    runner: Runner, base: Path, scratch: Path, wheel: Path, wheelhouse: Path, staging: Path
) -> None:
    """The virtualenv, made inside dom0's tree (an overlay of it) at its final path."""
    with overlay(base / "dom0-root", scratch / "dom0-overlay") as (merged, upper):
        wheels = merged / CHROOT_WHEELS.lstrip("/")
        shutil.copytree(wheelhouse, wheels)
        shutil.copy2(wheel, wheels / wheel.name)
        (bench,) = wheel.parent.glob("metadata_server_testbed-*.whl")
        shutil.copy2(bench, wheels / bench.name)
        venv = f"{PROJECT_MOUNT}/venv"
        with chroot_mounts(merged):
            chroot = ["chroot", str(merged)]
            runner.run(
                "python3 -m venv (dom0)", [*chroot, "python3", "-m", "venv", venv], heavy=True
            )
            runner.run(
                "pip install (dom0, from the wheels only)",
                [
                    *chroot,
                    f"{venv}/bin/pip",
                    "install",
                    "-q",
                    "--no-index",
                    "--disable-pip-version-check",
                    "--no-cache-dir",
                    "--find-links",
                    CHROOT_WHEELS,
                    f"{CHROOT_WHEELS}/{wheel.name}",
                    f"{CHROOT_WHEELS}/{bench.name}",
                ],
                heavy=True,
            )
        shutil.move(str(upper / PROJECT_MOUNT.lstrip("/") / "venv"), staging / "venv")


def build_project(
    runner: Runner, tree: Path, base: Path, scratch: Path, wheelhouse: Path, key: str
) -> None:
    staging = scratch / "disk"
    staging.mkdir()
    wheel = build_wheels(runner, tree, wheelhouse, scratch / "wheel")
    build_venv(runner, base, scratch, wheel, wheelhouse, staging)
    _copy_lab(tree, staging / "src/lab")
    build_master(runner, tree, base, scratch, staging / "images/master.qcow2")
    build_prepared_master(runner, tree, base, scratch, staging / "images/prepared.qcow2")
    (staging / "key").write_text(key + "\n")
    ext4_image(runner, staging, scratch / "project.img", "lab-project", PROJECT_IMAGE_SIZE)
    for leftover in ("disk", "wheel", "guest-overlay", "dom0-overlay"):
        shutil.rmtree(scratch / leftover, ignore_errors=True)
