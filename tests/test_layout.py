"""The house's structure, kept true: the product package holds the product (no test
bench in it, in its imports or in its wheel, one top-level package with the guest script
and the DHCP templates inside), and the README's Development map names every part."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ROOT / "metadata_server"
README = (ROOT / "README.md").read_text()


def product_modules() -> list[Path]:
    return sorted(PRODUCT.rglob("*.py"))


def test_no_product_module_imports_the_test_bench() -> None:
    offenders = []
    for path in product_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if "testbed" in n]
    assert offenders == []


def test_importing_every_product_module_loads_no_test_bench() -> None:
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in product_modules()
        if path.name != "__main__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('metadata_server_testbed')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("metadata_server-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_is_one_package_with_the_guest_script_and_templates_inside(
    wheel: zipfile.ZipFile,
) -> None:
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"metadata_server"}
    for needed in (
        "metadata_server/guest_init/metadata-init",
        "metadata_server/guest_init/install.sh",
        "metadata_server/dhcp_templates/dnsmasq.conf.j2",
        "metadata_server/dhcp_templates/kea-dhcp4.conf.j2",
    ):
        assert needed in names
    bench = [
        n
        for n in names
        if any(w in n for w in ("testbed", "compare", "xenstored", "xl_standin", "xs_"))
    ]
    assert bench == []


def test_the_wheel_holds_every_product_module(wheel: zipfile.ZipFile) -> None:
    """A subpackage left out of pyproject's list installs without complaint and fails at
    the first import (metadata_server.launch did, seen in the Xen lab's dom0)."""
    names = set(wheel.namelist())
    missing = [
        str(path.relative_to(ROOT))
        for path in product_modules()
        if f"metadata_server/{path.relative_to(PRODUCT).as_posix()}" not in names
    ]
    assert missing == []


def test_the_development_map_names_every_part() -> None:
    development = README[README.index("## Development") :]
    parts = sorted(
        {p.relative_to(PRODUCT).parts[0] for p in PRODUCT.rglob("*.py") if p.parent != PRODUCT}
    )
    missing = [part for part in parts if f"{part}/" not in development]
    assert missing == []
    for top in ("testbed/", "guest_init/", "dhcp_templates/", "lab/", "benchmarks/", "tests/"):
        assert top in development, top


def test_reading_the_settings_loads_no_provisioning_code() -> None:
    code = (
        "import sys, metadata_server.config\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('asyncio', 'aiohttp', 'pyroute2', 'jinja2', 'pycdlib', 'asyncpg') or m in ("
        "'metadata_server.app', 'metadata_server.netlink', 'metadata_server.iso.provision', "
        "'metadata_server.iso.auto', 'metadata_server.xen.host', 'metadata_server.dhcp.service', "
        "'metadata_server.dhcp.render', 'metadata_server.guard.service')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
