"""The lab's cache keys: a package version, the recipe or the mirror changes the base
layer's key (so an image from an older builder is rebuilt, never booted); the project's
tree changes only the project layer's."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.builder.apt import Mirrors
from lab.builder.build import base_key, project_key
from lab.builder.cache import Cache, cache_dir
from lab.builder.tree import tree_digest

VERSIONS = {"xen-utils-4.17": "4.17.5-1", "linux-image-amd64": "6.1.1-1"}
BASE = base_key(Mirrors(), "recipe-1", VERSIONS)


@pytest.mark.parametrize(
    ("mirrors", "recipe", "versions"),
    [
        pytest.param(
            Mirrors(),
            "recipe-1",
            {**VERSIONS, "xen-utils-4.17": "4.17.5-2"},
            id="a-package-version",
        ),
        pytest.param(
            Mirrors(), "recipe-1", {**VERSIONS, "dnsmasq-base": "2.90-4"}, id="one-more-package"
        ),
        pytest.param(Mirrors(), "recipe-2", VERSIONS, id="the-builder-recipe"),
        pytest.param(
            Mirrors(debian="http://mirror.invalid/debian"), "recipe-1", VERSIONS, id="the-mirror"
        ),
    ],
)
def test_base_key_follows_its_inputs(
    mirrors: Mirrors, recipe: str, versions: dict[str, str]
) -> None:
    assert base_key(mirrors, recipe, versions) != BASE


def test_base_key_is_stable() -> None:
    assert base_key(Mirrors(), "recipe-1", dict(reversed(VERSIONS.items()))) == BASE


def test_project_key_follows_the_tree_and_the_base(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    first = tree_digest(tmp_path)
    (tmp_path / "a.py").write_text("x = 2\n")
    second = tree_digest(tmp_path)
    (tmp_path / "a.py").chmod(0o755)
    third = tree_digest(tmp_path)
    assert len({first, second, third}) == 3
    assert project_key(BASE, first) != project_key(BASE, second)
    assert project_key(BASE, first) != project_key("another-base", first)


def test_only_a_complete_layer_counts(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    scratch = cache.scratch("project", "k1")
    (scratch / "project.img").write_bytes(b"half")
    assert cache.complete("project", "k1") is None  # built, never published: not used
    published = cache.publish("project", "k1", scratch)
    assert cache.complete("project", "k1") == published
    assert not scratch.exists()


@pytest.mark.parametrize("path", ["/var/cache/lab one", "/var/cache/lab,1"], ids=["space", "comma"])
def test_cache_path_that_qemu_would_misread(path: str) -> None:
    with pytest.raises(ValueError, match="comma or white space"):
        cache_dir(Path(path))


def test_the_domu_kernel_is_unpacked_from_an_xz_bzimage() -> None:
    import lzma

    from lab.builder.base import unpack_kernel

    elf = b"\x7fELF" + bytes(range(256)) * 64
    fake_bzimage = (
        b"MZ setup code" + lzma.compress(b"not the kernel") + b"pad" + lzma.compress(elf) + b"tail"
    )
    assert unpack_kernel(fake_bzimage) == elf


def test_old_logs_are_pruned(tmp_path: Path) -> None:
    import os

    from lab.builder.cache import prune_logs

    for i in range(5):
        (tmp_path / f"serial-{i}.log").write_text("x")
        os.utime(tmp_path / f"serial-{i}.log", (1000 + i, 1000 + i))
    prune_logs(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serial-3.log", "serial-4.log"]
