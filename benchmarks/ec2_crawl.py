"""cloud-init 22.4's EC2 crawl against this server for one guest: how many requests it
makes and how long it takes, next to one GET /v1/config (the native guest script's
fetch), both timed by the same client in the same run.

Usage: .venv/bin/python benchmarks/ec2_crawl.py [--runs 20]   (needs Debian's cloud-init)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import UNREACHABLE_LIMIT, child, free_port

TOKEN = "benchmark-admin-token-0123456789"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b"
CLIENT = r"""
import json, statistics, sys, time, urllib.request
from cloudinit import url_helper
from cloudinit.sources.helpers import ec2

base, runs = sys.argv[1], int(sys.argv[2])
count = [0]
real_readurl = url_helper.readurl
def counting_readurl(*args, **kwargs):
    count[0] += 1
    return real_readurl(*args, **kwargs)
url_helper.readurl = counting_readurl

crawl, native, requests = [], [], []
for _ in range(runs):
    count[0] = 0
    started = time.perf_counter()
    ec2.get_instance_metadata(api_version="2021-03-23", metadata_address=base, retries=0)
    ec2.get_instance_userdata(api_version="2021-03-23", metadata_address=base, retries=0)
    crawl.append(time.perf_counter() - started)
    requests.append(count[0])
    started = time.perf_counter()
    with urllib.request.urlopen(base + "/v1/config", timeout=5) as response:
        response.read()
    native.append(time.perf_counter() - started)
print(json.dumps({"crawl": statistics.median(crawl), "native": statistics.median(native),
                  "requests": requests[0]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        guest_port, admin_port = free_port(), free_port()
        # All load comes from one address, which the per-guest rate limit would (rightly)
        # stop; a limit too high to reach keeps the limiter's cost in the measurement.
        env = {**os.environ, "METADATA_SERVER_ADMIN_TOKEN": TOKEN, **UNREACHABLE_LIMIT}
        serve = [sys.executable, "-m", "metadata_server", "serve", "--db", f"{tmp}/registry.db",
                 "--guest-listen", f"127.0.0.1:{guest_port}",
                 "--admin-listen", f"127.0.0.1:{admin_port}", "--log-level", "warning"]  # fmt: skip
        with child(serve, admin_port, env):
            guest = {
                "hostname": "crawled",
                "ipv4": {"address": "127.0.0.1", "prefix": 8},
                "password_hash": "!",
                "ssh_keys": [KEY],
                "user_data": "#!/bin/sh\necho hello\n",
            }
            request = urllib.request.Request(
                f"http://127.0.0.1:{admin_port}/api/v1/vms/02:00:7f:00:00:01",
                data=json.dumps(guest).encode(),
                method="PUT",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            urllib.request.urlopen(request, timeout=10).read()
            base = f"http://127.0.0.1:{guest_port}"
            client = subprocess.run(
                ["/usr/bin/python3", "-c", CLIENT, base, str(args.runs)],
                capture_output=True, text=True,
            )  # fmt: skip
            if client.returncode != 0:
                sys.exit(f"the cloud-init client failed:\n{client.stderr}")
            out = client.stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"cloud-init EC2 crawl (meta-data + user-data): {result['requests']} requests, "
          f"{result['crawl'] * 1000:.1f} ms (median of {args.runs})")  # fmt: skip
    print(f"one GET /v1/config:                           1 request,  "
          f"{result['native'] * 1000:.2f} ms (median of {args.runs})")  # fmt: skip
    print(
        f"crawl / native:                               {result['crawl'] / result['native']:.0f}x"
    )


if __name__ == "__main__":
    main()
