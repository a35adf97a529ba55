"""`pcgnet prepare-meld`: the MELD annotation CSVs -> the standard MELD feature layout, with our extractors.

The paper's MELD feature pickles cannot be obtained here, but the dialogues can. This module reads the
official ``{train,dev,test}_sent_emo.csv`` files, extracts text features with a named extractor from
:mod:`extractors.registry`, and writes the files ``pcgnet train --dataset MELD`` reads (spec section 1.1):

* ``MELD_features_raw1.pkl`` -- the MMGCN 10-tuple (videoIDs, videoSpeakers, videoLabels, videoText,
  videoAudio, videoVisual, videoSentence, trainVid, testVid, validVid). Audio and visual are *absent*
  (``None``): MELD's audio/video is not available here and we do not fake it. ``trainVid`` is train+dev
  as in the original; the 10th item (unused by the paper) holds the dev ids so an honest run can select
  on dev.
* ``meld_features_roberta.pkl`` -- the COSMIC 11-tuple. Our text vector fills all four "roberta" slots
  (as the original's MultiEMO switch does), so their mean is exactly the extractor's vector.
  ``trainIds`` / ``validIds`` / ``testIds`` are the official train / dev / test dialogues.
* ``MELD_persona.pkl`` -- the given per-utterance persona, re-keyed and length-checked.
* ``MELD_features_raw1.json`` -- the sidecar ``pcgnet.data`` reads: extractor name and dim, persona source
  (and the estimator when it is ``estimated``), absent modalities, counts and the inputs' sha256.
* ``persona_estimator.json`` -- with ``--persona-source estimated``: the ridge estimator fit on train
  (:mod:`pcgnet.persona`); ``MELD_persona.pkl`` then holds its per-speaker smoothed estimates, exactly
  what the live runtime computes, and the given persona is only used as the regression target.

Dialogue ids follow the paper: train ``Dialogue_ID`` (0..1038, 60 missing), dev ``id + 1039``, test
``id + 1153``. Speaker slots are per dialogue in first-appearance order (9 slots, the MELD maximum).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import re
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from extractors.base import ExtractorError, UtteranceMedia
from extractors.cpu import CHOICES
from extractors.onnx_backend import BACKENDS
from extractors.registry import parts as registry_parts
from extractors.text import asr_style, encoder_input, sha256_file
from pcgnet.config import MELD_LABELS
from pcgnet.data import DataError, read_pickle
from pcgnet.persona import DialogueData, PersonaError, PersonaEstimator
from pcgnet.persona import evaluate as persona_evaluate
from pcgnet.persona import fit as persona_fit
from prepare import pickles

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
SPLIT_OFFSET = {"train": 0, "dev": 1039, "test": 1153}
N_SPEAKER_SLOTS = 9
COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "StartTime", "EndTime")
FEATURE_FILE = "MELD_features_raw1.pkl"
TEXT_FILE = "meld_features_roberta.pkl"
PERSONA_FILE = "MELD_persona.pkl"
META_FILE = "MELD_features_raw1.json"  # sidecar: <feature pickle stem>.json
ESTIMATOR_FILE = "persona_estimator.json"

# Windows-1252 punctuation that survived as C1 control characters, plus its Unicode forms. Mapped to
# ASCII because that is what a live transcript (typed or ASR) carries, so training and live text agree.
_PUNCT = {
    "\u0091": "'", "\u0092": "'", "\u2018": "'", "\u2019": "'",
    "\u0093": '"', "\u0094": '"', "\u201c": '"', "\u201d": '"',
    "\u0085": "...", "\u2026": "...",
    "\u0096": "-", "\u2013": "-", "\u0097": " -- ", "\u2014": " -- ",
    "\u00a0": " ",
}
_PUNCT_RE = re.compile("[" + "".join(_PUNCT) + "]")
_TIME_RE = re.compile(r"^(\d+):(\d\d):(\d\d)(?:[,.](\d{1,3}))?$")


class MeldError(ValueError):
    """A MELD input that cannot be used; the message names the file (and line) and the problem."""


@dataclass(frozen=True)
class MeldUtterance:
    """One CSV row, cleaned."""

    split: str
    dialogue: int  # global id (split offset applied)
    line: int  # CSV line number, for error messages
    text: str
    speaker: str
    label: int  # index into MELD_LABELS
    start: float  # seconds within the episode
    end: float


@dataclass
class MeldDialogue:
    dialogue: int
    split: str
    utterances: list[MeldUtterance] = field(default_factory=list)

    @property
    def speaker_slots(self) -> list[int]:
        """Per-utterance speaker slot in order of first appearance within the dialogue."""
        slots: dict[str, int] = {}
        return [slots.setdefault(u.speaker, len(slots)) for u in self.utterances]


def clean_text(text: str) -> str:
    """Map Windows-1252 leftovers to the intended ASCII punctuation and collapse whitespace."""
    return " ".join(_PUNCT_RE.sub(lambda m: _PUNCT[m.group(0)], text).split())


def parse_time(value: str) -> float:
    """``HH:MM:SS,mmm`` -> seconds. A short fraction (``,28``) is read as a decimal fraction (0.28 s)."""
    m = _TIME_RE.match(value.strip())
    if not m:
        raise ValueError(f"bad time {value!r} (expected HH:MM:SS,mmm)")
    h, mi, s, frac = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + (float("0." + frac) if frac else 0.0)


def read_split(path: Path, split: str) -> list[MeldUtterance]:
    """Read one ``*_sent_emo.csv`` in row order (``Utterance_ID`` has gaps, so row order is the truth)."""
    if not path.is_file():
        raise MeldError(f"{path}: file not found")
    label_of = {name: i for i, name in enumerate(MELD_LABELS)}
    out: list[MeldUtterance] = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise MeldError(f"{path}: missing column(s) {missing}")
            for row in reader:
                line = reader.line_num
                try:
                    emotion = row["Emotion"].strip().lower()
                    if emotion not in label_of:
                        raise ValueError(f"unknown emotion {row['Emotion']!r}")
                    text = clean_text(row["Utterance"] or "")
                    if not text:
                        raise ValueError("empty utterance")
                    out.append(MeldUtterance(
                        split, int(row["Dialogue_ID"]) + SPLIT_OFFSET[split], line, text,
                        clean_text(row["Speaker"] or "") or "unknown", label_of[emotion],
                        parse_time(row["StartTime"]), parse_time(row["EndTime"]),
                    ))
                except (ValueError, TypeError) as e:
                    raise MeldError(f"{path}:{line}: {e}") from None
    except UnicodeDecodeError as e:
        raise MeldError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    if not out:
        raise MeldError(f"{path}: no utterances")
    return out


def read_meld(csv_dir: Path) -> dict[int, MeldDialogue]:
    """All three splits, as dialogues keyed by global id, in split then first-row order."""
    dialogues: dict[int, MeldDialogue] = {}
    for split in SPLITS:
        for u in read_split(csv_dir / f"{split}_sent_emo.csv", split):
            d = dialogues.setdefault(u.dialogue, MeldDialogue(u.dialogue, split))
            if d.split != split:
                raise MeldError(f"{csv_dir}: dialogue id {u.dialogue} of {split} collides with {d.split}")
            d.utterances.append(u)
    for d in dialogues.values():
        n = len(set(d.speaker_slots))
        if n > N_SPEAKER_SLOTS:
            raise MeldError(f"{csv_dir}: {d.split} dialogue {d.dialogue} has {n} speakers (max {N_SPEAKER_SLOTS})")
    return dialogues


def load_persona(path: Path, dialogues: dict[int, MeldDialogue]) -> dict[int, np.ndarray]:
    """The paper's per-utterance persona pickle (a trusted copy), checked against the dialogue lengths."""
    try:  # the same restricted unpickler as every data pickle: plain data and numpy arrays only
        raw = read_pickle(path)
    except DataError as e:
        raise MeldError(f"cannot read persona pickle: {e}") from None
    if not isinstance(raw, dict):
        raise MeldError(f"{path}: expected a dict dialogue id -> (n, 5) array, got {type(raw).__name__}")
    out: dict[int, np.ndarray] = {}
    for vid, d in dialogues.items():
        if vid not in raw:
            raise MeldError(f"{path}: no persona for dialogue {vid}")
        p = np.asarray(raw[vid], dtype=np.float32)
        if p.shape != (len(d.utterances), 5):
            raise MeldError(f"{path}: dialogue {vid} persona shape {p.shape}, expected ({len(d.utterances)}, 5)")
        if not np.isfinite(p).all():
            raise MeldError(f"{path}: dialogue {vid} persona has non-finite values")
        out[vid] = p
    return out


