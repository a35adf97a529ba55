"""silero-vad (re-built in torch from the shipped safetensors) on a real two-sentence espeak dialogue."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("silero_vad")

from extractors.base import ExtractorError  # noqa: E402
from extractors.vad import SileroVad, VadSegmenter, VadState, detect_speech  # noqa: E402


@pytest.fixture(scope="module")
def vad():
    return SileroVad()


def _overlaps(seg, span, tol=0.35):
    return abs(seg.start_s - span[0]) < tol and abs(seg.end_s - span[1]) < tol


def test_offline_finds_the_two_sentences(speech, vad):
    segs = detect_speech(speech.dialogue, 16000, vad=vad)
    assert len(segs) == 2
    for seg, span in zip(segs, speech.spans, strict=True):
        assert _overlaps(seg, span), (seg.start_s, seg.end_s, span)
        assert seg.audio.dtype == np.float32 and abs(seg.audio.size / 16000 - seg.duration_s) < 1e-3


def test_incremental_blocks_equal_offline(speech, vad):
    offline = detect_speech(speech.dialogue, 16000, vad=vad)
    seg = VadSegmenter(vad=vad)
    got = []
    rng = np.random.default_rng(1)
    i = 0
    while i < speech.dialogue.size:  # ragged block sizes, as a sound card callback may deliver
        n = int(rng.integers(100, 3000))
        got += seg.push(speech.dialogue[i:i + n])
        i += n
    got += seg.flush()
    assert [(s.start_s, s.end_s) for s in got] == [(s.start_s, s.end_s) for s in offline]
    np.testing.assert_array_equal(got[1].audio, offline[1].audio)


def test_one_model_serves_interleaved_streams(speech, vad):
    """Two segmenters sharing one model, fed alternately, each get their own stream's segments."""
    offline = detect_speech(speech.dialogue, 16000, vad=vad)
    a, b = VadSegmenter(vad=vad), VadSegmenter(vad=vad)
    other = np.zeros_like(speech.dialogue)
    got_a, got_b = [], []
    for i in range(0, speech.dialogue.size, 4000):
        got_a += a.push(speech.dialogue[i:i + 4000])
        got_b += b.push(other[i:i + 4000])
    got_a += a.flush()
    got_b += b.flush()
    assert [(s.start_s, s.end_s) for s in got_a] == [(s.start_s, s.end_s) for s in offline] and got_b == []


def test_min_silence_is_configurable(speech, vad):
    """Each espeak sentence pair has a short pause: a short min_silence splits the utterances further."""
    short = detect_speech(speech.dialogue, 16000, vad=vad, min_silence_ms=100)
    assert len(short) > 2


def test_max_speech_cuts_long_utterances(speech, vad):
    segs = detect_speech(speech.dialogue, 16000, vad=vad, min_silence_ms=3000, max_speech_s=2.0)
    assert len(segs) >= 3 and all(s.duration_s <= 2.0 + 0.1 for s in segs)


def test_silence_noise_and_empty(vad):
    rng = np.random.default_rng(0)
    assert detect_speech(np.zeros(48000, np.float32), 16000, vad=vad) == []
    assert detect_speech((rng.standard_normal(48000) * 0.003).astype(np.float32), 16000, vad=vad) == []
    assert detect_speech(np.zeros(0, np.float32), 16000, vad=vad) == []


def test_other_rates_resampled_offline(speech, vad):
    from extractors.audio import resample

    segs = detect_speech(resample(speech.dialogue, 16000, 8000), 8000, vad=vad)
    assert len(segs) == 2 and _overlaps(segs[0], speech.spans[0])


def test_bad_input_errors(vad):
    with pytest.raises(ExtractorError, match="48000 Hz differs from the 16000"):
        VadSegmenter(sample_rate=48000, vad=vad)
    seg = VadSegmenter(vad=vad)
    with pytest.raises(ExtractorError, match="NaN"):
        seg.push(np.full(1024, np.nan, np.float32))


def test_architecture_matches_the_packaged_jit_model(speech):
    """Load the JIT model's own weights into our torch module: outputs must match it exactly."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    jit = load_silero_vad()
    m = jit._model
    sd = {"stft_conv.weight": m.stft.forward_basis_buffer}
    for i, name in enumerate(("conv1", "conv2", "conv3", "conv4")):
        conv = getattr(m.encoder, str(i)).reparam_conv
        sd[f"{name}.weight"], sd[f"{name}.bias"] = conv.weight, conv.bias
    for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        sd[f"lstm_cell.{p}"] = getattr(m.decoder.rnn, p)
    final = getattr(m.decoder.decoder, "2")
    sd["final_conv.weight"], sd["final_conv.bias"] = final.weight, final.bias
    ours = SileroVad()
    ours.model.load_state_dict({k: v.detach().clone() for k, v in sd.items()})
    x = speech.dialogue[: (speech.dialogue.size // 512) * 512]
    p = ours.probs(x.reshape(-1, 512), VadState())
    jit.reset_states()
    q = np.array([jit(torch.from_numpy(c), 16000).item() for c in x.reshape(-1, 512)])
    np.testing.assert_allclose(p, q, atol=1e-4)
    # And the shipped safetensors weights segment like the package's own pipeline.
    ref = get_speech_timestamps(torch.from_numpy(speech.dialogue), jit, min_silence_duration_ms=500,
                                return_seconds=True)
    segs = detect_speech(speech.dialogue, 16000)
    assert len(ref) == len(segs)
    for r, s in zip(ref, segs, strict=True):
        assert abs(r["start"] - s.start_s) < 0.1 and abs(r["end"] - s.end_s) < 0.1
