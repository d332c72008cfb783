"""The lab's cache: one directory per built layer, named by the key of its inputs.

A layer is built into a temporary directory and renamed into place only when complete,
so a build that fails or is killed never leaves a layer that a later run would boot. One
build at a time per cache (a lock file); older layers of the same kind are removed once
a new one is in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/metadata-server-lab")
CACHE_ENV = "METADATA_SERVER_LAB_CACHE"
COMPLETE = "complete"  # written last inside a layer: its presence means the layer is whole
KEEP = 2  # layers of one kind kept (the newest ones)


def cache_dir(given: Path | None = None) -> Path:
    """The cache directory: given, else $METADATA_SERVER_LAB_CACHE, else the default.
    QEMU's multiboot loader separates modules by ',' and arguments by ' ': neither may
    appear in the path."""
    path = (given or Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)).absolute()
    if any(c in str(path) for c in ", \n"):
        raise ValueError(f"the lab cache path {path} may not contain a comma or white space")
    return path


def digest(parts: Iterable[bytes | str]) -> str:
    """A short hex key over `parts`, in order."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:20]


def files_digest(root: Path, paths: Iterable[Path]) -> str:
    """A key over the names (relative to `root`) and contents of `paths`."""
    parts: list[bytes | str] = []
    for path in sorted(paths):
        parts += [str(path.relative_to(root)), path.read_bytes()]
    return digest(parts)


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the cache while the block runs (waits for another build)."""
        with (self.root / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def layer(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}"

    def complete(self, kind: str, key: str) -> Path | None:
        """The finished layer for this key, or None."""
        path = self.layer(kind, key)
        return path if (path / COMPLETE).exists() else None

    def scratch(self, kind: str, key: str) -> Path:
        """A fresh temporary directory to build the layer in (any older one removed)."""
        path = self.root / f"tmp-{kind}-{key}"
        remove_tree(path)
        path.mkdir()
        return path

    def publish(self, kind: str, key: str, scratch: Path) -> Path:
        """Mark `scratch` complete and rename it into place; drop the oldest layers."""
        (scratch / COMPLETE).write_text(key + "\n")
        final = self.layer(kind, key)
        remove_tree(final)
        scratch.rename(final)
        layers = sorted(self.root.glob(f"{kind}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in layers[KEEP:]:
            remove_tree(old)
        return final


def prune_logs(directory: Path, keep: int = 40) -> None:
    """Keep the newest `keep` files of a log directory (serial logs, build logs)."""
    if not directory.is_dir():
        return
    files = sorted((p for p in directory.iterdir() if p.is_file()), key=lambda p: p.stat().st_mtime)
    for old in files[:-keep]:
        old.unlink(missing_ok=True)


def remove_tree(path: Path) -> None:
    """Remove a directory tree, refusing to follow into anything still mounted below it."""
    if not path.exists():
        return
    with open("/proc/self/mounts") as mounts:
        inside = [
            line.split()[1]
            for line in mounts
            if line.split()[1] == str(path) or line.split()[1].startswith(f"{path}/")
        ]
    if inside:
        raise RuntimeError(f"{path} still has mounts below it: {inside}")
    shutil.rmtree(path)
