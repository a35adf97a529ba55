"""``pcgnet evaluate``: score a saved checkpoint on a dataset split (table, ``--json`` or ``--plot``).

Without model flags the architecture comes from the checkpoint's config; a model flag that contradicts it
is an error (the weights only fit the architecture they were trained with). Training-only flags of the
paper's command (--lr, --epochs, ...) are accepted so the same command line can be pasted, and ignored.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcgnet.checkpoint import load_checkpoint, read_meta, resolve_device, write_shift_rule
from pcgnet.cli import UsageError
from pcgnet.config import DATASETS, PCGNetConfig
from pcgnet.data import Dialogue, batches
from pcgnet.flags import (
    ABLATION_FLAGS,
    MODEL_FLAGS,
    PRESETS,
    add_data_args,
    add_model_args,
    add_training_args,
    class_weights,
    given_model_fields,
)
from pcgnet.metrics import evaluate_predictions
from pcgnet.report import json_clean, pct, print_aggregate, print_report
from pcgnet.shift import ShiftRule, ShiftRuleError, choose_rule


@dataclass(frozen=True)
class Predictions:
    """A model's outputs on some dialogues, next to the gold labels (what every metric is computed from)."""

    labels: torch.Tensor  # (N,) gold emotion, -1 = unlabelled; N utterances in conversation order
    emotion_prob: torch.Tensor  # (N, C)
    pair_prev: torch.Tensor  # (P,) flat index of each same-speaker pair's previous utterance
    pair_cur: torch.Tensor  # (P,) ... and of its current utterance
    shift_prob: torch.Tensor  # (P, C*C) the shift head's transition distribution of each pair
    loss: float  # focal ERC + shift NLL (no contrastive term: it samples randomly, selection should not)

    def metrics(self, label_names: Sequence[str], rule: ShiftRule | None = None,
                profile: str | None = None) -> dict[str, Any]:
        m = evaluate_predictions(self.labels, self.emotion_prob, self.pair_prev, self.pair_cur, self.shift_prob,
                                 label_names, rule, profile)
        m["loss"] = self.loss
        return m

    def choose_rule(self, selected_on: str) -> ShiftRule:
        """The shift rule's parameters chosen on these predictions (pcgnet.shift.choose_rule)."""
        return choose_rule(self.labels.numpy(), self.emotion_prob.numpy(), self.pair_prev.numpy(),
                           self.pair_cur.numpy(), self.shift_prob.numpy(), selected_on=selected_on)


@torch.no_grad()
def predict_dialogues(model: torch.nn.Module, dialogues: Sequence[Dialogue], batch_size: int = 32,
                      device: torch.device | str = "cpu", *, gamma: float = 0.5,
                      class_weights: torch.Tensor | None = None) -> Predictions:
    """Run ``model`` (in eval mode) over ``dialogues``; its outputs with the gold labels."""
    from pcgnet.graph import shift_labels
    from pcgnet.losses import focal_loss, shift_nll

    was_training = model.training
    model.eval()
    config: PCGNetConfig = model.config
    c = config.n_classes
    ys, eps, prevs, curs, sps, losses, weights = [], [], [], [], [], [], []
    offset = 0
    for batch in batches(list(dialogues), batch_size, config.modalities):
        batch = batch.to(device)
        out = model(batch)
        y = batch.labels[batch.mask]
        ysh = shift_labels(y, out.shift_prev, out.shift_cur, c)
        losses.append(float(focal_loss(out.emotion_logp, y, gamma, class_weights)) + float(shift_nll(out.shift_logp, ysh)))
        weights.append(int(batch.mask.sum()))
        ys.append(y.cpu())
        eps.append(out.emotion_logp.exp().cpu())
        prevs.append(out.shift_prev.cpu() + offset)
        curs.append(out.shift_cur.cpu() + offset)
        sps.append(out.shift_logp.exp().cpu())
        offset += int(y.numel())
    model.train(was_training)
    if not ys:
        raise ValueError("no dialogues to evaluate")
    return Predictions(torch.cat(ys), torch.cat(eps), torch.cat(prevs), torch.cat(curs),
                       torch.cat(sps).reshape(-1, c * c), float(np.average(losses, weights=weights)))


def evaluate_dialogues(model: torch.nn.Module, dialogues: Sequence[Dialogue], label_names: Sequence[str],
                       batch_size: int = 32, device: torch.device | str = "cpu", *, gamma: float = 0.5,
                       class_weights: torch.Tensor | None = None, rule: ShiftRule | None = None,
                       profile: str | None = None) -> dict[str, Any]:
    """Metrics of ``model`` on ``dialogues``, plus ``loss`` (see :class:`Predictions`)."""
    return predict_dialogues(model, dialogues, batch_size, device, gamma=gamma,
                             class_weights=class_weights).metrics(label_names, rule, profile)


