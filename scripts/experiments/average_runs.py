"""Score the average of several ``pcgnet train`` runs' predicted distributions, seed by seed.

Each argument is ``RUN`` or ``RUN:DATA_DIR`` (a ``--out`` folder of ``pcgnet train`` and, when its members
read other features, the layout to read them from). Seed K's average is the mean of every run's seed-K
emotion distributions (and transition distributions, for P(shift)); it is scored on the same split as each
member, so the ensemble is as causal as its members. Prints dev and test W-F1 and shift AUROC per seed and
their mean ± std: the numbers of docs/results.md's "Averaging models" rows. Nothing is fitted here.

    .venv/bin/python scripts/experiments/average_runs.py runs/exp/causal runs/exp/ctx:data/meld-ctx-est
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def seed_dirs(run: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(run.glob("seed-*")) if (p / "config.json").is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="RUN or RUN:DATA_DIR (default: the data_dir each checkpoint records)")
    ap.add_argument("--num-threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from pcgnet.checkpoint import load_checkpoint
    from pcgnet.data import load_dataset
    from pcgnet.evaluate import Predictions, predict_dialogues, recorded_split
    from pcgnet.metrics import evaluate_predictions

    torch.set_num_threads(args.num_threads)
    members = [(Path(r.split(":", 1)[0]), r.split(":", 1)[1] if ":" in r else None) for r in args.runs]
    seeds = sorted(set.intersection(*(set(seed_dirs(run)) for run, _ in members)))
    if not seeds:
        sys.exit("average_runs: the runs share no seed-* checkpoint")
    splits = ("valid", "test")
    scores: dict[str, list[tuple[float, float]]] = {s: [] for s in splits}
    for seed in seeds:
        preds: dict[str, list[Predictions]] = {s: [] for s in splits}
        for run, data_dir in members:
            ckpt = seed_dirs(run)[seed]
            loaded = load_checkpoint(ckpt)
            training = loaded.meta.get("training") or {}
            valid_rate, split_seed = recorded_split(training)
            ds = load_dataset(training["dataset"], data_dir or training["data_dir"],
                              modalities=loaded.config.modalities, need_persona=loaded.config.use_persona,
                              valid_rate=valid_rate, seed=split_seed)
            for split in splits:
                p = predict_dialogues(loaded.model, ds.split(split))
                first = preds[split][0] if preds[split] else p
                if not (torch.equal(first.labels, p.labels) and torch.equal(first.pair_cur, p.pair_cur)):
                    sys.exit(f"average_runs: {ckpt} sees other {split} utterances than the first run")
                preds[split].append(p)
        line = [seed]
        for split in splits:
            ps = preds[split]
            # The mean transition distribution's P(shift) is the mean of the members' P(shift): it is linear.
            m = evaluate_predictions(ps[0].labels, torch.stack([p.emotion_prob for p in ps]).mean(0),
                                     ps[0].pair_prev, ps[0].pair_cur, torch.stack([p.shift_prob for p in ps]).mean(0),
                                     loaded.config.labels)
            wf1, auroc = 100 * m["weighted_f1"], 100 * m["binary_shift"]["auroc"]
            scores[split].append((wf1, auroc))
            line.append(f"{split} W-F1 {wf1:.2f} AUROC {auroc:.2f}")
        print("  ".join(line))
    for split in splits:
        a = np.array(scores[split])
        std = a.std(0, ddof=1) if len(a) > 1 else np.zeros(2)  # sample std, as pcgnet train's summaries
        print(f"{len(seeds)} seeds, {split}: W-F1 {a[:, 0].mean():.2f} ± {std[0]:.2f}, "
              f"AUROC {a[:, 1].mean():.2f} ± {std[1]:.2f}")


if __name__ == "__main__":
    main()
