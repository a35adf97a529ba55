"""Print the markdown results table of docs/results.md from ``runs/exp/*/summary.json`` (run_meld.py output).

    .venv/bin/python scripts/experiments/make_table.py runs/exp/causal runs/exp/paper ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
SHORT = ("neu", "sur", "fea", "sad", "joy", "dis", "ang")


def cell(agg: dict, *path: str) -> str:
    m, s = agg["mean"], agg["std"]
    for k in path:
        m, s = m[k], s[k]
    return f"{100 * m:.2f} ± {100 * s:.2f}"


def short(agg: dict, *path: str) -> str:
    m = agg["mean"]
    for k in path:
        m = m[k]
    return f"{100 * m:.1f}"


def main(dirs: list[str]) -> None:
    head = ("| row | W-F1 | Acc | " + " | ".join(SHORT) + " | shift F1 (49-way) | binary shift P / R / F1 | train s/seed |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for d in dirs:
        p = Path(d) / "summary.json"
        if not p.is_file():
            print(f"| {Path(d).name} | (missing) |")
            continue
        s = json.loads(p.read_text())
        t = s["test"]
        secs = sum(r["train_seconds"] for r in s["runs"]) / len(s["runs"])
        b = ("binary_shift",)
        print(f"| {Path(d).name} | {cell(t, 'weighted_f1')} | {cell(t, 'accuracy')} | "
              + " | ".join(short(t, "per_class_f1", n) for n in LABELS)
              + f" | {cell(t, 'shift_f1')} | {short(t, *b, 'precision')} / {short(t, *b, 'recall')} / "
              f"{cell(t, *b, 'f1')} | {secs:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
