"""The configuration ISO as bytes: which files each layout holds, read back by an
independent reader (`isoinfo` from genisoimage, through Rock Ridge, Joliet and plain
ISO 9660 names) and by `blkid`; the guest script's document with its nonce; the same
bytes for the same input whatever the clock or time zone; bad input refused."""

from __future__ import annotations

import hashlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pycdlib
import pytest

from metadata_server.cloud.nocloud import nocloud_files
from metadata_server.cloud.openstack import openstack_files
from metadata_server.cloud.options import CloudOptions
from metadata_server.documents import config_text
from metadata_server.errors import InvalidInput
from metadata_server.iso import image as isoimage
from metadata_server.iso.image import build_image, iso_name
from metadata_server.iso.layout import (
    LABELS,
    Layout,
    config_iso,
    init_document,
    iso_files,
    parse_layout,
)
from metadata_server.model import State
from tests.iso.isodata import NONCE, make_view
from tests.support.records import SAMPLE_HASH
from tests.support.requirements import need_tools

USER_DATA = "#!/bin/sh\necho from-user-data\n"
EXPECTED = {
    Layout.NOCLOUD: {
        "metadata-init.txt",
        "metadata-init.user-data",
        "meta-data",
        "user-data",
        "vendor-data",
        "network-config",
    },
    Layout.CONFIGDRIVE: {
        "metadata-init.txt",
        "metadata-init.user-data",
        "openstack/latest/meta_data.json",
        "openstack/latest/network_data.json",
        "openstack/latest/user_data",
        "openstack/latest/vendor_data.json",
        "openstack/latest/vendor_data2.json",
    },
}


def isoinfo(image: Path, *args: str) -> bytes:
    tools = need_tools("isoinfo")
    return subprocess.run(
        [tools["isoinfo"], "-i", str(image), *args], capture_output=True, check=True, timeout=20
    ).stdout


def listed(image: Path, extension: str) -> set[str]:
    """Files (not directories) of the image as `isoinfo -f` names them."""
    names = isoinfo(image, *([extension] if extension else []), "-f").decode().split()
    dirs = {name.rsplit("/", 1)[0] for name in names}
    return {name.lstrip("/") for name in names if name not in dirs}


