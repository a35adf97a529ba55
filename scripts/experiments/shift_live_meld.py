"""Every MELD test dialogue through the live analyzer (the shipped model, its extractor and persona estimator,
the stored shift rule at a profile): counts shift events that contradict their emotion events (the rule makes
that impossible: the count must be 0), and scores the live expressions and shifts against the gold labels.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/experiments/shift_live_meld.py [PROFILE] [--csv-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from sklearn.metrics import f1_score

from pcgnet.config import MELD_LABELS
from prepare import meld
from stream.analyzer import load_analyzer
from stream.frames import Utterance
from stream.params import LiveParams


async def run(profile: str | None, csv_dir: Path) -> str:
    dialogues = [d for d in meld.read_meld(csv_dir).values() if d.split == "test"]
    a = load_analyzer("checkpoints/default", LiveParams(shift_profile=profile))
    workers = [asyncio.create_task(c) for c in a.tasks().values()]
    bad, n_shift, gold, pred = 0, 0, [], []
    tp = fp = fn = 0
    t0 = time.time()
    for d in dialogues:
        sid = f"meld-test-{d.dialogue}"
        emo: dict[str, dict] = {}
        last_gold: dict[str, int] = {}
        for i, u in enumerate(d.utterances):
            frames = await a.process(Utterance(session_id=sid, utterance_id=f"u{i}", speaker=u.speaker,
                                               t_start=u.start, t_end=u.end, text=u.text))
            e = next(f.payload for f in frames if f.kind == "emotion")
            emo[e["utterance_id"]] = e
            gold.append(u.label)
            pred.append(MELD_LABELS.index(e["label"]))
            shifts = [f.payload for f in frames if f.kind == "shift"]
            n_shift += len(shifts)
            bad += sum(s["to"] != e["expression"] or s["from"] == s["to"]
                       or s["from"] != emo[s["previous_utterance_id"]]["expression"] for s in shifts)
            if u.speaker in last_gold:
                g = last_gold[u.speaker] != u.label
                tp += g and bool(shifts)
                fp += (not g) and bool(shifts)
                fn += g and not shifts
            last_gold[u.speaker] = u.label
        a.end_session(sid)
    a.close()
    await asyncio.gather(*workers)
    prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return (f"MELD test through the live analyzer ({a.shift_profile}): {len(gold)} utterances, {n_shift} shift "
            f"events, {bad} contradicting their emotion events; W-F1 {100 * f1_score(gold, pred, average='weighted'):.2f}, "
            f"shift P {100 * prec:.1f} R {100 * rec:.1f} F1 {200 * prec * rec / max(prec + rec, 1e-9):.1f}; "
            f"{time.time() - t0:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("profile", nargs="?", default=None)
    p.add_argument("--csv-dir", type=Path, default=Path("../shared/data/meld"))
    args = p.parse_args()
    print(asyncio.run(run(args.profile, args.csv_dir)))


if __name__ == "__main__":
    main()
