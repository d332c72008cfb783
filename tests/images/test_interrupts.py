"""`image prepare` stopped by Ctrl-C (SIGINT) or SIGTERM at each step leaves nothing: no
loop device, no mount, no process, no file in the output directory.

The command runs as a process. With METADATA_SERVER_IMAGE_PAUSE_AT it waits after the
step's progress line, so a signal sent on that line lands between it and the step's work
(with everything the steps before it hold: the working copy, the loop device, the
mount); without the pause, a signal sent on a line lands in the work itself (in
qemu-img convert, in install.sh), whose tools then end with the command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from metadata_server.cli.image import PAUSE_VARIABLE
from metadata_server.images.prepare import CONVERTING, INSTALLING, STEPS, WRITING
from tests.images.conftest import Sources, leftovers

TIMEOUT = 60


def interrupt_at(
    source: Path, out_dir: Path, step: str, signum: int, *, pause: bool
) -> tuple[int, str]:
    """Exit status and stderr of a prepare that got `signum` on `step`'s progress line."""
    env = dict(os.environ)
    env.pop(PAUSE_VARIABLE, None)
    if pause:
        env[PAUSE_VARIABLE] = step
    argv = [sys.executable, "-m", "metadata_server", "image", "prepare", str(source)]
    with subprocess.Popen(
        [*argv, "--out", str(out_dir / "m.qcow2")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    ) as process:  # fmt: skip
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if line.startswith(f"image prepare: {step}"):
                process.send_signal(signum)
                break
        else:
            process.wait(timeout=TIMEOUT)
            pytest.fail(f"no {step!r} line: {''.join(seen)}")
        rest = process.stderr.read()
        return process.wait(timeout=TIMEOUT), "".join(seen) + rest


CASES = [(step, signal.SIGINT, True) for step in STEPS]
CASES += [(INSTALLING, signal.SIGTERM, True), (CONVERTING, signal.SIGINT, False)]
CASES += [(INSTALLING, signal.SIGINT, False), (WRITING, signal.SIGTERM, False)]


@pytest.mark.parametrize(
    ("step", "signum", "pause"),
    CASES,
    ids=[
        f"{signal.Signals(n).name}-{'after' if p else 'during'}-{s.split()[0]}" for s, n, p in CASES
    ],
)
def test_an_interrupted_prepare_leaves_nothing(
    sources: Sources, clean: Path, step: str, signum: int, pause: bool
) -> None:
    out_dir = clean / "out"
    out_dir.mkdir()
    code, err = interrupt_at(sources.big, out_dir, step, signum, pause=pause)
    expected = 130 if signum == signal.SIGINT else 143
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    assert code == expected, err
    assert (
        err.splitlines()[-1]
        == f"metadata-server: image prepare stopped by {name}; what it had made is removed"
    )
    assert os.listdir(out_dir) == []
    assert leftovers(clean) == []


def test_a_second_ctrl_c_does_not_cut_the_cleanup_short(sources: Sources, clean: Path) -> None:
    out_dir = clean / "out"
    out_dir.mkdir()
    env = {**os.environ, PAUSE_VARIABLE: INSTALLING}
    argv = [sys.executable, "-m", "metadata_server", "image", "prepare", str(sources.big)]
    with subprocess.Popen(
        [*argv, "--out", str(out_dir / "m.qcow2")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    ) as process:  # fmt: skip
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith(f"image prepare: {INSTALLING}"):
                break
        process.send_signal(signal.SIGINT)
        for _ in range(20):  # a user pressing Ctrl-C again and again while it cleans up
            process.send_signal(signal.SIGINT)
        assert process.wait(timeout=TIMEOUT) == 130, process.stderr.read()
    assert os.listdir(out_dir) == []
    assert leftovers(clean) == []
