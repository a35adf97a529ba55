"""`pcgnet extract`: recorded session folders -> the feature-pickle layout (:mod:`prepare.sessions`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from extractors.base import ExtractorError

log = logging.getLogger(__name__)

DEFAULTS = {"t": "minilm-l6", "a": "egemaps", "v": "fer"}
AUTO = "auto"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "extract", help="recorded session folders -> the standard feature-pickle layout",
        description="Extract per-utterance features from recorded session folders (live.py --record) into the "
                    "MELD/IEMOCAP feature-pickle layout that `pcgnet train/evaluate` read. A modality whose "
                    "media no session has (e.g. no video) is declared absent.")
    p.add_argument("sessions", nargs="+", type=Path, metavar="SESSION_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--text", default=AUTO, help=f"text extractor name, hf:PATH, or none (default {DEFAULTS['t']})")
    p.add_argument("--text-model", type=Path, metavar="PATH",
                   help="local transformers model dir (same as --text hf:PATH; RoBERTa-large gives 1024-d)")
    p.add_argument("--audio", default=AUTO, help=f"audio extractor or none (default {DEFAULTS['a']})")
    p.add_argument("--visual", default=AUTO, help=f"visual extractor or none (default {DEFAULTS['v']})")
    p.add_argument("--asr", default="none",
                   help="transcribe utterances with an empty transcript: whisper-tiny.en, whisper-base, "
                        "pocketsphinx, faster-whisper:DIR, vosk:DIR or none (default none)")
    p.add_argument("--dataset", default="MELD", choices=["MELD", "IEMOCAP"],
                   help="layout and label set to write (default MELD: 9 speaker slots, 7 labels)")
    p.add_argument("--max-frames", type=int, default=4, help="video frames analysed per utterance (default 4)")
    p.add_argument("--test-sessions", nargs="+", metavar="ID", help="session ids for the test split")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="fraction of sessions (seeded) for the test split when --test-sessions is not given")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--persona", type=Path, metavar="JSON",
                   help="given persona: {session_id: [[5 floats] per utterance]}; writes the persona pickle")
    g.add_argument("--persona-estimator", type=Path, metavar="JSON",
                   help="persona_estimator.json (pcgnet.persona) to estimate persona from the features")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_extract)


def _resolve(modality: str, value: str) -> str | None:
    """An explicit name, None for 'none', or the default when its packages and models are installed."""
    from extractors import registry

    if value.lower() == "none":
        return None
    if value != AUTO:
        return value
    name = DEFAULTS[modality]
    if not registry.info(name).models_present:
        log.warning("default %s extractor %r is not installed; the modality is left out (%s)",
                    modality, name, registry.info(name).note)
        return None
    return name


def _fail(command: str, err: Exception) -> int:
    print(f"pcgnet {command}: error: {err}", file=sys.stderr)
    return 2


def run_extract(args: argparse.Namespace) -> int:
    from prepare.sessions import extract_sessions

    if args.text_model is not None:
        if args.text not in (AUTO, f"hf:{args.text_model}"):
            return _fail("extract", ValueError("give either --text or --text-model, not both"))
        args.text = f"hf:{args.text_model}"
    if args.max_frames < 1:
        return _fail("extract", ValueError(f"--max-frames {args.max_frames}: must be >= 1"))
    if not 0.0 <= args.test_fraction < 1.0:
        return _fail("extract", ValueError(f"--test-fraction {args.test_fraction}: must be in [0, 1)"))
    names = {m: _resolve(m, v) for m, v in (("t", args.text), ("a", args.audio), ("v", args.visual))}
    asr = None if args.asr.lower() == "none" else args.asr
    try:
        with _progress(len(args.sessions), enabled=not args.no_progress) as step:
            meta = extract_sessions(
                args.sessions, args.out, names, dataset=args.dataset, asr=asr, max_frames=args.max_frames,
                test_sessions=args.test_sessions, test_fraction=args.test_fraction, seed=args.seed,
                persona_json=args.persona, persona_estimator=args.persona_estimator, progress=step)
    except (ExtractorError, OSError) as e:
        return _fail("extract", e)
    n = sum(s["utterances"] for s in meta["sessions"])
    mods = ", ".join(f"{m}={e['name']} ({e['dim']}-d)" for m, e in meta["extractors"].items())
    print(f"wrote {args.out}: {len(meta['sessions'])} sessions, {n} utterances; {mods}; "
          f"absent: {meta['absent'] or 'none'}; persona: {meta['persona']['source']}; "
          f"train {len(meta['train'])} / test {len(meta['test'])} sessions")
    for s in meta["sessions"]:
        missing = {m: k for m, k in s["invalid"].items() if k}
        if missing:
            print(f"  {s['session_id']}: utterances without usable media (zero vectors): {missing}")
    if meta["persona"]["source"] == "none":
        print("  no persona given: train with --wo_persona, or pass --persona / --persona-estimator")
    return 0


class _progress:
    """A rich progress bar over sessions (stderr), or nothing when disabled or not a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and sys.stderr.isatty()
        self._bar: Any = None

    def __enter__(self):  # noqa: ANN204
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.description}"), console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("loading extractors", total=self.total)
            self._started = False
        return self._step

    def _step(self, description: str) -> None:
        if self._bar is None:
            log.info("extracting %s", description)
            return
        if self._started:
            self._bar.advance(self._task)
        self._started = True
        self._bar.update(self._task, description=description)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
