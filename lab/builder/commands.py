"""Run the builder's commands: argv lists, output appended to the build log, heavy steps
under `nice -n 10` (the machine's two cores are shared), and a failure raised as a
`BuildError` that names the step and quotes the end of its output."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

TAIL_LINES = 25


class BuildError(Exception):
    """The lab could not be built; the message says which step and why."""


def need_program(name: str, package: str) -> str:
    """The path of `name`, or a BuildError saying which Debian package brings it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise BuildError(f"{name} is not installed (Debian package {package})")
    return path


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class Runner:
    """Runs the steps of one build, all logging into one file."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)

    def child(self, name: str) -> Runner:
        """A runner for steps run alongside this one's: its own log next to this one."""
        return Runner(self.log_path.with_name(f"{self.log_path.stem}-{name}.log"))

    def note(self, line: str) -> None:
        with self.log_path.open("a") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {line}\n")

    def run(
        self,
        what: str,
        argv: Sequence[str],
        *,
        heavy: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 1800,
        capture: bool = False,
        log_output: bool = True,
    ) -> str:
        """Run `argv`; return its output (stdout and stderr) when `capture`. Raises
        BuildError on failure."""
        full = ["nice", "-n", "10", *argv] if heavy else list(argv)
        self.note(f"{what}: {' '.join(full)}")
        merged = {**os.environ, "LC_ALL": "C", **(env or {})}
        with self.log_path.open("a") as log:
            try:
                done = subprocess.run(
                    full,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if capture else log,
                    stderr=subprocess.STDOUT,
                    env=merged,
                    cwd=cwd,
                    timeout=timeout,
                    text=True,
                    check=False,
                )
            except FileNotFoundError:
                raise BuildError(f"{what}: {full[0]} is not installed") from None
            except subprocess.TimeoutExpired:
                raise BuildError(f"{what}: timed out after {timeout:g} s") from None
            if capture and log_output:
                log.write(done.stdout or "")
        if done.returncode != 0:
            output = done.stdout if capture else self.log_path.read_text(errors="replace")
            raise BuildError(
                f"{what} failed (exit {done.returncode}); the end of its output "
                f"(whole log: {self.log_path}):\n{tail(output)}"
            )
        return done.stdout if capture else ""
