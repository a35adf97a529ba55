"""Fine-tune the top layers of a sentence encoder (all-MiniLM-L6-v2 or all-mpnet-base-v2) on MELD utterance
emotion (train split, selected on dev).

Why only the top layers: the bottom layers' token states are computed once and cached, so a step costs a
forward+backward through ``--top`` layers only (CPU budget), and only those layers ship as a small delta
(``--out`` gets ``NAME.safetensors`` + ``NAME.json``; loaded by ``extractors.meld_text``).

The encoder reads what the live extractor reads (:func:`extractors.text.encoder_input`): the utterance and,
with ``--context N``, the N utterances before it in its dialogue (causal). ``--asr-prob P`` trains a
fraction P of the samples on ASR-style text (:func:`extractors.text.asr_style`: lower case, no
punctuation) and then selects on the mean of gold and ASR-style dev W-F1, so one encoder serves both.
Resumable: the training state is saved in ``--work`` at every evaluation and picked up on restart.

``--fold K/N`` cross-fits: the encoder trains on the train dialogues outside fold K (every N-th dialogue,
starting at the K-th, in file order) and writes ``NAME.oof.npz``: the vectors it gives every train utterance (gold
and ASR-style text), the held-out fold marked. Run it for K = 1..N and hand the files to ``prepare-meld
--train-vectors``: the conversation model then trains on encoder vectors as unseen as those of dev and test.

    .venv/bin/python scripts/experiments/finetune_text.py --out checkpoints/text --name minilm-l6-meld-ctx \
        --top 4 --context 3 --asr-prob 0.5 --threads 2
"""

from __future__ import annotations

import argparse
import hashlib
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
from tqdm import tqdm

from extractors.meld_text import BASES, base_model_dir
from extractors.text import asr_style, encoder_input
from prepare.meld import SPLITS, dialogue_media, read_meld

log = logging.getLogger("finetune_text")
N_CLASSES = 7


def ext_mask(am: torch.Tensor) -> torch.Tensor:
    return (1.0 - am[:, None, None, :].float()) * torch.finfo(torch.float32).min


def run_top(layers: nn.ModuleList, h: torch.Tensor, am: torch.Tensor, encoder: nn.Module) -> torch.Tensor:
    m = ext_mask(am)
    # MPNet adds a relative-position bias (from its frozen table) to every layer's attention; BERT has none.
    kw = {"position_bias": encoder.compute_position_bias(h)} if hasattr(encoder, "compute_position_bias") else {}
    for layer in layers:
        out = layer(h, attention_mask=m, **kw)
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


Sample = tuple[tuple[str, str | None], int, tuple[int, int]]


def samples(csv_dir: Path, n_past: int, style) -> dict[str, list[Sample]]:
    """Per split: ((utterance, context) encoder input, label, (dialogue id, index in the dialogue)), the input
    built as the live extractor does (:func:`prepare.meld.dialogue_media`: the same history the live session
    keeps)."""
    out: dict[str, list] = {s: [] for s in SPLITS}
    for d in read_meld(csv_dir).values():
        for i, (u, m) in enumerate(zip(d.utterances, dialogue_media(d, style), strict=True)):
            out[d.split].append((encoder_input(m.text or "", m.speaker, m.context, n_past), u.label, (d.dialogue, i)))
    return out


def parse_fold(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n) and int(n) >= 2):
        raise SystemExit(f"--fold {text!r}: expected K/N with 1 <= K <= N, N >= 2 (e.g. 1/2)")
    return int(k), int(n)


@torch.inference_mode()
def cache_states(model, tok, inputs: list[tuple[str, str | None]], k0: int, max_length: int) -> list[torch.Tensor]:
    """Token states after the frozen bottom ``k0`` layers (fp16), one tensor per input."""
    full = model.encoder.layer
    model.encoder.layer = full[:k0]  # the frozen part only: the top layers are what training runs
    try:
        encs = [tok(a, b, truncation=True, max_length=max_length) for a, b in inputs]
        order = sorted(range(len(encs)), key=lambda i: len(encs[i]["input_ids"]))
        out: list[torch.Tensor | None] = [None] * len(encs)
        for s in tqdm(range(0, len(order), 64), desc="caching", mininterval=10):
            idx = order[s : s + 64]
            t = max(len(encs[i]["input_ids"]) for i in idx)
            ids = torch.zeros(len(idx), t, dtype=torch.long)
            typ = torch.zeros(len(idx), t, dtype=torch.long) if "token_type_ids" in encs[0] else None
            am = torch.zeros(len(idx), t, dtype=torch.long)
            for j, i in enumerate(idx):
                n = len(encs[i]["input_ids"])
                ids[j, :n] = torch.tensor(encs[i]["input_ids"])
                if typ is not None:
                    typ[j, :n] = torch.tensor(encs[i]["token_type_ids"])
                am[j, :n] = 1
            kw = {} if typ is None else {"token_type_ids": typ}
            hs = model(input_ids=ids, attention_mask=am, **kw).last_hidden_state
            for j, i in enumerate(idx):
                out[i] = hs[j, : int(am[j].sum())].to(torch.float16).clone()
    finally:
        model.encoder.layer = full
    return out  # type: ignore[return-value]


