"""The lab builder on this machine: a second build finds everything cached; a package
the mirror lacks or a mirror that cannot be reached is a clear error naming it; a build
that fails publishes nothing, so nothing half-built is ever booted."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from lab.builder.apt import Mirrors, PrivateApt
from lab.builder.build import BuildReport, build, project_key
from lab.builder.cache import cache_dir
from lab.builder.commands import BuildError, Runner
from lab.builder.tree import project_root, tree_digest, tree_files
from tests.lab.conftest import LAB_TIMEOUT, need_lab_tools

pytestmark = [pytest.mark.xen_lab, pytest.mark.timeout(LAB_TIMEOUT)]


def test_second_build_is_cached(lab_build: BuildReport) -> None:
    start = time.monotonic()
    again = build(cache_root=cache_dir(), say=lambda _line: None)
    assert (again.base_seconds, again.project_seconds) == (None, None)
    assert again.lab == lab_build.lab
    assert time.monotonic() - start < 60


def test_a_missing_package_is_named(lab_build: BuildReport, tmp_path: Path) -> None:
    apt = PrivateApt(cache_dir() / "apt", Mirrors(), Runner(tmp_path / "log"))
    with pytest.raises(
        BuildError, match="Debian package metadata-server-lab-no-such-package is not on the mirror"
    ):
        apt.resolve(["systemd-sysv", "metadata-server-lab-no-such-package"])


@pytest.mark.root
def test_an_unreachable_mirror_is_named(tmp_path: Path) -> None:
    need_lab_tools()
    mirrors = Mirrors("http://127.0.0.1:9/debian", "http://127.0.0.1:9/debian-security")
    with pytest.raises(
        BuildError, match=r"the Debian mirror cannot be reached \(http://127.0.0.1:9/debian"
    ):
        PrivateApt(tmp_path / "apt", mirrors, Runner(tmp_path / "log")).update()


def test_a_failed_project_build_publishes_nothing(lab_build: BuildReport, tmp_path: Path) -> None:
    root = project_root()
    tree = tmp_path / "tree"
    for path in tree_files(root):
        target = tree / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (tree / "pyproject.toml").write_text("[project\nname = broken\n")
    key = project_key(lab_build.lab.base_key, tree_digest(tree))
    with pytest.raises(BuildError, match="pip wheel"):
        build(cache_root=cache_dir(), tree=tree, say=lambda _line: None)
    assert not (cache_dir() / f"project-{key}").exists()
    assert not (cache_dir() / f"tmp-project-{key}").exists()
    # the good layer is still the one a build finds
    assert build(cache_root=cache_dir(), say=lambda _line: None).lab == lab_build.lab
