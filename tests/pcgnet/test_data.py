"""pcgnet.data: reading the paper's pickle layouts, and one clear DataError per malformed input."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pcgnet.data import DataError, collate, load_dataset, read_pickle
from pcgnet.synth import SynthOptions, make_synthetic, write_synthetic

SMALL = SynthOptions(dialogues=6, min_len=3, max_len=6, seed=5)


def _write(tmp_path, dataset="IEMOCAP", mutate=None, opts=SMALL):
    """Write synthetic files, after ``mutate(objs)`` edits the in-memory tuples."""
    objs = make_synthetic(dataset, opts)
    objs = {k: list(v) if isinstance(v, tuple) else v for k, v in objs.items()}
    if mutate:
        mutate(objs)
    names = {"IEMOCAP": ("IEMOCAP_features.pkl", "iemocap_features_roberta.pkl", "IEMOCAP_persona.pkl"),
             "MELD": ("MELD_features_raw1.pkl", "meld_features_roberta.pkl", "MELD_persona.pkl")}[dataset]
    for key, name in zip(("features", "roberta", "persona"), names, strict=True):
        obj = objs[key]
        with open(tmp_path / name, "wb") as f:
            pickle.dump(tuple(obj) if isinstance(obj, list) else obj, f)
    return tmp_path / names[0]


def _first(objs):
    return objs["features"][0] and next(iter(objs["features"][0]))


def test_reads_and_splits(tmp_path):
    p = _write(tmp_path)
    ds = load_dataset("IEMOCAP", p, valid_rate=0.0)
    assert ds.valid == [] and ds.valid_source == "none"
    assert ds.modalities == ("t", "a", "v") and ds.n_speakers == 2
    ds2 = load_dataset("IEMOCAP", p, valid_rate=0.4, seed=1)
    assert len(ds2.valid) >= 1 and len(ds2.train) + len(ds2.valid) == len(ds.train)
    assert {d.id for d in ds2.valid}.isdisjoint(d.id for d in ds2.train)
    assert [d.id for d in load_dataset("IEMOCAP", p, valid_rate=0.4, seed=1).valid] == [d.id for d in ds2.valid]


def test_text_is_mean_of_four_roberta_layers_and_speakers_map(tmp_path):
    objs = make_synthetic("IEMOCAP", SMALL)
    p = _write(tmp_path)
    ds = load_dataset("IEMOCAP", p, valid_rate=0.0)
    d = ds.test[0]
    rob = objs["roberta"]
    want = np.mean([np.asarray(rob[2 + k][d.id]) for k in range(4)], axis=0)
    np.testing.assert_allclose(d.features["t"], want, rtol=1e-6, atol=1e-6)
    gender = objs["features"][1][d.id]
    assert d.speakers.tolist() == [0 if g == "M" else 1 for g in gender]


def test_meld_speakers_are_argmax_and_dev_ids_become_valid(tmp_path):
    def dev(objs):
        objs["features"][9] = objs["features"][7][:2]  # prepare-meld writes the dev ids as item 10
    p = _write(tmp_path, "MELD", dev)
    ds = load_dataset("MELD", p, valid_rate=0.1)
    assert [d.id for d in ds.valid] == sorted(make_synthetic("MELD", SMALL)["features"][7][:2])
    assert "dev ids" in ds.valid_source
    objs = make_synthetic("MELD", SMALL)
    d = ds.test[0]
    assert d.speakers.tolist() == np.asarray(objs["features"][1][d.id]).argmax(1).tolist()


def test_absent_modalities(tmp_path):
    def no_av(objs):
        objs["features"][4] = None
        objs["features"][5] = None
    p = _write(tmp_path, "MELD", no_av)
    ds = load_dataset("MELD", p, valid_rate=0.0)
    assert ds.modalities == ("t",)
    with pytest.raises(DataError, match="modalities \\['a'\\] requested but absent"):
        load_dataset("MELD", p, modalities=("t", "a"), valid_rate=0.0)


def test_persona_found_in_sibling_persona_erc_folder(tmp_path):
    d = tmp_path / "iemocap"
    d.mkdir()
    paths = write_synthetic("IEMOCAP", d, SMALL)
    (tmp_path / "personaERC").mkdir()
    shutil.move(paths["persona"], tmp_path / "personaERC" / "IEMOCAP_persona.pkl")
    ds = load_dataset("IEMOCAP", paths["features"], valid_rate=0.0)
    assert ds.files["persona"].endswith(os.path.join("personaERC", "IEMOCAP_persona.pkl"))
    os.remove(tmp_path / "personaERC" / "IEMOCAP_persona.pkl")
    with pytest.raises(DataError, match="IEMOCAP_persona.pkl: file not found"):
        load_dataset("IEMOCAP", paths["features"], valid_rate=0.0)
    ds = load_dataset("IEMOCAP", paths["features"], valid_rate=0.0, need_persona=False)
    assert ds.persona_source == "none" and not ds.train[0].persona.any()


def _dialogue(objs):
    return next(iter(objs["features"][0]))


def _set(item, fn):
    def mutate(objs):
        vid = _dialogue(objs)
        fn(objs, vid)
    return mutate


CASES = [
    ("wrong tuple", lambda o: o["features"].pop(), "expected the IEMOCAP MMGCN layout \\(a 9-tuple\\), got a 8-tuple"),
    ("roberta tuple", lambda o: o["roberta"].pop(), "COSMIC RoBERTa layout \\(a 10-tuple\\)"),
    ("not a dict", lambda o: o["features"].__setitem__(4, [1, 2]), "the a features must be a dict"),
    ("speaker count", _set(None, lambda o, v: o["features"][1][v].pop()), "speakers of dialogue .* entries"),
    ("bad speaker", _set(None, lambda o, v: o["features"][1][v].__setitem__(0, "X")), "speaker 'X'"),
    ("label range", _set(None, lambda o, v: o["features"][2][v].__setitem__(0, 9)), "label 9 .* outside 0..5"),
    ("audio length", _set(None, lambda o, v: o["features"][4][v].pop()), "a features of dialogue .* utterances, the dialogue has"),
    ("audio dims", _set(None, lambda o, v: o["features"][4].__setitem__(v, [x[:10] for x in o["features"][4][v]])),
     "a features of dialogue .* are 10-d, earlier dialogues are 1582-d|are 1582-d, earlier dialogues are 10-d"),
    ("ragged", _set(None, lambda o, v: o["features"][5][v].__setitem__(0, np.zeros(3))), "not a list of equal-length"),
    ("roberta length", _set(None, lambda o, v: o["roberta"][3][v].pop()), "roberta2 of dialogue"),
    ("roberta missing", _set(None, lambda o, v: o["roberta"][4].pop(v)), "missing from roberta3"),
    ("persona dim", _set(None, lambda o, v: o["persona"].__setitem__(v, np.zeros((len(o["features"][0][v]), 4)))),
     "persona of dialogue .* is 4-d, expected 5"),
    ("persona missing", _set(None, lambda o, v: o["persona"].pop(v)), "has no persona vectors"),
    ("nan", _set(None, lambda o, v: o["features"][5][v][0].__setitem__(0, np.nan)), "NaN"),
    ("split overlap", lambda o: o["features"].__setitem__(8, list(o["features"][8]) + [o["features"][7][0]]),
     "in both trainVid and testVid"),
    ("unknown id", lambda o: o["features"].__setitem__(8, list(o["features"][8]) + ["Ses05X_nope"]),
     "'Ses05X_nope' is in the split lists but not in videoIDs"),
]


@pytest.mark.parametrize(("name", "mutate", "message"), CASES, ids=[c[0] for c in CASES])
def test_each_malformed_input_is_one_clear_error(tmp_path, name, mutate, message):
    p = _write(tmp_path, mutate=mutate)
    with pytest.raises(DataError, match=message) as e:
        load_dataset("IEMOCAP", p, valid_rate=0.0)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg  # one line, naming the file


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.pkl: file not found"):
        load_dataset("IEMOCAP", tmp_path / "nope.pkl")
    (tmp_path / "garbage.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="garbage.pkl: not a readable data pickle"):
        load_dataset("IEMOCAP", tmp_path / "garbage.pkl")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickles_cannot_run_code(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(DataError, match="refusing to load (posix|os|nt).system"):
        read_pickle(p)


def test_collate_pads_with_minus_one(tmp_path):
    ds = load_dataset("IEMOCAP", _write(tmp_path), valid_rate=0.0)
    dl = ds.train[:3]
    b = collate(dl)
    lengths = [len(d) for d in dl]
    assert b.mask.sum(1).tolist() == lengths
    assert b.features["a"].shape == (3, max(lengths), 1582) and b.features["a"].dtype == torch.float32
    for i, n in enumerate(lengths):
        assert (b.labels[i, n:] == -1).all() and (b.speakers[i, n:] == -1).all()
        assert b.labels[i, :n].tolist() == dl[i].labels.tolist()
    assert b.dialogue_ids == [d.id for d in dl]


# ../shared beside the checkout (as in CI); skipped where it is absent.
REAL_PERSONA = str(Path(__file__).resolve().parents[3] / "shared" / "data" / "persona")


@pytest.mark.skipif(not os.path.isdir(REAL_PERSONA), reason="the reference persona pickles are not on this machine")
def test_reads_the_real_persona_pickles_with_the_restricted_unpickler():
    iemocap = read_pickle(os.path.join(REAL_PERSONA, "IEMOCAP_persona.pkl"))
    meld = read_pickle(os.path.join(REAL_PERSONA, "MELD_persona.pkl"))
    assert len(iemocap) == 151 and sum(v.shape[0] for v in iemocap.values()) == 7433
    assert len(meld) == 1432 and all(isinstance(k, int) for k in meld) and 60 not in meld
    assert iemocap["Ses05F_impro01"][0] == pytest.approx([0.2738, 0.2367, 0.1925, 0.2795, 0.2396], abs=1e-4)
