#!/usr/bin/env python3
"""How well the audio path hears voiced MELD dialogues: ASR choice, then the whole ``live.py --audio`` path.

Input: session folders from ``python -m tests.voicing --split dev --dialogues 24 --out runs/voiced/dev``
(espeak-ng, one voice per speaker, gold text/speakers/emotions/times). Two stages:

* ``--stage asr``: each ASR configuration (:data:`ASR_CONFIGS`: model, beam, encoder window, prompt, ...) on
  the gold segments, or with ``--segments vad`` on silero's segments as the live path cuts them (one call per
  clip, in dialogue order, as the live path calls it): WER of each dialogue's text, wall time per call
  (p50/p95) and CPU time per call. Hypotheses are kept in ``--work``/asr.json. This is what picked the default.
* ``--stage path``: ``live.py --audio`` on every dialogue's audio.wav (speed 0, a real subprocess, the real
  model) per ``--asr`` choice, next to ``live.py --replay`` of the same folders (gold text and speakers):
  WER of each dialogue's recognised text against its gold text, emotion W-F1 (each gold utterance takes the
  prediction of the audio utterance overlapping it most; none = counted wrong), and same-speaker pair
  accuracy (for each audio utterance, its previous utterance with the same diarised name: are both really
  one person?).

WER is printed twice, both sides normalised alike: "raw" (:func:`extractors.asr.normalize_words`: lower case,
no punctuation) and "wh." (Whisper's English normaliser first: contractions, numbers, fillers, spellings).

    python benchmarks/audio_eval.py --sessions runs/voiced/dev --stage asr --configs "base beam 5 window +10s"
    python benchmarks/audio_eval.py --sessions runs/voiced/dev --stage asr --segments vad --configs "base beam 5"
    python benchmarks/audio_eval.py --sessions runs/voiced/dev --stage path --asr auto,whisper-tiny.en

Results (and each run's events) are kept in ``--work`` (default runs/audio_eval), so a rerun skips finished
parts. CPU-heavy: run it with ``nice``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = {"beam_size": 1, "window_s": None}  # each configuration is explicit: greedy on the 30 s window unless said


def _c(spec: str, prompt: bool = False, **options: Any) -> tuple[str, dict[str, Any], bool]:
    return spec, ({**FULL, **options} if spec.startswith("whisper-") else options), prompt


ASR_CONFIGS: dict[str, tuple[str, dict[str, Any], bool]] = {  # name -> (spec, options, prompt previous)
    "tiny.en greedy": _c("whisper-tiny.en"),
    "tiny.en greedy + prompt": _c("whisper-tiny.en", True),
    "tiny.en beam 5": _c("whisper-tiny.en", beam_size=5),
    "tiny.en greedy + word timestamps": _c("whisper-tiny.en", word_timestamps=True),
    "tiny.en greedy + timestamps": _c("whisper-tiny.en", timestamps=True),
    "tiny.en greedy no-fallback": _c("whisper-tiny.en", temperature_fallback=False),
    "tiny.en greedy keep-no-speech": _c("whisper-tiny.en", no_speech_threshold=None),
    "tiny.en beam 5 + prompt": _c("whisper-tiny.en", True, beam_size=5),
    "base greedy": _c("whisper-base"),
    "base greedy + prompt": _c("whisper-base", True),
    "base beam 2": _c("whisper-base", beam_size=2),
    "base beam 3": _c("whisper-base", beam_size=3),
    "base beam 5": _c("whisper-base", beam_size=5),
    "base greedy no-fallback": _c("whisper-base", temperature_fallback=False),
    "base greedy keep-no-speech": _c("whisper-base", no_speech_threshold=None),
    "tiny.en beam 5 float32": _c("whisper-tiny.en", beam_size=5, compute_type="float32"),
    "base greedy float32": _c("whisper-base", compute_type="float32"),
    "base beam 5 float32": _c("whisper-base", beam_size=5, compute_type="float32"),
    "base beam 5 + prompt": _c("whisper-base", True, beam_size=5),
    "tiny.en beam 5 window +2s": _c("whisper-tiny.en", beam_size=5, window_s=2.0),
    "tiny.en beam 5 window +5s": _c("whisper-tiny.en", beam_size=5, window_s=5.0),
    "base beam 5 window +2s": _c("whisper-base", beam_size=5, window_s=2.0),
    "base beam 5 window +5s": _c("whisper-base", beam_size=5, window_s=5.0),
    "base beam 5 window +10s": _c("whisper-base", beam_size=5, window_s=10.0),
    "base beam 5 window +15s": _c("whisper-base", beam_size=5, window_s=15.0),
    "base beam 5 window +20s": _c("whisper-base", beam_size=5, window_s=20.0),
    "base beam 5 window +10s + prompt": _c("whisper-base", True, beam_size=5, window_s=10.0),
    "base beam 5 window +10s no-fallback": _c("whisper-base", beam_size=5, window_s=10.0, temperature_fallback=False),
    "base beam 5 window +10s keep-no-speech": _c("whisper-base", beam_size=5, window_s=10.0, no_speech_threshold=None),
    "base greedy window +10s": _c("whisper-base", window_s=10.0),
    "base greedy window +5s": _c("whisper-base", window_s=5.0),
    "pocketsphinx": _c("pocketsphinx"),
}


def load_sessions(root: Path) -> list[Any]:
    from stream.record import read_session

    dirs = sorted(p for p in root.iterdir() if (p / "meta.json").is_file())
    if not dirs:
        raise SystemExit(f"{root}: no session folders (python -m tests.voicing --split dev --out {root})")
    return [read_session(d) for d in dirs]


def segments(s: Any, source: str) -> list[tuple[float, float, np.ndarray]]:
    """The clips one dialogue is transcribed in: ``gold`` (the true turns), ``gold+PAD`` (each true turn with
    PAD ms of the recording on either side) or ``vad:pad=P,silence=S`` (silero at :class:`VadParams` with
    speech_pad_ms P and min_silence_ms S, as the live path cuts the audio; defaults: the live path's)."""
    sr = s.sample_rate
    if source.startswith("gold"):
        pad = int(source.partition("+")[2] or 0) * sr // 1000
        return [(u.t_start, u.t_end, s.audio[max(0, int(u.t_start * sr) - pad): int(u.t_end * sr) + pad])
                for u in s.utterances]
    from extractors.vad import VadSegmenter
    from stream.params import VadParams

    opts = dict(kv.split("=") for kv in source.partition(":")[2].split(",") if kv)
    vp = VadParams()
    seg = VadSegmenter(sr, min_silence_ms=int(opts.get("silence", vp.silero_silence_ms)),
                       min_speech_ms=vp.min_speech_ms, max_speech_s=vp.max_utterance_s,
                       speech_pad_ms=int(opts.get("pad", vp.silero_pad_ms)), vad=_vad())
    out = []
    for i in range(0, s.audio.size, 480):  # 30 ms blocks, as the feeders give them
        out.extend(seg.push(s.audio[i: i + 480]))
    out.extend(seg.flush())
    return [(x.start_s, x.end_s, x.audio) for x in out]


_VAD: list[Any] = []


def _vad() -> Any:
    from extractors.vad import SileroVad

    if not _VAD:
        _VAD.append(SileroVad(num_threads=1))
    return _VAD[0]


def wer_of(sessions: list[Any], hyps: list[list[str]], norm: str, per: str) -> float:
    """Corpus WER of per-segment hypotheses: ``per="utterance"`` aligns each gold turn with its own clip
    (gold segments only), ``per="dialogue"`` each dialogue's joined text with its joined gold text."""
    from extractors.asr import word_error_rate

    if per == "utterance":
        refs = [u.text or "" for s in sessions for u in s.utterances]
        flat = [h for hs in hyps for h in hs]
        return word_error_rate(refs, flat, normalizer=norm)
    refs = [" ".join(u.text or "" for u in s.utterances) for s in sessions]
    return word_error_rate(refs, [" ".join(hs) for hs in hyps], normalizer=norm)


def stage_asr(sessions: list[Any], names: list[str], work: Path, source: str) -> None:
    import torch
    from tqdm import tqdm

    from extractors.asr import create_asr

    torch.set_num_threads(1)
    out = work / "asr.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    for name in names:
        key = name if source == "gold" else f"{name} @ {source}"
        if key in results:
            continue
        spec, options, prompt = ASR_CONFIGS[name]
        asr = create_asr(spec, **options)
        hyps: list[list[str]] = []
        times, cpu = [], []
        for s in tqdm(sessions, desc=key, unit="dialogue"):
            prev = None
            hyps.append([])
            for _t0, _t1, clip in segments(s, source):
                t0, c0 = time.perf_counter(), time.process_time()
                text = asr.transcribe(clip, s.sample_rate, prev if prompt else None).text
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                hyps[-1].append(text)
                prev = text or prev
        results[key] = {"p50_ms": 1000 * float(np.median(times)), "p95_ms": 1000 * float(np.percentile(times, 95)),
                        "calls": len(times), "cpu_ms": 1000 * float(np.mean(cpu)), "source": source,
                        "dialogues": [s.session_id for s in sessions], "hyps": hyps}
        out.write_text(json.dumps(results, indent=1))
    print(f"{'configuration':52s} {'calls':>5s} {'WER raw':>7s} {'WER wh.':>7s} {'p50 ms':>7s} {'p95 ms':>7s} "
          f"{'CPU ms':>7s}  (WER raw: normalize_words; wh.: Whisper English normaliser; per dialogue text)")
    ids = [s.session_id for s in sessions]
    for key, r in results.items():
        if r.get("dialogues") != ids or "hyps" not in r:
            continue
        raw, wh = (100 * wer_of(sessions, r["hyps"], n, "dialogue") for n in ("raw", "whisper"))
        print(f"{key:52s} {r['calls']:5d} {raw:6.1f}% {wh:6.1f}% {r['p50_ms']:7.0f} {r['p95_ms']:7.0f} "
              f"{r['cpu_ms']:7.0f}")


def run_live(args: list[str], events: Path) -> None:
    if events.is_file():
        return
    tmp = events.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    cmd = [sys.executable, str(ROOT / "live.py"), *args, "--speed", "0", "--no-tui", "--events", str(tmp)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    tmp.rename(events)


def emotion_events(path: Path) -> dict[str, list[dict[str, Any]]]:
    by_session: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        if e.get("type") == "emotion":
            by_session.setdefault(e["session"], []).append(e)
    for v in by_session.values():
        v.sort(key=lambda e: e["t_start"])
    return by_session


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def score(sessions: list[Any], events: dict[str, list[dict[str, Any]]], labels: list[str]) -> dict[str, Any]:
    """WER (per dialogue text), emotion W-F1 over gold utterances, same-speaker pair accuracy."""
    from extractors.asr import word_error_rate
    from pcgnet.metrics import erc_metrics
    from tests.voicing import SpeakerScores

    refs, hyps, y_true, y_pred = [], [], [], []
    speakers = SpeakerScores()
    for s in sessions:
        evs = events.get(s.session_id, [])
        refs.append(" ".join(u.text or "" for u in s.utterances))
        hyps.append(" ".join(e.get("text") or "" for e in evs))
        for u in s.utterances:
            best = max(evs, key=lambda e: _overlap(u.t_start, u.t_end, e["t_start"], e["t_end"]), default=None)
            ok = best is not None and _overlap(u.t_start, u.t_end, best["t_start"], best["t_end"]) > 0
            y_true.append(labels.index(u.emotion))
            y_pred.append(labels.index(best["label"]) if ok else -1)
        # the gold speaker of an audio utterance: the speaker of the gold utterance it overlaps most
        gold_of = [max(s.utterances, key=lambda u, e=e: _overlap(u.t_start, u.t_end, e["t_start"], e["t_end"])).speaker
                   for e in evs]
        speakers.add(gold_of, [e["speaker"] for e in evs])
    y_pred = [p if p >= 0 else (t + 1) % len(labels) for t, p in zip(y_true, y_pred, strict=True)]  # missed = wrong
    m = erc_metrics(y_true, y_pred, labels)
    return {"wer": word_error_rate(refs, hyps), "wer_whisper": word_error_rate(refs, hyps, "whisper"),
            "weighted_f1": 100 * m["weighted_f1"],
            "utterances": sum(len(v) for v in events.values()), "gold_utterances": len(y_true),
            "pairs": speakers.pairs, "pair_accuracy": speakers.pair_accuracy}


def stage_path(sessions: list[Any], asrs: list[str], roots: list[Path], work: Path, extra: list[str]) -> None:
    from pcgnet.config import MELD_LABELS

    labels = list(MELD_LABELS)
    links = work / "audio"
    links.mkdir(parents=True, exist_ok=True)
    files = []
    for s, d in zip(sessions, roots, strict=True):
        link = links / f"{s.session_id}.wav"
        if not link.exists():
            link.symlink_to((d / "audio.wav").resolve())
        files.append(link)
    rows = []
    t0 = time.perf_counter()
    run_live([a for d in roots for a in ("--replay", str(d))], work / "gold.jsonl")
    rows.append(("gold transcript (--replay)", score(sessions, emotion_events(work / "gold.jsonl"), labels)))
    for asr in asrs:
        ev = work / f"audio-{asr.replace(':', '_').replace('/', '_')}.jsonl"
        print(f"live.py --audio x{len(files)} --asr {asr} ...", flush=True)
        run_live([*(a for f in files for a in ("--audio", str(f))), "--asr", asr, *extra], ev)
        rows.append((f"--audio, --asr {asr}", score(sessions, emotion_events(ev), labels)))
    print(f"\n{len(sessions)} dialogues, {rows[0][1]['gold_utterances']} gold utterances "
          f"({time.perf_counter() - t0:.0f} s)")
    print(f"{'path':40s} {'WER raw':>7s} {'WER wh.':>7s} {'W-F1':>6s} {'utts':>5s} "
          f"{'same-speaker pairs one person':>30s}")
    for name, r in rows:
        print(f"{name:40s} {100 * r['wer']:6.1f}% {100 * r['wer_whisper']:6.1f}% {r['weighted_f1']:6.1f} {r['utterances']:5d} "
              f"{100 * r['pair_accuracy']:17.1f}% of {r['pairs']}")
    (work / "path.json").write_text(json.dumps(dict(rows), indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=Path, required=True, help="folder of voiced session folders")
    ap.add_argument("--stage", choices=("asr", "path"), required=True)
    ap.add_argument("--configs", default=",".join(ASR_CONFIGS), help="--stage asr: configurations to measure")
    ap.add_argument("--asr", default="auto,whisper-tiny.en,pocketsphinx", help="--stage path: --asr choices")
    ap.add_argument("--segments", default="gold", help="--stage asr: clips to transcribe: gold (true turns), "
                    "gold+PAD (PAD ms either side) or vad:pad=P,silence=S (silero as in the live path)")
    ap.add_argument("--dialogues", type=int, default=0, help="only the first N folders (0: all)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "audio_eval")
    ap.add_argument("--live-args", default="", help="extra live.py arguments for --stage path (e.g. '--speakers 4')")
    args = ap.parse_args()
    from benchmarks.machine import header
    print(header(), flush=True)  # CPU, flags, text dtype, load: speed figures depend on them
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    sessions = load_sessions(args.sessions)
    roots = sorted(p for p in args.sessions.iterdir() if (p / "meta.json").is_file())
    if args.dialogues:
        sessions, roots = sessions[: args.dialogues], roots[: args.dialogues]
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on {os.cpu_count()} CPUs")
    if args.stage == "asr":
        stage_asr(sessions, [c.strip() for c in args.configs.split(",") if c.strip()], args.work, args.segments)
    else:
        stage_path(sessions, [a.strip() for a in args.asr.split(",") if a.strip()], roots, args.work,
                   args.live_args.split())
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
