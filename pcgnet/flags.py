"""The ``pcgnet train`` / ``evaluate`` command-line flags, the paper's presets and the named recipes.

One place for what the flags mean, shared by training and evaluation (so neither imports the other).
Every flag of the paper's two README commands is accepted with its original meaning (spec 5); values not
given come from ``--recipe`` (when named), then from the paper's README command for the dataset.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from pcgnet.cli import UsageError
from pcgnet.config import DATASETS, MODALITIES, PCGNetConfig
from pcgnet.data import DialogueDataset

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
TRAINING_DEFAULTS: dict[str, Any] = {"patience": 50, "sample_num": 50}

# Named recipes: what the shipped model and docs/results.md are trained with (`--recipe NAME`); any flag
# given explicitly wins. Why these values: docs/results.md ("Protocol").
RECIPES: dict[str, dict[str, Any]] = {
    "meld-live": dict(causal=True, lr=1e-3, l2=1e-4, epochs=12, patience=4, batch_size=32, gamma=0.5,
                      class_weight="sqrt", window=16, seed=1),
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
    g.add_argument("--train_also", nargs="+", default=None, metavar="DIR",
                   help="more training data: the same training dialogues from other layouts (e.g. prepare-meld "
                        "--text-style asr), added to train; validation and test stay --data_dir's")
    g.add_argument("--l2", type=float, default=None, help="Adam weight decay, coupled L2 as in the paper (1e-4)")
    g.add_argument("--gamma", type=float, default=None, help="focal-loss gamma (0.5)")
    g.add_argument("--class_weight", nargs="?", const="inverse", choices=("inverse", "sqrt"), default=None,
                   help="focal alpha: inverse = 1/class frequency, the paper's (the bare flag); sqrt = "
                        "1/sqrt(train frequency), mean 1 (default: on for IEMOCAP, off for MELD, as the README)")
    g.add_argument("--no-class_weight", dest="class_weight", action="store_false", help="no class weights")
    g.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="named defaults for the flags not given (meld-live: the shipped model, docs/results.md)")
    g.add_argument("--context_free", action="store_true",
                   help="baseline instead of PCGNet: logistic regression on each utterance's features alone")
    g.add_argument("--epochs", type=int, default=None, help="epochs (140 IEMOCAP, 30 MELD)")
    g.add_argument("--seed", type=int, default=None, help="random seed (6500 IEMOCAP, 11407 MELD)")
    g.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds: report mean and std")
    g.add_argument("--patience", type=int, default=None,
                   help="stop when neither selection W-F1 nor selection loss improved for this many epochs (50)")
    g.add_argument("--sample_num", type=int, default=None, help="shift samples drawn for the contrastive loss (50)")
    g.add_argument("--out", default=None, help="directory for the best checkpoint (default runs/<dataset>)")
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    noop = p.add_argument_group("accepted for compatibility; no effect (the original never reads them)")
    noop.add_argument("--dropout", type=float, default=None, help="no-op in the original")
    noop.add_argument("--reason_flag", action="store_true", help="no-op in the original")
    noop.add_argument("--mtl", action="store_true", help="no-op: multi-task learning is always on")
    noop.add_argument("--use_clone", action="store_true", help="no-op: shift nodes are always clones")


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


def apply_recipe(args: argparse.Namespace) -> None:
    """Fill the flags not given from ``--recipe`` (model flags included, e.g. ``causal``)."""
    for name, value in RECIPES.get(getattr(args, "recipe", None) or "", {}).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def training_value(args: argparse.Namespace, name: str, dataset: str) -> Any:
    v = getattr(args, name, None)
    if v is not None:
        return v
    return TRAINING_DEFAULTS[name] if name in TRAINING_DEFAULTS else PRESETS[dataset][name]


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


def class_weights(mode: str | bool | None, dataset: str, n_classes: int,
                  train_labels: np.ndarray | None = None) -> torch.Tensor | None:
    """Focal alpha per class: ``inverse`` = the paper's unnormalised 1 / class frequency (spec 1.3, from the
    dataset's published frequencies); ``sqrt`` = 1 / sqrt(frequency in ``train_labels``), scaled to mean 1
    over the training utterances (softer: rare classes gain without swamping the loss); falsy = none."""
    if not mode:
        return None
    if mode == "sqrt":
        if train_labels is None:
            raise UsageError("--class_weight sqrt needs the training labels")
        y = train_labels[train_labels >= 0]
        freq = np.bincount(y, minlength=n_classes) / max(y.size, 1)
        w = 1.0 / np.sqrt(np.maximum(freq, 1e-12))
        return torch.tensor(w / (w * freq).sum(), dtype=torch.float32)
    freq = DATASETS[dataset].class_freq
    if len(freq) != n_classes:
        raise UsageError(f"--class_weight: {dataset} has {len(freq)} class frequencies but the data has {n_classes} labels")
    return 1.0 / torch.tensor(freq, dtype=torch.float32)
