"""The lab's markers: how dom0 tells the host what happened, one line each on the serial
console, and how the host reads them back. Both sides use this module.

    LAB-STEP <uptime> <text>                 progress (dom0 uptime in seconds)
    LAB-CHECK <id> ok|FAIL|SKIP <detail>     one assertion made in dom0
    LAB-FIGURE <name> <seconds>              a measured time
    LAB-END <scenario> ok|FAIL               the scenario is over (dom0 powers off next)

Lines are found anywhere in a console line (Xen or the kernel may write before them on
the same line); a line cut by another writer is simply not a marker, so a lost CHECK
shows as missing, never as passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OK, FAIL, SKIP = "ok", "FAIL", "SKIP"
_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]*"
_LINE_RE = re.compile(
    rf"LAB-(?:(?P<check>CHECK) (?P<cid>{_ID}) (?P<status>ok|FAIL|SKIP)(?: (?P<detail>.*))?"
    rf"|(?P<figure>FIGURE) (?P<fname>{_ID}) (?P<value>[0-9]+(?:\.[0-9]+)?)"
    rf"|(?P<end>END) (?P<scenario>{_ID}) (?P<outcome>ok|FAIL)"
    rf"|(?P<step>STEP) (?P<uptime>[0-9.]+) (?P<text>.*))\s*$"
)


def _clean(text: str) -> str:
    return " ".join(text.replace("\r", " ").split())


def check_line(check_id: str, status: str, detail: str = "") -> str:
    if not re.fullmatch(_ID, check_id) or status not in (OK, FAIL, SKIP):
        raise ValueError(f"bad check {check_id!r} {status!r}")
    detail = _clean(detail)
    return f"LAB-CHECK {check_id} {status}" + (f" {detail}" if detail else "")


def figure_line(name: str, seconds: float) -> str:
    if not re.fullmatch(_ID, name) or seconds < 0:
        raise ValueError(f"bad figure {name!r} {seconds!r}")
    return f"LAB-FIGURE {name} {seconds:.1f}"


def step_line(uptime: float, text: str) -> str:
    return f"LAB-STEP {uptime:.1f} {_clean(text)}"


def end_line(scenario: str, ok: bool) -> str:
    return f"LAB-END {scenario} {OK if ok else FAIL}"


@dataclass(frozen=True)
class Check:
    status: str
    detail: str


@dataclass
class Report:
    """What the markers of one boot said. A check reported twice keeps its worst status."""

    checks: dict[str, Check] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    steps: list[tuple[float, str]] = field(default_factory=list)
    ended: dict[str, bool] = field(default_factory=dict)

    @property
    def failed(self) -> dict[str, Check]:
        return {cid: c for cid, c in self.checks.items() if c.status == FAIL}


def parse(text: str) -> Report:
    report = Report()
    for raw in text.splitlines():
        match = _LINE_RE.search(raw.replace("\r", ""))
        if match is None:
            continue
        if match["check"]:
            cid, check = match["cid"], Check(match["status"], match["detail"] or "")
            known = report.checks.get(cid)
            if known is None or known.status != FAIL:
                report.checks[cid] = check
        elif match["figure"]:
            report.figures[match["fname"]] = float(match["value"])
        elif match["end"]:
            report.ended[match["scenario"]] = match["outcome"] == OK
        else:
            report.steps.append((float(match["uptime"]), match["text"]))
    return report
