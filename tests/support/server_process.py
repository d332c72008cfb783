"""Run `metadata-server serve` as a real child process and find its bound addresses."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_READY = re.compile(r"guest API on (\S+?)(?:,| ;|;).*admin API on (\S+)")


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    guest_url: str
    admin_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_ready(
    process: subprocess.Popen[bytes], log_path: Path, timeout: float
) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        match = _READY.search(text)
        if match:
            return match.group(1), match.group(2)
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{text}")
        select.select([], [], [], 0.05)
    raise RuntimeError(f"the server did not start in {timeout} s:\n{log_path.read_text()}")


@contextlib.contextmanager
def server_process(
    args: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 20,
    prefix: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """`metadata-server serve ARGS` with its log in `log_path`; stopped on exit.
    `prefix` runs it through another command, e.g. `ip netns exec NAME`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("METADATA_SERVER_")}
    full_env.update(env or {})
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "metadata_server", "serve", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    try:
        guest_url, admin_url = _wait_ready(process, log_path, timeout)
        yield ServerProcess(process, guest_url.rstrip(";,"), admin_url, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
