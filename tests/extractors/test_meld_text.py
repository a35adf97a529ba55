"""The fine-tuned text extractor: a verified base plus a small top-layer delta, refused when tampered."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from extractors import meld_text
from extractors.base import ExtractorError, UtteranceMedia
from extractors.cpu import Capability


def write_delta(path: Path, scale: float = 1.5, **extra: object) -> Path:
    """A real delta: layer 5's attention output weights of the base model, scaled (so outputs must change)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel

    base = AutoModel.from_pretrained(str(meld_text.base_model_dir("minilm-l6")), local_files_only=True)
    sd = base.state_dict()
    key = "encoder.layer.5.attention.output.dense.weight"
    save_file({key: (sd[key] * scale).to(torch.float16).contiguous()}, str(path))
    meta = {"format": meld_text.FORMAT, "name": "minilm-l6-meld", "base": "minilm-l6", "top_layers": [5],
            "pooling": "mean", "normalize": False, "max_length": 64, "dim": 384,
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), **extra}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_delta_is_applied_and_verified(tmp_path: Path) -> None:
    from extractors.text import TransformerTextExtractor

    w = write_delta(tmp_path / "d.safetensors")
    ex = meld_text.MeldTextExtractor(w)
    assert ex.name == "minilm-l6-meld" and ex.dim == 384 and ex.modality == "t"
    texts = ["I can't believe you did that!", "Okay."]
    got = np.stack([f.vector for f in ex.batch([UtteranceMedia(text=t) for t in texts])])
    base = TransformerTextExtractor(meld_text.base_model_dir("minilm-l6"), pooling="mean", normalize=False, max_length=64)
    ref = base.encode(texts)
    assert got.shape == (2, 384) and np.isfinite(got).all()
    assert np.abs(got - ref).max() > 1e-2  # the delta changed the top layer
    assert np.allclose(ex.encode(texts[:1]), got[:1], atol=1e-5)  # deterministic, batch-independent

    # Tampered weights are refused before use.
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ExtractorError, match="does not match"):
        meld_text.MeldTextExtractor(w)


def test_missing_delta_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExtractorError, match="not found"):
        meld_text.MeldTextExtractor(tmp_path / "none.safetensors")


def test_bfloat16_delta_is_close_and_independent_of_the_batch(tmp_path: Path) -> None:
    texts = ["I can't believe you did that!", "Okay.", "Wait, you mean Ross and Rachel are back together again?"]
    exact = meld_text.MeldTextExtractor(write_delta(tmp_path / "f.safetensors")).encode(texts)
    half = meld_text.MeldTextExtractor(write_delta(tmp_path / "h.safetensors", dtype="bfloat16"), dtype="bfloat16")
    assert half.dtype == "bfloat16" and half.batch_size == 1
    together = half.encode(texts)
    alone = np.concatenate([half.encode([t]) for t in texts])
    # Bitwise on purpose: one utterance per pass makes these the *same* computation (same shapes, same order).
    assert np.array_equal(together, alone)
    cos = (together * exact).sum(1) / np.linalg.norm(together, axis=1) / np.linalg.norm(exact, axis=1)
    assert cos.min() > 0.999 and np.abs(together - exact).max() > 1e-4  # close, and really in bfloat16


def test_unknown_base_or_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExtractorError, match="one of minilm-l6, mpnet-base"):
        meld_text.MeldTextExtractor(write_delta(tmp_path / "b.safetensors", base="bert-huge"))
    with pytest.raises(ExtractorError, match="dtype"):
        meld_text.MeldTextExtractor(write_delta(tmp_path / "q.safetensors", dtype="int4"))


AVX2 = Capability("AMD EPYC 7B12", frozenset({"avx", "avx2", "fma"}))
AVX512_BF16 = Capability("AMD EPYC 9B14", frozenset({"avx", "avx2", "fma", "avx512f", "avx512_bf16"}))


def test_auto_dtype_follows_the_cpu_and_what_the_delta_is_validated_in(tmp_path: Path) -> None:
    """A bfloat16-validated delta runs in float32 on an AVX2-only CPU (emulated bfloat16 is slower there) and
    in bfloat16 where the CPU has it natively; a float32 delta stays float32; an explicit dtype wins."""
    w = write_delta(tmp_path / "h.safetensors", dtype="bfloat16")
    texts = ["I can't believe you did that!", "Okay."]
    exact = meld_text.MeldTextExtractor(write_delta(tmp_path / "f.safetensors")).encode(texts)
    on_avx2 = meld_text.MeldTextExtractor(w, capability=AVX2)
    assert (on_avx2.dtype, on_avx2.batch_size) == ("float32", 32) and "no avx512_bf16" in on_avx2.dtype_choice.reason
    assert np.abs(on_avx2.encode(texts) - exact).max() < 1e-5  # the float32 computation of the same weights
    on_bf16 = meld_text.MeldTextExtractor(w, capability=AVX512_BF16)
    assert (on_bf16.dtype, on_bf16.batch_size) == ("bfloat16", 1)
    assert meld_text.MeldTextExtractor(w, capability=AVX512_BF16, dtype="float32").dtype == "float32"
    forced = meld_text.MeldTextExtractor(w, capability=AVX2, dtype="bfloat16")
    assert forced.dtype == "bfloat16" and "slower" in forced.dtype_choice.reason
    assert meld_text.MeldTextExtractor(tmp_path / "f.safetensors", capability=AVX512_BF16).dtype == "float32"
    with pytest.raises(ExtractorError, match="auto, float32, bfloat16"):
        meld_text.MeldTextExtractor(w, dtype="float16")


def test_onnx_backend_reproduces_torch_and_reuses_its_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--text-backend onnx: ONNX Runtime computes the torch float32 vectors (1e-4; 6.3e-6 seen on MELD dev for
    mpnet), pairs (context readers) included; the export is made once into the cache and reused, a broken
    cached file is exported again, and bfloat16 is refused."""
    monkeypatch.setenv("PCGNET_CACHE_DIR", str(tmp_path / "cache"))
    w = write_delta(tmp_path / "d.safetensors")
    texts: list[str | tuple[str, str | None]] = ["I can't believe you did that!", "Okay.",
                                                  ("Really?", "B: We doubled our sign ups! A: Wow.")]
    torch_vecs = meld_text.MeldTextExtractor(w).encode(texts)
    ort = meld_text.MeldTextExtractor(w, backend="onnx")
    assert (ort.backend, ort.dtype) == ("onnx", "float32")
    assert np.abs(ort.encode(texts) - torch_vecs).max() < 1e-4
    assert np.abs(ort.encode(texts[:1]) - torch_vecs[:1]).max() < 1e-4  # another batch shape
    (onnx_file,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    stamp = onnx_file.stat().st_mtime_ns
    meld_text.MeldTextExtractor(w, backend="onnx")
    assert onnx_file.stat().st_mtime_ns == stamp  # reused, not exported again
    onnx_file.write_bytes(b"not a model")
    again = meld_text.MeldTextExtractor(w, backend="onnx")
    assert np.abs(again.encode(texts) - torch_vecs).max() < 1e-4 and onnx_file.stat().st_size > 1000
    with pytest.raises(ExtractorError, match="onnx runs float32"):
        meld_text.MeldTextExtractor(w, backend="onnx", dtype="bfloat16")
