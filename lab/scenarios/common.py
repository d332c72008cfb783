"""What every scenario does in dom0: print markers, run commands with timeouts, wait for
the toolstack, set up xenbr0, run the real metadata server, talk to its admin API, and
create, watch and inspect PV guests. Runs inside the lab's dom0 only (as root, with the
real xl and xenstore), never on the host."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import string
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lab import markers

ROOT = Path("/opt/metadata-server")
VENV = ROOT / "venv"
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"  # lab/templates, here or in dom0
MASTER = ROOT / "images/master.qcow2"
WORK = Path("/var/lib/lab")
LOGS = Path("/var/log/lab")
CONSOLE_LOGS = Path("/var/log/xen/console")
ADMIN = "http://127.0.0.1:8775"
ADMIN_TOKEN = "lab-admin-token-" + "0" * 24  # dom0 is the lab's own, rebuilt every boot
BRIDGE = "xenbr0"
ISOLATED_BRIDGE = "xenbr1"  # no address, no DHCP: its guests cannot reach the server
GATEWAY = "198.18.0.1"
METADATA = "169.254.169.254"


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def say(line: str) -> None:
    print(line, flush=True)


def step(text: str) -> None:
    say(markers.step_line(uptime(), text))


def figure(name: str, seconds: float) -> None:
    say(markers.figure_line(name, seconds))


class Checks:
    """A scenario's assertions, each printed as a CHECK marker whose id starts with the
    scenario's name; counts the failures."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.failures = 0

    def report(self, check_id: str, ok: bool, detail: str = "") -> bool:
        status = markers.OK if ok else markers.FAIL
        say(markers.check_line(f"{self.scenario}.{check_id}", status, detail))
        self.failures += 0 if ok else 1
        return ok

    def skip(self, check_id: str, detail: str) -> None:
        say(markers.check_line(f"{self.scenario}.{check_id}", markers.SKIP, detail))


class CommandFailed(Exception):
    pass


def run(
    argv: list[str],
    *,
    timeout: float = 60,
    check: bool = True,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{' '.join(argv)} timed out after {timeout:g} s") from None
    if check and done.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)} failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-800:]}"
        )
    return done


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 3.0) -> Any:
    """The first truthy value of `predicate()`, polled; TimeoutError naming `what`. Every
    poll costs dom0 CPU that the guests need (under TCG, a process spawn is tens of ms):
    seconds apart by default."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def render(template: str, **values: object) -> str:
    text = (TEMPLATES / template).read_text()
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})


# --- the toolstack and the bridge ---------------------------------------------------------


def wait_for_toolstack() -> None:
    wait_for("xl list", lambda: run(["xl", "list"], check=False).returncode == 0, 120)


def weigh_dom0() -> None:
    """Dom0 weighs as much as four guests in Xen's scheduler (the default weighs every
    domain alike), as a busy host's Dom0 should: under TCG a few booting guests, or one
    guest in a loop, otherwise starve dom0 until libxl's hotplug scripts time out."""
    for scheduler in ("sched-credit2", "sched-credit"):
        if run(["xl", scheduler, "-d", "Domain-0", "-w", "1024"], check=False).returncode == 0:
            return


def setup_bridges() -> None:
    """xenbr0 with the guests' gateway address (the server adds 169.254.169.254 itself),
    and xenbr1 with nothing on it."""
    for bridge in (BRIDGE, ISOLATED_BRIDGE):
        run(["ip", "link", "add", bridge, "type", "bridge"])
        run(["ip", "link", "set", bridge, "up"])
    run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE])


# --- the metadata server ------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_config(iso_auto: bool, iso_auto_after: float, iso_timeout: float) -> str:
    return render(
        "server.toml",
        iso_auto=str(iso_auto).lower(),
        iso_auto_after=iso_auto_after,
        iso_timeout=iso_timeout,
    )


