"""Debian root trees for the lab: debootstrap, then apt inside a chroot with /proc, /sys
and /dev mounted for the duration and no daemon started (policy-rc.d), every mount
undone on the way out, failure or not."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from lab.builder.apt import SUITE, Mirrors
from lab.builder.commands import BuildError, Runner

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
POLICY_RC = "#!/bin/sh\n# the lab's image build: no daemon starts inside the chroot\nexit 101\n"


def debootstrap(
    runner: Runner,
    target: Path,
    mirrors: Mirrors,
    include: Sequence[str],
    debs: Path,
) -> None:
    """A minbase bookworm tree at `target`; downloaded .debs are kept in `debs`."""
    debs.mkdir(parents=True, exist_ok=True)
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--cache-dir={debs}",
        f"--include={','.join(include)}",
        SUITE,
        str(target),
        mirrors.debian,
    ]
    try:
        runner.run(f"debootstrap {target.name}", argv, heavy=True)
    except BuildError as error:
        log = target / "debootstrap/debootstrap.log"
        detail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise BuildError(f"{error}\n{detail}".rstrip()) from None


def _mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[None]:
    """/proc, /sys, /dev and /dev/pts inside `root` while the block runs."""
    done: list[Path] = []
    try:
        for fstype, source, sub in (
            ("proc", "proc", "proc"),
            ("sysfs", "sys", "sys"),
            (None, "/dev", "dev"),
            (None, "/dev/pts", "dev/pts"),
        ):
            point = root / sub
            point.mkdir(parents=True, exist_ok=True)
            argv = (
                ["mount", "--bind", source, str(point)]
                if fstype is None
                else ["mount", "-t", fstype, source, str(point)]
            )
            subprocess.run(argv, check=True)
            done.append(point)
        yield
    finally:
        for point in reversed(done):
            if _mounted(point):
                subprocess.run(["umount", "-l", str(point)], check=False)


class Chroot:
    """Commands inside one root tree."""

    def __init__(self, root: Path, runner: Runner, mirrors: Mirrors) -> None:
        self.root = root
        self.runner = runner
        self.mirrors = mirrors

    def run(
        self, what: str, *argv: str, heavy: bool = False, env: dict[str, str] | None = None
    ) -> str:
        return self.runner.run(
            what, ["chroot", str(self.root), *argv], heavy=heavy, env={**APT_ENV, **(env or {})}
        )

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    @contextlib.contextmanager
    def apt_session(self) -> Iterator[None]:
        """Mounts, the full sources (updates, security), no daemons, a resolv.conf for
        the downloads; all undone after, the downloaded .debs removed."""
        self.write("/etc/apt/sources.list", self.mirrors.sources_list())
        self.write("/usr/sbin/policy-rc.d", POLICY_RC, 0o755)
        resolv = self.root / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_bytes(Path("/etc/resolv.conf").read_bytes())
        try:
            with chroot_mounts(self.root):
                self.run("apt-get update (chroot)", "apt-get", "-q", "update")
                yield
                self.run("apt-get clean", "apt-get", "clean")
        finally:
            (self.root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
            resolv.unlink(missing_ok=True)

    def install(self, packages: Sequence[str], env: dict[str, str] | None = None) -> None:
        """Upgrade to the versions the key was made from, then install `packages`."""
        self.run("apt-get upgrade (chroot)", "apt-get", "-y", "-q", "dist-upgrade", heavy=True)
        self.run(
            f"apt-get install {' '.join(packages)}",
            "apt-get",
            "-y",
            "-q",
            "install",
            "--no-install-recommends",
            *packages,
            heavy=True,
            env=env,
        )
