"""The DNS core (settings, zone, answer, relay, cache) imports no I/O.

Walks each module's imports within the package, like tests/test_purity.py does for the
rest of the core. dnslib itself is allowed: it is the DNS library the design names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "metadata_server"
CORE = ["dns.settings", "dns.zone", "dns.answer", "dns.relay", "dns.cache", "dns"]
FORBIDDEN = {"aiohttp", "pyroute2", "asyncio", "os", "socket", "subprocess", "sqlite3", "time"}


def _imports(module: str) -> set[str]:
    path = PACKAGE / module.replace(".", "/")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _closure(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in _imports(todo.pop()):
            if name.startswith("metadata_server."):
                inner = name.removeprefix("metadata_server.")
                if inner not in seen:
                    seen.add(inner)
                    todo.append(inner)
            else:
                seen.add(name)
    return seen


@pytest.mark.parametrize("module", CORE)
def test_dns_core_imports_no_io(module: str) -> None:
    reached = {name.split(".")[0] for name in _closure(module)}
    assert not reached & FORBIDDEN, f"{module} reaches {sorted(reached & FORBIDDEN)}"