def length_batches(seqs: list[torch.Tensor], idx: list[int], batch: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length (little padding), in shuffled order."""
    idx = sorted(idx, key=lambda i: (seqs[i].shape[0], rng.random()))
    out = [idx[s : s + batch] for s in range(0, len(idx), batch)]
    rng.shuffle(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv-dir", type=Path, default=Path("/work/shared/data/meld"), help="MELD CSVs")
    ap.add_argument("--out", type=Path, required=True, help="where the delta (+ .json) goes")
    ap.add_argument("--work", type=Path, default=None, help="resume state (default runs/finetune/NAME)")
    ap.add_argument("--name", default="minilm-l6-meld", help="registry name of the delta (file stem)")
    ap.add_argument("--base", choices=sorted(BASES), default="minilm-l6", help="the packaged encoder fine-tuned")
    ap.add_argument("--top", type=int, default=4, help="top layers trained (the rest cached)")
    ap.add_argument("--context", type=int, default=0, help="earlier utterances read with each one")
    ap.add_argument("--asr-prob", type=float, default=0.0, help="fraction of samples trained on ASR-style text")
    ap.add_argument("--epochs", type=int, default=4, help="passes over MELD train")
    ap.add_argument("--lr", type=float, default=1e-4, help="AdamW lr of the layers (head: 10x)")
    ap.add_argument("--batch", type=int, default=32, help="utterances per step")
    ap.add_argument("--max-length", type=int, default=64, help="tokens read per input (context included)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="what the extractor runs the encoder in (recorded in the JSON; extractors.meld_text)")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--evals-per-epoch", type=int, default=2, help="dev evaluations per epoch")
    ap.add_argument("--fold", default=None, metavar="K/N",
                    help="cross-fit: train without train fold K of N, write NAME.oof.npz for that fold")
    args = ap.parse_args()
    fold = parse_fold(args.fold)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    work = args.work or Path("runs/finetune") / args.name
    work.mkdir(parents=True, exist_ok=True)
    wall0 = time.perf_counter()

    from transformers import AutoModel, AutoTokenizer

    base = base_model_dir(args.base)
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = AutoModel.from_pretrained(str(base), local_files_only=True).eval()
    n_layers = model.config.num_hidden_layers
    k0 = n_layers - args.top
    styles = {"gold": lambda t: t} | ({"asr": asr_style} if args.asr_prob > 0 else {})
    data = {v: samples(args.csv_dir, args.context, f) for v, f in styles.items()}
    t0 = time.perf_counter()
    cache = {(v, s): cache_states(model, tok, [x for x, _, _ in data[v][s]], k0, args.max_length)
             for v in styles for s in SPLITS}
    cache_s = time.perf_counter() - t0
    log.info("cached layer-%d token states of %s in %.1f s", k0, sorted(styles), cache_s)
    y = {s: np.array([lab for _, lab, _ in data["gold"][s]]) for s in SPLITS}
    where = np.array([key for _, _, key in data["gold"]["train"]])  # (dialogue id, index in it) per train sample
    vid = where[:, 0]
    held = np.zeros(len(vid), dtype=bool)
    if fold is not None:
        order = list(dict.fromkeys(vid.tolist()))  # train dialogues in file order
        out_ids = set(order[fold[0] - 1 :: fold[1]])
        held = np.isin(vid, list(out_ids))
        log.info("fold %s: %d dialogues (%d utterances) held out", args.fold, len(out_ids), int(held.sum()))
    train_idx = np.flatnonzero(~held).tolist()

    model.requires_grad_(False)
    top = model.encoder.layer[k0:]
    top.requires_grad_(True)
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(model.config.hidden_size, N_CLASSES))
    lossf = nn.CrossEntropyLoss()
    params = [{"params": top.parameters(), "lr": args.lr}, {"params": head.parameters(), "lr": args.lr * 10}]
    opt = torch.optim.AdamW(params, weight_decay=0.01)
    n_train = len(train_idx)
    per_epoch = math.ceil(n_train / args.batch)
    steps = args.epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.06 * steps)) * max(0.0, (steps - s) / steps))

    def vectors(seqs: list[torch.Tensor]) -> torch.Tensor:
        top.eval()
        out = torch.zeros(len(seqs), model.config.hidden_size)
        order = sorted(range(len(seqs)), key=lambda i: seqs[i].shape[0])
        with torch.inference_mode():
            for b in range(0, len(order), 128):
                idx = order[b : b + 128]
                h, am = pad([seqs[i] for i in idx])
                out[idx] = run_top(top, h, am, model.encoder)
        return out

    def split_vectors(split: str) -> dict[str, torch.Tensor]:
        return {v: vectors(cache[(v, split)]) for v in styles}

    def score(vecs: dict[str, torch.Tensor], gold: np.ndarray) -> dict[str, float]:
        """W-F1 and accuracy of the head on each style's vectors, and their selection mean."""
        head.eval()
        res = {}
        with torch.inference_mode():
            for v, x in vecs.items():
                p = head(x).argmax(1).numpy()
                res[f"{v}_wf1"] = 100 * f1_score(gold, p, average="weighted")
                res[f"{v}_acc"] = 100 * accuracy_score(gold, p)
        res["select"] = float(np.mean([res[f"{v}_wf1"] for v in vecs]))
        return res

    state_file = work / "state.pt"
    torch.manual_seed(args.seed)
    start_epoch, step, best, train_s = 0, 0, {"select": -1.0}, 0.0
    best_top, best_head = None, None
    if state_file.is_file():  # resume: our own file from an interrupted run of the same arguments
        st = torch.load(state_file, weights_only=True)
        if st["args"] == json.dumps(vars(args), default=str):
            top.load_state_dict(st["top"])
            head.load_state_dict(st["head"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            start_epoch, step, train_s = int(st["epoch"]), int(st["step"]), float(st["train_s"])
            best = json.loads(st["best"])
            best_top, best_head = st["best_top"], st["best_head"]
            log.info("resumed at epoch %d step %d (best dev %.2f)", start_epoch, step, best["select"])
    eval_every = math.ceil(per_epoch / args.evals_per_epoch)
    for ep in range(start_epoch, args.epochs):
        rng_ep = random.Random(args.seed * 1000 + ep)  # the epoch's batches do not depend on a resume
        variant = [("asr" if rng_ep.random() < args.asr_prob else "gold") for _ in range(len(vid))]
        batches = length_batches(cache[("gold", "train")], train_idx, args.batch, rng_ep)
        done_in_epoch = step - ep * per_epoch
        t0 = time.perf_counter()
        for bi in tqdm(batches[done_in_epoch:], desc=f"epoch {ep + 1}/{args.epochs}", mininterval=30):
            top.train()
            head.train()
            h, am = pad([cache[(variant[i], "train")][i] for i in bi])
            loss = lossf(head(run_top(top, h, am, model.encoder)), torch.tensor(y["train"][bi]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(top.parameters()) + list(head.parameters()), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % eval_every == 0 or step == (ep + 1) * per_epoch:
                train_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                dv = score(split_vectors("dev"), y["dev"])
                log.info("epoch %d step %d loss %.3f dev %s (train %.0f s)", ep + 1, step, loss.item(),
                         {k: round(v, 2) for k, v in dv.items()}, train_s)
                if dv["select"] > best["select"]:
                    best = dv
                    best_top = {k: v.detach().clone() for k, v in top.state_dict().items()}
                    best_head = {k: v.detach().clone() for k, v in head.state_dict().items()}
                torch.save({"args": json.dumps(vars(args), default=str), "top": top.state_dict(),
                            "head": head.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "epoch": ep + (step == (ep + 1) * per_epoch), "step": step, "train_s": train_s,
                            "best": json.dumps(best), "best_top": best_top, "best_head": best_head},
                           work / "state.tmp")
                (work / "state.tmp").replace(state_file)
                t0 = time.perf_counter()
    top.load_state_dict(best_top)
    head.load_state_dict(best_head)
    # Ship fp16 and measure with exactly the rounded weights (what the extractor will compute).
    for p in list(top.parameters()) + list(head.parameters()):
        p.data = p.data.half().float()
    final = {s: split_vectors(s) for s in SPLITS}  # each split encoded once: scores and the fold file use them
    res = {s: score(final[s], y[s]) for s in SPLITS}
    if fold is not None:
        res["held_out"] = score({v: x[held] for v, x in final["train"].items()}, y["train"][held])
    log.info("best dev %.2f; rounded weights: %s", best["select"], res)
    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    delta = {f"encoder.layer.{k0 + int(k.split('.')[0])}.{k.split('.', 1)[1]}": v.half().contiguous()
             for k, v in top.state_dict().items()}
    delta.update({f"head.{k}": v.half().contiguous() for k, v in head.state_dict().items() if k.startswith("1.")})
    wpath = args.out / f"{args.name}.safetensors"
    save_file(delta, str(wpath), metadata={"format": "pcgnet-text-delta"})
    meta = {"format": "pcgnet-text-delta", "version": 1, "name": args.name, "base": args.base,
            "top_layers": list(range(k0, n_layers)), "pooling": "mean", "normalize": False,
            "max_length": args.max_length, "context_utterances": args.context,
"dtype": args.dtype, "dim": model.config.hidden_size,
            "weights_sha256": hashlib.sha256(wpath.read_bytes()).hexdigest(),
            "training": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "cache_seconds": round(cache_s, 1), "train_seconds": round(train_s, 1),
            "wall_seconds": round(time.perf_counter() - wall0, 1),
            "utterance_classifier": {s: {k: round(v, 2) for k, v in r.items()} for s, r in res.items()}}
    (args.out / f"{args.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    if fold is not None:  # every train utterance's vector; "held" marks the fold this encoder never saw
        np.savez(args.out / f"{args.name}.oof.npz", dialogue=vid, utterance=where[:, 1], held=held,
                 **{v: x.numpy() for v, x in final["train"].items()})
    print(json.dumps(meta["utterance_classifier"]), f"train {train_s:.0f} s, wall {meta['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