def blkid(image: Path) -> dict[str, str]:
    tools = need_tools("blkid")
    out = subprocess.run(
        [tools["blkid"], "-p", "-o", "export", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.parametrize("layout", list(Layout), ids=[layout.value for layout in Layout])
def test_each_layout_holds_its_files_under_rock_ridge_and_joliet(
    layout: Layout, tmp_path: Path
) -> None:
    view = make_view(user_data=USER_DATA)
    files = iso_files(view, NONCE, layout, CloudOptions())
    assert set(files) == EXPECTED[layout]
    image = tmp_path / "config.iso"
    image.write_bytes(config_iso(view, NONCE, layout))

    assert listed(image, "-R") == EXPECTED[layout]  # what Linux reads by default
    assert listed(image, "-J") == EXPECTED[layout]  # what readers without Rock Ridge read
    plain = {iso_name(name.rsplit("/", 1)[-1], directory=False) for name in EXPECTED[layout]}
    assert {name.rsplit("/", 1)[-1] for name in listed(image, "")} == plain
    for name, content in files.items():
        assert isoinfo(image, "-R", "-x", f"/{name}") == content, name
        assert isoinfo(image, "-J", "-x", f"/{name}") == content, name

    found = blkid(image)
    assert found["TYPE"] == "iso9660"
    assert found["LABEL"] == LABELS[layout]
    # every timestamp is the moment the instance id was issued, in UTC
    assert found["UUID"] == "2023-11-14-22-13-20-00"


@pytest.mark.parametrize("layout", list(Layout), ids=[layout.value for layout in Layout])
def test_documents_are_the_http_views(layout: Layout) -> None:
    view = make_view(user_data=USER_DATA)
    files = iso_files(view, NONCE, layout, CloudOptions())
    if layout is Layout.NOCLOUD:
        for name, content in nocloud_files(view).items():
            assert files[name] == content
    else:
        for name, content in openstack_files(view, CloudOptions()).items():
            assert files[f"openstack/latest/{name}"] == content
    assert files["metadata-init.user-data"] == USER_DATA.encode()


def test_metadata_init_document_is_config_text_with_the_nonce_before_end() -> None:
    view = make_view()
    text = init_document(view, NONCE).decode()
    lines = text.splitlines()
    assert lines[0] == "format 1" and lines[-1] == "end" and lines[-2] == f"nonce {NONCE}"
    assert text == config_text(view)[: -len("end\n")] + f"nonce {NONCE}\nend\n"
    assert f"password_hash {SAMPLE_HASH}" in lines


def test_withheld_secrets_stay_off_the_iso() -> None:
    view = make_view(state=State.CONFIGURED, user_data=USER_DATA)
    files = iso_files(view, NONCE, Layout.NOCLOUD, CloudOptions())
    assert "metadata-init.user-data" not in files
    assert all(SAMPLE_HASH.encode() not in content for content in files.values())


def test_no_user_data_no_init_user_data() -> None:
    files = iso_files(make_view(), NONCE, Layout.NOCLOUD, CloudOptions())
    assert "metadata-init.user-data" not in files


def _digests_in_subprocess(zones: list[str], nonce: str) -> list[str]:
    """The image's digest built in another process, once in each time zone."""
    code = (
        "import hashlib, os, sys, time\n"
        "from metadata_server.iso.layout import config_iso\n"
        "from tests.iso.isodata import make_view\n"
        "for zone in sys.argv[2:]:\n"
        "    os.environ['TZ'] = zone\n"
        "    time.tzset()\n"
        "    data = config_iso(make_view(user_data='x'), sys.argv[1])\n"
        "    print(hashlib.sha256(data).hexdigest())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, nonce, *zones],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    ).stdout.split()


def test_same_input_same_bytes_in_any_time_zone() -> None:
    here = hashlib.sha256(config_iso(make_view(user_data="x"), NONCE)).hexdigest()
    time.sleep(1.1)  # a later second must not show up in the image
    assert hashlib.sha256(config_iso(make_view(user_data="x"), NONCE)).hexdigest() == here
    zones = ["Pacific/Kiritimati", "America/Adak", "UTC"]  # UTC+14, UTC-10, UTC
    assert _digests_in_subprocess(zones, NONCE) == [here] * 3
    other = hashlib.sha256(config_iso(make_view(user_data="x"), "f" * 32)).hexdigest()
    assert other != here  # the nonce is in it


def test_pycdlib_gets_its_clock_back() -> None:
    config_iso(make_view(), NONCE)
    assert all(module.time is time for module in isoimage._PYCDLIB_MODULES)
    assert pycdlib.pycdlib.time is time  # type: ignore[attr-defined]


def test_image_build_takes_about_a_millisecond() -> None:
    files = iso_files(make_view(user_data=USER_DATA), NONCE, Layout.NOCLOUD, CloudOptions())
    timings = []
    for _ in range(21):
        start = time.perf_counter()
        build_image(files, label="cidata", date=1_700_000_000)
        timings.append(time.perf_counter() - start)
    # ~1 ms here; the bound only catches a regression by an order of magnitude
    assert statistics.median(timings) < 0.02


@pytest.mark.parametrize(
    "nonce",
    ["short", NONCE.upper(), NONCE[:-1], NONCE + "0", NONCE[:-1] + "\n", NONCE[:-1] + "g"],
    ids=["short", "upper-case", "31-digits", "33-digits", "newline", "not-hex"],
)
def test_a_nonce_of_the_wrong_form_is_refused(nonce: str) -> None:
    with pytest.raises(InvalidInput, match="32 lowercase hex"):
        config_iso(make_view(), nonce)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("nocloud", True), ("configdrive", True), ("NoCloud", False), ("iso", False), (3, False)],
    ids=["nocloud", "configdrive", "case", "unknown", "number"],
)
def test_layout_names(value: object, ok: bool) -> None:
    if ok:
        assert parse_layout(value).value == value
    else:
        with pytest.raises(InvalidInput, match="layout must be one of nocloud, configdrive"):
            parse_layout(value)


@pytest.mark.parametrize(
    ("files", "label", "words"),
    [
        ({"a": b""}, "", "not a volume label"),
        ({"a": b""}, "x" * 33, "not a volume label"),
        ({"a": b""}, "bad label", "not a volume label"),
        ({"../a": b""}, "cidata", "not a relative path"),
        ({"/a": b""}, "cidata", "not a relative path"),
        ({"a b": b""}, "cidata", "not a relative path"),
        ({"x" * 65: b""}, "cidata", "not a relative path"),
        ({"a-b": b"", "a_b": b""}, "cidata", "same ISO 9660 name"),
    ],
    ids=[
        "empty-label",
        "long-label",
        "space-label",
        "dotdot",
        "absolute",
        "space",
        "long-name",
        "clash",
    ],
)
def test_build_image_refuses_bad_names(files: dict[str, bytes], label: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        build_image(files, label=label, date=1_700_000_000)
