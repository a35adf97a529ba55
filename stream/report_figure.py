"""The report's figure (matplotlib, Agg): one timeline per speaker (valence, arousal, the emotion of each
utterance as a coloured band, shift markers) over a shared time axis, and each speaker's emotion
distribution. Drawn once, written as SVG (inline in the HTML) and PNG.

Strings from the events are untrusted: ``$`` is escaped so matplotlib never parses them as math, and the
SVG keeps text as XML-escaped ``<text>`` (``svg.fonttype: none``).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .report import clock
from .web.palette import colour_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .report_events import SessionEvents

VALENCE_COLOUR, AROUSAL_COLOUR = "#343a40", "#91a7ff"


def plain(text: object) -> str:
    """Shown literally by matplotlib (no mathtext)."""
    return str(text).replace("$", r"\$")


def session_figure(s: SessionEvents) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    speakers = s.speakers
    n = len(speakers)
    fig = Figure(figsize=(11.0, 1.75 * n + 0.45 * n + 1.6), dpi=110, layout="constrained")
    axes = fig.subplots(n + 1, 1, height_ratios=[1.75] * n + [0.45 * n + 0.6])
    tmax = 1.03 * max(e["t_end"] for e in s.emotions)
    for ax, spk in zip(axes[:n], speakers, strict=True):
        es = [e for e in s.emotions if e["speaker"] == spk]
        t = [e["t_end"] for e in es]
        ax.axhline(0, color="#ced4da", lw=0.8, zorder=0)
        ax.plot(t, [e["arousal"] for e in es], color=AROUSAL_COLOUR, lw=1.6, ls=(0, (5, 4)), zorder=2)
        ax.plot(t, [e["valence"] for e in es], color=VALENCE_COLOUR, lw=2.0, zorder=3)
        ax.scatter(t, [e["valence"] for e in es], s=46, c=[colour_of(e["expression"]) for e in es],
                   edgecolors="white", linewidths=1.2, zorder=4)
        ax.broken_barh([(e["t_start"], max(e["t_end"] - e["t_start"], tmax / 300)) for e in es], (-1.42, 0.16),
                       facecolors=[colour_of(e["expression"]) for e in es])
        for x in (x for x in s.shifts if x["speaker"] == spk):
            c = colour_of(x["to"])
            ax.axvline(x["t_end"], color=c, lw=1.3, ls=(0, (3, 3)), zorder=1)
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
    for i, spk in enumerate(speakers):
        es = [e for e in s.emotions if e["speaker"] == spk]
        left = 0.0
        for expr in expressions:
            share = sum(1 for e in es if e["expression"] == expr) / len(es)
            if share:
                dist.barh(i, share, left=left, color=colour_of(expr), height=0.62)
                left += share
    dist.set_yticks(range(n), [plain(x) for x in speakers])
    dist.invert_yaxis()
    dist.set_xlim(0, 1)
    dist.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
    dist.set_title("emotion distribution per speaker", loc="left", fontsize=11, fontweight="bold")
    for side in ("top", "right"):
        dist.spines[side].set_visible(False)
    dist.legend(handles=[Patch(color=colour_of(x), label=plain(x)) for x in expressions], loc="upper left",
                bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
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
