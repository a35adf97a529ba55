"""The pcgnet command line: the paper's two commands parse with their meanings; synth -> train -> evaluate."""

from __future__ import annotations

import importlib
import json
import shlex

import pytest

from pcgnet.cli import COMMANDS, UsageError, _module_exists, build_parser, load_command_modules, main
from pcgnet.config import PCGNetConfig
from pcgnet.flags import given_model_fields, training_value

IEMOCAP_CMD = (
    "train --dataset IEMOCAP --data_dir data/iemocap/IEMOCAP_features.pkl --valid_rate 0.0 --modals avl "
    "--lr 0.0001 --batch-size 32 --l2 0.0001 --dropout 0.2 --gamma 0.5 --class_weight --reason_flag --mtl "
    "--use_clone --hidden_l 400 --hidden_a 400 --hidden_v 400 --persona_l_heads 8 --persona_a_heads 8 "
    "--persona_v_heads 8 --persona_l_layer 1 --persona_a_layer 1 --persona_v_layer 1 --interactive_layer 1 "
    "--interactive_heads 4 --dropout_forward 0.3 --dropout_persona_lstm_modeling 0.2 --dropout_interactive 0.2 "
    "--dropout_persona 0.2 --erc_windows 1 --shift_windows 1 --persona_transform --interactive_windows 1 "
    "--epochs 140 --seed 6500")
MELD_CMD = (
    "train --dataset MELD --data_dir ./data/meld/MELD_features_raw1.pkl --valid_rate 0.0 --modals avl "
    "--lr 0.0001 --batch-size 32 --l2 0.0001 --mtl --use_clone --hidden_l 200 --hidden_a 200 --hidden_v 200 "
    "--persona_l_heads 4 --persona_a_heads 4 --persona_v_heads 4 --persona_l_layer 1 --persona_a_layer 1 "
    "--persona_v_layer 1 --interactive_layer 1 --interactive_heads 4 --dropout_forward 0 "
    "--dropout_persona_lstm_modeling 0.2 --dropout_interactive 0.2 --dropout_persona 0.2 --erc_windows 1 "
    "--shift_windows 1 --persona_transform --interactive_windows 1 --epochs 30 --seed 11407")


def test_paper_commands_parse_with_their_meaning():
    parser = build_parser()
    a = parser.parse_args(shlex.split(IEMOCAP_CMD))
    f = given_model_fields(a)
    assert f == {"hidden": 400, "persona_heads": 8, "persona_layers": 1, "interactive_layers": 1,
                 "interactive_heads": 4, "dropout_forward": 0.3, "dropout_gru": 0.2, "dropout_interactive": 0.2,
                 "dropout_persona": 0.2, "erc_windows": 1, "shift_windows": 1, "interactive_windows": 1,
                 "persona_transform": True, "modalities": ("t", "a", "v")}
    PCGNetConfig(**f)  # a valid architecture
    assert (a.valid_rate, a.lr, a.batch_size, a.l2, a.gamma, a.class_weight, a.epochs, a.seed) == (
        0.0, 1e-4, 32, 1e-4, 0.5, "inverse", 140, 6500)
    assert a.dropout == 0.2 and a.reason_flag and a.mtl and a.use_clone  # accepted no-ops
    m = parser.parse_args(shlex.split(MELD_CMD))
    fm = given_model_fields(m)
    assert fm["hidden"] == 200 and fm["persona_heads"] == 4 and fm["dropout_forward"] == 0.0
    # not passed in the MELD command: the README's MELD choice (no class weights, gamma 0.5)
    assert training_value(m, "class_weight", "MELD") is False and training_value(m, "gamma", "MELD") == 0.5
    # the evaluate sub-command accepts the same flags
    e = parser.parse_args(["evaluate", "--ckpt", "x", *shlex.split(MELD_CMD)[1:]])
    assert given_model_fields(e) == fm


def test_flags_that_must_agree():
    a = build_parser().parse_args(["train", "--hidden_l", "400", "--hidden_a", "200"])
    with pytest.raises(UsageError, match="--hidden_l 400, --hidden_a 200: these must be equal"):
        given_model_fields(a)
    assert main(["train", "--persona_l_heads", "8", "--persona_v_heads", "4"]) == 2


