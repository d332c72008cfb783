"""What dom0 writes from the lab's templates, checked on the host: the server's
configuration is one the real config loader accepts, and a guest's xl configuration
carries its MAC, bridge, delta and kernel command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.scenarios.common import Guest, server_config
from lab.scenarios.xenstore import PROBE_EXTRA
from metadata_server.config import build_settings


@pytest.mark.parametrize(
    ("auto", "after"),
    [pytest.param(False, 120.0, id="iso-auto-off"), pytest.param(True, 20.0, id="iso-auto-on")],
)
def test_server_config_is_accepted(tmp_path: Path, auto: bool, after: float) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(server_config(auto, after, 300))
    settings = build_settings(config_file=path, env={}, flags={})
    assert settings.bridge == "xenbr0"
    assert (settings.iso.auto is not None) is auto
    if settings.iso.auto is not None:
        assert settings.iso.auto.after == after


@pytest.mark.parametrize(
    ("bridge", "extra"),
    [
        pytest.param("xenbr0", "", id="network-guest"),
        pytest.param("xenbr1", PROBE_EXTRA, id="probe-guest"),
    ],
)
def test_xl_config(bridge: str, extra: str) -> None:
    guest = Guest(
        "lab-t1", "00:16:3e:1a:b9:01", "198.18.0.99", bridge=bridge, extra=extra, hash="!", key="k"
    )
    text = guest.xl_config("/boot/vmlinuz-6.1")
    assert f"vif = [ 'mac=00:16:3e:1a:b9:01, bridge={bridge}' ]" in text
    assert f"target={guest.disk}' ]" in text
    assert f'uuid = "{guest.uuid}"' in text
    assert 'kernel = "/boot/vmlinuz-6.1"' in text
    (extra_line,) = [line for line in text.splitlines() if line.startswith("extra = ")]
    # one xl string: its only unescaped quotes are the outer ones
    assert extra_line.replace('\\"', "").count('"') == 2
