"""pcgnet train: selection protocol, multi-seed aggregation, ablations, causal, checkpoints, absent modalities."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from sklearn.metrics import f1_score

from pcgnet import graph
from pcgnet.checkpoint import load_checkpoint, read_meta
from pcgnet.cli import main
from pcgnet.data import DataError, add_training_views, collate, load_dataset
from pcgnet.flags import class_weights
from pcgnet.synth import SynthOptions, write_synthetic

TINY = ["--hidden_l", "8", "--hidden_a", "8", "--hidden_v", "8", "--persona_l_heads", "2", "--persona_a_heads", "2",
        "--persona_v_heads", "2", "--interactive_heads", "2", "--batch-size", "4", "--num-threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    p = write_synthetic("MELD", root / "meld", SynthOptions(dialogues=10, min_len=3, max_len=6, seed=4))
    return p["features"]


def test_paper_protocol_is_announced_and_recorded(data, tmp_path, capsys):
    rc = main(["train", "--dataset", "MELD", "--data_dir", str(data), "--valid_rate", "0.0", "--epochs", "4",
               "--lr", "0.1", "--out", str(tmp_path / "ck"), *TINY])
    out = capsys.readouterr().out
    assert rc == 0
    assert "selected on the TEST set (the paper's protocol)" in out
    assert "parameters" in out  # parameter count at start
    meta = read_meta(tmp_path / "ck")
    t = meta["training"]
    assert t["selected_on"] == "test" and t["dataset"] == "MELD" and t["seed"] == 11407
    assert t["parameters"] == sum(p.numel() for p in load_checkpoint(tmp_path / "ck").model.parameters())
    assert meta["extractors"]["t"] == {"name": "synthetic", "dim": 1024}
    # the paper's protocol keeps the epoch with the best test W-F1 ...
    scores = [row["test_weighted_f1"] for row in t["history"]]
    assert len(scores) == 4 and scores[-1] < max(scores)  # (lr 0.1: the scores move, the last is not the best)
    assert t["best_epoch"] == 1 + scores.index(max(scores))
    assert meta["metrics"]["test"]["weighted_f1"] == pytest.approx(max(scores), abs=1e-12)
    # ... and the recorded score is that of the saved weights, recomputed here with sklearn
    test = load_dataset("MELD", data, valid_rate=0.0).test
    batch = collate(test)
    with torch.no_grad():
        pred = load_checkpoint(tmp_path / "ck").model.eval()(batch).emotion_logp.argmax(1)
    gold = graph.flat_labels(batch)
    keep = gold >= 0
    expected = f1_score(gold[keep].numpy(), pred[keep].numpy(), average="weighted", zero_division=0)
    assert meta["metrics"]["test"]["weighted_f1"] == pytest.approx(expected, abs=1e-9)


def test_honest_default_selects_on_validation(data, tmp_path, capsys):
    assert main(["train", "--dataset", "MELD", "--data_dir", str(data), "--epochs", "1", "--out",
                 str(tmp_path / "ck"), *TINY]) == 0
    out = capsys.readouterr().out
    assert "TEST set" not in out and "validation split:" in out
    meta = read_meta(tmp_path / "ck")
    assert meta["training"]["selected_on"] == "valid" and "valid" in meta["metrics"]
    # evaluate reproduces the recorded numbers: same validation carve, same test set, deterministic eval
    for split in ("valid", "test"):
        assert main(["evaluate", "--ckpt", str(tmp_path / "ck"), "--split", split, "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["weighted_f1"] == pytest.approx(meta["metrics"][split]["weighted_f1"], abs=1e-9)
        assert got["n_utterances"] == meta["metrics"][split]["n_utterances"]


def test_seed_once_is_reproducible(data, tmp_path):
    for name in ("a", "b"):
        assert main(["train", "--dataset", "MELD", "--data_dir", str(data), "--epochs", "2", "--seed", "3",
                     "--out", str(tmp_path / name), *TINY]) == 0
    assert read_meta(tmp_path / "a")["weights_sha256"] == read_meta(tmp_path / "b")["weights_sha256"]


def test_multi_seed_mean_and_std(data, tmp_path, capsys):
    assert main(["train", "--dataset", "MELD", "--data_dir", str(data), "--epochs", "1", "--seeds", "1", "2",
                 "--out", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    assert "2 seeds" in out and "±" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seeds"] == [1, 2] and summary["n_runs"] == 2
    w = [read_meta(tmp_path / f"seed-{s}")["metrics"]["test"]["weighted_f1"] for s in (1, 2)]
    assert summary["mean"]["weighted_f1"] == pytest.approx(sum(w) / 2)
    assert summary["std"]["weighted_f1"] == pytest.approx(abs(w[0] - w[1]) / 2**0.5)
    # evaluate on the run directory: every seed's checkpoint, mean ± std
    assert main(["evaluate", "--ckpt", str(tmp_path), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert [r["checkpoint"] for r in ev["runs"]] == [str(tmp_path / "seed-1"), str(tmp_path / "seed-2")]
    assert ev["mean"]["weighted_f1"] == pytest.approx(summary["mean"]["weighted_f1"], abs=1e-9)
    assert main(["evaluate", "--ckpt", str(tmp_path)]) == 0
    assert "mean ± std (2 runs)" in capsys.readouterr().out


def test_ablations_and_causal(data, tmp_path, capsys):
    persona = data.parent / "MELD_persona.pkl"
    hidden = tmp_path / "hidden_persona.pkl"
    persona.rename(hidden)  # --wo_persona needs no persona file
    try:
        assert main(["train", "--dataset", "MELD", "--data_dir", str(data), "--epochs", "1", "--wo_persona",
                     "--wo_crosstask", "--wo_shiftcl", "--causal", "--window", "8", "--out", str(tmp_path / "ck"),
                     *TINY]) == 0
    finally:
        hidden.rename(persona)
    ck = load_checkpoint(tmp_path / "ck")
    c = ck.config
    assert (c.use_persona, c.use_crosstask, c.use_shift_cl, c.causal, c.window_utterances) == (False, False, False, True, 8)
    assert ck.persona == {"source": "none"}
    capsys.readouterr()
    assert main(["evaluate", "--ckpt", str(tmp_path / "ck"), "--json"]) == 0  # flags come from the checkpoint
    assert "weighted_f1" in json.loads(capsys.readouterr().out)
    assert main(["train", "--dataset", "MELD", "--data_dir", str(data), "--epochs", "1", "--no_graph",
                 "--wo_shift", "--out", str(tmp_path / "ng"), *TINY]) == 0
    c = load_checkpoint(tmp_path / "ng").config
    assert (c.use_graph, c.use_shift_task) == (False, False)


def test_absent_modalities_prepare_meld_layout(tmp_path, capsys):
    """A MELD-layout pickle whose audio/visual dicts are None (as prepare-meld writes): text-only training and
    evaluation work, and a checkpoint that needs audio is refused on it."""
    d = tmp_path / "prepared"
    p = write_synthetic("MELD", d, SynthOptions(dialogues=8, min_len=3, max_len=5, seed=2))
    with open(p["features"], "rb") as f:
        feat = list(pickle.load(f))
    full = tmp_path / "full"
    write_synthetic("MELD", full, SynthOptions(dialogues=8, min_len=3, max_len=5, seed=2))
    feat[4] = feat[5] = None
    with open(p["features"], "wb") as f:
        pickle.dump(tuple(feat), f)
    assert main(["train", "--dataset", "MELD", "--data_dir", str(p["features"]), "--epochs", "1",
                 "--out", str(tmp_path / "t"), *TINY]) == 0
    assert load_checkpoint(tmp_path / "t").config.modalities == ("t",)
    assert main(["evaluate", "--ckpt", str(tmp_path / "t"), "--json"]) == 0
    assert main(["train", "--dataset", "MELD", "--data_dir", str(full / "MELD_features_raw1.pkl"), "--modals", "al",
                 "--epochs", "1", "--out", str(tmp_path / "ta"), *TINY]) == 0
    capsys.readouterr()
    rc = main(["evaluate", "--ckpt", str(tmp_path / "ta"), "--data_dir", str(p["features"])])
    assert rc == 2 and "modalities ['a'] requested but absent" in capsys.readouterr().err


def test_class_weights_are_inverse_frequencies():
    w = class_weights("inverse", "IEMOCAP", 6)
    assert w.tolist() == pytest.approx([1 / 0.086747, 1 / 0.144406, 1 / 0.227883, 1 / 0.160585, 1 / 0.127711,
                                        1 / 0.252668])
    assert isinstance(w, torch.Tensor)


def test_no_test_split(tmp_path, capsys):
    """Own data with every dialogue in train (as `pcgnet extract --test-fraction 0` writes): selection needs
    a validation split; without one the error says so instead of a traceback."""
    p = write_synthetic("MELD", tmp_path / "d", SynthOptions(dialogues=6, min_len=3, max_len=5, seed=3))
    with open(p["features"], "rb") as f:
        feat = list(pickle.load(f))
    feat[7], feat[8] = list(feat[7]) + list(feat[8]), []
    with open(p["features"], "wb") as f:
        pickle.dump(tuple(feat), f)
    rc = main(["train", "--dataset", "MELD", "--data_dir", str(p["features"]), "--valid_rate", "0.0",
               "--epochs", "1", "--out", str(tmp_path / "a"), *TINY])
    assert rc == 2 and "nothing to select the best epoch on" in capsys.readouterr().err
    assert main(["train", "--dataset", "MELD", "--data_dir", str(p["features"]), "--valid_rate", "0.3",
                 "--epochs", "1", "--out", str(tmp_path / "b"), *TINY]) == 0
    assert set(read_meta(tmp_path / "b")["metrics"]) == {"valid"}


def test_ctrl_c_saves_the_best_epoch_so_far(data, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    args = [a for a in TINY if a != "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "pcgnet.cli", "train", "--dataset", "MELD", "--data_dir", str(data),
                             "--epochs", "100000", "--patience", "100000", "--out", str(tmp_path / "ck"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()},
                            # A suite started in the background inherits SIGINT ignored, and Python then
                            # installs no KeyboardInterrupt handler: give the child the terminal's default.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:
            if line.startswith("ep "):  # one epoch finished (no early stop can end the run before the signal)
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest
    assert "best checkpoint so far" in rest
    meta = read_meta(tmp_path / "ck")
    assert meta["training"]["interrupted"] is True and meta["training"]["best_epoch"] >= 1


def test_train_also_adds_the_other_layouts_training_dialogues(data, tmp_path, capsys):
    twin = write_synthetic("MELD", tmp_path / "twin", SynthOptions(dialogues=10, min_len=3, max_len=6, seed=4))
    base, other = (load_dataset("MELD", p, valid_rate=0.2, seed=1) for p in (data, twin["features"]))
    for d in other.train:
        d.features["t"] = d.features["t"] + 1.0  # "the same dialogues seen another way"
    both = add_training_views(base, other, "twin")
    assert [d.id for d in both.train] == [d.id for d in base.train] * 2
    assert all(a.features["t"] is b.features["t"] for a, b in zip(both.train[len(base.train):], other.train, strict=True))
    assert both.valid == base.valid and both.test == base.test  # only training grows
    other.train[0].labels = other.train[0].labels[::-1].copy() + 1
    with pytest.raises(DataError, match="other labels or speakers"):
        add_training_views(base, other, "twin")

    # Through the CLI: the checkpoint records the doubled training split; a different layout is one error line.
    assert main(["train", "--dataset", "MELD", "--data_dir", str(data), "--train_also", str(twin["features"]),
                 "--epochs", "1", "--out", str(tmp_path / "ck"), *TINY]) == 0
    t = read_meta(tmp_path / "ck")["training"]
    plain = load_dataset("MELD", data, valid_rate=0.1, seed=t["split_seed"])
    assert t["splits"]["train"] == 2 * len(plain.train) and t["splits"]["valid"] == len(plain.valid)
    stranger = write_synthetic("MELD", tmp_path / "stranger", SynthOptions(dialogues=12, seed=5))
    capsys.readouterr()
    assert main(["train", "--dataset", "MELD", "--data_dir", str(data), "--train_also", str(stranger["features"]),
                 "--epochs", "1", "--out", str(tmp_path / "no"), *TINY]) == 2
    assert "training dialogues are not those of" in capsys.readouterr().err
