"""The cheapest student of ``mpnet-base-meld``: a small encoder plus a least-squares linear map into its space.

Why: on an AVX2-only CPU the shipped encoder costs ~63 ms per utterance (float32) and caps one process at
about 40 real-time sessions; MiniLM-L6 costs ~8. If MiniLM's vectors, mapped linearly onto mpnet's (fit on
MELD train), drive the *shipped* PCGNet nearly as well on MELD dev, a distilled student is worth training;
if a linear map already loses much, the student must be trained (issue 21, stretch goal). Prints dev W-F1
of the shipped model on the teacher's and the mapped student's vectors, label agreement, the map's R^2 and
both encoders' ms per utterance (batched, this process).

    .venv/bin/python scripts/experiments/distill_linear.py [--student minilm-l6-meld] [--train 4000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def encode(ex: Any, media: list[Any], batch: int = 16) -> tuple[np.ndarray, float]:
    inputs = ex.inputs(media)
    out = np.zeros((len(media), ex.dim), np.float32)
    t0 = time.perf_counter()
    for s in range(0, len(media), batch):
        out[s:s + batch] = ex.encode(inputs[s:s + batch])
    return out, 1000 * (time.perf_counter() - t0) / max(1, len(media))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv-dir", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    ap.add_argument("--student", default="minilm-l6-meld")
    ap.add_argument("--train", type=int, default=4000, help="train utterances the map is fit on")
    args = ap.parse_args()
    import torch
    from sklearn.metrics import f1_score  # type: ignore[import-untyped]

    from benchmarks.machine import header, load
    from benchmarks.text_levers import predict
    from extractors.registry import create
    from pcgnet.checkpoint import load_checkpoint
    from pcgnet.persona import PersonaEstimator
    from prepare.meld import _least_squares_map, dialogue_media, read_meld

    torch.set_num_threads(1)
    print(header())
    meld = read_meld(args.csv_dir)
    train = [m for d in meld.values() if d.split == "train" for m in dialogue_media(d)][: args.train]
    dev_d = [d for d in meld.values() if d.split == "dev"]
    dev = [m for d in dev_d for m in dialogue_media(d)]
    gold = np.array([u.label for d in dev_d for u in d.utterances])
    teacher, student = create("mpnet-base-meld"), create(args.student)
    print(f"teacher mpnet-base-meld ({teacher.dtype}), student {args.student} ({student.dtype}); "  # type: ignore[attr-defined]
          f"{len(train)} train utterances for the map, {len(dev)} dev")
    t_train, t_ms = encode(teacher, train)
    s_train, s_ms = encode(student, train)
    print(f"encoded train: teacher {t_ms:.1f} ms/utt, student {s_ms:.1f} ms/utt (batches of 16); load {load()}",
          flush=True)
    t_dev, _ = encode(teacher, dev)
    s_dev, _ = encode(student, dev)
    fit = np.zeros(len(train) + len(dev), bool)
    fit[: len(train)] = True
    mapped, r2 = _least_squares_map(np.vstack([s_train, s_dev]), np.vstack([t_train, t_dev]), fit)
    m_dev = mapped[len(train):]
    dev_r2 = 1.0 - float(((m_dev - t_dev) ** 2).sum() / ((t_dev - t_dev.mean(0)) ** 2).sum())
    ck = load_checkpoint(ROOT / "checkpoints" / "default")
    est = PersonaEstimator.from_json(ck.meta["persona"]["estimator"])
    p_t, p_s = predict(t_dev, dev_d, ck, est), predict(m_dev, dev_d, ck, est)
    cos = (m_dev * t_dev).sum(1) / np.linalg.norm(m_dev, axis=1) / np.linalg.norm(t_dev, axis=1)
    print(f"map R^2 train {r2:.3f}, dev {dev_r2:.3f}; dev cosine to the teacher median {np.median(cos):.3f}, "
          f"min {cos.min():.3f}")
    print(f"shipped PCGNet dev W-F1: teacher {100 * f1_score(gold, p_t, average='weighted'):.2f}, mapped student "
          f"{100 * f1_score(gold, p_s, average='weighted'):.2f}; label agreement {100 * (p_t == p_s).mean():.2f}%; "
          f"load {load()}")


if __name__ == "__main__":
    main()
