"""The report's figure (matplotlib, Agg): one timeline per speaker (valence, arousal, the emotion of each
utterance as a coloured band, shift markers) over a shared time axis, and each speaker's emotion
distribution. Drawn once, written as SVG (inline in the HTML) and PNG.

Strings from the events are untrusted: ``$`` is escaped so matplotlib never parses them as math, and the
SVG keeps text as XML-escaped ``<text>`` (``svg.fonttype: none``).
"""

from __future__ import annotations

import collections
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .report import CHART_SPEAKERS, clock
from .web.palette import colour_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .report_events import SessionEvents

VALENCE_COLOUR, AROUSAL_COLOUR = "#343a40", "#91a7ff"
MAX_POINTS = 1500
"""Utterances drawn per timeline; a speaker with more has every k-th drawn (the table counts them all)."""
MAX_SHIFT_MARKS = 150
"""Shift markers per timeline (thinned the same way); labelled only when at most ``MAX_SHIFT_LABELS``."""
MAX_SHIFT_LABELS = 40
MAX_LEGEND = 24
"""Expressions in the legend (a hostile log may hold thousands of distinct ones)."""
T = TypeVar("T")


def plain(text: object) -> str:
    """Shown literally by matplotlib (no mathtext)."""
    return str(text).replace("$", r"\$")


def thin(items: list[T], limit: int) -> list[T]:
    """At most about ``limit`` items, evenly spread (every k-th), the last one always kept."""
    if len(items) <= limit:
        return items
    step = -(-len(items) // limit)
    return items[::step] if (len(items) - 1) % step == 0 else [*items[::step], items[-1]]


def session_figure(s: SessionEvents) -> Figure:
    """Timelines of the ``CHART_SPEAKERS`` speakers with most utterances (each thinned to ``MAX_POINTS``
    utterances and ``MAX_SHIFT_MARKS`` shift markers), and the emotion distribution of each of them plus
    one bar for all the other speakers together: the figure's size and drawing time stay bounded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    speakers = s.top_speakers(CHART_SPEAKERS)
    n = len(speakers)
    charted = set(speakers)
    others = [spk for spk in s.by_speaker if spk not in charted]
    bars = n + (1 if others else 0)
    fig = Figure(figsize=(11.0, 1.75 * n + 0.45 * bars + 1.6), dpi=110, layout="constrained")
    axes = fig.subplots(n + 1, 1, height_ratios=[1.75] * n + [0.45 * bars + 0.6])
    tmax = 1.03 * max(e["t_end"] for e in s.emotions)
    for ax, spk in zip(axes[:n], speakers, strict=True):
        es = thin(s.by_speaker[spk], MAX_POINTS)
        t = [e["t_end"] for e in es]
        ax.axhline(0, color="#ced4da", lw=0.8, zorder=0)
        ax.plot(t, [e["arousal"] for e in es], color=AROUSAL_COLOUR, lw=1.6, ls=(0, (5, 4)), zorder=2)
        ax.plot(t, [e["valence"] for e in es], color=VALENCE_COLOUR, lw=2.0, zorder=3)
        ax.scatter(t, [e["valence"] for e in es], s=46 if len(es) < 200 else 12,
                   c=[colour_of(e["expression"]) for e in es], edgecolors="white", linewidths=1.2, zorder=4)
        ax.broken_barh([(e["t_start"], max(e["t_end"] - e["t_start"], tmax / 300)) for e in es], (-1.42, 0.16),
                       facecolors=[colour_of(e["expression"]) for e in es])
        marks = thin(s.shifts_by_speaker.get(spk, []), MAX_SHIFT_MARKS)
        for x in marks:
            c = colour_of(x["to"])
            ax.axvline(x["t_end"], color=c, lw=1.3, ls=(0, (3, 3)), zorder=1)
            if len(marks) > MAX_SHIFT_LABELS:
                continue
            right = x["t_end"] > 0.85 * tmax
            ax.annotate(plain(f"▼ {x['to']}"), (x["t_end"], 1.22), fontsize=8, color="#495057",
                        ha="right" if right else "left", va="bottom", xytext=(4 if not right else -4, 0),
                        textcoords="offset points", annotation_clip=False)
        ax.set_xlim(0, tmax)
        ax.set_ylim(-1.5, 1.2)
        ax.set_yticks([-1, 0, 1], ["−1", "0", "+1"])
        ax.set_title(plain(spk), loc="left", fontsize=11, fontweight="bold", pad=14)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _p: clock(t)))
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.grid(axis="y", color="#eceef1", lw=0.8)
    for ax in axes[:n - 1]:
        ax.tick_params(labelbottom=False)
    axes[n - 1].set_xlabel("session time (m:ss)")
    axes[0].legend(handles=[Line2D([], [], color=VALENCE_COLOUR, lw=2, label="valence"),
                            Line2D([], [], color=AROUSAL_COLOUR, lw=1.6, ls="--", label="arousal"),
                            Line2D([], [], color="#d9480f", lw=1.3, ls=":", label="emotion shift")],
                   loc="upper right", bbox_to_anchor=(1.0, 1.42), ncol=3, fontsize=8, frameon=False)

    dist = axes[n]
    expressions = list(dict.fromkeys(e["expression"] for e in s.emotions))
    rows = [(plain(spk), collections.Counter(e["expression"] for e in s.by_speaker[spk])) for spk in speakers]
    if others:
        rows.append((f"{len(others)} other speakers", collections.Counter(
            e["expression"] for spk in others for e in s.by_speaker[spk])))
    for i, (_, counts) in enumerate(rows):
        total = sum(counts.values())
        left = 0.0
        for expr in expressions:
            if counts[expr]:
                share = counts[expr] / total
                dist.barh(i, share, left=left, color=colour_of(expr), height=0.62)
                left += share
    dist.set_yticks(range(len(rows)), [name for name, _ in rows])
    dist.invert_yaxis()
    dist.set_xlim(0, 1)
    dist.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
    dist.set_title("emotion distribution per speaker", loc="left", fontsize=11, fontweight="bold")
    for side in ("top", "right"):
        dist.spines[side].set_visible(False)
    dist.legend(handles=[Patch(color=colour_of(x), label=plain(x)) for x in expressions[:MAX_LEGEND]],
                loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return fig


def to_svg(fig: Figure, salt: str) -> str:
    """The figure as an inline ``<svg>`` element (text kept as text; ids salted per session)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.DOTALL)


def to_png(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png", metadata={"Software": None})
