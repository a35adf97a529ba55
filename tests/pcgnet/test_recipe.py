"""The one trainer: `--recipe meld-live`, sqrt class weights, the dev-chosen shift threshold, the baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pcgnet.checkpoint import load_checkpoint, read_meta
from pcgnet.cli import main
from pcgnet.data import load_dataset
from pcgnet.evaluate import predict_dialogues
from pcgnet.flags import class_weights
from pcgnet.synth import SynthOptions, write_synthetic

TINY = ["--hidden_l", "8", "--hidden_a", "8", "--hidden_v", "8", "--persona_l_heads", "2", "--persona_a_heads", "2",
        "--persona_v_heads", "2", "--interactive_heads", "2", "--batch-size", "4", "--num-threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    return write_synthetic("MELD", root / "meld", SynthOptions(dialogues=40, min_len=4, max_len=8, seed=5))["features"]


def test_recipe_fills_unset_flags_and_stores_the_dev_threshold(data, tmp_path, capsys):
    out = tmp_path / "ck"
    assert main(["train", "--dataset", "MELD", "--data_dir", str(data), "--recipe", "meld-live", "--epochs", "2",
                 "--out", str(out), *TINY]) == 0
    meta = read_meta(out)
    t = meta["training"]
    # from the recipe: causal model, lr 1e-3, sqrt weights; --epochs given on the command line wins
    assert meta["model"]["causal"] is True and t["lr"] == 1e-3 and t["class_weight"] == "sqrt" and t["epochs"] == 2
    assert t["patience"] == 4 and t["recipe"] == "meld-live"
    # the stored threshold is the best binary shift F1 on the validation split: brute force agrees
    ck = load_checkpoint(out)
    ds = load_dataset("MELD", data, valid_rate=float(t["valid_rate"]), seed=int(t["split_seed"]))
    pred = predict_dialogues(ck.model, ds.valid)
    c = 7
    y = pred.shift_labels.numpy()
    is_shift = (y // c) != (y % c)
    p = 1 - pred.shift_prob.numpy().reshape(-1, c, c).diagonal(axis1=1, axis2=2).sum(1)

    def f1(th: float) -> float:
        hit = p >= th
        tp = (hit & is_shift).sum()
        return 2 * tp / (hit.sum() + is_shift.sum())

    best = max(f1(th) for th in np.unique(p))
    assert is_shift.any() and (~is_shift).any() and len(np.unique(p)) > 2  # else any threshold would pass
    assert meta["shift"]["threshold"] == ck.shift_threshold
    assert f1(ck.shift_threshold) == pytest.approx(best)
    assert meta["metrics"]["valid"]["binary_shift"]["f1"] == pytest.approx(best)
    # evaluate scores at the stored threshold
    capsys.readouterr()
    assert main(["evaluate", "--ckpt", str(out), "--split", "valid", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["binary_shift"]
    assert got["threshold"] == ck.shift_threshold and got["f1"] == pytest.approx(best)


def test_sqrt_class_weights_have_mean_one_and_favour_rare_classes():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10 + [-1] * 5)
    w = class_weights("sqrt", "MELD", 3, y).numpy()
    freq = np.array([0.6, 0.3, 0.1])
    assert (w * freq).sum() == pytest.approx(1.0)
    assert w[0] < w[1] < w[2] and w[2] / w[0] == pytest.approx(np.sqrt(6))
    assert class_weights(False, "MELD", 7) is None
    assert torch.allclose(class_weights(True, "MELD", 7), class_weights("inverse", "MELD", 7))


def test_context_free_baseline_row(data, tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(["train", "--dataset", "MELD", "--data_dir", str(data), "--context_free", "--seeds", "1", "2",
                 "--valid_rate", "0.3",
                 "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_runs"] == 1 and s["seeds"] == [1]  # deterministic: one fit
    run = s["runs"][0]
    assert run["checkpoint"] is None and 0 <= run["shift_threshold"] <= 1
    # synthetic labels depend on the features: the baseline is far above chance (1/7)
    assert s["mean"]["weighted_f1"] > 0.4 and s["valid"]["mean"]["weighted_f1"] > 0.4


def test_context_free_baseline_fits_train_and_picks_c_on_valid(data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from pcgnet.baseline import C_GRID, context_free

    ds = load_dataset("MELD", data, valid_rate=0.3, seed=0)
    res = context_free(ds)

    def xy(dialogues):
        x = np.concatenate([np.concatenate([d.features[m] for m in ds.modalities], axis=1) for d in dialogues])
        y = np.concatenate([d.labels for d in dialogues])
        return x[y >= 0], y[y >= 0]

    (xt, yt), (xv, yv), (xs, ys) = xy(ds.train), xy(ds.valid), xy(ds.test)
    fits = {c: LogisticRegression(C=c, max_iter=3000, random_state=0).fit(xt, yt) for c in C_GRID}
    wf1 = {c: f1_score(yv, fits[c].predict(xv), average="weighted") for c in C_GRID}
    assert res.c == max(C_GRID, key=lambda c: (wf1[c], -C_GRID.index(c)))  # first best C on valid
    assert res.test is not None
    assert res.test["weighted_f1"] == pytest.approx(f1_score(ys, fits[res.c].predict(xs), average="weighted"))
