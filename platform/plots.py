"""Report plots as PNG bytes: success rates as bars with 95% Wilson interval whiskers.

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
    ax.set_xticks(x, [b.label for b in bars], rotation=30 if len(bars) > 4 else 0, ha="right" if len(bars) > 4 else "center",
                  fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_yticks([0, 20, 40, 60, 80, 100])
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, width=int(width * 11)), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
