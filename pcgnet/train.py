"""``pcgnet train``: the paper's training loop with honest model selection and safetensors checkpoints.

Every flag of the paper's two README commands is accepted with its original meaning (spec 5); the ones
the original parses but never reads (--dropout, --reason_flag, --mtl, --use_clone) are accepted and do
nothing, as there. Hyper-parameters not given default to the paper's README command for the dataset.

Deliberate differences from the original training script (spec 4.2, 7.1):
* a validation split carved from train selects the best epoch by default; ``--valid_rate 0.0`` restores
  the paper's protocol (best epoch on the TEST set) and says so;
* the seed is applied ONCE per run; the original re-seeds before every pass, so each epoch sees the same
  batch order and dropout masks, which is not what "shuffled mini-batches" means;
* evaluation runs under ``torch.no_grad()`` and the best epoch is saved as a checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcgnet.checkpoint import resolve_device, save_checkpoint
from pcgnet.cli import UsageError
from pcgnet.config import PCGNetConfig
from pcgnet.data import DialogueDataset, add_training_views, batches, load_dataset
from pcgnet.evaluate import predict_dialogues
from pcgnet.flags import (
    PRESETS,
    add_data_args,
    add_model_args,
    add_training_args,
    apply_recipe,
    build_config,
    class_weights,
    given_model_fields,
    training_value,
)
from pcgnet.metrics import aggregate
from pcgnet.report import json_clean, print_report
from pcgnet.shift import UNTUNED, ShiftRule

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train PCGNet on the paper's pickles (or `pcgnet synth` data)",
                              description=__doc__.split("\n")[0])
    add_data_args(p)
    add_model_args(p)
    add_training_args(p)
    p.set_defaults(func=run)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def load_training_data(args: argparse.Namespace, dataset: str, modalities: tuple[str, ...] | None,
                       need_persona: bool, valid_rate: float, seed: int) -> DialogueDataset:
    data_dir = args.data_dir or PRESETS[dataset]["data_dir"]
    ds = load_dataset(dataset, data_dir, roberta_path=args.roberta_path, persona_path=args.persona_path,
                      modalities=modalities, need_persona=need_persona, valid_rate=valid_rate, seed=seed)
    for extra in args.train_also or ():
        other = load_dataset(dataset, extra, modalities=modalities, need_persona=need_persona,
                             valid_rate=valid_rate, seed=seed)
        ds = add_training_views(ds, other, extra)
    return ds


# ------------------------------------------------------------------------------------------------ training
@dataclass
class RunResult:
    seed: int
    best_epoch: int
    select_on: str  # "valid" or "test"
    metrics: dict[str, Any]  # test metrics at the best epoch
    valid_metrics: dict[str, Any] | None
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    shift_rule: ShiftRule = UNTUNED
    seconds: float = 0.0


def train_run(args: argparse.Namespace, ds: DialogueDataset, config: PCGNetConfig, seed: int,
              out_dir: Path | None, device: torch.device, console) -> RunResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pcgnet.losses import pcgnet_loss
    from pcgnet.model import PCGNet, count_parameters

    # Seeded once for the whole run (the original re-seeds before every pass, which replays the same batch
    # order and dropout masks every epoch; we deliberately do not).
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = PCGNet(config).to(device)
    n_params = count_parameters(model)
    quiet = args.quiet
    # The parameter count is printed even with --quiet (the paper's script prints it too).
    console.print(f"[bold]PCGNet[/bold] {ds.name} modalities={''.join(config.modalities)} hidden={config.hidden} "
                  f"causal={config.causal}: {n_params:,} parameters (seed {seed}, device {device})")
    lr, l2 = training_value(args, "lr", ds.name), training_value(args, "l2", ds.name)
    gamma, bs = training_value(args, "gamma", ds.name), training_value(args, "batch_size", ds.name)
    epochs = training_value(args, "epochs", ds.name)
    # Adam with coupled L2 (weight_decay adds l2 * w to the gradient), exactly as the original; not AdamW.
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=l2)
    cw_mode = training_value(args, "class_weight", ds.name)
    alpha = class_weights(cw_mode, ds.name, ds.n_classes, np.concatenate([d.labels for d in ds.train]))
    alpha = alpha.to(device) if alpha is not None else None
    patience, sample_num = training_value(args, "patience", ds.name), training_value(args, "sample_num", ds.name)
    t_run = time.perf_counter()
    select_on = "valid" if ds.valid else "test"

    best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "state": None, "test": None, "valid": None, "preds": {}}
    best_loss, stale = math.inf, 0
    history = []
    n_batches = math.ceil(len(ds.train) / bs)
    progress = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn(),
                        console=console, disable=quiet, transient=True)
    with progress:
        task = progress.add_task("train", total=n_batches * epochs, epoch=1, epochs=epochs, loss=0.0)
        interrupted, epoch = False, 0
        try:
            for epoch in range(1, epochs + 1):
                t0 = time.perf_counter()
                model.train()
                losses = []
                for batch in batches(ds.train, bs, config.modalities, generator=gen):
                    batch = batch.to(device)
                    out = model(batch)
                    labels = batch.labels[batch.mask]
                    terms = pcgnet_loss(out, labels, config.n_classes, gamma=gamma, class_weights=alpha,
                                        use_shift_cl=config.use_shift_cl, use_shift_task=config.use_shift_task,
                                        n_samples=sample_num, generator=gen)
                    opt.zero_grad(set_to_none=True)
                    terms.total.backward()
                    opt.step()
                    losses.append(terms.logged)
                    progress.update(task, advance=1, epoch=epoch, loss=float(np.mean(losses)))
                train_loss = float(np.mean(losses)) if losses else float("nan")
                preds = {k: predict_dialogues(model, d, bs, device, gamma=gamma, class_weights=alpha)
                         for k, d in (("test", ds.test), ("valid", ds.valid)) if d}
                test, valid = (preds[k].metrics(ds.labels) if k in preds else None for k in ("test", "valid"))
                sel = valid if valid is not None else test
                row = {"epoch": epoch, "train_loss": train_loss, "seconds": time.perf_counter() - t0}
                if test is not None:
                    row.update(test_weighted_f1=test["weighted_f1"], test_accuracy=test["accuracy"],
                               test_shift_f1=test["shift_f1"])
                if valid is not None:
                    row.update(valid_weighted_f1=valid["weighted_f1"], valid_loss=valid["loss"])
                history.append(row)
                improved = sel["weighted_f1"] > best["score"]
                if improved:
                    best.update(score=sel["weighted_f1"], epoch=epoch, test=test, valid=valid, preds=preds,
                                state=copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))
                if not quiet:
                    v = f" valid F1 {100 * valid['weighted_f1']:.1f} |" if valid else ""
                    t = (f" test F1 {100 * test['weighted_f1']:.1f} acc {100 * test['accuracy']:.1f} "
                         f"shift {100 * test['shift_f1']:.1f} |" if test else "")
                    progress.console.print(f"ep {epoch:3d} | loss {train_loss:.2f} |{v}{t} "
                                           f"{row['seconds']:.1f}s{' *' if improved else ''}")
                # The original stops when neither F1 nor loss improved for `patience` epochs.
                if sel["loss"] < best_loss:
                    best_loss, stale = sel["loss"], 0
                elif not improved:
                    stale += 1
                if improved:
                    stale = 0
                if stale >= patience:
                    if not quiet:
                        progress.console.print(f"early stop: no improvement for {patience} epochs")
                    break
        except KeyboardInterrupt:
            # Ctrl-C ends training but keeps the best epoch so far: it is saved below like a finished run.
            interrupted = True
            progress.console.print(f"interrupted in epoch {epoch}: saving the best epoch so far ({best['epoch']})")

    ckpt = None
    rule = UNTUNED
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        # The shift rule's parameters (pcgnet.shift.choose_rule: pool weight, one threshold per profile) on
        # the selection split (never on test when a validation split exists); selection metrics and test
        # metrics are then reported under it, from the best epoch's own predictions (the restored weights
        # would only predict the same again).
        preds = best["preds"]
        rule = (preds["valid"] if ds.valid else preds["test"]).choose_rule(select_on)
        for k in preds:
            best[k] = preds[k].metrics(ds.labels, rule)
        train_seconds = round(time.perf_counter() - t_run, 1)
        if out_dir is not None:
            training = {
                "dataset": ds.name, "data_dir": str(ds.files.get("features")), "files": ds.files,
                "seed": seed, "epochs": epochs, "best_epoch": best["epoch"], "selected_on": select_on,
                "valid_rate": args.valid_rate if args.valid_rate is not None else 0.1,
                "split_seed": getattr(args, "split_seed", seed), "valid_source": ds.valid_source,
                "lr": lr, "l2": l2, "gamma": gamma, "batch_size": bs, "class_weight": cw_mode or False,
                "class_weights": alpha.tolist() if alpha is not None else None, "patience": patience,
                "recipe": getattr(args, "recipe", None), "window_utterances": config.window_utterances,
                "sample_num": sample_num, "parameters": n_params, "train_seconds": train_seconds,
                "splits": {"train": len(ds.train), "valid": len(ds.valid), "test": len(ds.test)},
                "history": [_summary(r) for r in history],  # per-epoch losses and scores
                "interrupted": interrupted,
            }
            metrics = {"test": _summary(best["test"])} if best["test"] is not None else {}
            if best["valid"] is not None:
                metrics["valid"] = _summary(best["valid"])
            persona = ds.persona_meta if config.use_persona else {"source": "none"}
            ckpt = save_checkpoint(out_dir, model, extractors=ds.extractors, persona=persona, training=training,
                                   metrics=metrics, shift=rule.to_json())
    if interrupted:
        raise KeyboardInterrupt(str(ckpt) if ckpt else "")
    return RunResult(seed, best["epoch"], select_on, best["test"], best["valid"], ckpt, history, rule,
                     round(time.perf_counter() - t_run, 1))


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    """The metrics worth storing in a checkpoint: no confusion matrix, undefined values (NaN) as null."""
    return json_clean({k: v for k, v in m.items() if k != "confusion"})


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)  # long lines wrap in the terminal, not in logs
    apply_recipe(args)
    dataset = args.dataset or "IEMOCAP"
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        device = resolve_device("cpu" if args.no_cuda else args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    seeds = args.seeds or [training_value(args, "seed", dataset)]
    args.split_seed = seeds[0]  # the validation carve is the same for every seed of a multi-seed run
    valid_rate = 0.1 if args.valid_rate is None else args.valid_rate
    given = given_model_fields(args)  # validates the must-agree groups before any data is read
    modalities = given.get("modalities")
    ds = load_training_data(args, dataset, modalities, need_persona=given.get("use_persona", True),
                            valid_rate=valid_rate, seed=seeds[0])
    if ds.valid:
        console.print(f"validation split: {ds.valid_source}; the best epoch is selected on it")
    else:
        console.print("[yellow]warning:[/yellow] --valid_rate 0.0: no validation split, so the best epoch is "
                      "selected on the TEST set (the paper's protocol); test scores are optimistic.")
    if not ds.train:
        raise UsageError(f"{ds.files.get('features')}: no training dialogues")
    if not ds.valid and not ds.test:
        raise UsageError(f"{ds.files.get('features')}: no test dialogues and no validation split: nothing to "
                         "select the best epoch on (use --valid_rate > 0)")
    out = Path(args.out or f"runs/{dataset.lower()}")
    console.print(f"{ds.name}: {len(ds.train)} train / {len(ds.valid)} valid / {len(ds.test)} test dialogues "
                  f"from {ds.files.get('features')}")
    results = []
    if args.context_free:
        from pcgnet.baseline import context_free

        b = context_free(ds, seeds[0])  # lbfgs logistic regression is deterministic: one fit
        results.append(RunResult(seeds[0], 0, "valid", b.test, b.valid, None, [{"C": b.c}], b.shift_rule,
                                 b.seconds))
    else:
        config = build_config(args, ds)
        for seed in seeds:
            run_dir = out if len(seeds) == 1 else out / f"seed-{seed}"
            try:
                results.append(train_run(args, ds, config, seed, run_dir, device, console))
            except KeyboardInterrupt as e:
                console.print(f"stopped; best checkpoint so far: {e}" if str(e) else "stopped before any epoch finished")
                return 130
    for r in results:
        profiles = ", ".join(f"{k} {t:.3f}" for k, t in r.shift_rule.thresholds.items())
        console.print(f"seed {r.seed}: best epoch {r.best_epoch} (selected on {r.select_on}), shift rule weight "
                      f"{r.shift_rule.weight:g}, thresholds {profiles}, {r.seconds:.0f} s; checkpoint {r.checkpoint}")
        if r.metrics is not None:
            print_report(r.metrics, ds.labels, console, title=f"test metrics at the best epoch (seed {r.seed})")
    write_summary(out, results, console)
    return 0


def write_summary(out: Path, results: list[RunResult], console) -> None:
    """``OUT/summary.json``: test mean ± std over the runs (top level), validation's, and each run's facts."""
    tested = [r.metrics for r in results if r.metrics is not None]
    if not tested:
        return
    summary: dict[str, Any] = {**aggregate(tested), "seeds": [r.seed for r in results], "runs": [
        {"seed": r.seed, "best_epoch": r.best_epoch, "selected_on": r.select_on, "seconds": r.seconds,
         "shift_rule": r.shift_rule.to_json(), "checkpoint": str(r.checkpoint) if r.checkpoint else None,
         "test": _summary(r.metrics) if r.metrics else None,
         "valid": _summary(r.valid_metrics) if r.valid_metrics else None} for r in results]}
    valids = [r.valid_metrics for r in results if r.valid_metrics is not None]
    if len(valids) == len(results):
        summary["valid"] = aggregate(valids)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(json_clean(summary), indent=1) + "\n", encoding="utf-8")
    mean, std = summary["mean"], summary["std"]
    b, bs = mean["binary_shift"], std["binary_shift"]
    console.print(f"[bold]{len(results)} seed{'s' if len(results) > 1 else ''}[/bold] {summary['seeds']}: test W-F1 "
                  f"{100 * mean['weighted_f1']:.2f} ± {100 * std['weighted_f1']:.2f}, acc "
                  f"{100 * mean['accuracy']:.2f} ± {100 * std['accuracy']:.2f}, binary shift F1 "
                  f"{100 * b['f1']:.2f} ± {100 * bs['f1']:.2f} AUROC {100 * b['auroc']:.2f}, "
                  f"{np.mean([r.seconds for r in results]):.0f} s/run (summary: {out / 'summary.json'})")