# ------------------------------------------------------------------------------------------------ command
def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a saved checkpoint",
                              description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True,
                   help="checkpoint directory (model.safetensors + config.json), or a multi-seed --out directory "
                        "(its seed-N checkpoints are evaluated and reported as mean ± std)")
    p.add_argument("--split", choices=("test", "valid", "train"), default="test", help="which split (test)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--shift-profile", default=None, metavar="NAME",
                   help="the shift operating profile scored as binary_shift (default: the checkpoint's default, "
                        "balanced); every profile is summarised under 'profiles'")
    p.add_argument("--write-shift-rule", action="store_true",
                   help="with --split valid: choose the shift rule's parameters and profiles on the validation "
                        "split and store them (and both splits' metrics) in the checkpoint's config.json; the "
                        "weights are not touched")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw the confusion matrix")
    add_data_args(p)
    add_model_args(p)
    add_training_args(p)
    p.set_defaults(func=run)


def contradictions(args: argparse.Namespace, config: PCGNetConfig) -> list[str]:
    """Flags given on the command line whose value differs from the checkpoint's config."""
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


def recorded_split(training: dict[str, Any]) -> tuple[float, int]:
    """The validation rate and split seed a checkpoint's training recorded: its validation split, re-made."""
    return float(training.get("valid_rate", 0.1)), int(training.get("split_seed", training.get("seed", 0)))


def checkpoint_dirs(ckpt: str) -> list[Path]:
    """``ckpt`` itself, or the ``seed-N`` checkpoints of a multi-seed run directory."""
    p = Path(ckpt)
    if p.is_dir() and not (p / "config.json").exists():
        runs = sorted((d for d in p.glob("seed-*") if (d / "config.json").is_file()),
                      key=lambda d: (len(d.name), d.name))
        if runs:
            return runs
    return [p]


def _loss_weights(training: dict[str, Any], dataset: str, n_classes: int, device: torch.device) -> torch.Tensor | None:
    """The class weights of the reported loss: the exact ones the checkpoint was trained with, if recorded."""
    if training.get("class_weights"):
        return torch.tensor(training["class_weights"], dtype=torch.float32).to(device)
    alpha = class_weights(training.get("class_weight"), dataset, n_classes)
    return alpha.to(device) if alpha is not None else None


def evaluate_checkpoint(args: argparse.Namespace, ckpt: Path, cache: dict) -> tuple[dict[str, Any], Any, int]:
    """Metrics of one checkpoint on the requested split; ``cache`` shares loaded datasets across seeds."""
    from pcgnet.data import load_dataset

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
    recorded_rate, split_seed = recorded_split(training)
    if args.split == "valid":
        valid_rate = args.valid_rate if args.valid_rate is not None else recorded_rate
    else:
        valid_rate = 0.0  # the held-out part of train only matters for --split valid
    try:
        device = resolve_device("cpu" if args.no_cuda else args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
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
    alpha = _loss_weights(training, dataset, len(ds.labels), device)
    bs = args.batch_size or int(training.get("batch_size", 32))
    pred = predict_dialogues(loaded.model, dialogues, bs, device, gamma=gamma, class_weights=alpha)
    rule = loaded.shift_rule
    if args.write_shift_rule:
        test = predict_dialogues(loaded.model, ds.test, bs, device, gamma=gamma, class_weights=alpha) \
            if ds.test else None
        rule = store_shift_rule(ckpt, pred, test, ds.labels)
    return pred.metrics(ds.labels, rule, args.shift_profile), ds, len(dialogues)


def store_shift_rule(ckpt: Path, valid: Predictions, test: Predictions | None, labels: Sequence[str]) -> ShiftRule:
    """Choose the shift rule on the validation predictions and store it in ``ckpt`` with both splits' metrics
    under it (``--write-shift-rule``); the weights are untouched."""
    rule = valid.choose_rule("valid")
    scored = {"valid": valid.metrics(labels, rule)}
    if test is not None:
        scored["test"] = test.metrics(labels, rule)
    write_shift_rule(ckpt, rule, {k: json_clean({n: v for n, v in m.items() if n != "confusion"})
                                  for k, m in scored.items()})
    return rule


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pcgnet.metrics import aggregate

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    ckpts = checkpoint_dirs(args.ckpt)
    if args.write_shift_rule and args.split != "valid":
        raise UsageError("--write-shift-rule chooses on the validation split: add --split valid")
    cache: dict = {}
    results = []
    for ckpt in ckpts:
        try:
            m, ds, n_dialogues = evaluate_checkpoint(args, ckpt, cache)
        except ShiftRuleError as e:  # an unknown --shift-profile
            raise UsageError(f"--shift-profile: {e}") from None
        results.append((ckpt, m))
    labels = list(ds.labels)
    title = f"{ds.name} {args.split} ({n_dialogues} dialogues)"
    if args.plot:
        from pcgnet.plots import plot_confusion

        confusion = np.sum([np.asarray(m["confusion"]) for _, m in results], axis=0).tolist()
        w = ", ".join(pct(m["weighted_f1"]) for _, m in results)
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
                console.print(f"{ckpt}: W-F1 {pct(m['weighted_f1'])} acc {pct(m['accuracy'])} "
                              f"shift F1 {pct(m['shift_f1'])}")
            print_aggregate(agg, labels, console, title=f"{title}, {args.ckpt}")
    if args.plot and not args.json:
        console.print(f"confusion matrix: {args.plot}")
    return 0
