"""``pcgnet evaluate``: score a saved checkpoint on a dataset split (table, ``--json`` or ``--plot``).

Without model flags the architecture comes from the checkpoint's config; a model flag that contradicts it
is an error (the weights only fit the architecture they were trained with). Training-only flags of the
paper's command (--lr, --epochs, ...) are accepted so the same command line can be pasted, and ignored.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcgnet.checkpoint import load_checkpoint, read_meta, resolve_device
from pcgnet.cli import UsageError
from pcgnet.config import DATASETS, PCGNetConfig
from pcgnet.data import Dialogue, batches
from pcgnet.metrics import evaluate_predictions


@torch.no_grad()
def evaluate_dialogues(model: torch.nn.Module, dialogues: Sequence[Dialogue], label_names: Sequence[str],
                       batch_size: int = 32, device: torch.device | str = "cpu", *, gamma: float = 0.5,
                       class_weights: torch.Tensor | None = None) -> dict[str, Any]:
    """Metrics of ``model`` (put in eval mode) on ``dialogues``, plus ``loss`` = focal ERC + shift NLL.

    The loss leaves out the contrastive term: it samples randomly, and a selection criterion should not.
    """
    from pcgnet.graph import shift_labels
    from pcgnet.losses import focal_loss, shift_nll

    was_training = model.training
    model.eval()
    config: PCGNetConfig = model.config
    c = config.n_classes
    ys, eps, sys_, sps, losses, weights = [], [], [], [], [], []
    for batch in batches(list(dialogues), batch_size, config.modalities):
        batch = batch.to(device)
        out = model(batch)
        y = batch.labels[batch.mask]
        ysh = shift_labels(y, out.shift_prev, out.shift_cur, c)
        losses.append(float(focal_loss(out.emotion_logp, y, gamma, class_weights)) + float(shift_nll(out.shift_logp, ysh)))
        weights.append(int(batch.mask.sum()))
        keep = ysh >= 0
        ys.append(y.cpu())
        eps.append(out.emotion_logp.exp().cpu())
        sys_.append(ysh[keep].cpu())
        sps.append(out.shift_logp[keep].exp().cpu())
    model.train(was_training)
    if not ys:
        raise ValueError("no dialogues to evaluate")
    metrics = evaluate_predictions(torch.cat(ys), torch.cat(eps), torch.cat(sys_),
                                   torch.cat(sps).reshape(-1, c * c), label_names)
    metrics["loss"] = float(np.average(losses, weights=weights))
    return metrics


# -------------------------------------------------------------------------------------------- reporting
def _pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def print_report(m: dict[str, Any], labels: Sequence[str], console=None, title: str = "evaluation") -> None:
    """A rich table of everything ``--json`` returns (values as percentages)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    t = Table(title=title, show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("weighted F1", _pct(m["weighted_f1"]))
    t.add_row("accuracy", _pct(m["accuracy"]))
    for name in labels:
        t.add_row(f"  F1 {name}", _pct(m["per_class_f1"].get(name)))
    c2 = len(labels) ** 2
    t.add_row(f"shift accuracy ({c2} transition classes)", _pct(m["shift_accuracy"]))
    t.add_row(f"shift weighted F1 ({c2} transition classes)", _pct(m["shift_f1"]))
    t.add_row("utterances / shift pairs", f"{m['n_utterances']} / {m['n_pairs']}")
    console.print(t)
    b = m["binary_shift"]
    base = b["baseline_always_shift"]
    bt = Table(title=f"binary shift detection ({_pct(b['shift_rate'])}% of pairs are shifts)")
    bt.add_column("metric")
    bt.add_column("model", justify="right")
    bt.add_column("always shift", justify="right")
    for key, name in (("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
                      ("balanced_accuracy", "balanced accuracy"), ("auroc", "AUROC")):
        bt.add_row(name, _pct(b[key]), _pct(base[key]))
    console.print(bt)


def json_clean(x: Any) -> Any:
    """NaN/inf are not JSON: they become null."""
    if isinstance(x, dict):
        return {k: json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ------------------------------------------------------------------------------------------------ command
def register(subparsers) -> None:
    from pcgnet.train import add_data_args, add_model_args, add_training_args

    p = subparsers.add_parser("evaluate", help="evaluate a saved checkpoint",
                              description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True,
                   help="checkpoint directory (model.safetensors + config.json), or a multi-seed --out directory "
                        "(its seed-N checkpoints are evaluated and reported as mean ± std)")
    p.add_argument("--split", choices=("test", "valid", "train"), default="test", help="which split (test)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw the confusion matrix")
    add_data_args(p)
    add_model_args(p)
    add_training_args(p)
    p.set_defaults(func=run)


def contradictions(args: argparse.Namespace, config: PCGNetConfig) -> list[str]:
    """Flags given on the command line whose value differs from the checkpoint's config."""
    from pcgnet.train import ABLATION_FLAGS, MODEL_FLAGS, given_model_fields

    given = given_model_fields(args)
    out = []
    for fld, v in given.items():
        have = getattr(config, fld)
        if fld == "modalities":
            if tuple(v) != tuple(have):
                out.append(f"--modals {args.modals} (checkpoint: {''.join({'t': 'l'}.get(m, m) for m in have)})")
        elif v != have:
            if fld in ABLATION_FLAGS:
                out.append(f"--{ABLATION_FLAGS[fld]} (checkpoint: {fld}={have})")
            elif fld == "causal":
                out.append("--causal (checkpoint is not causal)")
            else:
                flags = "/".join(f"--{d}" for d in MODEL_FLAGS[fld] if getattr(args, d, None) is not None)
                out.append(f"{flags} {v} (checkpoint: {fld}={have})")
    return out


def checkpoint_dirs(ckpt: str) -> list[Path]:
    """``ckpt`` itself, or the ``seed-N`` checkpoints of a multi-seed run directory."""
    p = Path(ckpt)
    if p.is_dir() and not (p / "config.json").exists():
        runs = sorted((d for d in p.glob("seed-*") if (d / "config.json").is_file()),
                      key=lambda d: (len(d.name), d.name))
        if runs:
            return runs
    return [p]


def evaluate_checkpoint(args: argparse.Namespace, ckpt: Path, cache: dict) -> tuple[dict[str, Any], Any, int]:
    """Metrics of one checkpoint on the requested split; ``cache`` shares loaded datasets across seeds."""
    from pcgnet.data import load_dataset
    from pcgnet.train import PRESETS, class_weights

    meta = read_meta(ckpt)
    config = PCGNetConfig.from_json(meta["model"])
    bad = contradictions(args, config)
    if bad:
        raise UsageError(f"flags contradict the checkpoint's config ({ckpt}): " + "; ".join(bad))
    training = meta.get("training") or {}
    dataset = args.dataset or training.get("dataset") or next(
        (name for name, spec in DATASETS.items() if tuple(spec.labels) == tuple(config.labels)), None)
    if dataset not in PRESETS:
        raise UsageError(f"--dataset is needed (the checkpoint does not name a known dataset: {dataset!r})")
    data_dir = args.data_dir or training.get("data_dir") or training.get("data")  # "data": experiment scripts
    if not data_dir:
        raise UsageError("--data_dir is needed (the checkpoint does not record one)")
    if args.split == "valid":
        valid_rate = args.valid_rate if args.valid_rate is not None else float(training.get("valid_rate", 0.1))
    else:
        valid_rate = 0.0  # the held-out part of train only matters for --split valid
    try:
        device = resolve_device("cpu" if args.no_cuda else args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    split_seed = int(training.get("split_seed", training.get("seed", 0)))
    key = (dataset, str(data_dir), config.modalities, config.use_persona, valid_rate, split_seed)
    if key not in cache:
        cache[key] = load_dataset(dataset, data_dir, roberta_path=args.roberta_path, persona_path=args.persona_path,
                                  modalities=config.modalities, need_persona=config.use_persona,
                                  valid_rate=valid_rate, seed=split_seed)
    ds = cache[key]
    feat_file = ds.files.get("features")
    if tuple(ds.labels) != tuple(config.labels):
        raise UsageError(f"{feat_file}: labels {list(ds.labels)} differ from the checkpoint's {list(config.labels)}")
    for m in config.modalities:
        if ds.dims[m] != config.dims[m]:
            src = ds.files.get("roberta") if m == "t" else feat_file
            raise UsageError(f"{src}: {m} features are {ds.dims[m]}-d but the checkpoint expects {config.dims[m]}-d")
    loaded = load_checkpoint(ckpt, device=device, expect_extractors=ds.extractors)
    dialogues = ds.split(args.split)
    if not dialogues:
        raise UsageError(f"--split {args.split}: no dialogues in that split (valid needs --valid_rate > 0)")
    gamma = args.gamma if args.gamma is not None else float(training.get("gamma", 0.5))
    alpha = class_weights(dataset, len(ds.labels)).to(device) if training.get("class_weight") else None
    bs = args.batch_size or int(training.get("batch_size", 32))
    m = evaluate_dialogues(loaded.model, dialogues, ds.labels, bs, device, gamma=gamma, class_weights=alpha)
    return m, ds, len(dialogues)


def print_aggregate(agg: dict[str, Any], labels: Sequence[str], console, title: str) -> None:
    """Mean ± std across seeds of the headline metrics."""
    from rich.table import Table

    mean, std = agg["mean"], agg["std"]

    def cell(path: tuple[str, ...]) -> str:
        mu, sd = mean, std
        for k in path:
            mu, sd = mu.get(k, {}), sd.get(k, {})
        return f"{_pct(mu)} ± {_pct(sd)}" if isinstance(mu, float) else "n/a"

    t = Table(title=title)
    t.add_column("metric")
    t.add_column(f"mean ± std ({agg['n_runs']} runs)", justify="right")
    t.add_column("always shift", justify="right")
    t.add_row("weighted F1", cell(("weighted_f1",)), "")
    t.add_row("accuracy", cell(("accuracy",)), "")
    for name in labels:
        t.add_row(f"  F1 {name}", cell(("per_class_f1", name)), "")
    t.add_row("shift accuracy (transitions)", cell(("shift_accuracy",)), "")
    t.add_row("shift weighted F1 (transitions)", cell(("shift_f1",)), "")
    for key, name in (("precision", "binary shift precision"), ("recall", "binary shift recall"),
                      ("f1", "binary shift F1"), ("balanced_accuracy", "binary shift balanced acc."),
                      ("auroc", "binary shift AUROC")):
        t.add_row(name, cell(("binary_shift", key)), cell(("binary_shift", "baseline_always_shift", key)))
    console.print(t)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pcgnet.metrics import aggregate

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    ckpts = checkpoint_dirs(args.ckpt)
    cache: dict = {}
    results = []
    for ckpt in ckpts:
        m, ds, n_dialogues = evaluate_checkpoint(args, ckpt, cache)
        results.append((ckpt, m))
    labels = list(ds.labels)
    title = f"{ds.name} {args.split} ({n_dialogues} dialogues)"
    if args.plot:
        from pcgnet.plots import plot_confusion

        confusion = np.sum([np.asarray(m["confusion"]) for _, m in results], axis=0).tolist()
        w = ", ".join(_pct(m["weighted_f1"]) for _, m in results)
        plot_confusion(confusion, labels, args.plot, title=f"{ds.name} {args.split}: W-F1 {w}")
    console = Console(highlight=False, soft_wrap=True)
    if len(results) == 1:
        ckpt, m = results[0]
        if args.json:
            out = dict(m)
            out.update(checkpoint=str(ckpt), dataset=ds.name, split=args.split, labels=labels)
            print(json.dumps(json_clean(out)))
        else:
            print_report(m, labels, console, title=f"{title}, {ckpt}")
    else:
        agg = aggregate([m for _, m in results])
        if args.json:
            out = {"runs": [{"checkpoint": str(c), **m} for c, m in results], **agg,
                   "dataset": ds.name, "split": args.split, "labels": labels}
            print(json.dumps(json_clean(out)))
        else:
            for ckpt, m in results:
                console.print(f"{ckpt}: W-F1 {_pct(m['weighted_f1'])} acc {_pct(m['accuracy'])} "
                              f"shift F1 {_pct(m['shift_f1'])}")
            print_aggregate(agg, labels, console, title=f"{title}, {args.ckpt}")
    if args.plot and not args.json:
        console.print(f"confusion matrix: {args.plot}")
    return 0
