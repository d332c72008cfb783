"""A guest's DHCP client for tests: busybox udhcpc with a script (udhcpc has no default
one: always pass -s) that applies the lease as a guest would and records what it got."""

from __future__ import annotations

from pathlib import Path

from tests.support.netns import Netns

UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc -s script: apply the lease like a guest, record what the server sent.
case "$1" in
bound | renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	if [ -n "$staticroutes" ]; then
		set -- $staticroutes
		while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
	elif [ -n "$router" ]; then
		ip route replace default via "$router" dev "$interface"
	fi
	{
		echo "ip=$ip"; echo "mask=$mask"; echo "router=$router"; echo "hostname=$hostname"
		echo "domain=$domain"; echo "dns=$dns"; echo "staticroutes=$staticroutes"
		echo "opt224=$opt224"; echo "serverid=$serverid"
	} > "$RECORD"
	;;
esac
"""


def install_script(directory: Path) -> Path:
    script = directory / "udhcpc.script"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    return script


def get_lease(ns: Netns, script: Path, record: Path, *, timeout: float = 30) -> dict[str, str]:
    """One DHCP exchange on eth0; the options the client applied, as a dict."""
    record.unlink(missing_ok=True)
    ns.run(
        "env", f"RECORD={record}", "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n",
        "-t", "6", "-T", "1", "-s", str(script),
        "-O", "staticroutes", "-O", "224", "-O", "hostname", "-O", "domain",
        timeout=timeout,
    )  # fmt: skip
    values = {}
    for line in record.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


def option_text(hex_value: str) -> str:
    """udhcpc reports options it does not know (like 224) as hex."""
    return bytes.fromhex(hex_value).decode()