def start_server(
    *, iso_auto: bool = False, iso_auto_after: float = 120, iso_timeout: float = 300
) -> Server:
    config = Path("/etc/metadata-server/lab.toml")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(server_config(iso_auto, iso_auto_after, iso_timeout))
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(VENV / "bin/metadata-server"), "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={**os.environ, "METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN},
        )
    server = Server(proc, log)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise CommandFailed(f"the server exited with {proc.returncode}: {tail(log, 15)}")
        with contextlib.suppress(OSError):
            return admin("GET", "/healthz")[0] == 200
        return False

    wait_for("the metadata server's /healthz", healthy, 60, 0.5)
    return server


class Dom0:
    """What the scenarios of one boot share: the toolstack (waited for once), the
    bridges, the running server (restarted only when a scenario wants other settings),
    and every guest made, for the diagnostics."""

    def __init__(self) -> None:
        self.guests: list[Guest] = []
        self._toolstack = False
        self._ready = False
        self._server: Server | None = None
        self._server_options: dict[str, object] = {}

    def toolstack(self) -> None:
        """The toolstack up, dom0 weighed and the backends loaded; no bridge yet."""
        if not self._toolstack:
            step("waiting for the toolstack")
            wait_for_toolstack()
            figure("dom0.toolstack_ready_uptime", uptime())
            weigh_dom0()
            run(["modprobe", "-a", "bridge", "xen-netback", "xen-blkback", "nbd"])
            self._toolstack = True

    def ready(self) -> None:
        if not self._ready:
            self.toolstack()
            setup_bridges()
            self._ready = True

    def server(self, **options: Any) -> Server:
        self.ready()
        if self._server is not None and options != self._server_options:
            self._server.stop()
            self._server = None
        if self._server is None:
            started = time.monotonic()
            self._server = start_server(**options)
            self._server_options = options
            figure("dom0.server_start", time.monotonic() - started)
        return self._server

    def guest(self, *args: Any, **kwargs: Any) -> Guest:
        guest = Guest(*args, **kwargs)
        self.guests.append(guest)
        return guest

    def diagnostics(self) -> None:
        diagnostics(self.guests)

    def destroy_running(self) -> None:
        """Destroy every guest still running: after each scenario, so that a scenario cut
        short leaves nothing for the next one's server to act on (an automatic ISO
        fallback would provision a guest it left behind)."""
        for guest in self.guests:
            if guest.domid() is not None:
                run(["xl", "destroy", guest.name], check=False)

    def close(self) -> None:
        self.destroy_running()
        if self._server is not None:
            self._server.stop()


