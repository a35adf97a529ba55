"""Copy the shipped model into ``checkpoints/default``: of one ``pcgnet train --seeds ...`` folder's seeds, the
one with the best validation (MELD dev) W-F1 (selection never looks at test), re-saved with provenance.

    .venv/bin/python scripts/experiments/ship_default.py runs/exp/causal --data data/meld-ctx-est
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from pcgnet.checkpoint import load_checkpoint, save_checkpoint


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", type=Path, help="a `pcgnet train --seeds ...` output folder (summary.json + seed-N/)")
    ap.add_argument("--data", type=Path, required=True, help="the prepared MELD layout it was trained on")
    ap.add_argument("--out", type=Path, default=Path("checkpoints/default"))
    args = ap.parse_args()
    summary = json.loads((args.row / "summary.json").read_text())
    best = max(summary["runs"], key=lambda r: r["valid"]["weighted_f1"])
    ck = load_checkpoint(args.row / f"seed-{best['seed']}")
    side = json.loads((args.data / "MELD_features_raw1.json").read_text())
    training = dict(ck.meta.get("training") or {})
    training.update({
        "git_commit": git_commit(),
        "data": {"dir": str(args.data), "sources_sha256": side["sources"], "dialogues": side["dialogues"],
                 "utterances": side["utterances"], "split": "train on MELD train, epoch selected on MELD dev"},
        "seed_selection": "best dev W-F1 among seeds " + ", ".join(str(r["seed"]) for r in summary["runs"]),
    })
    metrics = dict(ck.meta.get("metrics") or {})
    metrics["test_over_seeds"] = {k: summary[k] for k in ("n_runs", "mean", "std")}
    save_checkpoint(args.out, ck.model, extractors=ck.extractors, persona=ck.persona, training=training,
                    metrics=metrics, labels=list(ck.config.labels), shift=ck.meta["shift"])
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"shipped seed {best['seed']} (dev W-F1 {100 * best['valid']['weighted_f1']:.2f}, test "
          f"{100 * best['test']['weighted_f1']:.2f}) to {args.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
