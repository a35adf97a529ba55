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
import html
import logging
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .events import expression_name
from .record import SessionFormatError, read_jsonl
from .web.palette import colour_of

log = logging.getLogger(__name__)

# what a report needs of each event type (docs/events.md); an event lacking any of it is skipped and counted
STRINGS = {"emotion": ("utterance_id", "speaker", "expression"), "shift": ("utterance_id", "speaker", "from", "to")}
NUMBERS = {"emotion": ("t_start", "t_end", "confidence", "valence", "arousal"), "shift": ("t_end",)}


@dataclass
class SessionEvents:
    """One session's events, deduplicated by event id, in utterance order."""

    session: str
    emotions: list[dict[str, Any]] = field(default_factory=list)
    shifts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    reference: dict[str, str] = field(default_factory=dict)
    """utterance id -> reference expression (a recording's gold labels), when known."""

    @property
    def speakers(self) -> list[str]:
        return list(dict.fromkeys(e["speaker"] for e in self.emotions))


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


def _valid(obj: dict[str, Any]) -> bool:
    kind = str(obj.get("type"))
    return (all(isinstance(obj.get(k), str) for k in STRINGS.get(kind, ()))
            and all(isinstance(obj.get(k), int | float) and not isinstance(obj.get(k), bool)
                    and math.isfinite(obj[k]) for k in NUMBERS.get(kind, ())))


def _group(objs: list[dict[str, Any]], where: Path) -> dict[str, SessionEvents]:
    sessions: dict[str, SessionEvents] = {}
    seen: set[str] = set()
    bad = 0
    for o in objs:
        kind = o.get("type")
        if kind not in ("emotion", "shift", "error"):
            continue  # speaker state and status records add nothing a report shows
        if not _valid(o):
            bad += 1
            continue
        eid = str(o.get("event_id") or "")
        if eid and kind != "error":
            if eid in seen:  # an appended log holding the same replay twice
                continue
            seen.add(eid)
        s = sessions.setdefault(str(o.get("session") or "-"), SessionEvents(str(o.get("session") or "-")))
        {"emotion": s.emotions, "shift": s.shifts, "error": s.errors}[kind].append(o)
    if bad:
        print(f"pcgnet report: warning: {where}: skipped {bad} event(s) with missing or invalid fields", file=sys.stderr)
    for s in sessions.values():
        s.emotions.sort(key=lambda e: (e.get("index", 0), e["t_end"]))
        s.shifts.sort(key=lambda e: e["t_end"])
    return sessions


def _reference(folder: Path) -> dict[str, str]:
    utts = folder / "utterances.jsonl"
    if not utts.is_file():
        return {}
    try:
        rows = read_jsonl(utts)
    except SessionFormatError as e:
        log.warning("%s; reference labels not shown", e)
        return {}
    return {str(r["utterance_id"]): expression_name(str(r["emotion"])) for r in rows
            if isinstance(r.get("emotion"), str) and "utterance_id" in r}


def load_sessions(path: Path) -> list[SessionEvents]:
    """Sessions of an events log, a recorded session folder, or a folder of recorded session folders."""
    files: list[tuple[Path, Path | None]]
    if path.is_file():
        files = [(path, None)]
    elif path.is_dir():
        if (path / "events.jsonl").is_file():
            files = [(path / "events.jsonl", path)]
        else:
            files = [(d / "events.jsonl", d) for d in sorted(path.iterdir()) if (d / "events.jsonl").is_file()]
        if not files:
            raise SessionFormatError(
                f"{path}: no events.jsonl here or in its subfolders (a folder recorded with live.py --record "
                f"has one; or write a log with live.py --events FILE and pass that file)")
    else:
        raise SessionFormatError(f"{path}: no such file or folder")
    out: list[SessionEvents] = []
    for file, folder in files:
        for s in _group(read_jsonl(file), file).values():
            if folder is not None:
                s.reference = _reference(folder)
            out.append(s)
    out = [s for s in out if s.emotions]
    if not out:
        raise SessionFormatError(f"{path}: no emotion events to report on")
    return out


def summarise(s: SessionEvents) -> list[SpeakerSummary]:
    rows = []
    for spk in s.speakers:
        es = [e for e in s.emotions if e["speaker"] == spk]
        rows.append(SpeakerSummary(
            spk, len(es), sum(1 for x in s.shifts if x["speaker"] == spk),
            dict(collections.Counter(e["expression"] for e in es).most_common()),
            statistics.fmean(e["valence"] for e in es), statistics.fmean(e["arousal"] for e in es),
            statistics.fmean(e["confidence"] for e in es)))
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
    rows = summarise(s)
    overall = collections.Counter(e["expression"] for e in s.emotions)
    duration = max(e["t_end"] for e in s.emotions)
    figs = [("utterances", len(s.emotions)), ("speakers", len(rows)), ("duration", clock(duration)),
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
    for r in rows:
        share = r.counts[r.dominant] / r.utterances
        out.append(f'<tr class="speaker"><td><b>{_e(r.speaker)}</b></td><td class="n">{r.utterances}</td>'
                   f'<td class="n">{r.shifts}</td><td>{_chip(r.dominant)} {share:.0%}</td>'
                   f'<td class="n">{r.mean_valence:+.2f}</td><td class="n">{r.mean_arousal:+.2f}</td>'
                   f'<td class="n">{r.mean_confidence:.2f}</td><td>{_dist(r.counts)}</td></tr>')
    out.append(f'</table><h2>Timeline per speaker</h2><div class="chart">{svg}</div>')
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
    from .mqtt.topics import topic_level
    return [png.with_name(f"{png.stem}.{topic_level(s.session)}{png.suffix or '.png'}") for s in sessions]


def run_report(args: argparse.Namespace) -> int:
    from pcgnet.cli import UsageError

    from .report_figure import session_figure, to_png, to_svg

    try:
        sessions = load_sessions(Path(args.source))
    except SessionFormatError as e:
        raise UsageError(str(e)) from None
    if args.session:
        sessions = [s for s in sessions if s.session == args.session]
        if not sessions:
            raise UsageError(f"{args.source}: no session {args.session!r}")
    figures = [session_figure(s) for s in sessions]
    svgs = [to_svg(f, salt=s.session) for f, s in zip(figures, sessions, strict=True)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(sessions, Path(args.source).name, svgs), encoding="utf-8")
    written = [out]
    if args.png:
        for f, p in zip(figures, png_paths(Path(args.png), sessions), strict=True):
            p.parent.mkdir(parents=True, exist_ok=True)
            to_png(f, p)
            written.append(p)
    summary = ", ".join(f"{s.session}: {len(s.emotions)} utterances, {len(s.shifts)} shifts" for s in sessions)
    print(f"{summary} -> " + " ".join(str(p) for p in written))
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

