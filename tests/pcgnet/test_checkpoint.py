"""pcgnet.checkpoint: round trip with the real model, and a CheckpointError naming the file for each problem."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import pcgnet.checkpoint as ck
from pcgnet.checkpoint import CheckpointError, load_checkpoint, read_meta, save_checkpoint
from pcgnet.config import PCGNetConfig
from pcgnet.data import collate, load_dataset
from pcgnet.model import PCGNet
from pcgnet.synth import SynthOptions, write_synthetic

EXTRACTORS = {"t": {"name": "synthetic", "dim": 1024}, "a": {"name": "synthetic", "dim": 300},
              "v": {"name": "synthetic", "dim": 342}}


def _config(**kw) -> PCGNetConfig:
    return PCGNetConfig(hidden=8, persona_heads=2, interactive_heads=2, **kw)


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = PCGNet(_config())
    d = save_checkpoint(tmp_path / "ck", model, extractors=EXTRACTORS, training={"epochs": 3},
                        metrics={"test": {"weighted_f1": 0.5}})
    return d, model


def test_round_trip_same_outputs(saved, tmp_path):
    d, model = saved
    data = write_synthetic("MELD", tmp_path / "data", SynthOptions(dialogues=4, seed=1))
    batch = collate(load_dataset("MELD", data["features"], valid_rate=0.0).train)
    loaded = load_checkpoint(d, expect_extractors={"t": "synthetic"})
    assert not loaded.model.training
    assert loaded.config == model.config
    assert loaded.meta["training"] == {"epochs": 3} and loaded.extractors == EXTRACTORS
    model.eval()
    with torch.no_grad():
        a, b = model(batch), loaded.model(batch)
    torch.testing.assert_close(a.emotion_logp, b.emotion_logp, rtol=0, atol=0)
    torch.testing.assert_close(a.shift_logp, b.shift_logp, rtol=0, atol=0)
    # config.json or model.safetensors paths work as well as the directory
    assert load_checkpoint(d / "config.json").config == model.config
    assert load_checkpoint(d / "model.safetensors").config == model.config


def test_config_json_layout(saved):
    d, model = saved
    meta = json.loads((d / "config.json").read_text())
    assert meta["format"] == "pcgnet-checkpoint" and meta["format_version"] == 1
    assert meta["model"] == model.config.to_json()
    assert meta["model"]["causal"] is False and meta["model"]["version"] == 1
    assert meta["persona"] == {"source": "given"}
    assert len(meta["weights_sha256"]) == 64
    assert sorted(load_file(str(d / "model.safetensors"))) == sorted(model.state_dict())


def test_never_unpickles(saved, monkeypatch):
    d, _ = saved

    def boom(*a, **k):
        raise AssertionError("unpickling during load_checkpoint")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)
    load_checkpoint(d)


def _edit_meta(d, fn):
    meta = json.loads((d / "config.json").read_text())
    fn(meta)
    (d / "config.json").write_text(json.dumps(meta))


def _resave_weights(d, state):
    save_file(state, str(d / "model.safetensors"))
    _edit_meta(d, lambda m: m.__setitem__("weights_sha256", ck._sha256(d / "model.safetensors")))


def test_missing_files(saved, tmp_path):
    d, _ = saved
    with pytest.raises(CheckpointError, match="nowhere: checkpoint not found"):
        load_checkpoint(tmp_path / "nowhere")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: missing"):
        load_checkpoint(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: missing"):
        load_checkpoint(d)


def test_pickle_checkpoint_refused(tmp_path):
    p = tmp_path / "IEMOCAP_ckpt.pkl"
    p.write_bytes(b"\x80\x04N.")
    with pytest.raises(CheckpointError, match="IEMOCAP_ckpt.pkl: pickled checkpoints are refused"):
        load_checkpoint(p)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.__setitem__("format", "something-else"), "unknown format 'something-else'"),
    (lambda m: m.__setitem__("format_version", 99), "unsupported format_version 99"),
    (lambda m: m["model"].__setitem__("new_field", 1), "bad model config .*unknown model config keys"),
    (lambda m: m["model"].__setitem__("hidden", 7), "bad model config .*divisible"),
    (lambda m: m.pop("weights_sha256"), "missing 'weights_sha256'"),
])
def test_bad_config(saved, edit, message):
    d, _ = saved
    _edit_meta(d, edit)
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(d)
    assert "config.json" in str(e.value)


def test_bad_json(saved):
    d, _ = saved
    (d / "config.json").write_text('{"format": "pcgnet-checkpoint",')
    with pytest.raises(CheckpointError, match="config.json: invalid JSON at line 1"):
        read_meta(d)


def test_tampered_weights(saved):
    d, _ = saved
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="model.safetensors: sha256 .* does not match"):
        load_checkpoint(d)


def test_wrong_shapes_and_missing_keys(saved):
    d, model = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = next(iter(state))
    state[key] = torch.zeros(3, 3)
    _resave_weights(d, state)
    with pytest.raises(CheckpointError, match=f"tensor '{key}' has shape \\(3, 3\\)"):
        load_checkpoint(d)
    del state[key]
    _resave_weights(d, state)
    with pytest.raises(CheckpointError, match="missing 1 tensors"):
        load_checkpoint(d)
    # weights of a different architecture: every shape/key check names model.safetensors
    _edit_meta(d, lambda m: m["model"].__setitem__("hidden", 16))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(d)


def test_extractor_mismatch(saved):
    d, _ = saved
    with pytest.raises(CheckpointError, match="modality 't' was trained on features from extractor 'synthetic', not 'minilm-l6'"):
        load_checkpoint(d, expect_extractors={"t": "minilm-l6"})
    with pytest.raises(CheckpointError, match="gives 384-d features but the model was trained on 1024-d"):
        load_checkpoint(d, expect_extractors={"t": {"name": "synthetic", "dim": 384}})
    # a modality the model does not use is irrelevant
    d2 = save_checkpoint(d.parent / "t-only", PCGNet(_config(modalities=("t",))), extractors={"t": "synthetic"})
    load_checkpoint(d2, expect_extractors={"t": "synthetic", "a": "whatever"})


def test_save_refuses_bad_metadata(tmp_path):
    model = PCGNet(_config())
    with pytest.raises(CheckpointError, match="extractor for modality 't' has dim 5"):
        save_checkpoint(tmp_path / "a", model, extractors={"t": {"name": "x", "dim": 5}})
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "b", model, training={"x": object()})
    with pytest.raises(CheckpointError, match="persona source"):
        save_checkpoint(tmp_path / "c", model, persona={"source": "guessed"})


def test_cuda_without_gpu_is_a_clear_error(saved):
    d, _ = saved
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(CheckpointError, match="CUDA is not available"):
        load_checkpoint(d, device="cuda")


def test_typed_meta_is_parsed_once_at_load(saved):
    """CheckpointMeta: extractors, persona, weights digest and the shift rule, typed; bad parts named."""
    from pcgnet.checkpoint import CheckpointMeta, ExtractorSpec
    from pcgnet.shift import UNTUNED, ShiftRule

    d, _ = saved
    info = load_checkpoint(d).info
    assert info.extractors["t"] == ExtractorSpec("synthetic", 1024) and info.persona_source == "given"
    assert info.weights_sha256 == read_meta(d)["weights_sha256"] and info.shift_rule == UNTUNED
    assert info.persona_modality("synthetic") == "t"
    with pytest.raises(CheckpointError, match="reads 'mpnet' features but no modality"):
        info.persona_modality("mpnet")
    meta = read_meta(d)
    rule = ShiftRule(weight=0.5, thresholds={"balanced": 0.4, "precise": 0.6})
    assert CheckpointMeta.from_json({**meta, "shift": rule.to_json()}).shift_rule == rule
    with pytest.raises(CheckpointError, match="x.json: shift rule: threshold of profile 'balanced'"):
        CheckpointMeta.from_json({**meta, "shift": {**rule.to_json(), "profiles": {"balanced": {"threshold": 2}}}},
                                 "x.json")
    with pytest.raises(CheckpointError, match="persona source must be one of"):
        CheckpointMeta.from_json({**meta, "persona": {"source": "guessed"}})
