"""Finding the server: kernel command line, then the config file, then DHCP option 224.

The DHCP case runs the shipped dhcp-hook as udhcpc would (option 224 hex-encoded in
$opt224), then boots; a URL of the wrong precedence points at a closed port, so a boot
that used it would fail.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from metadata_server.app import MetadataService
from metadata_server.model import State
from tests.guest_init.conftest import GUEST_INIT, MAC, Guest, guest_url, loopback_guest
from tests.support.requirements import need_tools

HOOK_SHELLS = {"dash": ["dash"], "bash": ["bash"], "busybox-ash": ["busybox", "ash"]}


@pytest.mark.parametrize("source", ["cmdline", "conf", "dhcp"])
async def test_url_precedence(
    source: str, service: MetadataService, make_guest: Callable[..., Guest], closed_port: int
) -> None:
    assert service.registry is not None
    await service.registry.put(MAC, loopback_guest())
    real, wrong = guest_url(service), f"http://127.0.0.1:{closed_port}"
    guest = make_guest("busybox")
    env = {"METADATA_INIT_CMDLINE": "/etc/test-cmdline"}
    settings = {"timeout": 2, "retry_total": 0}
    if source == "cmdline":
        guest.rootfs.write("/etc/test-cmdline", f"ro quiet metadata_url={real} console=hvc0\n")
        guest.configure(metadata_url=wrong, **settings)
    else:
        guest.rootfs.write("/etc/test-cmdline", "ro quiet console=hvc0\n")
        if source == "conf":
            guest.configure(metadata_url=real, **settings)
            guest.rootfs.write("/run/metadata-init/dhcp-url", wrong + "\n")
        else:
            guest.configure(**settings)
            hook = await guest.rootfs.run_async(
                ["/usr/lib/metadata-init/dhcp-hook"], env={"opt224": real.encode().hex()}
            )
            assert hook.returncode == 0, hook.stderr
            assert guest.rootfs.read("/run/metadata-init/dhcp-url") == real + "\n"
    boot = await guest.boot(env=env)
    assert boot.returncode == 0, guest.log()
    assert f"read the configuration from {real}" in guest.log()
    assert (await service.registry.get(MAC)).state is State.CONFIGURED


HOOK_CASES = {
    "udhcpc-hex": ({"opt224": b"http://198.18.0.1:8080/".hex()}, "http://198.18.0.1:8080/"),
    "udhcpc-hex-upper": (
        {"opt224": b"http://169.254.169.254".hex().upper()},
        "http://169.254.169.254",
    ),
    "dhclient-text": (
        {"new_metadata_url": "https://meta.example.test/"},
        "https://meta.example.test/",
    ),
    "no-option": ({}, None),
    "odd-hex": ({"opt224": "687"}, None),
    "not-hex": ({"opt224": "zz$(touch /tmp/pwned)"}, None),
    "shell-in-url": ({"new_metadata_url": "http://x/$(touch /tmp/pwned)"}, None),
    "semicolon-in-hex": ({"opt224": b"http://x/;reboot".hex()}, None),
    "not-http": ({"new_metadata_url": "file:///etc/shadow"}, None),
    "space": ({"new_metadata_url": "http://a b"}, None),
}


@pytest.mark.parametrize("shell", list(HOOK_SHELLS))
@pytest.mark.parametrize("case", list(HOOK_CASES))
def test_dhcp_hook(case: str, shell: str, tmp_path: Path) -> None:
    argv = HOOK_SHELLS[shell]
    need_tools(argv[0])
    env_extra, expected = HOOK_CASES[case]
    out = tmp_path / "run/dhcp-url"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "METADATA_INIT_DHCP_URL": str(out),
        **env_extra,
    }
    result = subprocess.run(
        [*argv, str(GUEST_INIT / "dhcp-hook")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if expected is None:
        assert not out.exists()
    else:
        assert out.read_text() == expected + "\n"
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        ("timeout=5s", "bad timeout or retry_total; using 5 and 60"),
        ("timeout=0", "bad timeout or retry_total; using 5 and 60"),
        ("retry_total=-1", "bad timeout or retry_total; using 5 and 60"),
        ("metadata_url=http://x/$(touch /tmp/pwned)", "not a plain http(s) URL"),
        ("metadata_url=file:///etc/shadow", "not a plain http(s) URL"),
    ],
    ids=["timeout-unit", "timeout-zero", "retry-negative", "url-shell", "url-scheme"],
)
async def test_a_bad_setting_is_named_and_replaced_by_its_default(
    line: str, logged: str, service: MetadataService, make_guest: Callable[..., Guest]
) -> None:
    """The config file is read, never sourced: a bad value is logged and the default used."""
    assert service.registry is not None
    await service.registry.put(MAC, loopback_guest())
    guest = make_guest("busybox")
    url = "" if line.startswith("metadata_url=") else f"metadata_url={guest_url(service)}\n"
    guest.rootfs.write("/etc/metadata-init.conf", f"{url}retry_total=0\n{line}\n")
    boot = await guest.boot(timeout=120)
    assert logged in guest.log()
    assert not guest.rootfs.file("/tmp/pwned").exists()
    if url:  # the rest of the file still counts
        assert boot.returncode == 0, guest.log()
        assert (await service.registry.get(MAC)).state is State.CONFIGURED
