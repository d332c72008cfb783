"""The project's working tree as the lab sees it: the files that make it (tracked and
untracked but not ignored, by git when the tree is a git work tree; else every file but
the usual build and cache directories), for the project layer's key."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.builder.cache import digest

SKIP_DIRS = {
    ".git",
    ".venv",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "build",
    "dist",
    "var",
}


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def tree_files(root: Path) -> list[Path]:
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode().split("\0") if n]
        return sorted(p for p in (root / n for n in names) if p.is_file())
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(
            part in SKIP_DIRS or part.endswith(".egg-info") for part in p.relative_to(root).parts
        )
    )


def tree_digest(root: Path) -> str:
    """A key over every file of the tree: its path, whether it is executable, its bytes."""
    parts: list[bytes | str] = []
    for path in tree_files(root):
        parts += [
            str(path.relative_to(root)),
            "x" if path.stat().st_mode & 0o100 else "-",
            path.read_bytes(),
        ]
    return digest(parts)
