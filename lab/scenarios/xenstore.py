"""Scenario "xenstore" (issue 16, scenario 4): xenstore permissions as the real xenstored
enforces them, checked by two real PV guests.

The same table as the stand-in's own test (tests/testbed/test_xenstored.py,
test_permissions, where domain 5 is A and domain 6 is B; a host test keeps the two
tables equal), plus the signal key exactly as the product prepares it
(`XenHost.prepare_signal`, run here against the real xenstored): guest A may write its
done key but not read it or change its permissions; guest B may not touch it.

Each guest runs its part of the table as its init (`init=/bin/sh -- -c ...` on its
kernel command line; the master's own kernel, root and xenstore-utils): a one-line
shell that reads the commands dom0 put in the guest's own xenstore directory (one node
each: xenstored refuses a value over 2048 bytes) and runs them in order; each
command's outcome is written back as `data/lab-probe/<id>` = allowed|denied. Nothing
is added to the master image.
"""

from __future__ import annotations

from functools import partial

from lab.scenarios.common import (
    ISOLATED_BRIDGE,
    VENV,
    Checks,
    Dom0,
    Guest,
    create_all,
    run,
    step,
    wait_for,
)

QUOTA = 2048  # the longest value oxenstored (Debian's) takes from any domain, dom0 too
# (who, argv with {A} {B} for the two domids, allowed): the stand-in test's table, with
# its domain 5 as A, 6 as B, and its Dom0 as "0" (run by dom0 here, not by a guest).
PERMISSIONS: list[tuple[str, str, list[str], bool]] = [
    ("own-data", "A", ["xenstore-write", "/local/domain/{A}/data/mine", "x"], True),
    ("own-data-relative", "A", ["xenstore-write", "data/relative", "x"], True),
    ("other-domains-data", "A", ["xenstore-write", "/local/domain/{B}/data/x", "x"], False),
    ("own-dir-is-read-only", "A", ["xenstore-write", "/local/domain/{A}/not-granted", "x"], False),
    ("granted-write", "A", ["xenstore-write", "/granted/child", "x"], True),
    ("not-granted", "B", ["xenstore-write", "/granted/child", "x"], False),
    ("write-grant-is-not-read", "A", ["xenstore-read", "/granted"], False),
    ("other-domains-secret", "A", ["xenstore-read", "/local/domain/{B}/data/secret"], False),
    ("own-secret", "B", ["xenstore-read", "data/secret"], True),
    ("own-name", "A", ["xenstore-read", "/local/domain/{A}/name"], True),
    ("rm-read-only", "A", ["xenstore-rm", "/local/domain/{A}/domid"], False),
    ("chmod-not-owner", "A", ["xenstore-chmod", "/granted", "n0", "b{A}"], False),
    ("give-away", "B", ["xenstore-chmod", "data/secret", "n{A}"], False),
    ("owner-chmod", "B", ["xenstore-chmod", "data/secret", "n{B}", "r{A}"], True),
    ("dom0-reads-all", "0", ["xenstore-read", "/local/domain/{B}/data/secret"], True),
    ("value-at-quota", "0", ["xenstore-write", "/local/domain/{B}/data/q", "x" * QUOTA], True),
    (
        "value-over-quota",
        "0",
        ["xenstore-write", "/local/domain/{B}/data/q", "y" * (QUOTA + 1)],
        False,
    ),
]
# The signal key as XenHost.prepare_signal leaves it for guest A (the stand-in's
# test_prepared_key_lets_only_that_guest_write).
SIGNAL = "/local/domain/{A}/data/metadata-init"
SIGNAL_CHECKS: list[tuple[str, str, list[str], bool]] = [
    ("signal.owner-writes-done", "A", ["xenstore-write", "data/metadata-init/done", "x"], True),
    ("signal.other-writes-done", "B", ["xenstore-write", SIGNAL + "/done", "x"], False),
    ("signal.other-writes-key", "B", ["xenstore-write", SIGNAL, "x"], False),
    ("signal.owner-cannot-read", "A", ["xenstore-read", "data/metadata-init"], False),
    ("signal.owner-cannot-chmod", "A", ["xenstore-chmod", "data/metadata-init", "n{A}"], False),
]
PROBE = "data/lab-probe"
# The guests' init: a shell that runs the commands dom0 left in its xenstore directory
# (after "--" the kernel hands the words to init), then sleeps until destroyed. No
# systemd boot: a full one costs minutes under TCG and adds nothing to these checks.
# xl's double-quoted string turns \" into ".
PROBE_EXTRA = (
    f'init=/bin/sh -- -c \\"xenstore-list {PROBE}/cmd | xargs -I@ xenstore-read -R {PROBE}/cmd/@'
    f' | sh; xenstore-write {PROBE}/finished yes; exec sleep infinity\\"'
)


