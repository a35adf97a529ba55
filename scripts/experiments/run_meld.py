"""Train/evaluate one row of docs/results.md: a PCGNet variant on a prepared MELD layout, several seeds.

Honest protocol: train on the official train split, select the epoch on the official dev split (the
``validIds`` that ``pcgnet prepare-meld`` records in its sidecar), report the MELD test split at that epoch.

    nice -n 5 .venv/bin/python scripts/experiments/run_meld.py --data data/meld-minilm \
        --variant causal --seeds 1 2 3 --out runs/exp/causal

Variants: causal (what ships), paper (bidirectional GRUs), no_persona, no_shift (shift CL and shift loss
off), no_graph, context_free (logistic regression on one utterance's features, no model context).
Writes ``OUT/summary.json`` (mean/std over seeds) and, per seed, ``OUT/seed-N`` (a checkpoint).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcgnet.checkpoint import save_checkpoint
from pcgnet.config import PCGNetConfig
from pcgnet.data import Dialogue, DialogueDataset, batches, load_dataset
from pcgnet.evaluate import evaluate_dialogues
from pcgnet.metrics import aggregate, evaluate_predictions
from pcgnet.train import seed_everything

log = logging.getLogger("run_meld")

VARIANTS = {
    "causal": dict(causal=True),
    "paper": dict(causal=False),
    "no_persona": dict(causal=True, use_persona=False),
    "no_shift": dict(causal=True, use_shift_cl=False),  # + shift loss off (handled in the loop)
    "no_graph": dict(causal=True, use_graph=False),
    "context_free": {},
}


def load_meld(data: Path) -> DialogueDataset:
    """The prepared layout, with train = official train and valid = official dev (from the sidecar)."""
    side = json.loads((data / "MELD_features_raw1.json").read_text())
    dev = set(side["split_ids"]["dev"])
    ds = load_dataset("MELD", data)  # valid = the dev ids of the pickle's 10th item, when it has them
    if {d.id for d in ds.valid} != dev:
        raise SystemExit(f"{data}: {len(dev)} dev ids in the sidecar, but the layout's validation split is "
                         f"{ds.valid_source}")
    return ds


def evaluate(model, dialogues: list[Dialogue], labels, bs: int = 64) -> dict[str, Any]:
    m = evaluate_dialogues(model, dialogues, labels, bs)
    for k in ("confusion", "loss"):  # summary.json keeps the metrics only
        m.pop(k, None)
    return m


def class_alpha(ds: DialogueDataset, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    y = np.concatenate([d.labels for d in ds.train])
    freq = np.bincount(y[y >= 0], minlength=ds.n_classes) / (y >= 0).sum()
    w = 1.0 / np.sqrt(freq) if mode == "sqrt" else 1.0 / freq
    return torch.tensor(w / (w * freq).sum(), dtype=torch.float32)  # mean weight over the data = 1


def train_pcgnet(ds: DialogueDataset, config: PCGNetConfig, seed: int, args, shift_loss: bool) -> dict[str, Any]:
    from pcgnet.losses import pcgnet_loss
    from pcgnet.model import PCGNet, count_parameters

    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = PCGNet(config)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.l2)
    alpha = class_alpha(ds, args.class_weight)
    best: dict[str, Any] = {"score": -math.inf}
    history = []
    t_start = time.perf_counter()
    stale = 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        losses = []
        for batch in batches(ds.train, args.batch_size, config.modalities, generator=gen):
            out = model(batch)
            y = batch.labels[batch.mask]
            terms = pcgnet_loss(out, y, config.n_classes, gamma=args.gamma, class_weights=alpha,
                                use_shift_cl=config.use_shift_cl, use_shift_task=shift_loss, generator=gen)
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            opt.step()
            losses.append(float(terms.erc.detach()))
        dev = evaluate(model, ds.valid, ds.labels)
        row = {"epoch": epoch, "erc_loss": float(np.mean(losses)), "dev_weighted_f1": dev["weighted_f1"],
               "seconds": round(time.perf_counter() - t0, 1)}
        history.append(row)
        log.info("seed %d epoch %d loss %.3f dev W-F1 %.2f (%.0fs)", seed, epoch, row["erc_loss"],
                 100 * dev["weighted_f1"], row["seconds"])
        if dev["weighted_f1"] > best["score"]:
            best = {"score": dev["weighted_f1"], "epoch": epoch, "dev": dev,
                    "state": copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})}
            stale = 0
        else:
            stale += 1
            if stale >= args.patience:
                break
    train_s = time.perf_counter() - t_start
    model.load_state_dict(best["state"])
    test = evaluate(model, ds.test, ds.labels)
    return {"model": model, "best_epoch": best["epoch"], "dev": best["dev"], "test": test, "history": history,
            "train_seconds": round(train_s, 1), "parameters": count_parameters(model)}


def context_free(ds: DialogueDataset, seed: int, args) -> dict[str, Any]:
    """Logistic regression on one utterance's text features (no dialogue context); C chosen on dev."""
    from sklearn.linear_model import LogisticRegression

    def xy(ds_: list[Dialogue]) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([d.features["t"] for d in ds_]), np.concatenate([d.labels for d in ds_])

    (xtr, ytr), (xd, yd), (xt, yt) = xy(ds.train), xy(ds.valid), xy(ds.test)
    t0 = time.perf_counter()
    best = None
    for c in (0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(xtr, ytr)
        dev = evaluate_predictions(yd, clf.predict_proba(xd), [], np.zeros((0, 49)), ds.labels)
        if best is None or dev["weighted_f1"] > best[0]["weighted_f1"]:
            best = (dev, clf, c)
    dev, clf, c = best
    # Shift metrics for a context-free model: the transition distribution of a same-speaker pair is the
    # outer product of the two utterances' independent emotion distributions.
    p_test = clf.predict_proba(xt)
    prev, cur = [], []
    off = 0
    for d in ds.test:
        last: dict[int, int] = {}
        for i, s in enumerate(d.speakers.tolist()):
            if s in last:
                prev.append(off + last[s])
                cur.append(off + i)
            last[s] = i
        off += len(d)
    prev_a, cur_a = np.array(prev), np.array(cur)
    ysh = yt[prev_a] * ds.n_classes + yt[cur_a]
    sp = np.einsum("pi,pj->pij", p_test[prev_a], p_test[cur_a]).reshape(len(prev_a), -1)
    test = evaluate_predictions(yt, p_test, ysh, sp, ds.labels)
    test.pop("confusion", None)
    dev.pop("confusion", None)
    return {"model": None, "best_epoch": 0, "dev": dev, "test": test, "history": [{"C": c}],
            "train_seconds": round(time.perf_counter() - t0, 1), "parameters": int(clf.coef_.size + clf.intercept_.size)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--l2", type=float, default=1e-4)
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--class-weight", choices=["none", "sqrt", "inverse"], default="none")
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--dropout-forward", type=float, default=0.0)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concat-data", type=Path, default=None, help="experiment: concatenate this layout's text")
    ap.add_argument("--save", action="store_true", help="write a checkpoint per seed (OUT/seed-N)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    ds = load_meld(args.data)
    if args.concat_data:  # experiment only: append another layout's text features (same dialogues)
        extra = load_meld(args.concat_data)
        other = {d.id: d for d in (*extra.train, *extra.valid, *extra.test)}
        for d in (*ds.train, *ds.valid, *ds.test):
            d.features["t"] = np.concatenate([d.features["t"], other[d.id].features["t"]], axis=1)
        ds.dims = {"t": ds.train[0].features["t"].shape[1]}
    side = json.loads((args.data / "MELD_features_raw1.json").read_text())
    results = []
    if args.variant == "context_free":
        args.seeds = args.seeds[:1]  # lbfgs logistic regression is deterministic: one fit, std 0 by construction
    for seed in args.seeds:
        if args.variant == "context_free":
            r = context_free(ds, seed, args)
        else:
            config = PCGNetConfig(labels=tuple(ds.labels), modalities=ds.modalities, dims=dict(ds.dims),
                                  n_speakers=ds.n_speakers, hidden=args.hidden,
                                  dropout_forward=args.dropout_forward, window_utterances=args.window,
                                  **VARIANTS[args.variant])
            r = train_pcgnet(ds, config, seed, args, shift_loss=args.variant != "no_shift")
        log.info("seed %d: best epoch %d dev W-F1 %.2f test W-F1 %.2f acc %.2f (train %.0f s)", seed,
                 r["best_epoch"], 100 * r["dev"]["weighted_f1"], 100 * r["test"]["weighted_f1"],
                 100 * r["test"]["accuracy"], r["train_seconds"])
        if args.save and r["model"] is not None:
            save_checkpoint(args.out / f"seed-{seed}", r["model"], extractors=side["extractors"],
                            persona={k: v for k, v in side["persona"].items()} if r["model"].config.use_persona
                            else {"source": "none"},
                            training={"data": str(args.data), "seed": seed, "best_epoch": r["best_epoch"],
                                      "selected_on": "dev", "train_seconds": r["train_seconds"],
                                      **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}},
                            metrics={"dev": r["dev"], "test": r["test"]})
        results.append({k: v for k, v in r.items() if k != "model"} | {"seed": seed})
    agg = aggregate([r["test"] for r in results])
    summary = {"variant": args.variant, "data": str(args.data), "extractors": side["extractors"],
               "persona": side["persona"].get("source"), "args": {k: str(v) for k, v in vars(args).items()},
               "test": agg, "dev": aggregate([r["dev"] for r in results]), "runs": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    m, s = agg["mean"], agg["std"]
    print(f"{args.variant}: test W-F1 {100 * m['weighted_f1']:.2f} ± {100 * s['weighted_f1']:.2f} "
          f"acc {100 * m['accuracy']:.2f} ± {100 * s['accuracy']:.2f} "
          f"train {np.mean([r['train_seconds'] for r in results]):.0f} s/seed")


if __name__ == "__main__":
    main()
