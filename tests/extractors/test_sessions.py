"""`pcgnet extract` on real recorded-session folders (espeak speech, generated video) read back by pcgnet.data."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from extractors import registry
from pcgnet import data
from pcgnet.persona import PersonaEstimator
from prepare import cli
from prepare.sessions import SessionError, extract_sessions
from tests.extractors.extractor_media import make_session
from tests.real_parts import require_module

require_module("cv2")
require_module("opensmile")


@pytest.fixture(scope="module")
def cache():
    built: dict = {}

    def create(name: str, **kw):
        if name not in built:
            built[name] = registry.create(name, **kw)
        return built[name]

    return create


NAMES = {"t": "minilm-l6", "a": "egemaps", "v": "fer"}


def test_extract_layout_is_read_by_pcgnet_data(tmp_path, speech, photos, cache):
    s1 = make_session(tmp_path / "s1", "s1", speech, photos, video=True)
    s2 = make_session(tmp_path / "s2", "s2", speech, photos, video=True)
    s3 = make_session(tmp_path / "s3", "s3", speech, photos, video=False)
    out = tmp_path / "out"
    meta = extract_sessions([s1, s2, s3], out, NAMES, test_sessions=["s3"], create=cache)
    assert meta["extractors"] == {"t": {"name": "minilm-l6", "dim": 384}, "a": {"name": "egemaps", "dim": 88},
                                  "v": {"name": "fer", "dim": 7}}
    assert meta["absent"] == [] and meta["train"] == ["s1", "s2"] and meta["test"] == ["s3"]
    by_id = {s["session_id"]: s for s in meta["sessions"]}
    assert by_id["s1"]["invalid"] == {"t": 1, "a": 0, "v": 2}  # u2: no face; u3: no text, no face
    assert by_id["s3"]["invalid"]["v"] == 3  # no video at all: explicit zeros, counted
    ds = data.load_dataset("MELD", out, need_persona=False, valid_rate=0.0)
    assert ds.dims == {"t": 384, "a": 88, "v": 7}
    assert [d.id for d in ds.train] == ["s1", "s2"] and [d.id for d in ds.test] == ["s3"]
    d1 = ds.train[0]
    assert d1.labels.tolist() == [4, 6, -1]  # joy, anger, unlabelled
    assert d1.speakers.tolist() == [0, 1, 0]
    v = d1.features["v"]
    assert v[0].argmax() == 3 and not v[1].any()  # happy face, then the no-face mask as zeros
    assert abs(float(np.linalg.norm(d1.features["t"][0])) - 1) < 1e-4
    assert ds.extractors["t"]["name"] == "minilm-l6"


def test_absent_modality_is_declared(tmp_path, speech, photos, cache):
    s = make_session(tmp_path / "s", "s", speech, photos, video=False)
    out = tmp_path / "out"
    meta = extract_sessions([s], out, NAMES, test_fraction=0.0, create=cache)
    assert meta["absent"] == ["v"] and "v" not in meta["extractors"]
    with (out / "MELD_features_raw1.pkl").open("rb") as f:
        tup = pickle.load(f)  # noqa: S301 - our own file
    assert len(tup) == 10 and tup[5] is None and tup[4] is not None


def test_asr_fills_missing_transcripts(tmp_path, speech, photos, cache):
    require_module("pocketsphinx")
    s = make_session(tmp_path / "s", "s", speech, photos, video=False, texts=(None, None, None))
    meta = extract_sessions([s], tmp_path / "out", {"t": "minilm-l6"}, asr="pocketsphinx", test_fraction=0.0,
                            create=cache)
    assert meta["sessions"][0]["invalid"]["t"] == 1  # the third utterance is silence: nothing recognised
    with (tmp_path / "out" / "MELD_features_raw1.pkl").open("rb") as f:
        sentences = pickle.load(f)[6]["s"]  # noqa: S301 - our own file
    assert "happy" in sentences[0] and "angry" in sentences[1]


def test_persona_json_and_iemocap_layout(tmp_path, speech, photos, cache):
    sessions = [make_session(tmp_path / f"s{i}", f"s{i}", speech, photos, video=False,
                             emotions=("happy", "angry", "neutral")) for i in range(2)]
    persona = {f"s{i}": np.full((3, 5), 0.3).tolist() for i in range(2)}
    (tmp_path / "persona.json").write_text(json.dumps(persona))
    out = tmp_path / "out"
    meta = extract_sessions(sessions, out, {"t": "minilm-l6", "a": "egemaps"}, dataset="IEMOCAP",
                            test_sessions=["s1"], persona_json=tmp_path / "persona.json", create=cache)
    assert meta["persona"] == {"source": "given"}
    ds = data.load_dataset("IEMOCAP", out, valid_rate=0.0)
    assert ds.train[0].labels.tolist() == [0, 3, 2]  # hap, ang, neu
    assert ds.train[0].speakers.tolist() == [0, 1, 0]
    np.testing.assert_allclose(ds.train[0].persona, 0.3)


def test_bad_sessions_give_clear_errors(tmp_path, speech, photos, cache):
    s = make_session(tmp_path / "bad", "bad", speech, photos, video=False, emotions=("joy", "elated", None))
    with pytest.raises(SessionError, match=r"utterances.jsonl.*'elated' is not a MELD label"):
        extract_sessions([s], tmp_path / "o1", NAMES, create=cache)
    s2 = make_session(tmp_path / "corrupt", "c", speech, photos, video=False)
    (s2 / "audio.wav").write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(SessionError, match="audio.wav: not a readable WAV"):
        extract_sessions([s2], tmp_path / "o2", NAMES, create=cache)
    with pytest.raises(SessionError, match="no such directory"):
        extract_sessions([tmp_path / "missing"], tmp_path / "o3", NAMES, create=cache)
    s3 = make_session(tmp_path / "dup", "s1", speech, photos, video=False)
    s4 = make_session(tmp_path / "dup2", "s1", speech, photos, video=False)
    with pytest.raises(SessionError, match="duplicate session_id"):
        extract_sessions([s3, s4], tmp_path / "o4", NAMES, create=cache)


def test_truncated_last_line_is_dropped(tmp_path, speech, photos, cache):
    s = make_session(tmp_path / "t", "t", speech, photos, video=False)
    with (s / "utterances.jsonl").open("a") as f:
        f.write('{"utterance_id": "u9", "speaker": "A", "t_sta')
    meta = extract_sessions([s], tmp_path / "out", {"t": "minilm-l6"}, test_fraction=0.0, create=cache)
    assert meta["sessions"][0]["utterances"] == 3


def test_cli_extract_and_list(tmp_path, speech, photos, capsys):
    s = make_session(tmp_path / "s", "s", speech, photos, video=False)
    rc = cli.main(["extract", str(s), "--out", str(tmp_path / "out"), "--audio", "mfcc", "--visual", "none",
                   "--test-fraction", "0", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "t=minilm-l6 (384-d), a=mfcc (95-d)" in out and "absent: ['v']" in out
    rc = cli.main(["extract", str(tmp_path / "nope"), "--out", str(tmp_path / "o2"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("pcgnet extract: error:") and err.count("\n") == 1
    assert cli.main(["extractors", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["minilm-l6"]["dim"] == 384 and rows["egemaps"]["models_present"]
    assert rows["silero"]["modality"] == "vad"


def test_demo_session(tmp_path, cache):
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo"  # shipped in the tree
    shutil.copytree(demo, tmp_path / "demo")
    meta = extract_sessions([tmp_path / "demo"], tmp_path / "out", NAMES, test_fraction=0.0, create=cache)
    assert meta["absent"] == ["v"] and meta["sessions"][0]["invalid"] == {"t": 0, "a": 0}


def test_persona_estimator(tmp_path, speech, photos, cache):
    rng = np.random.default_rng(0)
    est = PersonaEstimator(rng.standard_normal((384, 5)) * 0.01, np.full(5, 0.3), alpha=1.0,
                                   extractor="minilm-l6")
    (tmp_path / "est.json").write_text(json.dumps(est.to_json()))
    sessions = [make_session(tmp_path / f"s{i}", f"s{i}", speech, photos, video=False) for i in range(2)]
    out = tmp_path / "out"
    meta = extract_sessions(sessions, out, {"t": "minilm-l6"}, test_sessions=["s1"],
                            persona_estimator=tmp_path / "est.json", create=cache)
    assert meta["persona"]["source"] == "estimated"
    ds = data.load_dataset("MELD", out, valid_rate=0.0)
    d = ds.train[0]
    np.testing.assert_allclose(d.persona, est.predict(d.features["t"]), atol=1e-5)  # alpha 1: no smoothing
    bad = PersonaEstimator(np.zeros((88, 5)), np.zeros(5), extractor="egemaps")
    (tmp_path / "bad.json").write_text(json.dumps(bad.to_json()))
    with pytest.raises(SessionError, match="fit on 'egemaps'"):
        extract_sessions(sessions, tmp_path / "o2", {"t": "minilm-l6"}, persona_estimator=tmp_path / "bad.json",
                         create=cache)
