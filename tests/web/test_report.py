"""``pcgnet report`` on what ``live.py`` really wrote (a recorded session folder, a ``--record`` folder of
two sessions, an ``--events`` log), on hostile input, and the report rendered in chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prepare.cli import main as pcgnet_main
from stream.events import expression_name

from .conftest import DEMO, ROOT, docs_image

pytestmark = pytest.mark.slow


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two concurrent replays of the demo with the shipped model: ``rec/<session>/`` and ``events.jsonl``."""
    root = tmp_path_factory.mktemp("recorded")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, str(ROOT / "live.py"), "--replay", str(DEMO), "--replay", str(DEMO), "--speed",
                    "0", "--no-tui", "--record", str(root / "rec"), "--events", str(root / "events.jsonl")],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    return root


def test_report_of_a_recorded_session_matches_its_events(recorded: Path, tmp_path: Path, browser: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from playwright.sync_api import expect

    folder = recorded / "rec" / "demo"
    out, png = tmp_path / "report.html", tmp_path / "report.png"
    assert pcgnet_main(["report", str(folder), "--out", str(out), "--png", str(png)]) == 0
    assert "demo: 11 utterances" in capsys.readouterr().out
    events = read_jsonl(folder / "events.jsonl")
    emotions = [e for e in events if e["type"] == "emotion"]
    shifts = [e for e in events if e["type"] == "shift"]
    speakers = list(dict.fromkeys(e["speaker"] for e in emotions))
    gold = {u["utterance_id"]: expression_name(u["emotion"]) for u in read_jsonl(folder / "utterances.jsonl")}
    agree = sum(gold[e["utterance_id"]] == e["expression"] for e in emotions)

    text = out.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    # nothing loaded from anywhere: links only to fragments (SVG clip paths) or data: URIs
    assert not re.search(r'(?:src|href)\s*=\s*"(?!#|data:)', text) and "@import" not in text and "url(http" not in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 30_000

    page = browser.new_page(viewport={"width": 1240, "height": 900})
    page.goto(out.as_uri())
    expect(page.locator("section.session")).to_have_count(1)
    assert page.locator("tr.utt td.text").all_inner_texts() == [e["text"] for e in emotions]
    assert page.locator("tr.utt .chip").all_inner_texts() == [e["expression"] for e in emotions]
    expect(page.locator("tr.shift")).to_have_count(len(shifts))
    rows = page.locator("tr.speaker")
    expect(rows).to_have_count(len(speakers))
    for i, spk in enumerate(speakers):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert cells[:3] == [spk, str(sum(e["speaker"] == spk for e in emotions)),
                             str(sum(s["speaker"] == spk for s in shifts))]
    figs = page.locator(".fig").all_inner_texts()
    assert f"{len(emotions)}\nutterances" in figs and f"{len(shifts)}\nemotion shifts" in figs
    assert f"{agree} / {len(gold)}\nagree with reference" in figs
    svg = page.locator(".chart svg")
    expect(svg).to_have_count(1)
    for spk in speakers:  # one timeline per speaker, titled with the name (text kept as SVG text)
        expect(svg.locator("text", has_text=spk).first).to_be_visible()
    assert sorted(svg.locator("text", has_text="▼").all_text_contents()) == sorted(  # one marker per shift
        f"▼ {x['to']}" for x in shifts)
    shot = docs_image("report.png", tmp_path)
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    assert shot.stat().st_size > 20_000


def test_record_folder_of_several_sessions_and_events_log(recorded: Path, tmp_path: Path) -> None:
    log = read_jsonl(recorded / "events.jsonl")
    sessions = list(dict.fromkeys(e["session"] for e in log if e["type"] == "emotion"))
    assert sessions == ["demo", "demo#2"]
    out, png = tmp_path / "all.html", tmp_path / "all.png"
    assert pcgnet_main(["report", str(recorded / "rec"), "--out", str(out), "--png", str(png)]) == 0
    assert out.read_text(encoding="utf-8").count('<section class="session"') == 2
    assert sorted(p.name for p in tmp_path.glob("all.*.png")) == ["all.demo%232.png", "all.demo.png"]
    assert pcgnet_main(["report", str(recorded / "events.jsonl"), "--out", str(out), "--session", "demo#2"]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.count('<section class="session"') == 1 and 'data-session="demo#2"' in text
    n = sum(e["type"] == "emotion" and e["session"] == "demo#2" for e in log)
    assert text.count('<tr class="utt"') == n


def _emotion(i: int, speaker: str, text: str, expr: str) -> dict[str, Any]:
    return {"type": "emotion", "event_id": f"e{i}", "session": "<b>s</b>", "utterance_id": f"u{i}",
            "speaker": speaker, "t_start": i * 2.0, "t_end": i * 2.0 + 1.5, "index": i, "text": text,
            "expression": expr, "confidence": 0.7, "valence": 0.1 * i, "arousal": -0.1 * i, "latency_ms": 20.0}


def test_hostile_events_are_escaped_and_bad_lines_are_one_clear_error(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    evil = "<script>alert(1)</script>$x^2$"
    objs = [_emotion(0, evil, "</td></tr><script>alert(2)</script>", "anger"),
            _emotion(1, "Bob", "fine", "$\\frac{1}{0}$"),
            _emotion(2, evil, "calm", "neutral"),
            {"type": "shift", "event_id": "s2", "session": "<b>s</b>", "utterance_id": "u2", "speaker": evil,
             "t_start": 4.0, "t_end": 5.5, "from": "anger", "to": "neutral", "previous_utterance_id": "u0",
             "probability": 0.8}]  # events with missing or invalid fields: tests/web/test_report_inputs.py
    log = tmp_path / "events.jsonl"
    log.write_text("\n".join(json.dumps(o) for o in objs) + '\n{"type": "emo', encoding="utf-8")  # torn last line
    out = tmp_path / "r.html"
    assert pcgnet_main(["report", str(log), "--out", str(out), "--png", str(tmp_path / "r.png")]) == 0
    capsys.readouterr()
    text = out.read_text(encoding="utf-8")
    assert "<script" not in text.lower() and "<b>s</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;$x^2$" in text and "&lt;b&gt;s&lt;/b&gt;" in text
    assert text.count('<tr class="utt"') == 3 and text.count('<tr class="shift"') == 1

    log.write_text(json.dumps(objs[0]) + "\nnot json\n" + json.dumps(objs[1]) + "\n", encoding="utf-8")
    assert pcgnet_main(["report", str(log), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pcgnet report: error:") and f"{log}:2" in err[0]


def test_a_folder_without_events_says_how_to_get_them(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert pcgnet_main(["report", str(DEMO), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no events.jsonl" in err[0] and "--record" in err[0]
    assert not (tmp_path / "x.html").exists()
