"""Context-reading text encoders: what the encoder reads (roles, order, bounds) and ASR-style text."""

from __future__ import annotations

import numpy as np
import pytest

from extractors.base import UtteranceMedia
from extractors.text import TransformerTextExtractor, asr_style, encoder_input, minilm_model_dir


def test_encoder_input_is_causal_bounded_and_tags_roles_not_names():
    ctx = [("Ross", "one"), ("Monica", "two"), ("Joey", "  "), ("Ross", "three"), ("Joey", "four")]
    first, second = encoder_input("now!", "Ross", ctx, 3)
    assert first == "now!"
    # most recent first, at most 3 non-empty lines, A = the current speaker, others by recency
    assert second == "B: four A: three C: two"
    assert encoder_input("now!", "Ross", ctx, 0) == ("now!", None)
    assert encoder_input("hi", "Ross", [], 3) == ("hi", None)
    # names carry no meaning: the same conversation with other names reads the same
    renamed = [({"Ross": "Alice", "Monica": "Bob", "Joey": "Carol"}[s], t) for s, t in ctx]
    assert encoder_input("now!", "Alice", renamed, 3) == (first, second)


@pytest.mark.parametrize("text, want", [
    ("Wait, doubled?! Really? Wow!", "wait doubled really wow"),
    ("I DON'T know... 'maybe' -- O'Neil's", "i don't know maybe o'neil's"),
    ("Fine.", "fine"),
])
def test_asr_style_drops_case_and_punctuation_keeps_apostrophes(text, want):
    assert asr_style(text) == want


@pytest.fixture(scope="module")
def ctx_encoder():
    return TransformerTextExtractor(minilm_model_dir(), context_utterances=2, max_length=48, name="ctx-test")


def test_context_changes_the_vector_and_batches_mix_kinds(ctx_encoder):
    past = (("A", "I just lost my job."), ("B", "Oh no, I am so sorry."))
    with_ctx = UtteranceMedia(text="Great.", speaker="A", context=past)
    alone = UtteranceMedia(text="Great.", speaker="A")
    media = [with_ctx, alone, UtteranceMedia(text=None, context=past), with_ctx]
    feats = ctx_encoder.batch(media)
    assert [f.valid for f in feats] == [True, True, False, True]
    assert np.abs(feats[0].vector - feats[1].vector).max() > 1e-2
    np.testing.assert_allclose(feats[0].vector, feats[3].vector, atol=1e-5)
    for m, f in zip(media[:2], feats[:2], strict=True):  # batch == one at a time
        np.testing.assert_allclose(ctx_encoder(m).vector, f.vector, atol=1e-5)


def test_long_context_is_cut_to_max_length(ctx_encoder):
    long = (("B", "blah " * 200),)
    a, b = encoder_input("Great.", "A", long, 2)
    enc = ctx_encoder.tokenizer(a, b, truncation=True, max_length=ctx_encoder.max_length)
    assert len(enc["input_ids"]) == ctx_encoder.max_length
    assert ctx_encoder(UtteranceMedia(text="Great.", speaker="A", context=long)).valid
