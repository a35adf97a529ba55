"""``pcgnet report`` on hostile event logs and output paths: every field it reads is validated (one line
naming the file, the line and the field; exit 2; nothing written), and no output may overwrite an input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prepare.cli import main as pcgnet_main


def emotion(i: int, **fields: Any) -> dict[str, Any]:
    return {"type": "emotion", "event_id": f"e{i}", "session": "s", "utterance_id": f"u{i}", "speaker": "Ann",
            "t_start": 2.0 * i, "t_end": 2.0 * i + 1.5, "index": i, "text": "hi", "expression": "anger",
            "confidence": 0.7, "valence": -0.5, "arousal": 0.4, "latency_ms": 20.0, **fields}


def shift(i: int, **fields: Any) -> dict[str, Any]:
    return {"type": "shift", "event_id": f"x{i}", "session": "s", "utterance_id": f"u{i}", "speaker": "Ann",
            "t_end": 2.0 * i + 1.5, "from": "neutral", "to": "anger", "previous_utterance_id": "u0",
            "probability": 0.8, **fields}


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("index of another type than the others", emotion(2, index="2"), "'index'"),
    ("index a list", emotion(2, index=[2]), "'index'"),
    ("index beyond 2**53", emotion(2, index=10**30), "'index'"),
    ("negative index", emotion(2, index=-1), "'index'"),
    ("probability a string", shift(2, probability="0.8"), "'probability'"),
    ("probability above 1", shift(2, probability=1.5), "'probability'"),
    ("huge integer t_end", emotion(2, t_end=10**400), "'t_end'"),
    ("huge integer t_end of a shift", shift(2, t_end=10**400), "'t_end'"),
    ("huge integer latency_ms", emotion(2, latency_ms=10**400), "'latency_ms'"),
    ("infinite t_end", emotion(2, t_end=float("inf")), "'t_end'"),
    ("NaN confidence", emotion(2, confidence=float("nan")), "'confidence'"),
    ("negative t_start", emotion(2, t_start=-1.0), "'t_start'"),
    ("t_start after t_end", emotion(2, t_start=99.0), "'t_start'"),
    ("confidence above 1", emotion(2, confidence=1.5), "'confidence'"),
    ("valence a boolean", emotion(2, valence=True), "'valence'"),
    ("arousal a string", emotion(2, arousal="high"), "'arousal'"),
    ("missing t_end", {k: v for k, v in emotion(2).items() if k != "t_end"}, "'t_end'"),
    ("missing speaker", {k: v for k, v in emotion(2).items() if k != "speaker"}, "'speaker'"),
    ("speaker a number", emotion(2, speaker=7), "'speaker'"),
    ("empty expression", emotion(2, expression=""), "'expression'"),
    ("huge speaker name", emotion(2, speaker="x" * 200_000), "'speaker'"),
    ("session an object", emotion(2, session={"a": 1}), "'session'"),
    ("event_id a number", emotion(2, event_id=5), "'event_id'"),
    ("text a number", emotion(2, text=5), "'text'"),
    ("shift 'to' null", shift(2, to=None), "'to'"),
    ("error message a list", {"type": "error", "session": "s", "message": ["x"]}, "'message'"),
]


@pytest.mark.parametrize("bad,field", [(h[1], h[2]) for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_field_is_one_clear_error_naming_line_and_field(
        bad: dict[str, Any], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text(json.dumps(emotion(0)) + "\n\n" + json.dumps(emotion(1)) + "\n" + json.dumps(bad) + "\n"
                   + json.dumps(emotion(3)) + "\n", encoding="utf-8")  # the bad event is on line 4
    out = tmp_path / "r.html"
    assert pcgnet_main(["report", str(log), "--out", str(out), "--png", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pcgnet report: error:"), err
    assert f"{log}:4:" in err[0] and field in err[0] and len(err[0]) < 400, err[0]
    assert not out.exists() and not (tmp_path / "r.png").exists()


def test_valid_optional_fields_and_ints_where_numbers_go_are_accepted(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    objs = [emotion(0, t_start=0, t_end=2, latency_ms=None, text=None), emotion(1, index=None),
            shift(1, probability=None), {"type": "error", "session": "s", "message": "m", "category": None},
            {"type": "speaker", "session": "s", "speaker": {"whatever": 1}}]  # types a report does not read
    log.write_text("\n".join(json.dumps(o) for o in objs) + "\n", encoding="utf-8")
    assert pcgnet_main(["report", str(log), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text(encoding="utf-8").count('<tr class="utt"') == 2


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "events.jsonl").write_text("\n".join(json.dumps(emotion(i)) for i in range(3)) + "\n", encoding="utf-8")
    (folder / "utterances.jsonl").write_text(json.dumps({"utterance_id": "u0", "emotion": "anger"}) + "\n",
                                             encoding="utf-8")
    return folder


def _outputs(folder: Path) -> list[tuple[str, list[str], str]]:
    events = folder / "events.jsonl"
    (folder.parent / "a-file").write_text("x", encoding="utf-8")
    return [
        ("--out is the events log", ["--out", str(events)], "is an input"),
        ("--out is the log, spelled another way", ["--out", str(folder / ".." / folder.name / "events.jsonl")],
         "is an input"),
        ("--out is the reference labels", ["--out", str(folder / "utterances.jsonl")], "is an input"),
        ("--png is the events log", ["--out", str(folder / "r.html"), "--png", str(events)], "is an input"),
        ("--out is a folder", ["--out", str(folder)], "is a folder"),
        ("--out under a file", ["--out", str(folder.parent / "a-file" / "r.html")], "cannot create its folder"),
        ("--out and --png the same", ["--out", str(folder / "r.x"), "--png", str(folder / "r.x")], "given twice"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_an_output_that_would_overwrite_an_input_or_cannot_be_written_is_refused(
        case: int, recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, flags, message = _outputs(recorded)[case]
    before = {p.name: p.read_bytes() for p in recorded.iterdir() if p.is_file()}
    assert pcgnet_main(["report", str(recorded), *flags]) == 2, name
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], (name, err)
    assert {p.name: p.read_bytes() for p in recorded.iterdir() if p.is_file()} == before, name


def test_the_events_log_itself_as_out_is_refused_and_left_intact(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "ev.jsonl"
    log.write_text(json.dumps(emotion(0)) + "\n", encoding="utf-8")
    before = log.read_bytes()
    assert pcgnet_main(["report", str(log), "--out", str(log)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert log.read_bytes() == before
    (tmp_path / "link.html").symlink_to(log)
    assert pcgnet_main(["report", str(log), "--out", str(tmp_path / "link.html")]) == 2
    assert log.read_bytes() == before


def test_many_speakers_chart_the_top_ones_and_summarise_the_rest(tmp_path: Path) -> None:
    """50 speakers: speaker k has 51-k utterances, so the top ones are known; the measured scale (1,000
    speakers, 100k events) is benchmarks/report_scale.py."""
    objs, i = [], 0
    for k in range(50):
        for _ in range(51 - k):
            objs.append(emotion(i, speaker=f"spk{k:02d}", t_start=float(i), t_end=i + 0.5))
            i += 1
    log = tmp_path / "events.jsonl"
    log.write_text("\n".join(json.dumps(o) for o in objs) + "\n", encoding="utf-8")
    assert pcgnet_main(["report", str(log), "--out", str(tmp_path / "r.html")]) == 0
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert text.count('<tr class="speaker">') == 40 and text.count('<tr class="speaker-others">') == 1
    assert "10 other speakers" in text and "spk39" in text and "spk40" not in text.split("<h2>Transcript")[0]
    assert "Timelines of the 8 speakers with most utterances (of 50)" in text
    svg = text[text.index("<svg"):text.index("</svg>")]
    assert all(f"spk{k:02d}" in svg for k in range(8)) and "spk08" not in svg and "42 other speakers" in svg
    assert text.count('<tr class="utt"') == len(objs)  # the transcript keeps every utterance


def test_thin_keeps_a_bounded_even_spread_and_the_last_item() -> None:
    from stream.report_figure import thin

    assert thin(list(range(10)), 20) == list(range(10))
    for n, limit in ((10_001, 1500), (100_000, 1500), (1501, 1500), (7, 3)):
        out = thin(list(range(n)), limit)
        assert len(out) <= limit + 1 and out[0] == 0 and out[-1] == n - 1 and out == sorted(set(out))
