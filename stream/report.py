"""``pcgnet report``: a finished session's events -> one self-contained HTML page (and optionally a PNG).

Reads a recorded session folder (``live.py --record DIR``: ``DIR/events.jsonl``, and the reference labels
of ``DIR/utterances.jsonl`` when it has them), a ``--record`` folder holding one subfolder per session,
or an ``--events`` log. The page has no script and a Content-Security-Policy forbidding any; every string
from the events (speaker names, transcripts) is HTML-escaped. The figure (per-speaker timelines with shift
markers, each speaker's emotion distribution) is drawn once by matplotlib (stream/report_figure.py) and
written both as inline SVG and, with ``--png``, as PNG.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import functools
import html
import logging
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ids import safe_path_component
from .record import SessionFormatError
from .report_events import SessionEvents, input_files, load_sessions
from .web.palette import colour_of

log = logging.getLogger(__name__)

__all__ = ["SessionEvents", "SpeakerSummary", "load_sessions", "render_report", "run_report", "summarise"]


@dataclass(frozen=True)
class SpeakerSummary:
    speaker: str
    utterances: int
    shifts: int
    counts: dict[str, int]
    mean_valence: float
    mean_arousal: float
    mean_confidence: float

    @property
    def dominant(self) -> str:
        return max(self.counts, key=lambda k: self.counts[k])


TABLE_SPEAKERS = 40
"""Speakers with a row of their own in the table; the others share one summary row."""
CHART_SPEAKERS = 8
"""Speakers with a timeline in the figure (those with most utterances); the others share one distribution bar."""


def _summary(name: str, es: list[dict[str, Any]], shifts: int) -> SpeakerSummary:
    return SpeakerSummary(
        name, len(es), shifts, dict(collections.Counter(e["expression"] for e in es).most_common()),
        statistics.fmean(e["valence"] for e in es), statistics.fmean(e["arousal"] for e in es),
        statistics.fmean(e["confidence"] for e in es))


def summarise(s: SessionEvents, limit: int | None = None) -> list[SpeakerSummary]:
    """One row per speaker, in order of appearance; with ``limit``, the ``limit`` speakers with most
    utterances and, when there are more, one last row for all the others together."""
    shown = s.speakers if limit is None or len(s.by_speaker) <= limit else s.top_speakers(limit)
    rows = [_summary(spk, s.by_speaker[spk], len(s.shifts_by_speaker.get(spk, ()))) for spk in shown]
    if len(shown) < len(s.by_speaker):
        kept = set(shown)
        rest = [spk for spk in s.by_speaker if spk not in kept]
        rows.append(_summary(f"{len(rest)} other speakers", [e for spk in rest for e in s.by_speaker[spk]],
                             sum(len(s.shifts_by_speaker.get(spk, ())) for spk in rest)))
    return rows


# -- HTML -------------------------------------------------------------------------------------------

CSS = """
body{font-family:"Segoe UI","Helvetica Neue","DejaVu Sans",Arial,sans-serif;color:#1f2328;background:#f4f5f7;
margin:0;font-size:15px}
.page{max-width:1180px;margin:0 auto;padding:24px 28px 40px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:14px;text-transform:uppercase;letter-spacing:.06em;color:#6a737d;
margin:28px 0 10px}.sub{color:#6a737d;margin:0 0 18px}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.fig{background:#fff;border:1px solid #e3e6ea;border-radius:10px;padding:10px 14px}
.fig b{display:block;font-size:24px;font-variant-numeric:tabular-nums}.fig span{color:#6a737d;font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e3e6ea;border-radius:10px}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid #eef0f2;vertical-align:top}
th{font-size:12px;color:#6a737d;text-transform:uppercase;letter-spacing:.04em}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.chip{display:inline-block;color:#fff;border-radius:6px;padding:1px 8px;font-size:13px;font-weight:600;
white-space:nowrap}.dist{display:flex;height:10px;border-radius:5px;overflow:hidden;min-width:160px;
background:#e3e6ea}.dist span{display:block;height:100%}
.chart{background:#fff;border:1px solid #e3e6ea;border-radius:10px;padding:8px}.chart svg{width:100%;height:auto}
tr.utt td:first-child{border-left:4px solid var(--c)}td.text{overflow-wrap:anywhere;white-space:pre-wrap}
.miss{color:#e03131}.muted{color:#6a737d}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def clock(t: float) -> str:
    """Session time as m:ss."""
    s = max(0, round(float(t)))
    return f"{s // 60}:{s % 60:02d}"


def _chip(expr: str) -> str:
    return f'<span class="chip" style="background:{colour_of(expr)}">{_e(expr)}</span>'


def _dist(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    segs = "".join(f'<span style="width:{100 * n / total:.1f}%;background:{colour_of(k)}" title="{_e(k)}: {n}">'
                   f"</span>" for k, n in counts.items())
    return f'<div class="dist">{segs}</div>'


def _latency(s: SessionEvents) -> str:
    lat = sorted(float(e["latency_ms"]) for e in s.emotions if isinstance(e.get("latency_ms"), int | float))
    if not lat:
        return "–"
    q = statistics.quantiles(lat, n=20) if len(lat) > 1 else [lat[0]] * 19
    return f"{statistics.median(lat):.0f} / {q[18]:.0f}"


def session_html(s: SessionEvents, svg: str) -> str:
    rows = summarise(s, TABLE_SPEAKERS)
    charted = min(len(s.by_speaker), CHART_SPEAKERS)
    chart_title = ("Timeline per speaker" if charted == len(s.by_speaker) else
                   f"Timelines of the {charted} speakers with most utterances (of {len(s.by_speaker)})")
    overall = collections.Counter(e["expression"] for e in s.emotions)
    duration = max(e["t_end"] for e in s.emotions)
    figs = [("utterances", len(s.emotions)), ("speakers", len(s.by_speaker)), ("duration", clock(duration)),
            ("emotion shifts", len(s.shifts)), ("dominant emotion", overall.most_common(1)[0][0]),
            ("latency p50 / p95 (ms)", _latency(s))]
    shown = {e["utterance_id"] for e in s.emotions}
    ref = {u: r for u, r in s.reference.items() if u in shown}
    if ref:
        agree = sum(1 for e in s.emotions if ref.get(e["utterance_id"]) == e["expression"])
        figs.append(("agree with reference", f"{agree} / {len(ref)}"))
    out = [f'<section class="session" data-session="{_e(s.session)}">',
           f"<h1>Session {_e(s.session)}</h1>",
           '<div class="figs">' + "".join(f'<div class="fig"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                                          for k, v in figs) + "</div>",
           "<h2>Speakers</h2><table><tr><th>speaker</th><th>utterances</th><th>shifts</th><th>dominant</th>"
           "<th>mean valence</th><th>mean arousal</th><th>mean confidence</th><th>emotion distribution</th></tr>"]
    for k, r in enumerate(rows):
        share = r.counts[r.dominant] / r.utterances
        cls, name = (("speaker", f"<b>{_e(r.speaker)}</b>") if k < len(s.by_speaker) and k < TABLE_SPEAKERS
                     else ("speaker-others", f"<i>{_e(r.speaker)}</i>"))
        out.append(f'<tr class="{cls}"><td>{name}</td><td class="n">{r.utterances}</td>'
                   f'<td class="n">{r.shifts}</td><td>{_chip(r.dominant)} {share:.0%}</td>'
                   f'<td class="n">{r.mean_valence:+.2f}</td><td class="n">{r.mean_arousal:+.2f}</td>'
                   f'<td class="n">{r.mean_confidence:.2f}</td><td>{_dist(r.counts)}</td></tr>')
    out.append(f'</table><h2>{_e(chart_title)}</h2><div class="chart">{svg}</div>')
    if s.shifts:
        out.append("<h2>Emotion shifts</h2><table><tr><th>time</th><th>speaker</th><th>from</th><th>to</th>"
                   "<th>shift probability</th><th>since</th></tr>")
        for x in s.shifts:
            prob = "–" if x.get("probability") is None else f"{float(x['probability']):.2f}"
            out.append(f'<tr class="shift"><td class="n">{clock(x["t_end"])}</td><td><b>{_e(x["speaker"])}</b>'
                       f'</td><td>{_chip(x["from"])}</td><td>{_chip(x["to"])}</td><td class="n">{prob}</td>'
                       f'<td class="muted">{_e(x.get("previous_utterance_id", ""))}</td></tr>')
        out.append("</table>")
    out.append("<h2>Transcript</h2><table><tr><th>time</th><th>speaker</th><th>emotion</th><th>confidence</th>"
               "<th>text</th>" + ("<th>reference</th>" if ref else "") + "</tr>")
    for e in s.emotions:
        text = e.get("text")
        cells = (f'<tr class="utt" data-utterance="{_e(e["utterance_id"])}" style="--c:{colour_of(e["expression"])}">'
                 f'<td class="n">{clock(e["t_end"])}</td><td><b>{_e(e["speaker"])}</b></td>'
                 f'<td>{_chip(e["expression"])}</td><td class="n">{float(e["confidence"]):.2f}</td>'
                 f'<td class="text">{_e(text) if isinstance(text, str) else "<i>(no transcript)</i>"}</td>')
        if ref:
            gold = ref.get(e["utterance_id"])
            cls = "" if gold in (None, e["expression"]) else ' class="miss"'
            cells += f"<td{cls}>{_e(gold or '–')}</td>"
        out.append(cells + "</tr>")
    out.append("</table>")
    if s.errors:
        out.append("<h2>Problems</h2><table>" + "".join(
            f'<tr class="problem"><td>{_e(x.get("category", ""))}</td><td>{_e(x.get("message", ""))}</td>'
            f'<td class="muted">{_e(x.get("stage", ""))}</td></tr>' for x in s.errors) + "</table>")
    out.append("</section>")
    return "\n".join(out)


def render_report(sessions: list[SessionEvents], source: str, svgs: list[str]) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = "PCGNet report · " + ", ".join(s.session for s in sessions)
    body = "\n".join(session_html(s, svg) for s, svg in zip(sessions, svgs, strict=True))
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body><div class=\"page\">"
            f"<p class=\"sub\">PCGNet session report · {_e(source)} · generated {now}</p>\n{body}\n"
            "</div></body></html>\n")


# -- command ----------------------------------------------------------------------------------------


def png_paths(png: Path, sessions: list[SessionEvents]) -> list[Path]:
    """``--png FILE.png``: that file for one session; ``FILE.<session>.png`` per session for several."""
    if len(sessions) == 1:
        return [png]
    return [png.with_name(f"{png.stem}.{safe_path_component(s.session)}{png.suffix or '.png'}") for s in sessions]


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)  # hard links and symlinks too
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_outputs(source: Path, outputs: list[Path]) -> None:
    """ValueError (one line) when an output would overwrite an input or another output, is a folder, or its
    folder cannot be created: checked before anything is drawn, so a mistake costs nothing."""
    files = input_files(source)
    inputs = [f for f, _ in files] + [d / "utterances.jsonl" for _, d in files if d is not None]
    for k, out in enumerate(outputs):
        if out.is_dir():
            raise ValueError(f"{out}: is a folder; give a file name, e.g. {out / 'report.html'}")
        clash = next((i for i in inputs if _same_file(out, i)), None)
        if clash is not None:
            raise ValueError(f"{out}: is an input of this report ({clash}); refusing to overwrite it")
        if any(_same_file(out, other) for other in outputs[:k]):
            raise ValueError(f"{out}: given twice (--out and --png must differ)")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{out}: cannot create its folder {out.parent} ({e.strerror or e})") from None


def _write(path: Path, write: Callable[[Path], object]) -> None:
    """Through a temporary file in the same folder: a failed write leaves no half report behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_report(args: argparse.Namespace) -> int:
    from pcgnet.cli import UsageError

    from .report_figure import session_figure, to_png, to_svg

    source = Path(args.source)
    try:
        sessions = load_sessions(source)
    except SessionFormatError as e:
        raise UsageError(str(e)) from None
    if args.session:
        sessions = [s for s in sessions if s.session == args.session]
        if not sessions:
            raise UsageError(f"{args.source}: no session {args.session!r}")
    out = Path(args.out)
    pngs = png_paths(Path(args.png), sessions) if args.png else []
    try:
        check_outputs(source, [out, *pngs])
    except (ValueError, SessionFormatError) as e:
        raise UsageError(str(e)) from None
    figures = [session_figure(s) for s in sessions]
    svgs = [to_svg(f, salt=s.session) for f, s in zip(figures, sessions, strict=True)]
    page = render_report(sessions, source.name, svgs)
    try:
        _write(out, lambda p: p.write_text(page, encoding="utf-8"))
        for f, p in zip(figures if pngs else [], pngs, strict=True):
            _write(p, functools.partial(to_png, f))
    except OSError as e:
        raise UsageError(f"cannot write the report: {e.strerror or e} ({e.filename or out})") from None
    summary = ", ".join(f"{s.session}: {len(s.emotions)} utterances, {len(s.shifts)} shifts" for s in sessions)
    print(f"{summary} -> " + " ".join(str(p) for p in [out, *pngs]))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "report", help="a finished session's events -> a self-contained HTML report (and PNG)",
        description="Turn a finished session into a report: per-speaker timeline (valence, arousal, the\n"
                    "emotion of each utterance, shift markers), each speaker's emotion distribution, summary\n"
                    "figures and the labelled transcript. One HTML file with inline SVG, no script, nothing\n"
                    "loaded from anywhere.",
        epilog="examples:\n  python live.py --replay examples/demo --speed 0 --no-tui --record runs/demo\n"
               "  pcgnet report runs/demo --out runs/demo.html --png runs/demo.png\n"
               "  pcgnet report events.jsonl --out report.html      (an --events log; one section per session)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SESSION_DIR|EVENTS.jsonl",
                   help="a recorded session folder (live.py --record), a folder of them, or an --events log")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the HTML report to write")
    p.add_argument("--png", metavar="FILE.png", help="also write the figure as PNG (FILE.<session>.png when "
                                                     "there are several sessions)")
    p.add_argument("--session", metavar="ID", help="only this session (default: every session found)")
    p.set_defaults(func=run_report)