def test_modals_letters():
    a = build_parser().parse_args(["train", "--modals", "la"])
    assert given_model_fields(a)["modalities"] == ("t", "a")
    a = build_parser().parse_args(["train", "--modals", "xyz"])
    with pytest.raises(UsageError, match="--modals"):
        given_model_fields(a)


def test_every_existing_command_module_imports_and_registers():
    mods, broken = load_command_modules()
    assert broken == [], broken  # a module that exists but does not import must fail CI
    for name in COMMANDS:
        if _module_exists(name):
            assert hasattr(importlib.import_module(name), "register"), name
    assert {"pcgnet.train", "pcgnet.evaluate", "pcgnet.synth"} <= {m.__name__ for m in mods}
    mods, broken = load_command_modules(["pcgnet.no_such_module", "no_such_package.cli"])
    assert mods == [] and broken == []


def test_device_cuda_without_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["train", "--data_dir", str(tmp_path / "x.pkl"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


TINY = ["--hidden_l", "16", "--hidden_a", "16", "--hidden_v", "16", "--persona_l_heads", "2", "--persona_a_heads",
        "2", "--persona_v_heads", "2", "--interactive_heads", "2", "--dropout_forward", "0", "--dropout_persona",
        "0.1", "--dropout_interactive", "0.1", "--dropout_smax_erc", "0.1", "--dropout_smax_shift", "0.1",
        "--lr", "5e-3", "--batch-size", "4", "--num-threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    assert main(["synth", "--dataset", "IEMOCAP", "--out", str(root / "data"), "--dialogues", "40"]) == 0
    data = root / "data" / "IEMOCAP_features.pkl"
    rc = main(["train", "--dataset", "IEMOCAP", "--data_dir", str(data), "--epochs", "6", "--out",
               str(root / "ckpt"), "--quiet", *TINY])
    assert rc == 0
    return root, data


def test_end_to_end_beats_chance(trained, capsys):
    root, data = trained
    capsys.readouterr()
    assert main(["evaluate", "--ckpt", str(root / "ckpt"), "--json", "--plot", str(root / "cm.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("weighted_f1", "accuracy", "per_class_f1", "shift_accuracy", "shift_f1", "binary_shift"):
        assert key in out
    assert set(out["binary_shift"]) >= {"precision", "recall", "f1", "balanced_accuracy", "auroc",
                                        "baseline_always_shift"}
    labels = [sum(row) for row in out["confusion"]]
    majority = max(labels) / sum(labels)
    # Chance: uniform guessing gives W-F1 ~ 1/6; always predicting the majority class gives accuracy `majority`.
    assert out["weighted_f1"] > 0.35, out["weighted_f1"]
    assert out["accuracy"] > majority + 0.08, (out["accuracy"], majority)
    assert out["binary_shift"]["auroc"] > 0.55
    assert (root / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the table form prints the same numbers
    assert main(["evaluate", "--ckpt", str(root / "ckpt")]) == 0
    table = capsys.readouterr().out
    assert f"{100 * out['weighted_f1']:.2f}" in table and "always shift" in table


def test_evaluate_refuses_contradicting_flags(trained, capsys):
    root, data = trained
    rc = main(["evaluate", "--ckpt", str(root / "ckpt"), "--hidden_l", "400", "--hidden_a", "400", "--hidden_v",
               "400", "--wo_crosstask", "--causal"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "--hidden_l/--hidden_a/--hidden_v 400 (checkpoint: hidden=16)" in err
    assert "--wo_crosstask" in err and "--causal" in err
    # flags that agree with the checkpoint, and training-only flags, are fine
    assert main(["evaluate", "--ckpt", str(root / "ckpt"), "--json", *TINY, "--epochs", "140", "--mtl"]) == 0


def test_evaluate_refuses_other_features(trained, tmp_path, capsys):
    root, _ = trained
    assert main(["synth", "--dataset", "MELD", "--out", str(tmp_path), "--dialogues", "4"]) == 0
    rc = main(["evaluate", "--ckpt", str(root / "ckpt"), "--dataset", "MELD", "--data_dir",
               str(tmp_path / "MELD_features_raw1.pkl")])
    assert rc == 2 and "differ from the checkpoint" in capsys.readouterr().err
