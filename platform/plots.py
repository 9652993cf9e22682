"""Report plots as PNG bytes: success rates as bars with 95% Wilson interval whiskers; episode lengths
per task as points coloured by outcome.

matplotlib's object API with the Agg canvas: no pyplot global state, no display needed.
"""
from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


@dataclass(frozen=True)
class Bar:
    """One bar: a label, a success rate in [0, 1] and its 95% interval [low, high] (None: no whisker)."""

    label: str
    rate: float
    low: float | None = None
    high: float | None = None
    group: str = ""  # bars of one group share a colour (e.g. one configuration across seeds)
    note: str = ""   # text above the bar, e.g. "3/10"


def success_bar_chart(bars: Sequence[Bar], title: str, ylabel: str = "success rate (%)") -> bytes:
    """A PNG (bytes) of `bars` left to right, whiskers at the 95% interval, values in percent."""
    width = min(max(6.0, 0.55 * len(bars) + 2.0), 24.0)
    fig = Figure(figsize=(width, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    groups = list(dict.fromkeys(b.group for b in bars))
    palette = [f"C{i % 10}" for i in range(len(groups))]
    colors = [palette[groups.index(b.group)] for b in bars]
    x = list(range(len(bars)))
    heights = [100 * b.rate for b in bars]
    ax.bar(x, heights, color=colors, alpha=0.85, edgecolor="black", linewidth=0.5)
    lows = [100 * (b.rate - b.low) if b.low is not None else 0.0 for b in bars]
    highs = [100 * (b.high - b.rate) if b.high is not None else 0.0 for b in bars]
    ax.errorbar(x, heights, yerr=[lows, highs], fmt="none", ecolor="black", capsize=4, linewidth=1)
    for xi, b in zip(x, bars, strict=True):
        if b.note:
            top = 100 * (b.high if b.high is not None else b.rate)
            ax.text(xi, min(top + 2, 103), b.note, ha="center", va="bottom", fontsize=8)
    long_labels = max((len(b.label) for b in bars), default=0) > 12
    rotate = len(bars) > 4 or long_labels
    ax.set_xticks(x, [b.label for b in bars], rotation=30 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor", fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_yticks([0, 20, 40, 60, 80, 100])
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, width=int(width * 11)), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


OUTCOME_COLOURS = {"success": "#2da44e", "failure": "#cf222e", "error": "#bf8700"}


def steps_strip_chart(points: Sequence[tuple[str, int, str]], title: str) -> bytes:
    """A PNG (bytes): one row per label (top to bottom in first-seen order), each episode a point at
    its env steps, coloured by outcome ("success" / "failure" / "error"), with the median marked.

    points: (label, steps, outcome) per episode.
    """
    labels = list(dict.fromkeys(p[0] for p in points))
    height = min(max(2.4, 0.42 * len(labels) + 1.4), 30.0)
    fig = Figure(figsize=(10, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for outcome, colour in OUTCOME_COLOURS.items():
        mine = [p for p in points if p[2] == outcome]
        if not mine:
            continue
        # a deterministic vertical jitter so equal step counts stay visible
        ys = [labels.index(p[0]) + ((i * 37) % 11 - 5) * 0.035 for i, p in enumerate(mine)]
        ax.scatter([p[1] for p in mine], ys, s=28, color=colour, alpha=0.85, label=outcome, edgecolors="none")
    for row, label in enumerate(labels):
        steps = sorted(p[1] for p in points if p[0] == label)
        median = steps[len(steps) // 2] if len(steps) % 2 else (steps[len(steps) // 2 - 1] + steps[len(steps) // 2]) / 2
        ax.plot([median, median], [row - 0.3, row + 0.3], color="black", linewidth=1.5)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel("env steps (black tick: median)")
    ax.set_xlim(left=0)
    ax.set_title(textwrap.fill(title, width=110), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)  # outside: never over a point
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
