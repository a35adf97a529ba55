"""pcgnet synth: exact paper layouts, readable by pcgnet.data, and labels that depend on features and context."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pcgnet.cli import main
from pcgnet.config import DATASETS
from pcgnet.data import load_dataset
from pcgnet.synth import SynthOptions, write_synthetic


def _load(p):
    with open(p, "rb") as f:
        return pickle.load(f)  # our own freshly written test file


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = {}
    for ds in DATASETS:
        out[ds] = write_synthetic(ds, tmp_path_factory.mktemp(ds), SynthOptions(dialogues=12, seed=3))
    return out


def test_iemocap_layout(files):
    p = files["IEMOCAP"]
    assert p["features"].name == "IEMOCAP_features.pkl"
    assert p["roberta"].name == "iemocap_features_roberta.pkl"
    assert p["persona"].name == "IEMOCAP_persona.pkl"
    feat, rob, pers = _load(p["features"]), _load(p["roberta"]), _load(p["persona"])
    assert isinstance(feat, tuple) and len(feat) == 9
    assert isinstance(rob, tuple) and len(rob) == 10
    ids, spk, lab, text, audio, vis, sent, train, test = feat
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(ids)
    assert all(v.startswith("Ses05") for v in test) and not any(v.startswith("Ses05") for v in train)
    for vid in ids:
        n = len(ids[vid])
        assert all(isinstance(k, str) for k in ids)
        assert set(spk[vid]) <= {"M", "F"} and len(spk[vid]) == n
        assert all(0 <= y < 6 for y in lab[vid])
        assert np.asarray(text[vid]).shape == (n, 100)
        assert np.asarray(audio[vid]).shape == (n, 1582)
        assert np.asarray(vis[vid]).shape == (n, 342)
        assert len(sent[vid]) == n
        for k in range(4):
            assert np.asarray(rob[2 + k][vid]).shape == (n, 1024)
        assert pers[vid].shape == (n, 5) and pers[vid].dtype == np.float32


def test_meld_layout(files):
    p = files["MELD"]
    assert p["features"].name == "MELD_features_raw1.pkl"
    feat, rob, pers = _load(p["features"]), _load(p["roberta"]), _load(p["persona"])
    assert len(feat) == 10 and len(rob) == 11
    ids, spk, lab, text, audio, vis = feat[:6]
    for vid in ids:
        assert isinstance(vid, int)
        n = len(ids[vid])
        onehot = np.asarray(spk[vid])
        assert onehot.shape == (n, 9) and (onehot.sum(1) == 1).all()
        slots = onehot.argmax(1)
        first_seen = list(dict.fromkeys(slots.tolist()))
        assert first_seen == list(range(len(first_seen)))  # slots in order of first appearance
        assert np.asarray(text[vid]).shape == (n, 600)
        assert np.asarray(audio[vid]).shape == (n, 300)
        assert np.asarray(vis[vid]).shape == (n, 342)
        assert all(0 <= y < 7 for y in lab[vid])
        assert len(rob[2][vid]) == n  # sentiment labels
        for k in range(4):
            assert np.asarray(rob[3 + k][vid]).shape == (n, 1024)
        assert pers[vid].shape == (n, 5)


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_data_reader_accepts_synth(files, dataset):
    ds = load_dataset(dataset, files[dataset]["features"], valid_rate=0.0)
    assert ds.dims == DATASETS[dataset].dims
    assert len(ds.train) + len(ds.test) == 12
    assert ds.extractors["t"]["name"] == "synthetic"


def test_labels_learnable_from_features_and_context(tmp_path):
    p = write_synthetic("IEMOCAP", tmp_path, SynthOptions(dialogues=60, seed=1))
    ds = load_dataset("IEMOCAP", p["features"], valid_rate=0.0)
    x = np.concatenate([d.features["t"] for d in ds.train])
    y = np.concatenate([d.labels for d in ds.train])
    xt = np.concatenate([d.features["t"] for d in ds.test])
    yt = np.concatenate([d.labels for d in ds.test])
    acc = LogisticRegression(C=0.01, max_iter=500).fit(x, y).score(xt, yt)
    majority = np.bincount(yt).max() / len(yt)
    assert acc > majority + 0.15, (acc, majority)
    # Context: a speaker's emotion repeats their previous one far more often than chance would.
    same, pairs = 0, 0
    for d in ds.train + ds.test:
        last = {}
        for s, lab in zip(d.speakers.tolist(), d.labels.tolist(), strict=True):
            if s in last:
                pairs += 1
                same += last[s] == lab
            last[s] = lab
    freq = np.bincount(y, minlength=6) / len(y)
    assert same / pairs > float((freq**2).sum()) + 0.3


def test_synth_command(tmp_path, capsys):
    assert main(["synth", "--dataset", "MELD", "--out", str(tmp_path), "--dialogues", "5", "--seed", "2"]) == 0
    assert "pcgnet train --dataset MELD" in capsys.readouterr().out
    ds = load_dataset("MELD", tmp_path / "MELD_features_raw1.pkl", valid_rate=0.0)
    assert len(ds.train) + len(ds.test) == 5
    # Same seed, same files.
    again = tmp_path / "again"
    main(["synth", "--dataset", "MELD", "--out", str(again), "--dialogues", "5", "--seed", "2"])
    assert (again / "MELD_persona.pkl").read_bytes() == (tmp_path / "MELD_persona.pkl").read_bytes()


def test_load_synthetic_and_paper_sizes():
    from pcgnet.synth import PAPER_SIZES, load_synthetic

    ds = load_synthetic("MELD", SynthOptions(dialogues=6, seed=1), valid_rate=0.0)
    assert len(ds.train) + len(ds.test) == 6 and ds.dims == DATASETS["MELD"].dims
    iem = PAPER_SIZES["IEMOCAP"]
    assert iem.dialogues - round(iem.test_fraction * iem.dialogues) == 120  # the paper's train dialogues
    assert (iem.min_len + iem.max_len) / 2 == pytest.approx(7433 / 151, abs=0.5)
    meld = PAPER_SIZES["MELD"]
    assert round(meld.test_fraction * meld.dialogues) == 280
    assert (meld.min_len + meld.max_len) / 2 == pytest.approx(13708 / 1432, abs=0.5)
