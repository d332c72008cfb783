"""The report's charts, as PNG files made with matplotlib (Agg, no display needed):

- `distribution.png`: for each N, the distribution of time-to-configured per method
  (the share of guests configured by each moment after their boot start);
- `scaling.png`: p50, p95 and max time-to-configured, and guests configured per
  second, against N, per method;
- `dom0_cost.png`: Dom0 CPU seconds and tasks spawned per guest against N, per method.

Writes only the files it names in the directory it is given. Uses matplotlib's object
API (no pyplot, no global state), so it is safe to call from any thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metadata_server_testbed.compare.results import Comparison
from metadata_server_testbed.compare.stats import summarize_run

COLOURS = {"network": "tab:blue", "iso": "tab:orange"}
DPI = 110


def _log_n(ax: Any, ns: Sequence[int]) -> None:
    """A log scale for N with a labelled tick at each N of the sweep."""
    ax.set_xscale("log")
    ax.set_xticks(list(ns), [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("guests (N)")


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(str(path), dpi=DPI)


def distribution(comparison: Comparison, path: Path) -> bool:
    sweep = sorted({run.guests for run in comparison.runs})
    if not sweep:
        return False
    figure = Figure(figsize=(4.2 * len(sweep), 3.6), layout="constrained")
    axes = figure.subplots(1, len(sweep), squeeze=False)[0]
    for ax, n in zip(axes, sweep, strict=True):
        for run in comparison.runs:
            if run.guests != n:
                continue
            times = sorted(g.seconds for g in run.guest_records if g.seconds is not None)
            if not times:
                continue
            shares = [(i + 1) / run.guests for i in range(len(times))]
            ax.step(
                [0.0, *times],
                [0.0, *shares],
                where="post",
                label=run.method,
                color=COLOURS.get(run.method),
            )
        ax.set_title(f"N = {n}")
        ax.set_xlabel("seconds from boot start")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of guests configured")
    axes[0].legend(loc="lower right")
    figure.suptitle("Time to configured")
    _save(figure, path)
    return True


def _series(comparison: Comparison, method: str) -> list[tuple[int, float, float, float, float]]:
    rows = []
    for run in sorted(comparison.runs, key=lambda r: r.guests):
        if run.method != method:
            continue
        s = summarize_run(run)
        if s.times is not None:
            rows.append((run.guests, s.times.p50, s.times.p95, s.times.max, s.per_second))
    return rows


def scaling(comparison: Comparison, methods: Sequence[str], path: Path) -> bool:
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    drawn = False
    for method in methods:
        rows = _series(comparison, method)
        if not rows:
            continue
        drawn = True
        colour = COLOURS.get(method)
        ns = [r[0] for r in rows]
        left.plot(ns, [r[1] for r in rows], "o-", color=colour, label=f"{method} p50")
        left.plot(ns, [r[2] for r in rows], "s--", color=colour, label=f"{method} p95")
        left.plot(ns, [r[3] for r in rows], ":", color=colour, label=f"{method} max")
        right.plot(ns, [r[4] for r in rows], "o-", color=colour, label=method)
    if not drawn:
        return False
    _finish(figure, comparison, (left, right), path, "Scaling with N",
            ("time to configured, s", "guests configured per second"))  # fmt: skip
    return True


def dom0_cost(comparison: Comparison, methods: Sequence[str], path: Path) -> bool:
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    drawn = False
    for method in methods:
        runs = sorted((r for r in comparison.runs if r.method == method), key=lambda r: r.guests)
        if not runs:
            continue
        drawn = True
        ns = [r.guests for r in runs]
        colour = COLOURS.get(method)
        left.plot(ns, [r.dom0.cpu_s / r.guests for r in runs], "o-", color=colour, label=method)
        # What is left without the DHCP lease hooks (network) or the xl stand-in (ISO).
        apart = [r.dom0.dhcp_cpu_s + r.dom0.standin_cpu_s for r in runs]
        if any(apart):
            what = "dnsmasq + lease hooks" if method == "network" else "xl stand-in"
            rest = [(r.dom0.cpu_s - a) / r.guests for r, a in zip(runs, apart, strict=True)]
            left.plot(ns, rest, "s--", color=colour, label=f"{method} without {what}")
        right.plot(ns, [r.dom0.tasks / r.guests for r in runs], "o-", color=colour, label=method)
    if not drawn:
        return False
    _finish(figure, comparison, (left, right), path, "Dom0's cost",
            ("Dom0 CPU seconds per guest", "tasks spawned on Dom0 per guest"))  # fmt: skip
    return True


def _finish(
    figure: Figure,
    comparison: Comparison,
    axes: tuple[Any, Any],
    path: Path,
    title: str,
    ylabels: tuple[str, str],
) -> None:
    """Both panels of an N-sweep chart: log N axis, grid, legend, labels; then save."""
    sweep = sorted({run.guests for run in comparison.runs})
    for ax, label in zip(axes, ylabels, strict=True):
        _log_n(ax, sweep)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_ylabel(label)
    figure.suptitle(title)
    _save(figure, path)


def draw_all(comparison: Comparison, methods: Sequence[str], directory: Path) -> list[str]:
    """Every chart that has data, written to `directory`; their file names."""
    made = []
    if distribution(comparison, directory / "distribution.png"):
        made.append("distribution.png")
    if scaling(comparison, methods, directory / "scaling.png"):
        made.append("scaling.png")
    if dom0_cost(comparison, methods, directory / "dom0_cost.png"):
        made.append("dom0_cost.png")
    return made
