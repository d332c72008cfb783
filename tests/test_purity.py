"""The pure core never imports I/O: it takes values and returns values.

Walks the imports of each core module (transitively, within the package) and fails on
any module that reaches the network, the disk, the clock or a subprocess.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "metadata_server"
CORE = [
    "model",
    "errors",
    "passwords",
    "documents",
    "tokens",
    "ratelimit",
    "cloud.options",
    "cloud.tree",
    "cloud.ec2",
    "cloud.openstack",
    "cloud.nocloud",
    "cloud.userdata",
    "dhcp.render",
    "dns",
    "dns.settings",
    "dns.zone",
    "dns.answer",
    "dns.relay",
    "dns.cache",
    "fallback.xs_wire",
    "fallback.xs_tree",
]
FORBIDDEN = {"aiohttp", "pyroute2", "asyncio", "os", "socket", "subprocess", "sqlite3", "time"}


def _imports(module: str) -> set[str]:
    path = PACKAGE / module.replace(".", "/")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _closure(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        for name in _imports(current):
            if name.startswith("metadata_server."):
                inner = name.removeprefix("metadata_server.")
                if inner not in seen:
                    seen.add(inner)
                    todo.append(inner)
            else:
                seen.add(name)
    return seen


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io(module: str) -> None:
    reached = {name.split(".")[0] for name in _closure(module)}
    assert not reached & FORBIDDEN, f"{module} reaches {sorted(reached & FORBIDDEN)}"
