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
from pcgnet.config import DATASETS, MODALITIES, PCGNetConfig
from pcgnet.data import DialogueDataset, batches, load_dataset

log = logging.getLogger(__name__)

PAPER_MODALS = {"l": "t", "a": "a", "v": "v"}  # the paper's --modals letters -> our modality names

# The paper's README commands (spec 5): the defaults of every hyper-parameter not given.
PRESETS: dict[str, dict[str, Any]] = {
    "IEMOCAP": dict(hidden=400, persona_heads=8, persona_layers=1, interactive_layers=1, interactive_heads=4,
                    dropout_forward=0.3, dropout_gru=0.2, dropout_interactive=0.2, dropout_persona=0.2,
                    lr=1e-4, l2=1e-4, batch_size=32, gamma=0.5, class_weight=True, epochs=140, seed=6500,
                    persona_transform=True, data_dir="data/iemocap/IEMOCAP_features.pkl"),
    "MELD": dict(hidden=200, persona_heads=4, persona_layers=1, interactive_layers=1, interactive_heads=4,
                 dropout_forward=0.0, dropout_gru=0.2, dropout_interactive=0.2, dropout_persona=0.2,
                 lr=1e-4, l2=1e-4, batch_size=32, gamma=0.5, class_weight=False, epochs=30, seed=11407,
                 persona_transform=True, data_dir="data/meld/MELD_features_raw1.pkl"),
}

# model-config field -> the flags (argparse dests) that set it; used by train and by evaluate's checks.
MODEL_FLAGS: dict[str, tuple[str, ...]] = {
    "hidden": ("hidden_l", "hidden_a", "hidden_v"),
    "persona_heads": ("persona_l_heads", "persona_a_heads", "persona_v_heads"),
    "persona_layers": ("persona_l_layer", "persona_a_layer", "persona_v_layer"),
    "interactive_layers": ("interactive_layer",),
    "interactive_heads": ("interactive_heads",),
    "dropout_forward": ("dropout_forward",),
    "dropout_gru": ("dropout_persona_lstm_modeling",),
    "dropout_interactive": ("dropout_interactive",),
    "dropout_persona": ("dropout_persona",),
    "dropout_smax_erc": ("dropout_smax_erc",),
    "dropout_smax_shift": ("dropout_smax_shift",),
    "erc_windows": ("erc_windows",),
    "shift_windows": ("shift_windows",),
    "interactive_windows": ("interactive_windows",),
    "persona_transform": ("persona_transform",),
    "window_utterances": ("window",),
}
ABLATION_FLAGS = {"use_persona": "wo_persona", "use_crosstask": "wo_crosstask", "use_shift_cl": "wo_shiftcl",
                  "use_shift_task": "wo_shift", "use_graph": "no_graph"}


def flag_name(dest: str) -> str:
    return "--batch-size" if dest == "batch_size" else f"--{dest}"


