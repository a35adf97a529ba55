"""What ``pcgnet report`` reads: the events of a recorded session folder, a folder of them, or an
``--events`` log, every field it uses validated against the event contract (docs/schemas/v1/).

An event log may come from anywhere, so a field of the wrong type or out of range is an error naming the
file, the line and the field (``SessionFormatError``; the command exits 2), never a traceback or a
silently different report. Numbers are stored back as floats, so rendering never converts again.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .events import expression_name
from .record import SessionFormatError, read_jsonl

log = logging.getLogger(__name__)

MAX_TIME_S = 1e7
"""~115 days: a larger session time is a unit mistake (the same bound as MQTT input)."""
MAX_LATENCY_MS = 1e9
MAX_INDEX = 2**53
MAX_STRING = 100_000

STRINGS = {"emotion": ("utterance_id", "speaker", "expression"), "shift": ("utterance_id", "speaker", "from", "to")}
"""Required, non-empty strings per event type (what a report shows)."""
OPTIONAL_STRINGS = {"emotion": ("text",), "shift": ("previous_utterance_id",), "error": ("category", "message", "stage")}
NUMBERS: dict[str, tuple[tuple[str, float, float, bool], ...]] = {
    # (field, minimum, maximum, required)
    "emotion": (("t_start", 0.0, MAX_TIME_S, True), ("t_end", 0.0, MAX_TIME_S, True), ("confidence", 0.0, 1.0, True),
                ("valence", -1.0, 1.0, True), ("arousal", -1.0, 1.0, True),
                ("latency_ms", 0.0, MAX_LATENCY_MS, False)),
    "shift": (("t_end", 0.0, MAX_TIME_S, True), ("probability", 0.0, 1.0, False),
              ("latency_ms", 0.0, MAX_LATENCY_MS, False)),
}


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
        return list(self.by_speaker)

    @functools.cached_property
    def by_speaker(self) -> dict[str, list[dict[str, Any]]]:
        """Each speaker's emotions, speakers in order of appearance (grouped once: reports of 1,000 speakers)."""
        return _by_speaker(self.emotions)

    @functools.cached_property
    def shifts_by_speaker(self) -> dict[str, list[dict[str, Any]]]:
        return _by_speaker(self.shifts)

    def top_speakers(self, n: int) -> list[str]:
        """The ``n`` speakers with most utterances (ties: first to speak), in order of appearance."""
        order = {spk: k for k, spk in enumerate(self.by_speaker)}
        top = sorted(self.by_speaker, key=lambda spk: (-len(self.by_speaker[spk]), order[spk]))[:n]
        return sorted(top, key=order.__getitem__)


def _by_speaker(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["speaker"], []).append(e)
    return out


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _number(obj: dict[str, Any], name: str, low: float, high: float) -> float:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {_type_name(value)}")
    try:
        x = float(value)
    except OverflowError:
        raise ValueError("is a number out of range") from None
    if not math.isfinite(x) or not low <= x <= high:
        raise ValueError(f"must be within {low:g}..{high:g}, got {x:.6g}")
    return x


def _check_strings(obj: dict[str, Any], kind: str) -> None:
    for name in ("session", "event_id"):
        if name in obj and not isinstance(obj[name], str):
            raise ValueError(f"field {name!r} must be a string, got {_type_name(obj[name])}")
    for name in STRINGS.get(kind, ()):
        value = obj.get(name)
        if not isinstance(value, str) or not value or len(value) > MAX_STRING:
            got = ("missing" if name not in obj else f"got {len(value)} characters" if isinstance(value, str)
                   else f"got {_type_name(value)}")
            raise ValueError(f"field {name!r} must be a non-empty string of at most {MAX_STRING} characters "
                             f"({got})")
    for name in OPTIONAL_STRINGS.get(kind, ()):
        value = obj.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_STRING):
            raise ValueError(f"field {name!r} must be a string or null, got {_type_name(value)}")


