"""Capacity levers of the shipped text encoder, side by side in one process, scored on MELD dev.

Each variant encodes every MELD dev utterance (the ``UtteranceMedia`` the live session builds) and feeds the
vectors to the shipped PCGNet (``checkpoints/default``, its persona estimator, the causal forward = what live
computes), so each lever is judged by speed *and* by what it does to the predictions:

* ``float32 x1`` -- the reference: one utterance per pass, float32 (what ``auto`` picks on an AVX2-only CPU).
* ``bfloat16 x1`` -- one utterance per pass, bfloat16 (``auto`` on AVX512-BF16/AMX; emulated elsewhere).
* ``... xB`` -- cross-session micro-batching: ``--batch`` utterances per pass, padded, with attention masks.
* ``int8 attn`` -- float32 with dynamic int8 in the attention projections only (q, k, v, o); ``int8 attn+ffn-in``
  adds the feed-forward input projections (the outputs are the outlier-sensitive ones, docs/results.md).

Printed per variant: ms per utterance (one pass per utterance: the median call; batched: wall time / n),
the max |difference| and min cosine of its vectors to the reference, dev W-F1 and label agreement with the
reference's predictions; for a batched variant also the max |difference| and label agreement with the
one-per-pass run of its own dtype (what batching alone changes; needs that run in the list before it). The
header names the CPU, its flags and the load.

    .venv/bin/python benchmarks/text_levers.py [--variants float32x1,bfloat16x1,...] [--batch 16] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALL = ("float32x1", "bfloat16x1", "float32xB", "bfloat16xB", "int8-attn", "int8-attn+ffn-in")


def build(variant: str, batch: int) -> Any:
    """The shipped encoder in ``variant``."""
    import torch

    from extractors.meld_text import MeldTextExtractor

    dtype = "bfloat16" if variant.startswith("bfloat16") else "float32"
    ex = MeldTextExtractor(dtype=dtype, batch_size=1)
    ex.batch_size = batch if variant.endswith("xB") else 1
    if variant.startswith("int8"):
        suffixes = (".attn.q", ".attn.k", ".attn.v", ".attn.o") + ((".intermediate.dense",) if "ffn" in variant else ())
        names = {n for n, m in ex.model.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(suffixes)}
        ex.model = torch.ao.quantization.quantize_dynamic(ex.model, names, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    return ex


def encode(ex: Any, inputs: list[tuple[str, str | None]]) -> tuple[np.ndarray, float]:
    """Vectors of ``inputs`` and ms per utterance: the median call when one per pass, else wall time / n."""
    if ex.batch_size == 1:
        out, times = [], []
        for x in inputs:
            t0 = time.perf_counter()
            out.append(ex.encode([x])[0])
            times.append(1000 * (time.perf_counter() - t0))
        return np.stack(out), float(np.median(times))
    vecs = np.zeros((len(inputs), ex.dim), np.float32)
    t0 = time.perf_counter()
    for s in range(0, len(inputs), ex.batch_size):  # arrival order, as a micro-batcher takes them
        vecs[s:s + ex.batch_size] = ex.encode(inputs[s:s + ex.batch_size])
    return vecs, 1000 * (time.perf_counter() - t0) / len(inputs)


def predict(vectors: np.ndarray, dialogues: list[Any], ck: Any, estimator: Any) -> np.ndarray:
    """The shipped model's emotion predictions for the dev dialogues, given per-utterance text vectors."""
    import torch

    from pcgnet.data import Dialogue, collate

    dl, row = [], 0
    for d in dialogues:
        x = vectors[row:row + len(d.utterances)]
        row += len(d.utterances)
        slots = d.speaker_slots
        dl.append(Dialogue(d.dialogue, {"t": x}, np.array(slots, np.int64),
                           np.array([u.label for u in d.utterances], np.int64),
                           estimator.estimate_dialogue(x, slots).astype(np.float32)))
    with torch.no_grad():
        out = ck.model(collate(dl, ("t",)))
    return np.asarray(out.emotion_logp.argmax(-1).numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv-dir", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    ap.add_argument("--variants", default=",".join(ALL))
    ap.add_argument("--batch", type=int, default=16, help="utterances per pass of the xB variants")
    ap.add_argument("--limit", type=int, default=0, help="only the first N dev dialogues (0: all 114)")
    args = ap.parse_args()
    import torch
    from sklearn.metrics import f1_score  # type: ignore[import-untyped]

    from benchmarks.machine import header, load
    from extractors.text import encoder_input
    from pcgnet.checkpoint import load_checkpoint
    from pcgnet.persona import PersonaEstimator
    from prepare.meld import dialogue_media, read_meld

    torch.set_num_threads(1)
    print(header(text_dtype="per variant (below)"))
    dialogues = [d for d in read_meld(args.csv_dir).values() if d.split == "dev"]
    dialogues = dialogues[: args.limit or None]
    media = [m for d in dialogues for m in dialogue_media(d)]
    gold = np.array([u.label for d in dialogues for u in d.utterances])
    ck = load_checkpoint(ROOT / "checkpoints" / "default")
    estimator = PersonaEstimator.from_json(ck.meta["persona"]["estimator"])
    print(f"MELD dev: {len(dialogues)} dialogues, {len(media)} utterances; shipped model dev W-F1 at training: "
          f"{100 * ck.meta['metrics']['valid']['weighted_f1']:.2f}; 1 torch thread")
    variants = args.variants.split(",")
    ref: tuple[np.ndarray, np.ndarray] | None = None
    done: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    print(f"{'variant':<18} {'ms/utt':>7} {'max|dv|':>9} {'min cos':>8} {'dev W-F1':>8} {'agree %':>8} "
          f"{'vs x1 of its dtype':>20}  load")
    for v in variants:
        ex = build(v, args.batch)
        inputs = [encoder_input(m.text or "", m.speaker, m.context, ex.context_utterances) for m in media]
        ex.encode(inputs[:5])  # warm-up
        vecs, ms = encode(ex, inputs)
        pred = predict(vecs, dialogues, ck, estimator)
        wf1 = 100 * f1_score(gold, pred, average="weighted")
        if ref is None:
            ref = (vecs, pred)
        dv = float(np.abs(vecs - ref[0]).max())
        cos = float(((vecs * ref[0]).sum(1) / np.linalg.norm(vecs, axis=1) / np.linalg.norm(ref[0], axis=1)).min())
        agree = 100 * float((pred == ref[1]).mean())
        done[v] = (vecs, pred)
        own = done.get(v.replace("xB", "x1")) if v.endswith("xB") else None
        batching = "" if own is None else \
            f"{float(np.abs(vecs - own[0]).max()):.2e} {100 * float((pred == own[1]).mean()):.2f}%"
        print(f"{v:<18} {ms:7.1f} {dv:9.2e} {cos:8.5f} {wf1:8.2f} {agree:8.2f} {batching:>20}  {load()}", flush=True)
        del ex
    print(f"reference: {variants[0]}; load average at the end: {load()}")


if __name__ == "__main__":
    main()
