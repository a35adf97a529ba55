"""Synthetic datasets in exactly the paper's pickle layouts, with labels a model can learn.

Used by tests and benchmarks (the real pickles are not redistributable). The generative story makes both
the features and the conversation context informative, so a model that beats chance only by using one of
them does worse than one that uses both:

* each speaker keeps their previous emotion with probability ``persist`` and otherwise draws a new one from
  the dataset's class frequencies (so same-speaker context predicts the label, and shifts happen);
* each utterance's features are ``clarity * prototype[modality, emotion] + noise`` with a per-utterance
  clarity in [0, 1], so some utterances are ambiguous on their own and need that context;
* persona vectors are a per-speaker base (around the real files' 0.3) plus small per-utterance noise.

Files written (names as the paper's README expects them): ``IEMOCAP_features.pkl`` (9-tuple),
``iemocap_features_roberta.pkl`` (10-tuple), ``IEMOCAP_persona.pkl``; or for MELD ``MELD_features_raw1.pkl``
(10-tuple), ``meld_features_roberta.pkl`` (11-tuple), ``MELD_persona.pkl``; plus ``meta.json`` naming
the features "synthetic" so checkpoints trained on them say so.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcgnet.config import DATASETS
from pcgnet.data import FEATURE_NAMES, PERSONA_NAMES, ROBERTA_NAMES

TEXT_UNUSED_DIM = {"IEMOCAP": 100, "MELD": 600}  # the MMGCN text vectors the paper does not use
MELD_SENTIMENT = {0: 0, 1: 1, 2: 2, 3: 2, 4: 1, 5: 2, 6: 2}  # emotion -> neutral/positive/negative


@dataclass(frozen=True)
class SynthOptions:
    dialogues: int = 40
    min_len: int = 8
    max_len: int = 24
    test_fraction: float = 0.2
    persist: float = 0.7  # probability that a speaker keeps their previous emotion
    signal: float = 0.3  # per-dimension prototype amplitude (noise std is 1)
    seed: int = 0


# The paper's dataset sizes (spec 1.1): dialogue counts, test share and mean dialogue length (IEMOCAP 151
# dialogues of ~49 utterances, 31 of them test; MELD 1 432 of ~9.6, 280 test) -- for benchmarks.
PAPER_SIZES: dict[str, SynthOptions] = {
    "IEMOCAP": SynthOptions(dialogues=151, min_len=24, max_len=74, test_fraction=31 / 151),
    "MELD": SynthOptions(dialogues=1432, min_len=2, max_len=17, test_fraction=280 / 1432),
}


def _utterance_vectors(rng: np.random.Generator, protos: np.ndarray, labels: np.ndarray,
                       clarity: np.ndarray) -> list[np.ndarray]:
    noise = rng.standard_normal((len(labels), protos.shape[1]), dtype=np.float32)
    x = clarity[:, None] * protos[labels] + noise
    return [row.astype(np.float32) for row in x]


def make_synthetic(dataset: str, opts: SynthOptions = SynthOptions()) -> dict[str, Any]:
    """Build the three objects (feature tuple, RoBERTa tuple, persona dict) in memory."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r} (choose from {', '.join(DATASETS)})")
    if opts.dialogues < 2:
        raise ValueError("need at least 2 dialogues (one train, one test)")
    if not 1 <= opts.min_len <= opts.max_len:
        raise ValueError("need 1 <= min_len <= max_len")
    spec = DATASETS[dataset]
    rng = np.random.default_rng(opts.seed)
    c = len(spec.labels)
    freq = np.asarray(spec.class_freq, dtype=np.float64)
    freq = freq / freq.sum()
    dims = dict(spec.dims)
    protos = {m: (rng.choice([-1.0, 1.0], size=(c, d)) * opts.signal).astype(np.float32)
              for m, d in dims.items()}
    # Text carries the most signal, audio less, visual least (as in the paper's by-modality table).
    mod_gain = {"t": 1.0, "a": 0.6, "v": 0.4}

    n_test = max(1, int(round(opts.test_fraction * opts.dialogues)))
    n_train = opts.dialogues - n_test
    if dataset == "IEMOCAP":
        # Sessions 1-4 train, session 5 test, like the real split.
        ids = [f"Ses0{1 + (i % 4)}{'FM'[i % 2]}_synth{i:03d}" for i in range(n_train)]
        ids += [f"Ses05{'FM'[i % 2]}_synth{n_train + i:03d}" for i in range(n_test)]
    else:
        ids = list(range(opts.dialogues))  # MELD ids are ints: train first, then test

    vid_ids, v_spk, v_lab, v_text, v_audio, v_vis, v_sent = {}, {}, {}, {}, {}, {}, {}
    rob = [{}, {}, {}, {}]
    r_spk, r_sent_lab = {}, {}
    persona: dict[Any, np.ndarray] = {}
    for vid in ids:
        n = int(rng.integers(opts.min_len, opts.max_len + 1))
        if dataset == "IEMOCAP":
            n_spk = 2
        else:
            n_spk = int(rng.integers(1, min(spec.n_speakers, 4) + 1))
        # Turn taking: mostly alternating, sometimes the same speaker holds the floor.
        turns = [int(rng.integers(n_spk))]
        for _ in range(n - 1):
            turns.append(turns[-1] if rng.random() < 0.25 or n_spk == 1
                         else int((turns[-1] + rng.integers(1, n_spk)) % n_spk))
        turns_arr = np.asarray(turns)
        labels = np.empty(n, dtype=np.int64)
        last: dict[int, int] = {}
        for i, s in enumerate(turns):
            if s in last and rng.random() < opts.persist:
                labels[i] = last[s]
            else:
                labels[i] = rng.choice(c, p=freq)
            last[s] = int(labels[i])
        clarity = rng.uniform(0.0, 1.0, n).astype(np.float32)

        if dataset == "IEMOCAP":
            # One M and one F speaker per dialogue; which of them speaks first varies.
            first = "MF"[int(rng.integers(2))]
            other = "F" if first == "M" else "M"
            gender = [first if s == 0 else other for s in turns]
            v_spk[vid] = gender
            r_spk[vid] = list(gender)
            vid_ids[vid] = [f"{vid}_{g}{i:03d}" for i, g in enumerate(gender)]
        else:
            # One-hot slot in order of first appearance (spec 1.1).
            order: dict[int, int] = {}
            onehots = []
            for s in turns:
                slot = order.setdefault(s, len(order))
                v = [0] * spec.n_speakers
                v[slot] = 1
                onehots.append(v)
            v_spk[vid] = onehots
            r_spk[vid] = [list(v) for v in onehots]
            vid_ids[vid] = [f"dia{vid}_utt{i}" for i in range(n)]
            r_sent_lab[vid] = [MELD_SENTIMENT[int(y)] for y in labels]
        v_lab[vid] = [int(y) for y in labels]
        v_sent[vid] = [f"synthetic utterance {i} of dialogue {vid}" for i in range(n)]
        v_text[vid] = [rng.standard_normal(TEXT_UNUSED_DIM[dataset]).astype(np.float32) for _ in range(n)]
        v_audio[vid] = _utterance_vectors(rng, protos["a"], labels, clarity * mod_gain["a"])
        v_vis[vid] = _utterance_vectors(rng, protos["v"], labels, clarity * mod_gain["v"])
        text = _utterance_vectors(rng, protos["t"], labels, clarity * mod_gain["t"])
        for k in range(4):  # four "layers": the same signal with a little layer-specific noise
            rob[k][vid] = [(x + 0.1 * rng.standard_normal(x.shape[0])).astype(np.float32) for x in text]
        base = rng.normal(0.3, 0.05, size=(n_spk, 5))
        persona[vid] = (base[turns_arr] + rng.normal(0, 0.02, size=(n, 5))).astype(np.float32)

    train_ids, test_ids = ids[:n_train], ids[n_train:]
    n_cv = max(1, n_train // 10)
    cos_train, cos_valid = train_ids[n_cv:], train_ids[:n_cv]  # COSMIC's own split (ignored by PCGNet)
    if dataset == "IEMOCAP":
        feat = (vid_ids, v_spk, v_lab, v_text, v_audio, v_vis, v_sent, train_ids, test_ids)
        rob_t = (r_spk, {k: list(v) for k, v in v_lab.items()}, rob[0], rob[1], rob[2], rob[3], v_sent,
                 cos_train, test_ids, cos_valid)
    else:
        feat = (vid_ids, v_spk, v_lab, v_text, v_audio, v_vis, v_sent, train_ids, test_ids, None)
        rob_t = (r_spk, {k: list(v) for k, v in v_lab.items()}, r_sent_lab, rob[0], rob[1], rob[2], rob[3],
                 v_sent, cos_train, test_ids, cos_valid)
    return {"features": feat, "roberta": rob_t, "persona": persona}


def write_synthetic(dataset: str, out: str | Path, opts: SynthOptions = SynthOptions()) -> dict[str, Path]:
    """Write the three pickles (and the JSON sidecar) under ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    objs = make_synthetic(dataset, opts)
    paths = {
        "features": out / FEATURE_NAMES[dataset],
        "roberta": out / ROBERTA_NAMES[dataset],
        "persona": out / PERSONA_NAMES[dataset],
    }
    for key, p in paths.items():
        with open(p, "wb") as f:
            pickle.dump(objs[key], f, protocol=4)
    side = out / "meta.json"
    side.write_text(json.dumps({
        "extractors": {m: {"name": "synthetic", "dim": d} for m, d in DATASETS[dataset].dims.items()},
        "persona": {"source": "given"},
        "dataset": dataset,
        "synthetic": {"dataset": dataset, **opts.__dict__},
    }, indent=2) + "\n", encoding="utf-8")
    paths["sidecar"] = side
    return paths


def load_synthetic(dataset: str, opts: SynthOptions = SynthOptions(), valid_rate: float = 0.0):
    """A synthetic ``DialogueDataset`` via a temporary folder (through the real reader and its checks)."""
    import tempfile

    from pcgnet.data import load_dataset

    with tempfile.TemporaryDirectory(prefix="pcgnet-synth-") as tmp:
        paths = write_synthetic(dataset, tmp, opts)
        return load_dataset(dataset, paths["features"], valid_rate=valid_rate, seed=opts.seed)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth", help="write small synthetic pickles with the paper's layouts (for tests and benchmarks)",
        description="Write feature, RoBERTa and persona pickles with exactly the paper's layouts and labels "
                    "that depend learnably on the features and on the conversation context.")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="IEMOCAP")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dialogues", type=int, default=SynthOptions.dialogues, help="number of dialogues (default 40)")
    p.add_argument("--min-len", dest="min_len", type=int, default=SynthOptions.min_len)
    p.add_argument("--max-len", dest="max_len", type=int, default=SynthOptions.max_len)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paper-size", dest="paper_size", action="store_true",
                   help="the paper's dialogue counts and mean lengths (IEMOCAP 151 x ~49, MELD 1432 x ~9.6); "
                        "overrides --dialogues/--min-len/--max-len")
    p.set_defaults(func=_run)


def _run(args) -> int:
    if args.paper_size:
        opts = dataclasses.replace(PAPER_SIZES[args.dataset], seed=args.seed)
    else:
        opts = SynthOptions(dialogues=args.dialogues, min_len=args.min_len, max_len=args.max_len, seed=args.seed)
    try:
        paths = write_synthetic(args.dataset, args.out, opts)
    except ValueError as e:
        raise SystemExit(f"pcgnet synth: {e}") from None
    for key in ("features", "roberta", "persona"):
        print(f"{key:9s} {paths[key]}")
    print(f"train: pcgnet train --dataset {args.dataset} --data_dir {paths['features']} --epochs 20")
    return 0
