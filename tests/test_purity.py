"""The pure core never imports I/O: it takes values and returns values.

Walks the imports of each core module (transitively, within the package) and fails on
any module that reaches the network, the disk, the clock or a subprocess.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {  # where each of the repository's packages lives
    "metadata_server": ROOT / "metadata_server",
    "metadata_server_testbed": ROOT / "testbed" / "metadata_server_testbed",
}
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
    "xen.errors",
]
FORBIDDEN = {"aiohttp", "pyroute2", "asyncio", "os", "socket", "subprocess", "sqlite3", "time"}


def _imports(module: str) -> set[str]:
    """What `module` (a dotted name in one of PACKAGES) imports."""
    top, _, inner = module.partition(".")
    path = PACKAGES[top] / inner.replace(".", "/")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _closure(module: str, package: str = "metadata_server") -> set[str]:
    """Everything `module` of `package` reaches, following the repository's own modules."""
    seen: set[str] = set()
    todo = [f"{package}.{module}"]
    while todo:
        current = todo.pop()
        for name in _imports(current):
            if name.split(".")[0] in PACKAGES and name.count(".") >= 1:
                if name not in seen:
                    seen.add(name)
                    todo.append(name)
            else:
                seen.add(name)
    return seen


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io(module: str) -> None:
    reached = {name.split(".")[0] for name in _closure(module)}
    assert not reached & FORBIDDEN, f"{module} reaches {sorted(reached & FORBIDDEN)}"
