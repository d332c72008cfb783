"""The comparison's real-Xen guests, as far as they can be checked without Xen: the xl
configuration each gets and the reading of `xl list`. The guests themselves boot in the
lab (tests/lab/test_compare.py)."""

from __future__ import annotations

from pathlib import Path

from metadata_server_testbed.compare.plan import GuestPlan
from metadata_server_testbed.compare.xen_guests import XenGuest, XenImage, parse_xl_list

XL_LIST = """\
Name                                        ID   Mem VCPUs	State	Time(s)
Domain-0                                     0  1536     1     r-----      61.3
msc1234abcd1g1                               3   256     1     -b----      12.7
"""


def test_each_guest_boots_its_own_delta_with_its_mac_on_the_runs_bridge(tmp_path: Path) -> None:
    image = XenImage(Path("/m/master.qcow2"), Path("/boot/vmlinux"), Path("/boot/initrd.img"))
    guest = XenGuest(GuestPlan(1), "msc1g1", tmp_path, "msc1br", image, "quiet")
    config = guest.xl_config()
    assert 'name = "msc1g1"' in config and 'type = "pv"' in config
    assert f'uuid = "{GuestPlan(1).uuid}"' in config
    assert 'kernel = "/boot/vmlinux"' in config and 'ramdisk = "/boot/initrd.img"' in config
    assert f"target={tmp_path / 'msc1g1.qcow2'}" in config and "backendtype=qdisk" in config
    assert f"vif = [ 'mac={GuestPlan(1).mac}, bridge=msc1br' ]" in config
    assert "systemd.show_status=error quiet" in config
    no_ramdisk = XenGuest(GuestPlan(2), "g2", tmp_path, "b", XenImage(Path("m"), Path("k")))
    assert "ramdisk" not in no_ramdisk.xl_config()


def test_xl_list_gives_each_domains_id_and_cpu_time() -> None:
    assert parse_xl_list(XL_LIST) == {"Domain-0": (0, 61.3), "msc1234abcd1g1": (3, 12.7)}
    assert parse_xl_list("") == {}


def test_missing_files_are_named() -> None:
    image = XenImage(Path("/nonexistent/m.qcow2"), Path("/nonexistent/k"))
    assert image.problems() == [
        "--xen-image /nonexistent/m.qcow2 does not exist",
        "--xen-kernel /nonexistent/k does not exist",
    ]