# ------------------------------------------------------------------------------------------------ arguments
def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=sorted(DATASETS), default=None, help="IEMOCAP or MELD (default IEMOCAP)")
    g.add_argument("--data_dir", default=None,
                   help="the MMGCN feature pickle (or its folder); RoBERTa and persona pickles are found beside it")
    g.add_argument("--roberta_path", default=None, help="COSMIC RoBERTa pickle (default: beside --data_dir)")
    g.add_argument("--persona_path", default=None,
                   help="persona pickle (default: beside --data_dir or in a sibling personaERC/ folder)")
    g.add_argument("--valid_rate", type=float, default=None,
                   help="fraction of train dialogues held out for model selection (default 0.1; the paper's "
                        "0.0 selects the best epoch on the test set)")
    g.add_argument("--modals", default=None, help="modalities among a, v, l (order ignored; default avl)")
    g.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="dialogues per batch (32)")
    g.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    g.add_argument("--no_cuda", action="store_true", help="accepted for the paper's scripts: force CPU")
    g.add_argument("--num-threads", dest="num_threads", type=int, default=None, help="torch CPU threads")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (defaults: the paper's README command for --dataset)")
    for m in "lav":
        g.add_argument(f"--hidden_{m}", type=int, default=None, help="hidden size (l, a and v must be equal)")
    for m in "lav":
        g.add_argument(f"--persona_{m}_heads", type=int, default=None, help="persona-GAT heads (must agree)")
        g.add_argument(f"--persona_{m}_layer", type=int, default=None, help="persona-GAT layers (must agree)")
    g.add_argument("--interactive_layer", type=int, default=None, help="interactive-GAT layers")
    g.add_argument("--interactive_heads", type=int, default=None, help="interactive-GAT heads")
    g.add_argument("--dropout_forward", type=float, default=None, help="dropout on the raw input features")
    g.add_argument("--dropout_persona_lstm_modeling", type=float, default=None,
                   help="inter-layer dropout of the 2-layer GRUs")
    g.add_argument("--dropout_interactive", type=float, default=None, help="interactive-GAT dropout")
    g.add_argument("--dropout_persona", type=float, default=None, help="persona-GAT dropout")
    g.add_argument("--dropout_smax_erc", type=float, default=None, help="dropout before the ERC head (0.5)")
    g.add_argument("--dropout_smax_shift", type=float, default=None, help="dropout before the shift head (0.5)")
    g.add_argument("--erc_windows", type=int, default=None, help="past-turn window of ERC edges (1)")
    g.add_argument("--shift_windows", type=int, default=None, help="past-turn window of shift edges (1)")
    g.add_argument("--interactive_windows", type=int, default=None, help="cross-task edge window (1)")
    g.add_argument("--persona_transform", action=argparse.BooleanOptionalAction, default=None,
                   help="Linear(5, h) on the persona vector (default on, as both README commands)")
    g.add_argument("--wo_persona", action="store_true", default=None, help="ablation: no persona refinement")
    g.add_argument("--wo_crosstask", action="store_true", default=None, help="ablation: no cross-task edges")
    g.add_argument("--wo_shiftcl", action="store_true", default=None, help="ablation: no contrastive loss")
    g.add_argument("--wo_shift", action="store_true", default=None,
                   help="ablation: no shift task (no shift loss, no contrastive loss; ERC only)")
    g.add_argument("--no_graph", action="store_true", default=None, help="ablation: encoders + heads only")
    g.add_argument("--causal", action="store_true", default=None,
                   help="forward-only GRUs: a streaming-safe model for live use")
    g.add_argument("--window", type=int, default=None, help="streaming: past utterances kept (16)")


def add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=float, default=None, help="Adam learning rate (1e-4)")
    g.add_argument("--l2", type=float, default=None, help="Adam weight decay, coupled L2 as in the paper (1e-4)")
    g.add_argument("--gamma", type=float, default=None, help="focal-loss gamma (0.5)")
    g.add_argument("--class_weight", action=argparse.BooleanOptionalAction, default=None,
                   help="focal alpha = 1/class frequency (default: on for IEMOCAP, off for MELD, as the README)")
    g.add_argument("--epochs", type=int, default=None, help="epochs (140 IEMOCAP, 30 MELD)")
    g.add_argument("--seed", type=int, default=None, help="random seed (6500 IEMOCAP, 11407 MELD)")
    g.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds: report mean and std")
    g.add_argument("--patience", type=int, default=50,
                   help="stop when neither selection W-F1 nor selection loss improved for this many epochs (50)")
    g.add_argument("--sample_num", type=int, default=50, help="shift samples drawn for the contrastive loss (50)")
    g.add_argument("--out", default=None, help="directory for the best checkpoint (default runs/<dataset>)")
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    noop = p.add_argument_group("accepted for compatibility; no effect (the original never reads them)")
    noop.add_argument("--dropout", type=float, default=None, help="no-op in the original")
    noop.add_argument("--reason_flag", action="store_true", help="no-op in the original")
    noop.add_argument("--mtl", action="store_true", help="no-op: multi-task learning is always on")
    noop.add_argument("--use_clone", action="store_true", help="no-op: shift nodes are always clones")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train PCGNet on the paper's pickles (or `pcgnet synth` data)",
                              description=__doc__.split("\n")[0])
    add_data_args(p)
    add_model_args(p)
    add_training_args(p)
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------ resolving
def _agree(args: argparse.Namespace, dests: tuple[str, ...]) -> Any:
    """The single value given by a group of flags that must agree (e.g. --hidden_l/_a/_v), or None."""
    given = {d: getattr(args, d) for d in dests if getattr(args, d, None) is not None}
    if len(set(given.values())) > 1:
        listing = ", ".join(f"{flag_name(d)} {v}" for d, v in given.items())
        raise UsageError(f"{listing}: these must be equal (one shared value per model, as in the original)")
    return next(iter(given.values()), None)


