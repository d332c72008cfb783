"""The progress bar: drawn in place on a terminal, a line per tenth elsewhere."""

from __future__ import annotations

import io

from metadata_server_testbed.compare.progress import Progress, bar


def test_bar() -> None:
    assert bar("[iso N=4]", 2, 4, 1, 1, 3.25) == (
        "[iso N=4] [###############...............] 2/4 ok 1 failed 1 3.2 s"
    )


def test_not_a_terminal_gets_the_first_line_then_one_per_tenth() -> None:
    stream = io.StringIO()
    progress = Progress("[network N=100]", 100, stream)
    for i in range(100):
        progress.update(configured=i != 7)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[-1].startswith("[network N=100] [####") and "100/100 ok 99 failed 1" in lines[-1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_redrawn() -> None:
    stream = Terminal()
    progress = Progress("[iso N=3]", 3, stream)
    for _ in range(3):
        progress.update(configured=True)
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1
    assert text.rsplit("\r", 1)[1].startswith("[iso N=3] [####") and "3/3 ok 3 failed 0" in text
