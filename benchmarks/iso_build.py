"""Time to build a guest's configuration ISO in memory with pycdlib, next to genisoimage
(`-J -r`, as cloud-localds and most cloud-init users build a seed) building the same
files in the same run.

For each layout (NoCloud `cidata`, ConfigDrive `config-2`) it renders one guest's files
once, then alternates rounds of:

  pycdlib      build_image(files) → bytes, in this process (Rock Ridge + Joliet)
  pipeline     config_iso(view, nonce): the documents rendered too, then the image
  genisoimage  `genisoimage -quiet -J -r -V LABEL DIR` with the image on stdout (a pipe),
               the files already written to DIR (tmpfs or page cache)

and prints the median of each, and genisoimage's median over pycdlib's.

    .venv/bin/python benchmarks/iso_build.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metadata_server.cloud.options import CloudOptions
from metadata_server.documents import DocumentOptions, GuestView, guest_view
from metadata_server.iso.image import build_image
from metadata_server.iso.layout import LABELS, Layout, config_iso, iso_files
from metadata_server.model import VM, State, parse_vm

NONCE = "0123456789abcdef0123456789abcdef"
KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@example"
)
HASH = (
    "$6$saltsaltsaltsalt$"
    "ZNEGiETZH5IxhTYbBVcX6nYtZ8o6kEQLoLDhzkUpBsS9hFV59IXFADy5Hi1nYThvMJ1aoFpXV.wJtLtDjs6Hm."
)


def sample_vm() -> VM:
    body = {
        "hostname": "web1",
        "domain": "guests.internal",
        "ipv4": {"address": "198.18.0.10", "prefix": 24, "gateway": "198.18.0.1"},
        "dns": ["198.18.0.1"],
        "password_hash": HASH,
        "ssh_keys": [KEY],
        "user_data": "#!/bin/sh\necho hello\n",
        "metadata": {"role": "web"},
    }
    spec = parse_vm(body, mac="02:00:c6:12:00:0a").spec
    at = 1_700_000_000.0
    return VM(spec, "6f1c0b1e-3b0a-4d7e-9a51-2f0d3c4b5a69", State.REGISTERED, {"registered": at},
              None, at, at)  # fmt: skip


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(view: GuestView, layout: Layout, rounds: int, genisoimage: str) -> list[float]:
    """[pycdlib, pipeline, genisoimage] medians in ms, and the image size in bytes."""
    files = iso_files(view, NONCE, layout, CloudOptions())
    label = LABELS[layout]
    ours = partial(build_image, files, label=label, date=view.armed_at)
    pipeline = partial(config_iso, view, NONCE, layout)
    with tempfile.TemporaryDirectory(prefix="iso-bench-") as tmp:
        root = Path(tmp)
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
        argv = [genisoimage, "-quiet", "-J", "-r", "-V", label, str(root)]
        theirs = partial(subprocess.run, argv, capture_output=True, check=True, timeout=60)
        theirs()  # warm the page cache and the binary
        fns: tuple[Callable[[], object], ...] = (ours, pipeline, theirs)
        rounds_ms: list[list[float]] = [[], [], []]
        for _ in range(rounds):
            for times, fn in zip(rounds_ms, fns, strict=True):
                times.append(timed(fn) * 1000)
    return [statistics.median(times) for times in rounds_ms] + [float(len(ours()))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    genisoimage = shutil.which("genisoimage")
    if genisoimage is None:
        sys.exit("this benchmark needs genisoimage (apt-get install genisoimage)")
    view = guest_view(
        sample_vm(), DocumentOptions(default_domain=None, public_url="http://169.254.169.254")
    )
    print(f"median of {args.rounds} rounds (ms); ratio = genisoimage / pycdlib")
    columns = ("pycdlib", 9), ("pipeline", 9), ("genisoimage", 12), ("ratio", 7), ("bytes", 7)
    print(f"{'layout':12}" + "".join(f" {name:>{width}}" for name, width in columns))
    for layout in Layout:
        ours, pipeline, theirs, size = measure(view, layout, args.rounds, genisoimage)
        print(
            f"{layout.value:12} {ours:9.2f} {pipeline:9.2f} {theirs:12.2f} "
            f"{theirs / ours:7.1f} {size:7.0f}"
        )


if __name__ == "__main__":
    main()
