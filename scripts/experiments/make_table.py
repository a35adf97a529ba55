"""Print the markdown results table of docs/results.md from ``pcgnet train`` output folders.

Each folder has ``summary.json`` (written by ``pcgnet train``: test mean ± std at the top level, ``valid``,
``runs``) and, optionally, ``asr.json`` (``pcgnet evaluate --json`` of the same checkpoints on the
ASR-style layout), shown as its own column.

    .venv/bin/python scripts/experiments/make_table.py runs/exp/causal runs/exp/no_graph ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
SHORT = ("neu", "sur", "fea", "sad", "joy", "dis", "ang")


def get(agg: dict, part: str, *path: str) -> float:
    x = agg[part]
    for k in path:
        x = x[k]
    return float("nan") if x is None else x


def cell(agg: dict, *path: str) -> str:
    return f"{100 * get(agg, 'mean', *path):.2f} ± {100 * get(agg, 'std', *path):.2f}"


def short(agg: dict, *path: str) -> str:
    return f"{100 * get(agg, 'mean', *path):.1f}"


def main(dirs: list[str]) -> None:
    head = ("| row | test W-F1 | ASR-style test W-F1 | dev W-F1 | Acc | " + " | ".join(SHORT)
            + " | shift F1 (49-way) | binary shift P / R / F1 | AUROC | s/seed |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for d in dirs:
        p = Path(d) / "summary.json"
        if not p.is_file():
            print(f"| {Path(d).name} | (missing) |")
            continue
        s = json.loads(p.read_text())
        asr_path = Path(d) / "asr.json"
        asr = "–"
        if asr_path.is_file():
            a = json.loads(asr_path.read_text())
            asr = cell(a, "weighted_f1") if "mean" in a else f"{100 * a['weighted_f1']:.2f}"
        dev = cell(s["valid"], "weighted_f1") if "valid" in s else "–"
        secs = sum(r["seconds"] for r in s["runs"]) / len(s["runs"])
        b = ("binary_shift",)
        print(f"| {Path(d).name} | {cell(s, 'weighted_f1')} | {asr} | {dev} | {cell(s, 'accuracy')} | "
              + " | ".join(short(s, "per_class_f1", n) for n in LABELS)
              + f" | {cell(s, 'shift_f1')} | {short(s, *b, 'precision')} / {short(s, *b, 'recall')} / "
              f"{cell(s, *b, 'f1')} | {cell(s, *b, 'auroc')} | {secs:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