def _check_numbers(obj: dict[str, Any], kind: str) -> None:
    for name, low, high, required in NUMBERS.get(kind, ()):
        if obj.get(name) is None:
            if required:
                raise ValueError(f"field {name!r} is missing")
            continue
        try:
            obj[name] = _number(obj, name, low, high)
        except ValueError as e:
            raise ValueError(f"field {name!r} {e}") from None
    if kind == "emotion":
        index = obj.get("index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)
                                  or not 0 <= index < MAX_INDEX):
            raise ValueError(f"field 'index' must be an integer from 0 to 2**53, got {_type_name(index)}")
        if obj["t_start"] > obj["t_end"]:
            raise ValueError(f"field 't_start' ({obj['t_start']:g}) is after 't_end' ({obj['t_end']:g})")


def _check(obj: dict[str, Any]) -> None:
    """Validates (and normalises) the fields a report reads of one event; ValueError names the field."""
    kind = obj["type"]
    _check_strings(obj, kind)
    _check_numbers(obj, kind)


def _line_numbers(path: Path) -> list[int]:
    """The line of each object read_jsonl returns (it skips blank lines)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        return [no for no, ln in enumerate(f, 1) if ln.strip()]


def group_events(objs: list[dict[str, Any]], where: Path) -> dict[str, SessionEvents]:
    """Validated emotion, shift and error events by session (``objs`` as read_jsonl read them from ``where``);
    SessionFormatError names the first bad field and its line."""
    sessions: dict[str, SessionEvents] = {}
    seen: set[str] = set()
    for k, o in enumerate(objs):
        kind = o.get("type")
        if kind not in ("emotion", "shift", "error"):
            continue  # speaker state and status records add nothing a report shows
        try:
            _check(o)
        except ValueError as e:
            lines = _line_numbers(where)  # read again only to name the line of a bad event
            line = lines[k] if k < len(lines) else k + 1
            raise SessionFormatError(f"{where}:{line}: {kind} event: {e}") from None
        eid = o.get("event_id") or ""
        if eid and kind != "error":
            if eid in seen:  # an appended log holding the same replay twice
                continue
            seen.add(eid)
        sid = o.get("session") or "-"
        s = sessions.setdefault(sid, SessionEvents(sid))
        {"emotion": s.emotions, "shift": s.shifts, "error": s.errors}[kind].append(o)
    for s in sessions.values():
        s.emotions.sort(key=lambda e: (e.get("index") or 0, e["t_end"]))
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
    return {r["utterance_id"]: expression_name(r["emotion"]) for r in rows
            if isinstance(r.get("emotion"), str) and isinstance(r.get("utterance_id"), str)}


def input_files(path: Path) -> list[tuple[Path, Path | None]]:
    """(events file, its recorded session folder or None) for a log, a session folder or a folder of them."""
    if path.is_file():
        return [(path, None)]
    if path.is_dir():
        if (path / "events.jsonl").is_file():
            return [(path / "events.jsonl", path)]
        files: list[tuple[Path, Path | None]] = [(d / "events.jsonl", d) for d in sorted(path.iterdir()) if (d / "events.jsonl").is_file()]
        if not files:
            raise SessionFormatError(
                f"{path}: no events.jsonl here or in its subfolders (a folder recorded with live.py --record "
                f"has one; or write a log with live.py --events FILE and pass that file)")
        return files
    raise SessionFormatError(f"{path}: no such file or folder")


def load_sessions(path: Path) -> list[SessionEvents]:
    """Sessions of an events log, a recorded session folder, or a folder of recorded session folders."""
    out: list[SessionEvents] = []
    for file, folder in input_files(path):
        sessions = group_events(read_jsonl(file), file).values()
        reference = _reference(folder) if folder is not None and sessions else {}
        for s in sessions:
            s.reference = reference
            out.append(s)
    out = [s for s in out if s.emotions]
    if not out:
        raise SessionFormatError(f"{path}: no emotion events to report on")
    return out