def text_key(extractor: str, text: str) -> str:
    return hashlib.sha256(f"{extractor}\0{text}".encode()).hexdigest()[:32]


class FeatureCache:
    """Per-extractor vectors keyed by a hash of (extractor name, text), in ``.npz`` chunks (no pickle).

    Why chunks: encoding full MELD takes minutes to an hour, and a run that is killed must not lose what it
    encoded. :meth:`flush` writes the vectors put since the last flush as one new chunk, atomically (a
    temporary file renamed into place), so a kill at any moment leaves only whole chunks; the next run reads
    them all and encodes only the rest. :meth:`compact` merges the chunks into one at the end. A chunk that
    cannot be read is skipped with a warning (its vectors are encoded again). The one-file cache of earlier
    versions (``<namespace>.npz``) is still read.
    """

    def __init__(self, directory: Path, extractor: str):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", extractor)
        self.legacy = directory / f"{safe}.npz"
        self.folder = directory / safe
        self.extractor = extractor
        self._vectors: dict[str, np.ndarray] = {}
        self._unsaved: dict[str, np.ndarray] = {}
        for path in [self.legacy, *self.chunks()]:
            if path.is_file():
                self._vectors.update(self._read(path))

    def chunks(self) -> list[Path]:
        return sorted(self.folder.glob("chunk-*.npz")) if self.folder.is_dir() else []

    @staticmethod
    def _read(path: Path) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as z:
                return dict(zip(z["keys"].tolist(), z["vectors"], strict=True))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # re-encoded, not fatal
            log.warning("ignoring unreadable feature cache %s (%s)", path, e)
            return {}

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, text: str) -> np.ndarray | None:
        return self._vectors.get(text_key(self.extractor, text))

    def put(self, text: str, vector: np.ndarray) -> None:
        key = text_key(self.extractor, text)
        self._vectors[key] = self._unsaved[key] = np.asarray(vector, dtype=np.float32)

    @property
    def unsaved(self) -> int:
        return len(self._unsaved)

    def _write(self, vectors: dict[str, np.ndarray], name: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        tmp = self.folder / f".{name}.{os.getpid()}.tmp.npz"
        np.savez(tmp, keys=np.array(list(vectors), dtype="U32"), vectors=np.stack(list(vectors.values())))
        tmp.replace(path)  # atomic: a kill leaves the old state or the whole new chunk
        return path

    def flush(self) -> None:
        """Write the vectors put since the last flush as a new chunk."""
        if not self._unsaved:
            return
        last = max((int(m.group(1)) for p in self.chunks() if (m := re.match(r"chunk-(\d+)", p.name))), default=-1)
        self._write(self._unsaved, f"chunk-{last + 1:06d}-{os.getpid()}.npz")
        self._unsaved = {}

    def compact(self) -> None:
        """Flush, then merge every chunk (and a legacy file) into one. Killed half-way, the old chunks are
        still there alongside the merged one: the same vectors twice, harmless."""
        self.flush()
        old = self.chunks()
        if len(old) + self.legacy.is_file() <= 1 or not self._vectors:
            return
        merged = self._write(self._vectors, f"chunk-{0:06d}-merged-{os.getpid()}.npz")
        for p in [*old, self.legacy]:
            if p != merged:
                p.unlink(missing_ok=True)

    def save(self) -> None:
        self.compact()


TextEncoder = Callable[[Sequence[UtteranceMedia]], np.ndarray]  # utterances -> (n, dim) float32


@dataclass(frozen=True)
class TextEncoderSpec:
    """A batch text encoder, its dim, how many earlier utterances it reads with each one, and the dtype it
    runs in (None: not a transformer encoder)."""

    encode: TextEncoder
    dim: int
    context_utterances: int = 0
    dtype: str | None = None


def make_text_encoder(name: str, dtype: str = "auto", backend: str = "torch") -> TextEncoderSpec:
    """Resolve an extractor name from the registry into a batch text encoder (``dtype``: auto|float32|bfloat16,
    ``backend``: torch|onnx; the onnx backend's float32 vectors are keyed as float32)."""
    from extractors.registry import create, dtype_of

    ext = create(name, dtype=dtype, backend=backend)
    if ext.modality != "t":
        raise MeldError(f"extractor {name!r} is a {ext.modality!r} extractor, not text")

    def encode(media: Sequence[UtteranceMedia]) -> np.ndarray:
        return np.stack([f.vector for f in ext.batch(list(media))]).astype(np.float32)

    return TextEncoderSpec(encode, int(ext.dim), int(getattr(ext, "context_utterances", 0)), dtype_of(ext))


def dialogue_media(d: MeldDialogue, style: Callable[[str], str] = str) -> list[UtteranceMedia]:
    """What the live runtime hands the text extractor for each utterance of ``d``: its text, speaker and
    the dialogue so far (``stream.session`` keeps the same history), all in text ``style``."""
    past: list[tuple[str, str]] = []
    out = []
    for u in d.utterances:
        out.append(UtteranceMedia(text=style(u.text), speaker=u.speaker, context=tuple(past)))
        past.append((u.speaker, style(u.text)))
    return out


def cache_namespace(extractor: str, dtype: str | None = None) -> str:
    """What feature-cache entries are keyed by: the extractor name, plus a fingerprint of the shipped delta's
    description for the extractors whose weights and settings this project re-trains and changes
    (``minilm-l6-meld*``, ``mpnet-base-meld``): new weights, another dtype or context never reuse old vectors.
    The fingerprint covers the dtype the delta is validated in; ``dtype``, the one it ran in, is appended
    when it differs (``/float32`` for the bfloat16-validated mpnet on a CPU without native bfloat16), so
    vectors of two dtypes never mix and earlier caches stay valid. The other registry names are tied to
    fixed, verified weights (and float32)."""
    from extractors.meld_text import delta_fingerprint, validated_dtype

    parts = registry_parts(extractor)
    if len(parts) > 1:  # a concatenation ``A+B``: its parts' keys, each part cached on its own (its own dtype:
        return "+".join(map(cache_namespace, parts))  # extract_texts keys each part by the dtype it ran in)
    fingerprint = delta_fingerprint(extractor)
    ran = "" if dtype in (None, validated_dtype(extractor) or "float32") else f"/{dtype}"
    return f"{extractor}@{fingerprint[:16]}{ran}" if fingerprint else f"{extractor}{ran}"


@dataclass(frozen=True)
class Extracted:
    """Text vectors, one row per utterance, and the feature-cache namespace they are keyed by (the sidecar
    records it: the weights fingerprint and, where it is not the validated one, the dtype they ran in)."""

    vectors: np.ndarray
    namespace: str


def extract_texts(
    media: Sequence[UtteranceMedia], extractor: str, encoder_factory: Callable[[str], TextEncoderSpec],
    cache_dir: Path | None, batch_size: int = 64, progress: bool = True, flush_every: int = 1024,
) -> Extracted:
    """Vectors for ``media`` (identical encoder inputs encoded once), reusing and filling the feature cache.

    The cache is flushed as a new chunk every ``flush_every`` vectors and when the run stops for any reason
    (an exception, Ctrl-C), so a rerun resumes where it stopped (a kill loses at most the last chunk's
    worth). A concatenation ``A+B`` is encoded part by part, so each part shares its cache with its own
    layouts."""
    parts = registry_parts(extractor)
    if len(parts) > 1:
        done = [extract_texts(media, part, encoder_factory, cache_dir, batch_size, progress, flush_every)
                for part in parts]
        return Extracted(np.concatenate([e.vectors for e in done], axis=1), "+".join(e.namespace for e in done))
    spec = encoder_factory(extractor)
    namespace = cache_namespace(extractor, spec.dtype)
    cache = FeatureCache(cache_dir, namespace) if cache_dir else None
    keys = []
    for m in media:
        text = m.text or ""
        if spec.context_utterances:
            second = encoder_input(text, m.speaker, m.context, spec.context_utterances)[1]
            text = text if second is None else f"{text}\x1f{second}"
        keys.append(text)
    unique = dict(zip(keys, media, strict=True))  # encoder input -> one utterance that has it
    vectors: dict[str, np.ndarray] = {} if cache is None else {k: v for k in unique if (v := cache.get(k)) is not None}
    todo = [k for k in unique if k not in vectors]
    log.info("%s (%s): %d utterances, %d distinct inputs, %d cached, %d to encode", extractor, spec.dtype or "-",
             len(keys), len(unique), len(vectors), len(todo))
    if todo:
        try:
            with _progress(progress) as bar:
                task = bar.add_task(f"{extractor} ({spec.dtype})" if spec.dtype else extractor, total=len(unique),
                                    completed=len(vectors))
                for chunk in (todo[i:i + batch_size] for i in range(0, len(todo), batch_size)):
                    out = spec.encode([unique[k] for k in chunk])
                    if out.shape[0] != len(chunk) or not np.isfinite(out).all():
                        raise MeldError(f"extractor {extractor!r} returned {out.shape} / non-finite values")
                    for k, v in zip(chunk, out, strict=True):
                        vectors[k] = v
                        if cache is not None:
                            cache.put(k, v)
                    if cache is not None and cache.unsaved >= flush_every:
                        cache.flush()
                    bar.advance(task, len(chunk))
        finally:  # what was encoded is kept, whatever stopped the run
            if cache is not None:
                cache.flush()
        if cache is not None:
            cache.compact()
    return Extracted(np.stack([vectors[k] for k in keys]).astype(np.float32), namespace)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


@dataclass
class PrepareReport:
    out: Path
    extractor: str
    dim: int
    dialogues: dict[str, int]
    utterances: dict[str, int]
    seconds: float


def write_layout(
    out: Path, dialogues: dict[int, MeldDialogue], text: dict[int, np.ndarray], persona: dict[int, np.ndarray],
    meta: dict, style: Callable[[str], str] = str,
) -> None:
    """Write the three standard pickles plus the sidecar (:mod:`prepare.pickles`; audio/visual absent)."""
    ids = {s: [v for v, d in dialogues.items() if d.split == s] for s in SPLITS}
    eye = np.eye(N_SPEAKER_SLOTS, dtype=np.float32)
    text_lists = {v: [row for row in text[v]] for v in dialogues}
    layout = pickles.Layout(
        dataset="MELD",
        utterance_ids={v: [f"{d.split}_dia{v - SPLIT_OFFSET[d.split]}_utt{i}" for i in range(len(d.utterances))]
                       for v, d in dialogues.items()},
        speakers={v: [eye[s].tolist() for s in d.speaker_slots] for v, d in dialogues.items()},
        speaker_names={v: [u.speaker for u in d.utterances] for v, d in dialogues.items()},
        labels={v: [u.label for u in d.utterances] for v, d in dialogues.items()},
        sentences={v: [style(u.text) for u in d.utterances] for v, d in dialogues.items()},
        features={"t": text_lists, "a": None, "v": None},
        train=ids["train"], test=ids["test"], dev=ids["dev"], persona=persona)
    pickles.write_layout(out, layout, meta, [META_FILE])


def estimate_persona(
    dialogues: dict[int, MeldDialogue], text: dict[int, np.ndarray], given: dict[int, np.ndarray],
    extractor: str, alpha: float, fitted: PersonaEstimator | None = None,
) -> tuple[dict[int, np.ndarray], PersonaEstimator, dict[str, dict]]:
    """Fit the persona estimator on train (ridge chosen on dev), or take ``fitted``, and replace every
    split's persona by its causal per-speaker smoothed estimate. Returns the new persona, the estimator
    and R^2 per split."""
    def data(split: str) -> list[DialogueData]:
        return [DialogueData(text[v], d.speaker_slots, given[v]) for v, d in dialogues.items() if d.split == split]

    est = fitted or persona_fit(data("train"), data("dev"), extractor=extractor, alpha=alpha)
    stats = {s: persona_evaluate(est, data(s)) for s in SPLITS} if fitted else est.fit_stats
    stats.setdefault("test", persona_evaluate(est, data("test")))
    out = {v: est.estimate_dialogue(text[v], d.speaker_slots) for v, d in dialogues.items()}
    return out, est, stats


TEXT_STYLES: dict[str, Callable[[str], str]] = {"gold": str, "asr": asr_style}


def _read_train_vectors(f: Path, dialogues: dict[int, MeldDialogue], style: str,
                        dim: int) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """One ``--fold`` file: its (dialogue, utterance) rows, their ``style`` vectors, the held-out flags."""
    try:
        with np.load(f, allow_pickle=False) as z:
            vids, utts, vecs, held = z["dialogue"], z["utterance"], z[style], z["held"].astype(bool)
    except (OSError, ValueError, KeyError) as e:
        raise MeldError(f"{f}: not a train-vector file with {style!r} vectors ({e})") from None
    rows = []
    for v, u in zip(vids.tolist(), utts.tolist(), strict=True):
        d = dialogues.get(v)
        if d is None or d.split != "train" or not 0 <= u < len(d.utterances):
            raise MeldError(f"{f}: dialogue {v} utterance {u} is not a MELD train utterance")
        rows.append((v, u))
    if vecs.shape != (len(rows), dim) or held.shape != (len(rows),) or not np.all(np.isfinite(vecs)):
        raise MeldError(f"{f}: {vecs.shape} vectors for {len(rows)} utterances, expected ({len(rows)}, {dim}) "
                        "finite values and a 'held' flag per row")
    return rows, vecs, held


def _least_squares_map(x: np.ndarray, y: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, float]:
    """``x`` mapped affinely onto ``y``'s space (least squares on the ``fit`` rows), and the fit's R^2."""
    xb = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    w = np.linalg.lstsq(xb[fit], y[fit].astype(np.float64), rcond=None)[0]
    out = (xb @ w).astype(np.float32)
    r2 = 1.0 - float(((out[fit] - y[fit]) ** 2).sum() / ((y[fit] - y[fit].mean(0)) ** 2).sum())
    return out, r2


def replace_train_vectors(dialogues: dict[int, MeldDialogue], text: dict[int, np.ndarray], files: Sequence[Path],
                          style: str) -> list[dict[str, Any]]:
    """Put cross-fitted (out-of-fold) encoder vectors in place of the train split's, in ``text``.

    Why: an encoder fine-tuned on train gives its own training utterances vectors that are easier than any
    it will meet live, and a conversation model fit on those learns to trust them over the context. Each
    ``.npz`` (``scripts/experiments/finetune_text.py --fold``) holds one fold encoder's vectors of train
    utterances; its ``held`` rows (never trained on) go into the layout, once each over all files. The fold
    encoder's space is not the shipped encoder's, so its vectors are first mapped onto it by least squares
    fit on its other rows (utterances both encoders trained on).
    """
    dim = next(iter(text.values())).shape[1]
    plans = [(f, *_read_train_vectors(f, dialogues, style, dim)) for f in files]
    seen: set[tuple[int, int]] = set()
    for f, rows, _, held in plans:
        for r in (r for r, h in zip(rows, held, strict=True) if h):
            if r in seen:
                raise MeldError(f"{f}: dialogue {r[0]} utterance {r[1]} is held out twice")
            seen.add(r)
    missing = sum(len(d.utterances) for d in dialogues.values() if d.split == "train") - len(seen)
    if missing:
        raise MeldError(f"{', '.join(map(str, files))}: {missing} train utterances are in no held-out fold")
    record, mapped = [], []
    for f, rows, vecs, held in plans:  # every map is fit on the extractor's own vectors, before any is replaced
        if (~held).sum() <= dim:
            raise MeldError(f"{f}: {int((~held).sum())} rows outside the held-out fold, too few to map its "
                            f"vectors onto {dim}-d")
        out, r2 = _least_squares_map(vecs, np.stack([text[v][u] for v, u in rows]), ~held)
        mapped.append([(r, out[i]) for i, r in enumerate(rows) if held[i]])
        record.append({"file": f.name, "sha256": sha256_file(f), "held_out": int(held.sum()), "map_r2": round(r2, 4)})
    for (v, u), row in (item for rows in mapped for item in rows):
        text[v][u] = row
    return record


def prepare_meld(
    csv_dir: Path, persona_path: Path, out: Path, text_extractor: str = "minilm-l6",
    cache_dir: Path | None = None, progress: bool = True,
    encoder_factory: Callable[[str], TextEncoderSpec] | None = None,
    persona_source: str = "given", persona_alpha: float = 0.5, text_style: str = "gold",
    persona_estimator: Path | None = None, train_vectors: Sequence[Path] = (), text_dtype: str = "auto",
    text_backend: str = "torch",
) -> PrepareReport:
    """Read, extract, write. ``cache_dir`` defaults to ``OUT/.feature-cache``.

    ``persona_source``: ``given`` (the paper's vectors) or ``estimated`` (see :func:`estimate_persona`;
    ``persona_estimator`` reuses a fitted one, e.g. the gold layout's for an ASR-style layout, as live).
    ``text_style``: ``gold`` (the transcripts) or ``asr`` (:func:`extractors.text.asr_style`, for
    measuring and training robustness to recogniser output). ``train_vectors``: see
    :func:`replace_train_vectors`. ``text_dtype``: ``auto|float32|bfloat16`` (:mod:`extractors.cpu`), for
    the default ``encoder_factory``. Interrupted, a rerun resumes from the feature cache (:class:`FeatureCache`).
    """
    if persona_source not in ("given", "estimated"):
        raise MeldError(f"--persona-source {persona_source!r}: expected 'given' or 'estimated'")
    if text_style not in TEXT_STYLES:
        raise MeldError(f"--text-style {text_style!r}: expected one of {sorted(TEXT_STYLES)}")
    t0 = time.perf_counter()
    dialogues = read_meld(csv_dir)
    persona = load_persona(persona_path, dialogues)
    order = list(dialogues)
    media = [m for v in order for m in dialogue_media(dialogues[v], TEXT_STYLES[text_style])]
    factory = encoder_factory or partial(make_text_encoder, dtype=text_dtype, backend=text_backend)
    extracted = extract_texts(media, text_extractor, factory,
                              out / ".feature-cache" if cache_dir is None else cache_dir, progress=progress)
    vectors = extracted.vectors
    ends = np.cumsum([len(dialogues[v].utterances) for v in order])[:-1]
    text = dict(zip(order, np.split(vectors, ends), strict=True))  # views, per dialogue
    cross_fit = replace_train_vectors(dialogues, text, train_vectors, text_style) if train_vectors else None
    persona_meta: dict = {"source": "given"}
    if persona_source == "estimated":
        fitted = None
        if persona_estimator is not None:
            try:
                fitted = PersonaEstimator.from_json(json.loads(persona_estimator.read_text(encoding="utf-8")))
            except (OSError, ValueError) as e:
                raise MeldError(f"{persona_estimator}: not a usable persona estimator ({e})") from None
        persona, est, stats = estimate_persona(dialogues, text, persona, text_extractor, persona_alpha, fitted)
        persona_meta = {"source": "estimated", "estimator": est.to_json()}
        out.mkdir(parents=True, exist_ok=True)
        (out / ESTIMATOR_FILE).write_text(json.dumps(est.to_json()) + "\n")
        log.info("persona estimator R^2: %s", {k: round(v["r2_raw"], 3) for k, v in stats.items()})
    counts = {s: sum(d.split == s for d in dialogues.values()) for s in SPLITS}
    utts = {s: sum(len(d.utterances) for d in dialogues.values() if d.split == s) for s in SPLITS}
    meta = {
        "format": "pcgnet-meld", "version": 1, "dataset": "MELD", "labels": list(MELD_LABELS),
        # "cache": the weights fingerprint, so features of re-trained weights under the same name differ.
        "extractors": {"t": {"name": text_extractor, "dim": int(vectors.shape[1]),
                             "cache": extracted.namespace}},
        "persona": persona_meta,
        "text_style": text_style,
        "train_vectors": cross_fit,  # null: train vectors from the named extractor, like dev and test
        "absent_modalities": ["a", "v"],
        # The official splits: select on dev (also COSMIC validIds and the 10th MMGCN item), report test.
        "split_ids": {s: [v for v, d in dialogues.items() if d.split == s] for s in SPLITS},
        "dialogues": counts, "utterances": utts,
        "sources": {p.name: sha256_file(p) for p in
                    [*(csv_dir / f"{s}_sent_emo.csv" for s in SPLITS), persona_path]},
    }
    write_layout(out, dialogues, text, persona, meta, TEXT_STYLES[text_style])
    return PrepareReport(out, text_extractor, int(vectors.shape[1]), counts, utts, time.perf_counter() - t0)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prepare-meld", help="MELD CSVs -> the standard MELD feature layout",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--csv-dir", type=Path, required=True, help="folder with {train,dev,test}_sent_emo.csv")
    p.add_argument("--persona", type=Path, required=True, help="MELD_persona.pkl (per-utterance 5-d persona)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--text-extractor", default="minilm-l6",
                   help="registry name of the text extractor; A+B concatenates two (encoded part by part)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default OUT/.feature-cache)")
    p.add_argument("--persona-source", choices=["given", "estimated"], default="given",
                   help="given: the paper's persona; estimated: ridge estimator fit on train, smoothed per speaker")
    p.add_argument("--persona-alpha", type=float, default=0.5, help="EMA factor of the per-speaker smoothing")
    p.add_argument("--persona-estimator", type=Path, default=None,
                   help="with --persona-source estimated: reuse this persona_estimator.json instead of fitting one")
    p.add_argument("--text-style", choices=sorted(TEXT_STYLES), default="gold",
                   help="gold: the transcripts; asr: lower case, no punctuation (what speech recognisers write)")
    p.add_argument("--train-vectors", type=Path, nargs="+", default=(), metavar="NPZ",
                   help="cross-fitted train vectors (finetune_text.py --fold K/N, all folds) in place of the "
                        "extractor's for the train split")
    p.add_argument("--text-dtype", choices=CHOICES, default="auto",
                   help="text encoder dtype: auto = bfloat16 only where the CPU has avx512_bf16/amx_bf16 (and the "
                        "encoder is validated in it), float32 elsewhere; recorded in the cache namespace")
    p.add_argument("--text-backend", choices=BACKENDS, default="torch",
                   help="text encoder runtime: torch, or onnx (ONNX Runtime, float32, ~2.5x faster than torch float32)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        r = prepare_meld(args.csv_dir, args.persona, args.out, args.text_extractor, args.cache_dir,
                         progress=not args.no_progress, persona_source=args.persona_source,
                         persona_alpha=args.persona_alpha, text_style=args.text_style,
                         persona_estimator=args.persona_estimator, train_vectors=args.train_vectors,
                         text_dtype=args.text_dtype, text_backend=args.text_backend)
    except (MeldError, PersonaError, ExtractorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the vectors encoded so far are in the feature cache; rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    print(f"wrote {r.out} ({r.extractor}, {r.dim}-d text; audio/visual absent) in {r.seconds:.1f} s: "
          + ", ".join(f"{s} {r.dialogues[s]} dialogues / {r.utterances[s]} utterances" for s in SPLITS))
    return 0