def parse_modals(modals: str) -> tuple[str, ...]:
    bad = sorted(set(modals) - set(PAPER_MODALS))
    if bad or not modals:
        raise UsageError(f"--modals {modals!r}: use letters among a (audio), v (visual), l (text)")
    return tuple(m for m in MODALITIES if m in {PAPER_MODALS[c] for c in modals})


def given_model_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The model-config fields the command line sets explicitly (not defaults)."""
    out: dict[str, Any] = {}
    for fld, dests in MODEL_FLAGS.items():
        v = _agree(args, dests)
        if v is not None:
            out[fld] = v
    for fld, dest in ABLATION_FLAGS.items():
        if getattr(args, dest, None):
            out[fld] = False
    if getattr(args, "causal", None):
        out["causal"] = True
    if getattr(args, "modals", None):
        out["modalities"] = parse_modals(args.modals)
    return out


def training_value(args: argparse.Namespace, name: str, dataset: str) -> Any:
    v = getattr(args, name, None)
    return PRESETS[dataset][name] if v is None else v


def build_config(args: argparse.Namespace, ds: DialogueDataset) -> PCGNetConfig:
    preset = PRESETS[ds.name]
    fields = {k: preset[k] for k in ("hidden", "persona_heads", "persona_layers", "interactive_layers",
                                     "interactive_heads", "dropout_forward", "dropout_gru",
                                     "dropout_interactive", "dropout_persona", "persona_transform")}
    fields.update(given_model_fields(args))
    fields.setdefault("modalities", ds.modalities)
    try:
        return PCGNetConfig(labels=tuple(ds.labels), dims={m: ds.dims[m] for m in fields["modalities"]},
                            n_speakers=ds.n_speakers, **fields)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def class_weights(dataset: str, n_classes: int) -> torch.Tensor:
    """The paper's unnormalised focal alpha = 1 / class frequency (spec 1.3)."""
    freq = DATASETS[dataset].class_freq
    if len(freq) != n_classes:
        raise UsageError(f"--class_weight: {dataset} has {len(freq)} class frequencies but the data has {n_classes} labels")
    return 1.0 / torch.tensor(freq, dtype=torch.float32)


def load_training_data(args: argparse.Namespace, dataset: str, modalities: tuple[str, ...] | None,
                       need_persona: bool, valid_rate: float, seed: int) -> DialogueDataset:
    data_dir = args.data_dir or PRESETS[dataset]["data_dir"]
    return load_dataset(dataset, data_dir, roberta_path=args.roberta_path, persona_path=args.persona_path,
                        modalities=modalities, need_persona=need_persona, valid_rate=valid_rate, seed=seed)


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


