"""Text extractors on real text with the real bundled MiniLM (no mocks)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from extractors import registry
from extractors.base import Extractor, ExtractorError, UtteranceMedia
from extractors.text import MINILM_SHA256, minilm_model_dir, verify_minilm


@pytest.fixture(scope="module")
def minilm():
    return registry.create("minilm-l6")


def test_minilm_shape_norm_and_contract(minilm):
    assert isinstance(minilm, Extractor)
    assert (minilm.name, minilm.modality, minilm.dim) == ("minilm-l6", "t", 384)
    f = minilm(UtteranceMedia(text="I am so happy to see you"))
    assert f.valid and f.vector.shape == (384,) and f.vector.dtype == np.float32
    assert abs(float(np.linalg.norm(f.vector)) - 1.0) < 1e-5


def test_minilm_batch_equals_single_and_is_deterministic(minilm):
    texts = ["hello", "I cannot believe you did that, I am so angry", "fine.", "What a wonderful surprise!"]
    batch = minilm.batch([UtteranceMedia(text=t) for t in texts])
    for t, fb in zip(texts, batch, strict=True):
        single = minilm(UtteranceMedia(text=t))
        np.testing.assert_allclose(single.vector, fb.vector, atol=1e-5)
        np.testing.assert_array_equal(single.vector, minilm(UtteranceMedia(text=t)).vector)


def test_minilm_matches_sentence_transformers(minilm):
    import sentence_transformers as st
    model = st.SentenceTransformer(str(minilm_model_dir()), device="cpu")
    texts = ["I am furious with you", "that is lovely"]
    ref = model.encode(texts, normalize_embeddings=True)
    ours = np.stack([f.vector for f in minilm.batch([UtteranceMedia(text=t) for t in texts])])
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_minilm_embeds_meaning(minilm):
    def vec(t: str) -> np.ndarray:
        return minilm(UtteranceMedia(text=t)).vector

    angry, furious, happy = vec("I am angry"), vec("I am furious"), vec("I am happy")
    assert angry @ furious > angry @ happy


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_missing_text_is_an_explicit_mask(minilm, text):
    f = minilm(UtteranceMedia(text=text))
    assert not f.valid and f.vector.shape == (384,) and not f.vector.any()


def test_mixed_batch_keeps_order_and_masks(minilm):
    fs = minilm.batch([UtteranceMedia(text="yes"), UtteranceMedia(), UtteranceMedia(text="no")])
    assert [f.valid for f in fs] == [True, False, True]
    np.testing.assert_allclose(fs[2].vector, minilm(UtteranceMedia(text="no")).vector, atol=1e-5)


def test_non_string_text_is_a_clear_error(minilm):
    with pytest.raises(ExtractorError, match="expected str"):
        minilm(UtteranceMedia(text=b"bytes"))  # type: ignore[arg-type]


def test_tampered_model_is_refused(tmp_path):
    for fname in MINILM_SHA256:
        (tmp_path / fname).write_bytes(b"not the real file")
    with pytest.raises(ExtractorError, match="sha256"):
        verify_minilm(tmp_path)
    verify_minilm(minilm_model_dir())  # the installed one passes


def test_lexicon_features():
    vader = registry.create("vader")
    pos = vader(UtteranceMedia(text="I love this, it is wonderful")).vector
    neg = vader(UtteranceMedia(text="I hate this, it is awful")).vector
    assert pos.shape == (4,) and pos[3] > 0.5 > -0.5 > neg[3]
    nrc = registry.create("nrc")
    joy = nrc(UtteranceMedia(text="What a happy joyful day")).vector
    anger = nrc(UtteranceMedia(text="I am furious and full of hate")).vector
    from extractors.text import NRC_AFFECTS
    assert joy[NRC_AFFECTS.index("joy")] > joy[NRC_AFFECTS.index("anger")]
    assert anger[NRC_AFFECTS.index("anger")] > anger[NRC_AFFECTS.index("joy")]
    assert not nrc(UtteranceMedia(text="")).valid


def test_minilm_plus_lexicon(minilm):
    combo = registry.create("minilm-l6+lex")
    f = combo(UtteranceMedia(text="I am happy"))
    assert combo.dim == 398 == f.vector.shape[0] and f.valid
    np.testing.assert_allclose(f.vector[:384], minilm(UtteranceMedia(text="I am happy")).vector, atol=1e-5)


def test_any_registered_extractors_concatenate_by_name(minilm):
    combo = registry.create("vader+minilm-l6")
    m = UtteranceMedia(text="I am happy")
    assert registry.parts("vader+minilm-l6") == ("vader", "minilm-l6") and combo.dim == 388
    assert registry.info("vader+minilm-l6").dim == 388 and combo.name == "vader+minilm-l6"
    np.testing.assert_allclose(combo(m).vector[4:], minilm(m).vector, atol=1e-5)  # in the order named
    assert registry.parts("minilm-l6") == ("minilm-l6",)
    for bad in ("vader+no-such-extractor", "vader+egemaps", "vader+hf:PATH"):  # unknown, mixed modalities, no factory
        with pytest.raises(ExtractorError, match="unknown extractor"):
            registry.create(bad)


def test_local_transformers_model_dir(tmp_path):
    import transformers
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=37)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    for fname in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_model_dir() / fname, tmp_path / fname)
    mean = registry.create(f"hf:{tmp_path}")
    cls = registry.create(f"hf:{tmp_path}", pooling="cls")
    m = UtteranceMedia(text="a local model")
    assert mean.dim == cls.dim == 32 and mean.name == f"hf:{tmp_path}"
    assert not np.allclose(mean(m).vector, cls(m).vector)


def test_registry_errors(tmp_path):
    with pytest.raises(ExtractorError, match="unknown extractor"):
        registry.create("no-such-extractor")
    with pytest.raises(ExtractorError, match="no config.json"):
        registry.create(f"hf:{tmp_path}")
    infos = {i.name: i for i in registry.available()}
    assert infos["minilm-l6"].dim == 384 and infos["minilm-l6"].models_present