def admin(method: str, path: str, body: object = None, timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (ADMIN is a fixed http:// URL)
        ADMIN + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw)
        except ValueError:
            return error.code, raw.decode(errors="replace")


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- guests -------------------------------------------------------------------------------


def ssh_public_key(comment: str) -> str:
    """A well-formed ed25519 public key (random: the lab only checks it lands)."""
    import base64

    def field_(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    blob = field_(b"ssh-ed25519") + field_(secrets.token_bytes(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def password_hash() -> str:
    from passlib.hash import sha512_crypt

    return str(sha512_crypt.using(rounds=5000).hash(secrets.token_hex(12)))


@dataclass
class Guest:
    name: str
    mac: str
    address: str
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory: int = 256
    hash: str = field(default_factory=password_hash)
    key: str = ""
    extra: str = ""
    bridge: str = BRIDGE
    started: float = 0.0  # time.time() of the last `xl create`

    def __post_init__(self) -> None:
        self.key = self.key or ssh_public_key(f"lab@{self.name}")

    @property
    def disk(self) -> Path:
        return WORK / f"{self.name}.qcow2"

    @property
    def config(self) -> Path:
        return WORK / f"{self.name}.cfg"

    @property
    def console_log(self) -> Path:
        return CONSOLE_LOGS / f"guest-{self.name}.log"  # as report_phases reads it

    def record(self) -> dict[str, object]:
        return {
            "hostname": self.name,
            "ipv4": {"address": self.address, "prefix": 24, "gateway": GATEWAY},
            "password_hash": self.hash,
            "ssh_keys": [self.key],
        }

    def register(self) -> None:
        status, body = admin("PUT", f"/api/v1/vms/{self.mac}", self.record())
        if status not in (200, 201):
            raise CommandFailed(f"registering {self.name}: {status} {body}")

    def vm(self) -> dict[str, Any]:
        status, body = admin("GET", f"/api/v1/vms/{self.mac}")
        if status != 200:
            raise CommandFailed(f"GET {self.name}: {status} {body}")
        return dict(body)

    def make_disk(self) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        self.disk.unlink(missing_ok=True)
        run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                str(MASTER),
                "-F",
                "qcow2",
                str(self.disk),
            ]
        )
        self.config.write_text(self.xl_config("/boot/vmlinux-domu"))

    def xl_config(self, kernel: str) -> str:
        return render(
            "domu.cfg",
            name=self.name,
            uuid=self.uuid,
            memory=self.memory,
            kernel=kernel,
            ramdisk="/boot/initrd-domu.img",
            extra=self.extra,
            disk=self.disk,
            mac=self.mac,
            bridge=self.bridge,
        )

    def create(self, paused: bool = False) -> subprocess.Popen[str]:
        """Start `xl create` (it takes seconds under TCG: it unpacks the kernel)."""
        self.started = time.time()
        return subprocess.Popen(
            ["xl", "create", *(["-p"] if paused else []), str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def domid(self) -> int | None:
        done = run(["xl", "domid", self.name], check=False)
        return int(done.stdout) if done.returncode == 0 and done.stdout.strip().isdigit() else None

    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""


_KERNEL_TIME_RE = re.compile(r"\[\s*(\d+\.\d+)\]")
# (phase, the console line that ends it): the guest kernel's own clock stamps each
PHASE_ENDS = (
    ("kernel", "Run /init as init process"),
    ("initramfs", "systemd["),  # the real root's systemd, after switch_root
)


def boot_phases(console: str, seconds: float) -> dict[str, float]:
    """Where a guest's `seconds` from `xl create` to `configured` went, by its kernel's
    own timestamps on its console: `kernel` to the initramfs's /init, `initramfs` to the
    real root's systemd, and `userspace` the rest (with the domain's build in dom0)."""
    phases: dict[str, float] = {}
    last = 0.0
    for phase, marker in PHASE_ENDS:
        line = next((text for text in console.splitlines() if marker in text), None)
        found = _KERNEL_TIME_RE.search(line) if line else None
        if found is None:
            return phases
        at = float(found[1])
        phases[phase] = max(0.0, at - last)
        last = at
    phases["userspace"] = max(0.0, seconds - last)
    return phases


def report_phases(scenario: str, name: str, seconds: float) -> None:
    """The boot phases of guest `name` as figures, from its console log."""
    log = CONSOLE_LOGS / f"guest-{name}.log"
    phases = boot_phases(log.read_text(errors="replace") if log.exists() else "", seconds)
    for phase, took in phases.items():
        figure(f"{scenario}.phase.{phase}.{name}", took)
    if not phases:
        step(f"{name}: no kernel timestamps on its console for its boot phases")


def shut_down(guests: list[Guest], timeout: float = 300) -> None:
    """A clean `xl shutdown` of each guest, waited for. Needed before dom0 reads a
    guest's delta: qemu's qcow2 driver in the qdisk backend keeps new cluster mappings
    in memory until the guest flushes or qemu exits cleanly, and `xl destroy` kills it
    (a delta read 15 s after the guest wrote showed none of it)."""
    for guest in guests:
        run(["xl", "shutdown", guest.name], check=False)
    wait_for("the guests powered off", lambda: all(g.domid() is None for g in guests), timeout)


def destroy(guests: list[Guest]) -> None:
    """`xl destroy`: for guests whose disks nobody reads afterwards."""
    for guest in guests:
        run(["xl", "destroy", guest.name], check=False)
    wait_for("the guests gone", lambda: all(g.domid() is None for g in guests), 60)


def create_all(guests: list[Guest], paused: bool = False) -> None:
    """`xl create` of each guest, one after the other: under TCG, libxl's wait for a
    qdisk device model times out when several start at once ("Post DM startup configs
    failed, rc=-9"). The guests still boot side by side."""
    for guest in guests:
        create_one(guest, paused)


# libxl's own timeouts on a starved dom0: where `xl create` is worth once more
LATE_IN_DOM0 = {
    "Post DM startup configs failed": "the qdisk device model was late",
    "because of timeout": "a hotplug script (vif-bridge) was late",
}


def create_one(guest: Guest, paused: bool = False) -> None:
    """`xl create`, once more after libxl timed out waiting for dom0's side of the
    guest: under TCG a busy dom0 now and then starts the qdisk device model late (rc=-9)
    or runs `vif-bridge online` past libxl's hotplug timeout, and libxl destroys the
    half-made domain itself."""
    for attempt in (1, 2):
        proc = guest.create(paused)
        output, _ = proc.communicate(timeout=300)
        if proc.returncode == 0:
            return
        late = next((why for words, why in LATE_IN_DOM0.items() if words in output), None)
        if attempt == 1 and late:
            step(f"xl create {guest.name}: {late}; once more")
            wait_for(f"{guest.name} gone", lambda: guest.domid() is None, 60, 2.0)
            continue
        raise CommandFailed(f"xl create {guest.name} failed: {output.strip()[-800:]}")


@contextlib.contextmanager
def guest_disk(path: Path, device: str = "/dev/nbd0") -> Iterator[Callable[[str], str | None]]:
    """A powered-off guest's disk, attached read-only through qemu-nbd: yields a reader
    of files by path (debugfs, so nothing is mounted), None for a missing file."""
    run(["qemu-nbd", "--read-only", "--format=qcow2", f"--connect={device}", str(path)])
    try:
        name = Path(device).name
        wait_for(
            f"{device} has a size",
            lambda: Path(f"/sys/block/{name}/size").read_text().strip() != "0",
            20,
            0.2,
        )

        def read(file: str) -> str | None:
            done = run(["debugfs", "-R", f"cat {file}", device], check=False)
            missing = "File not found" in done.stderr
            return None if missing or done.returncode != 0 else done.stdout

        yield read
    finally:
        run(["qemu-nbd", "--disconnect", device], check=False)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def dump(title: str, text: str) -> None:
    """Diagnostics on the console, each line marked so they are easy to find."""
    say(f"lab| ===== {title}")
    for line in text.splitlines():
        say(f"lab| {line}")


def network_diagnostics(guest: Guest) -> None:
    """Where a guest's frames may stop on their way to dom0: its vif's place on the
    bridge and its counters, its vif backend in xenstore, the bridge guard's view (bound
    ports, drops) and the guest's own words about its network."""
    domid = guest.domid()
    port = f"vif{domid}.0"
    dump("bridge link", run(["bridge", "link", "show"], check=False).stdout)
    dump(f"ip -s link {port}", run(["ip", "-s", "-d", "link", "show", port], check=False).stdout)
    backend = f"/local/domain/0/backend/vif/{domid}/0"
    dump(backend, run(["xenstore-ls", "-f", backend], check=False).stdout)
    status, body = admin("GET", "/api/v1/guard")
    dump("GET /api/v1/guard", f"{status} {json.dumps(body, indent=1)}")
    dump("nft list ruleset (counters)", run(["nft", "list", "ruleset"], check=False).stdout)
    said = [
        line
        for line in guest.console().splitlines()
        if any(w in line for w in ("eth0", "netfront", "vif", "networkd", "DHCP", "enX"))
    ]
    dump(f"{guest.name}'s console about its network", "\n".join(said[-60:]))


def diagnostics(guests: list[Guest]) -> None:
    dump("xl list", run(["xl", "list"], check=False).stdout)
    dump("server log", tail(LOGS / "server.log", 60))
    for guest in guests:
        dump(f"console of {guest.name}", tail(guest.console_log, 60))
    dump("xl dmesg", "\n".join(run(["xl", "dmesg"], check=False).stdout.splitlines()[-20:]))
    for log in sorted(Path("/var/log/xen").glob("*.log")):
        dump(str(log), tail(log, 15))