def train_run(args: argparse.Namespace, ds: DialogueDataset, config: PCGNetConfig, seed: int,
              out_dir: Path | None, device: torch.device, console) -> RunResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pcgnet.evaluate import evaluate_dialogues
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
    alpha = class_weights(ds.name, ds.n_classes).to(device) if training_value(args, "class_weight", ds.name) else None
    select_on = "valid" if ds.valid else "test"

    best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "state": None, "test": None, "valid": None}
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
                                        n_samples=args.sample_num, generator=gen)
                    opt.zero_grad(set_to_none=True)
                    terms.total.backward()
                    opt.step()
                    losses.append(terms.logged)
                    progress.update(task, advance=1, epoch=epoch, loss=float(np.mean(losses)))
                train_loss = float(np.mean(losses)) if losses else float("nan")
                test = (evaluate_dialogues(model, ds.test, ds.labels, bs, device, gamma=gamma, class_weights=alpha)
                        if ds.test else None)
                valid = (evaluate_dialogues(model, ds.valid, ds.labels, bs, device, gamma=gamma, class_weights=alpha)
                         if ds.valid else None)
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
                    best.update(score=sel["weighted_f1"], epoch=epoch, test=test, valid=valid,
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
                if stale >= args.patience:
                    if not quiet:
                        progress.console.print(f"early stop: no improvement for {args.patience} epochs")
                    break
        except KeyboardInterrupt:
            # Ctrl-C ends training but keeps the best epoch so far: it is saved below like a finished run.
            interrupted = True
            progress.console.print(f"interrupted in epoch {epoch}: saving the best epoch so far ({best['epoch']})")

    ckpt = None
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        if out_dir is not None:
            training = {
                "dataset": ds.name, "data_dir": str(ds.files.get("features")), "files": ds.files,
                "seed": seed, "epochs": epochs, "best_epoch": best["epoch"], "selected_on": select_on,
                "valid_rate": args.valid_rate if args.valid_rate is not None else 0.1,
                "split_seed": getattr(args, "split_seed", seed), "valid_source": ds.valid_source,
                "lr": lr, "l2": l2, "gamma": gamma, "batch_size": bs, "class_weight": alpha is not None,
                "sample_num": args.sample_num, "parameters": n_params,
                "splits": {"train": len(ds.train), "valid": len(ds.valid), "test": len(ds.test)},
                "history": [_summary(r) for r in history],  # per-epoch losses and scores
                "interrupted": interrupted,
            }
            metrics = {"test": _summary(best["test"])} if best["test"] is not None else {}
            if best["valid"] is not None:
                metrics["valid"] = _summary(best["valid"])
            ckpt = save_checkpoint(out_dir, model, extractors=ds.extractors,
                                   persona={"source": ds.persona_source if config.use_persona else "none"},
                                   training=training, metrics=metrics)
    if interrupted:
        raise KeyboardInterrupt(str(ckpt) if ckpt else "")
    return RunResult(seed, best["epoch"], select_on, best["test"], best["valid"], ckpt, history)


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    """The metrics worth storing in a checkpoint: no confusion matrix, undefined values (NaN) as null."""
    from pcgnet.evaluate import json_clean

    return json_clean({k: v for k, v in m.items() if k != "confusion"})


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pcgnet.evaluate import print_report

    console = Console(highlight=False, soft_wrap=True)  # long lines wrap in the terminal, not in logs
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
    config = build_config(args, ds)
    out = Path(args.out or f"runs/{dataset.lower()}")
    console.print(f"{ds.name}: {len(ds.train)} train / {len(ds.valid)} valid / {len(ds.test)} test dialogues "
                  f"from {ds.files.get('features')}")
    results = []
    for seed in seeds:
        run_dir = out if len(seeds) == 1 else out / f"seed-{seed}"
        try:
            r = train_run(args, ds, config, seed, run_dir, device, console)
        except KeyboardInterrupt as e:
            console.print(f"stopped; best checkpoint so far: {e}" if str(e) else "stopped before any epoch finished")
            return 130
        results.append(r)
        console.print(f"seed {seed}: best epoch {r.best_epoch} (selected on {r.select_on}); checkpoint {r.checkpoint}")
        if r.metrics is not None:
            print_report(r.metrics, ds.labels, console, title=f"test metrics at the best epoch (seed {seed})")
    if len(results) > 1 and all(r.metrics is not None for r in results):
        from pcgnet.evaluate import json_clean
        from pcgnet.metrics import aggregate

        agg = aggregate([r.metrics for r in results if r.metrics is not None])
        agg["seeds"] = [r.seed for r in results]
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(json_clean(agg), indent=2) + "\n", encoding="utf-8")
        mean, std = agg["mean"], agg["std"]
        console.print(f"[bold]{len(results)} seeds[/bold] {agg['seeds']}: test W-F1 "
                      f"{100 * mean['weighted_f1']:.2f} ± {100 * std['weighted_f1']:.2f}, acc "
                      f"{100 * mean['accuracy']:.2f} ± {100 * std['accuracy']:.2f}, shift-F1 "
                      f"{100 * mean['shift_f1']:.2f} ± {100 * std['shift_f1']:.2f} (summary: {out / 'summary.json'})")
    return 0
