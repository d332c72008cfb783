"""cloud-init 22.4 (the Debian package, run by the system Python) reads the ISO as a guest's
cloud-init would: it finds the device by label and type (blkid), and its NoCloud and
ConfigDrive readers read the files from a read-only mount of it.

This machine's kernel may have no iso9660 driver: then the mount is made by fuseiso
(FUSE), a stand-in for the kernel's driver (tests/support/isomount.py); on a kernel with
iso9660, the kernel mounts it.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from metadata_server.iso.layout import Layout, config_iso
from tests.iso.isodata import INSTANCE_ID, NONCE, make_view
from tests.support.isomount import mounted_iso, need_iso_reader
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY, mac_of
from tests.support.requirements import need_tools, root_fixture

SYSTEM_PYTHON = "/usr/bin/python3"
USER_DATA = "#!/bin/sh\necho from-user-data\n"

NOCLOUD_READER = """
import json, sys
from cloudinit import util
mnt = sys.argv[1]
# what DataSourceNoCloud reads from a cidata device it mounted (its _pp2d_callback)
seeded = util.pathprefix2dict(
    mnt, required=["user-data", "meta-data"], optional=["vendor-data", "network-config"]
)
md, ud, vd = util.read_seeded("file://" + mnt + "/", timeout=5, retries=0)
print(json.dumps({
    "md": md, "ud": ud.decode(), "vd": vd.decode(),
    "seeded_md": util.load_yaml(seeded["meta-data"]),
    "network": util.load_yaml(seeded["network-config"]),
}))
"""

CONFIG_DRIVE_READER = """
import json, sys
from cloudinit.sources.helpers import openstack
result = openstack.ConfigDriveReader(sys.argv[1]).read_v2()
result["userdata"] = result["userdata"].decode()
print(json.dumps(result, default=str))
"""

DEVICE_FINDER = """
import json, sys
from cloudinit import util
from cloudinit.sources import DataSourceConfigDrive
print(json.dumps({
    "iso9660": util.find_devs_with("TYPE=iso9660"),
    "cidata": util.find_devs_with("LABEL=cidata"),
    "config-2": util.find_devs_with("LABEL=config-2"),
    "config-drive-candidates": DataSourceConfigDrive.find_candidate_devs(probe_optical=False),
}))
"""


def system_python(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    need_tools(SYSTEM_PYTHON)
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import cloudinit.version as v; print(v.version_string())"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if not probe.stdout.startswith("22."):
        need_tools("cloud-init (Debian package, 22.x)")
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


@pytest.fixture
def image(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    layout: Layout = request.param
    path = tmp_path / f"{layout.value}.iso"
    path.write_bytes(config_iso(make_view(user_data=USER_DATA), NONCE, layout))
    path.chmod(0o600)
    return path


@pytest.fixture
@root_fixture
def mounted(image: Path, tmp_path: Path) -> Iterator[Path]:
    need_iso_reader()
    with mounted_iso(image, tmp_path / "mnt") as mountpoint:
        yield mountpoint


def _assert_read_only(mountpoint: Path) -> None:
    with pytest.raises(OSError) as caught:  # noqa: PT011 (which errno, next line)
        (mountpoint / "written").write_text("x")
    assert caught.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


@pytest.mark.parametrize("image", [Layout.NOCLOUD], ids=["nocloud"], indirect=True)
def test_nocloud_reader(mounted: Path) -> None:
    _assert_read_only(mounted)
    result = system_python(NOCLOUD_READER, str(mounted))
    for md in (result["md"], result["seeded_md"]):
        assert isinstance(md, dict)
        assert md["instance-id"] == INSTANCE_ID
        assert md["local-hostname"] == "guest1.guests.internal"
        assert md["public-keys"] == [SAMPLE_KEY]
    user_data = result["ud"]
    assert isinstance(user_data, str)
    assert SAMPLE_HASH in user_data and "from-user-data" in user_data
    assert result["vd"] == ""
    network = result["network"]
    assert isinstance(network, dict)
    primary = network["ethernets"]["primary"]
    assert primary["match"]["macaddress"] == mac_of(1)
    assert primary["addresses"] == ["198.18.0.11/24"]


@pytest.mark.parametrize("image", [Layout.CONFIGDRIVE], ids=["configdrive"], indirect=True)
def test_config_drive_reader(mounted: Path) -> None:
    _assert_read_only(mounted)
    result = system_python(CONFIG_DRIVE_READER, str(mounted))
    metadata = result["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["uuid"] == INSTANCE_ID and metadata["instance-id"] == INSTANCE_ID
    assert metadata["hostname"] == "guest1.guests.internal"
    assert list(metadata["public_keys"].values()) == [SAMPLE_KEY]
    networkdata = result["networkdata"]
    assert isinstance(networkdata, dict)
    assert networkdata["links"][0]["ethernet_mac_address"] == mac_of(1)
    assert networkdata["networks"][0]["ip_address"] == "198.18.0.11"
    user_data = result["userdata"]
    assert isinstance(user_data, str)
    assert "from-user-data" in user_data and SAMPLE_HASH in user_data
    assert result["vendordata"] == {}


@pytest.mark.parametrize(
    ("image", "wanted"),
    [(Layout.NOCLOUD, "cidata"), (Layout.CONFIGDRIVE, "config-2")],
    ids=["nocloud", "configdrive"],
    indirect=["image"],
)
@pytest.mark.root
def test_cloud_init_finds_the_device_by_label(image: Path, wanted: str, tmp_path: Path) -> None:
    need_iso_reader()
    tools = need_tools("losetup")
    device = subprocess.run(
        [tools["losetup"], "--find", "--show", "--read-only", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout.strip()
    try:
        # a blkid cache of its own: the host's may remember what a loop device held before
        found = system_python(DEVICE_FINDER, env={"BLKID_FILE": str(tmp_path / "blkid.tab")})
    finally:
        subprocess.run([tools["losetup"], "--detach", device], capture_output=True, timeout=20)
    iso9660 = found["iso9660"]
    assert isinstance(iso9660, list) and device in iso9660
    by_label = found[wanted]
    assert isinstance(by_label, list) and device in by_label
    other = found["config-2" if wanted == "cidata" else "cidata"]
    assert isinstance(other, list) and device not in other
    if wanted == "config-2":
        candidates = found["config-drive-candidates"]
        assert isinstance(candidates, list) and candidates[0] == device  # by label: first
