"""No event without evidence: a text-only checkpoint given utterances without words (``--asr none``, a segment the
recogniser left empty or gave a lone ".") emits no emotion, shift or speaker event for them, and the shift rule
compares the next worded utterance with the speaker's last worded one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from stream.evidence import has_evidence, usable_modalities
from stream.frames import Utterance

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"


def test_predicate() -> None:
    assert not has_evidence(None, ())
    assert not has_evidence("", ())  # the feature service filled nothing
    assert not has_evidence(" . ", ("t",))  # a recogniser's lone full stop is no words
    assert has_evidence("ok", ("t",))
    assert has_evidence(None, ("a",)) and has_evidence("", ("a", "v"))  # audio/face evidence stands alone
    assert usable_modalities("...", ("t", "a")) == ("a",)
    assert usable_modalities("Oh no!", ("t", "v")) == ("t", "v")
    assert has_evidence("\U0001f602", ("t",)) and not has_evidence("?! \u2026", ("t",))  # an emoji says something


TURNS = [("A", "I am so happy today, this is the best news ever!"), ("A", None), ("B", "What happened?"),
         ("A", " . "), ("A", ""), ("B", None), ("A", "Now I am furious, they cancelled everything."),
         ("B", "That is terrible, I am really sorry.")]


def test_utterances_without_words_give_no_event_and_no_shift(make_runtime, tmp_path: Path) -> None:
    from stream.sinks.jsonl import JsonlSink

    log = tmp_path / "ev.jsonl"

    class Turns:
        name = "turns"

        async def run(self, sink: Any) -> None:
            for i, (spk, text) in enumerate(TURNS):
                await sink.submit(Utterance(session_id="s", utterance_id=f"u{i}", speaker=spk, t_start=float(i),
                                            t_end=i + 0.9, text=text))
            sink.end_session("s")

    async def main() -> Any:
        rt = make_runtime([JsonlSink(log)])
        rt.add_source(Turns(), finite=True)
        assert await rt.run() == 0
        return rt

    rt = asyncio.run(main())
    events = [json.loads(x) for x in log.read_text().splitlines()]
    worded = {f"u{i}" for i, (_, t) in enumerate(TURNS) if t and t.strip(" .")}
    assert {e["utterance_id"] for e in events if e["type"] == "emotion"} == worded
    for e in events:
        if e["type"] == "shift":  # a shift only between two worded utterances of one speaker
            assert e["utterance_id"] in worded and e["previous_utterance_id"] in worded, e
        if e["type"] == "shift" and e["utterance_id"] == "u6":
            assert e["previous_utterance_id"] == "u0", e
    assert all(e["modalities"] == ["text"] for e in events if e["type"] == "emotion")
    assert rt.tallies["s"].utterances == len(TURNS) and rt.tallies["s"].no_event == len(TURNS) - len(worded)


@pytest.mark.slow
def test_live_audio_without_asr_on_a_text_model_says_so_instead_of_inventing(tiny_checkpoint: Path, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    """``live.py --audio --asr none`` with a text-only model: utterances are found and counted, none is given an
    emotion or shift (once: "neutral -> anger, p=0.83" from nothing); exit 0 and the summary says why."""
    from stream.app import main

    ev = tmp_path / "ev.jsonl"
    rc = main(["--audio", str(DEMO / "audio.wav"), "--speed", "0", "--no-tui", "--asr", "none", "--vad", "energy",
               "--speaker", "Mic", "--checkpoint", str(tiny_checkpoint), "--events", str(ev)])
    err = capsys.readouterr().err
    assert rc == 0, err
    kinds = [json.loads(x)["type"] for x in ev.read_text().splitlines()] if ev.exists() else []
    assert "emotion" not in kinds and "shift" not in kinds, kinds
    done = [line for line in err.splitlines() if line.startswith("live.py: done: audio.wav: ")]
    assert done == ["live.py: done: audio.wav: 11 utterance(s) (11 without usable evidence for the model: no "
                    f"event), 1 speaker(s), {done[0].split(', ')[-2]}, 0 error(s)"], err
