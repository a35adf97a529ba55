"""The one trainer: `--recipe meld-live`, sqrt class weights, the dev-chosen shift rule, the baseline."""

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
from pcgnet.shift import UNTUNED, choose_rule, operating_points
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
    # the stored rule is choose_rule's on the validation split's predictions; balanced = the best F1 there
    ck = load_checkpoint(out)
    ds = load_dataset("MELD", data, valid_rate=float(t["valid_rate"]), seed=int(t["split_seed"]))
    pred = predict_dialogues(ck.model, ds.valid)
    rule = ck.shift_rule
    assert meta["shift"] == rule.to_json() and rule.name == "joint-v1" and rule.selected_on == "valid"
    assert rule == choose_rule(pred.labels.numpy(), pred.emotion_prob.numpy(), pred.pair_prev.numpy(),
                               pred.pair_cur.numpy(), pred.shift_prob.numpy())
    pts = operating_points(pred.labels.numpy(), pred.emotion_prob.numpy(), pred.pair_prev.numpy(),
                           pred.pair_cur.numpy(), pred.shift_prob.numpy(), rule.weight, rule.mix)
    best = max(o.f1 for o in pts)
    assert len({round(o.f1, 6) for o in pts}) > 2  # else any threshold would pass
    assert set(rule.thresholds) == {"sensitive", "balanced", "precise"}
    assert meta["metrics"]["valid"]["binary_shift"]["f1"] == pytest.approx(best)
    # evaluate scores under the stored rule, at any stored profile
    capsys.readouterr()
    assert main(["evaluate", "--ckpt", str(out), "--split", "valid", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["binary_shift"]["threshold"] == rule.threshold() and got["binary_shift"]["f1"] == pytest.approx(best)
    assert set(got["profiles"]) == set(rule.thresholds)
    assert main(["evaluate", "--ckpt", str(out), "--split", "valid", "--json", "--shift-profile", "precise"]) == 0
    assert json.loads(capsys.readouterr().out)["binary_shift"]["threshold"] == rule.threshold("precise")
    assert main(["evaluate", "--ckpt", str(out), "--split", "valid", "--shift-profile", "eager"]) == 2
    assert "unknown shift profile 'eager'" in capsys.readouterr().err


def test_write_shift_rule_keeps_the_weights(data, tmp_path, capsys):
    """A checkpoint with an older stored threshold gets the rule from `evaluate --write-shift-rule`."""
    out = tmp_path / "ck"
    assert main(["train", "--dataset", "MELD", "--data_dir", str(data), "--recipe", "meld-live", "--epochs", "1",
                 "--out", str(out), *TINY]) == 0
    cfg = out / "config.json"
    meta = json.loads(cfg.read_text())
    want = meta["shift"]
    meta["shift"] = {"threshold": 0.2, "rule": "P(shift) = 1 - sum of the diagonal >= threshold"}
    cfg.write_text(json.dumps(meta))
    weights = (out / "model.safetensors").read_bytes()
    assert load_checkpoint(out).shift_rule == UNTUNED  # the old threshold is another probability's
    assert main(["evaluate", "--ckpt", str(out), "--split", "test", "--write-shift-rule"]) == 2
    assert main(["evaluate", "--ckpt", str(out), "--split", "valid", "--write-shift-rule", "--json"]) == 0
    again = json.loads(cfg.read_text())
    assert again["shift"] == want and (out / "model.safetensors").read_bytes() == weights
    assert again["metrics"]["valid"]["binary_shift"]["rule"] == "joint-v1"


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
    assert run["checkpoint"] is None and 0 <= run["shift_rule"]["profiles"]["balanced"]["threshold"] <= 1
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
