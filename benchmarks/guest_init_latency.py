"""How long metadata-init takes on a boot with the network up: start → `configured` recorded.

For each shell, a busybox guest rootfs (tests/support/rootfs.py) with metadata-init
installed runs against a real MetadataService on 127.0.0.1. Every run is a full first boot
(the guest is re-armed and its state file removed): fetch, validate, hostname, password,
SSH keys, report. Two clocks stop when the registry records `configured`: one started when
the script starts inside the chroot, one when the host spawns the chroot (namespace setup
included). See `timed_first_boot` in tests/guest_init/conftest.py.

    sudo .venv/bin/python benchmarks/guest_init_latency.py [--runs 20] [--shell busybox ...]

Needs root and busybox-static; dash, bash, chpasswd and curl for the other shells
(busybox: wget + /etc/shadow edit; dash: wget + chpasswd; bash: curl + chpasswd).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metadata_server.app import MetadataService
from tests.guest_init.conftest import (
    MAC,
    SHELLS,
    Guest,
    guest_url,
    install,
    loopback_guest,
    timed_first_boot,
)
from tests.support.rootfs import build_rootfs
from tests.support.service import make_settings


async def measure(shell: str, runs: int, workdir: Path) -> list[tuple[float, float]]:
    service = MetadataService(make_settings(workdir))
    await service.start()
    try:
        assert service.registry is not None
        await service.registry.put(MAC, loopback_guest())
        rootfs = build_rootfs(workdir / "rootfs", shell=shell, binaries=SHELLS[shell])
        install(rootfs)
        guest = Guest(rootfs)
        guest.set_identity()
        guest.configure(metadata_url=guest_url(service), timeout=5, retry_total=2)
        await timed_first_boot(service, guest)  # warm the page cache
        return [await timed_first_boot(service, guest) for _ in range(runs)]
    finally:
        await service.stop()


def describe(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"median {statistics.median(ms):5.1f}  min {ms[0]:5.1f}  p90 {p90:5.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description="metadata-init boot latency")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--shell", action="append", choices=list(SHELLS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="guest-init-latency-") as tmp:
        for shell in args.shell or list(SHELLS):
            samples = asyncio.run(measure(shell, args.runs, Path(tmp) / shell))
            print(
                f"{shell:8} from script start: {describe([s for s, _ in samples])} | "
                f"from spawn: {describe([t for _, t in samples])}  (n={args.runs})",
                flush=True,
            )


if __name__ == "__main__":
    main()