def leave_commands(domid: int, lines: list[str]) -> None:
    """Leave `lines` (each one shell line, ending in a newline) in the probe directory of
    paused domain `domid`, owned by it, for its init to run in order."""
    base = f"/local/domain/{domid}/{PROBE}"
    for index, line in enumerate(lines):
        # zero-padded in the order made: xenstore-list gives them back in that order
        node = f"{base}/cmd/{index:03d}"
        run(["xenstore-write", "-R", node, line])
        run(["xenstore-chmod", node, f"n{domid}"])
    for node in (base, f"{base}/cmd"):
        run(["xenstore-chmod", node, f"n{domid}"])


def probe_commands(
    rows: list[tuple[str, str, list[str], bool]], who: str, ids: dict[str, int]
) -> list[str]:
    """The shell lines guest `who` runs, in the table's order (each under 2048 bytes)."""
    lines = []
    for check_id, runner, argv, _allowed in rows:
        if runner != who:
            continue
        words = " ".join(f"'{w.format(A=ids['A'], B=ids['B'])}'" for w in argv)
        node = f"{PROBE}/{result_node(check_id)}"
        lines.append(
            f"{words} >/dev/null 2>&1 && xenstore-write {node} allowed"
            f" || xenstore-write {node} denied"
        )
    return [line + "\n" for line in lines]


def probe_finished(domid: int) -> bool:
    done = run(["xenstore-read", f"/local/domain/{domid}/{PROBE}/finished"], check=False)
    return done.stdout.strip() == "yes"


def result_node(check_id: str) -> str:
    """A node name for a check id: xenstore paths allow only [A-Za-z0-9-/_@], no dot."""
    return check_id.replace(".", "-")


def prepare_signal(domid: int) -> None:
    """The product's own code, against the real xenstored."""
    code = (
        "import asyncio\nfrom metadata_server.xen.host import XenHost\n"
        f"asyncio.run(XenHost().prepare_signal({domid}))\n"
    )
    run([str(VENV / "bin/python"), "-c", code])


def run_scenario(dom0: Dom0) -> bool:
    checks = Checks("xenstore")
    dom0.ready()
    a = dom0.guest(
        "lab-xs-a", "00:16:3e:1a:b2:01", "198.18.0.31", extra=PROBE_EXTRA, bridge=ISOLATED_BRIDGE
    )
    b = dom0.guest(
        "lab-xs-b", "00:16:3e:1a:b2:02", "198.18.0.32", extra=PROBE_EXTRA, bridge=ISOLATED_BRIDGE
    )
    for guest in (a, b):
        guest.make_disk()
    step("creating two paused guests")
    create_all([a, b], paused=True)
    ids = {"A": _domid(a), "B": _domid(b)}
    # the stand-in test's fixture: /granted (Dom0's, A may write), B's secret
    run(["xenstore-write", "/granted", ""])
    run(["xenstore-chmod", "/granted", "n0", f"w{ids['A']}"])
    run(["xenstore-write", f"/local/domain/{ids['B']}/data/secret", "six"])
    prepare_signal(ids["A"])
    listed = run(["xenstore-ls", "-p", f"/local/domain/{ids['A']}/data"]).stdout
    line = next((x for x in listed.splitlines() if x.startswith("metadata-init ")), "")
    perms = line.rpartition("(")[2].strip()
    checks.report(
        "signal.perms", perms == f"n0,w{ids['A']})", f"xenstore-ls -p: {listed.strip()!r}"
    )
    rows = PERMISSIONS + SIGNAL_CHECKS
    for who in ("A", "B"):
        leave_commands(ids[who], probe_commands(rows, who, ids))
    # A's rows first, then B's: some rows change what later ones see (B's owner-chmod
    # lets A read B's secret), and the stand-in's test runs each row on a fresh store
    for who, guest in (("A", a), ("B", b)):
        step(f"{guest.name} runs its probe")
        run(["xl", "unpause", guest.name])
        wait_for(f"{guest.name}'s probe", partial(probe_finished, ids[who]), 300, 2.0)
    for check_id, who, argv, allowed in rows:
        if who == "0":
            done = run([w.format(**{k: str(v) for k, v in ids.items()}) for w in argv], check=False)
            real = "allowed" if done.returncode == 0 else "denied"
        else:
            node = f"/local/domain/{ids[who]}/{PROBE}/{result_node(check_id)}"
            real = run(["xenstore-read", node], check=False).stdout.strip() or "missing"
        expected = "allowed" if allowed else "denied"
        checks.report(check_id, real == expected, f"real xenstored: {real}; stand-in: {expected}")
    for guest in (a, b):
        run(["xl", "destroy", guest.name], check=False)
    run(["xenstore-rm", "/granted"], check=False)
    if checks.failures:
        dom0.diagnostics()
    return checks.failures == 0


def _domid(guest: Guest) -> int:
    domid = guest.domid()
    if domid is None:
        raise RuntimeError(f"{guest.name} has no domain")
    return domid
