"""`pcgnet extract`: recorded session folders (Seam 6) -> the standard MELD/IEMOCAP feature-pickle layout.

Each session becomes one dialogue, its utterances in ``utterances.jsonl`` order. Per utterance the text
comes from the transcript (or, with ``asr``, from speech-to-text of the utterance's audio when the transcript
is empty), the audio is the ``[t_start, t_end)`` slice of ``audio.wav`` and the frames are up to
``max_frames`` evenly spaced video frames of that span. Written to ``out`` (what ``pcgnet.data`` reads):

* ``MELD_features_raw1.pkl`` (MELD layout, the default) or ``IEMOCAP_features.pkl``: the MMGCN tuple.
  ``videoAudio`` / ``videoVisual`` are ``None`` when that modality was not extracted (declared absent).
  Speakers: MELD layout = 9-d one-hot per-dialogue slots in first-appearance order; IEMOCAP layout = 'M'
  for the first speaker and 'F' for the second (slot letters, not genders; at most 2 speakers).
* ``meld_features_roberta.pkl`` / ``iemocap_features_roberta.pkl``: the COSMIC tuple with our text vectors
  in all four "roberta" slots (so their mean is the text extractor's vector); absent when no text extractor.
* ``MELD_persona.pkl`` / ``IEMOCAP_persona.pkl``: only when the user gives persona vectors (``persona``
  JSON) or a persona estimator; otherwise train with ``--wo_persona``.
* ``meta.json``: extractor name and dim per modality, persona source, absent modalities, how many
  utterances had no usable media per modality (their vectors are zeros), and the split.

Gold labels are the utterances' ``emotion`` fields mapped to the dataset's classes; a missing label is -1
(unlabelled, ignored by the loss and metrics); an unknown label is an error naming the file and utterance.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extractors.base import Extractor, ExtractorError, Feature, UtteranceMedia
from pcgnet.config import DATASETS
from prepare import pickles

log = logging.getLogger(__name__)

# Common spellings of the same classes, so sessions labelled in words map onto either label set.
LABEL_ALIASES = {
    "happy": "joy", "happiness": "joy", "sad": "sadness", "angry": "anger", "surprised": "surprise",
    "neu": "neutral", "hap": "joy", "ang": "anger", "disgusted": "disgust", "fearful": "fear",
}
IEMOCAP_ALIASES = {"neutral": "neu", "joy": "hap", "happy": "hap", "happiness": "hap", "sadness": "sad",
                   "anger": "ang", "angry": "ang", "excited": "exc", "frustrated": "fru", "frustration": "fru"}


class SessionError(ExtractorError):
    """A session folder or option cannot be turned into features; the message names the file/field."""


@dataclass
class ExtractedDialogue:
    session_id: str
    utterance_ids: list[str]
    speakers: list[str]
    labels: list[int]
    sentences: list[str]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (L, D)
    invalid: dict[str, int] = field(default_factory=dict)  # modality -> utterances without usable media


def label_index(dataset: str, emotion: str | None, where: str) -> int:
    """Class index of a gold label, -1 when unlabelled; SessionError for a label outside the dataset's set."""
    if emotion is None or not emotion.strip():
        return -1
    labels = DATASETS[dataset].labels
    key = emotion.strip().lower()
    if dataset == "IEMOCAP":
        key = IEMOCAP_ALIASES.get(key, key)
    else:
        key = LABEL_ALIASES.get(key, key)
    if key not in labels:
        raise SessionError(f"{where}: emotion {emotion!r} is not a {dataset} label ({', '.join(labels)})")
    return labels.index(key)


def read_video_frames(path: Path, fps: float, spans: Sequence[tuple[float, float]],
                      max_frames: int) -> list[tuple[np.ndarray, ...]]:
    """Up to ``max_frames`` evenly spaced BGR frames inside each ``[t0, t1)`` span, in one sequential pass.

    Only the chosen frames are decoded (others are grabbed and skipped), so memory stays bounded.
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SessionError(f"{path}: cannot open the video")
    n_total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if file_fps > 0 and abs(file_fps - fps) > 0.5:
        log.warning("%s: meta.json says %.2f fps, the file %.2f fps; using the file's", path, fps, file_fps)
        fps = file_fps
    wanted: dict[int, list[int]] = {}  # frame index -> utterances that want it
    for u, (t0, t1) in enumerate(spans):
        first, last = int(np.ceil(t0 * fps)), int(np.ceil(t1 * fps)) - 1
        if n_total:
            last = min(last, n_total - 1)
        if last < first:
            continue
        idx = np.unique(np.linspace(first, last, min(max_frames, last - first + 1)).round().astype(int))
        for i in idx:
            wanted.setdefault(int(i), []).append(u)
    frames: list[list[np.ndarray]] = [[] for _ in spans]
    stop = max(wanted) if wanted else -1
    i = 0
    try:
        while i <= stop:
            if not cap.grab():
                break
            if i in wanted:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    for u in wanted[i]:
                        frames[u].append(frame)
            i += 1
    finally:
        cap.release()
    return [tuple(f) for f in frames]


def _apply(extractor: Extractor, media: list[UtteranceMedia], where: str) -> tuple[np.ndarray, int]:
    """(L, dim) vectors of one dialogue and how many utterances were invalid (zeros)."""
    try:
        feats = extractor.batch(media)
    except ExtractorError:
        feats = []
        for i, m in enumerate(media):  # find the offending utterance, keep the others
            try:
                feats.append(extractor(m))
            except ExtractorError as e:
                log.warning("%s utterance %d: %s features unusable (%s); treated as absent", where, i + 1,
                            extractor.name, e)
                feats.append(Feature(np.zeros(extractor.dim, np.float32), valid=False))
    vecs = np.zeros((len(media), extractor.dim), np.float32)
    invalid = 0
    for i, f in enumerate(feats):
        if f.valid:
            vecs[i] = f.vector
        else:
            invalid += 1
    return vecs, invalid


def extract_session(
    path: Path,
    extractors: dict[str, Extractor],
    dataset: str = "MELD",
    asr: Any | None = None,
    max_frames: int = 4,
) -> ExtractedDialogue:
    """Features of one recorded session (see the module docstring)."""
    from stream.record import SessionFormatError, read_session

    try:
        rec = read_session(path)
    except SessionFormatError as e:
        raise SessionError(str(e)) from None
    if not rec.utterances:
        raise SessionError(f"{path / 'utterances.jsonl'}: no utterances")
    utt_file = path / "utterances.jsonl"
    speakers = [u.speaker for u in rec.utterances]
    n_slots = DATASETS[dataset].n_speakers
    distinct = list(dict.fromkeys(speakers))
    if len(distinct) > n_slots:
        raise SessionError(f"{utt_file}: {len(distinct)} speakers, the {dataset} layout has {n_slots} slots")
    labels = [label_index(dataset, u.emotion, f"{utt_file} ({u.utterance_id})") for u in rec.utterances]

    def audio_of(t0: float, t1: float) -> np.ndarray | None:
        if rec.audio is None or rec.sample_rate is None:
            return None
        a, b = int(round(t0 * rec.sample_rate)), int(round(t1 * rec.sample_rate))
        return rec.audio[max(a, 0): max(min(b, rec.audio.size), 0)]

    audios = [audio_of(u.t_start, u.t_end) for u in rec.utterances]
    texts = [u.text for u in rec.utterances]
    if asr is not None:
        for i, (t, a) in enumerate(zip(texts, audios, strict=True)):
            if (t is None or not t.strip()) and a is not None and a.size:
                texts[i] = asr.transcribe(a, rec.sample_rate).text or None
    frames: list[tuple[np.ndarray, ...]] = [() for _ in rec.utterances]
    if "v" in extractors and rec.video_path is not None:
        frames = read_video_frames(rec.video_path, rec.video_fps or 15.0,
                                   [(u.t_start, u.t_end) for u in rec.utterances], max_frames)
    media = [UtteranceMedia(text=t, audio=a, sample_rate=rec.sample_rate if a is not None else None, frames=f)
             for t, a, f in zip(texts, audios, frames, strict=True)]
    out = ExtractedDialogue(rec.session_id, [u.utterance_id for u in rec.utterances], speakers, labels,
                            [t or "" for t in texts])
    for m, ex in extractors.items():
        out.features[m], out.invalid[m] = _apply(ex, media, str(path))
    return out


def load_persona_json(path: Path, dialogues: Sequence[ExtractedDialogue]) -> dict[str, np.ndarray]:
    """``{session_id: [[5 floats] per utterance]}`` checked against each dialogue's length."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SessionError(f"{path}: unreadable persona JSON ({e})") from None
    if not isinstance(raw, dict):
        raise SessionError(f"{path}: expected a JSON object mapping session id -> per-utterance 5-d vectors")
    out = {}
    for d in dialogues:
        if d.session_id not in raw:
            raise SessionError(f"{path}: no persona for session {d.session_id!r}")
        try:
            p = np.asarray(raw[d.session_id], dtype=np.float32)
        except (TypeError, ValueError):
            raise SessionError(f"{path}: persona of session {d.session_id!r} is not numeric") from None
        if p.shape != (len(d.labels), 5) or not np.isfinite(p).all():
            raise SessionError(f"{path}: persona of session {d.session_id!r} has shape {p.shape}, "
                               f"expected ({len(d.labels)}, 5) finite values")
        out[d.session_id] = p
    return out


def estimate_persona(path: Path, dialogues: Sequence[ExtractedDialogue],
                     names: dict[str, str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Persona from a ``persona_estimator.json`` (pcgnet.persona) applied to the matching modality."""
    from pcgnet.persona import PersonaError, PersonaEstimator

    try:
        est = PersonaEstimator.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, PersonaError) as e:
        raise SessionError(f"{path}: unusable persona estimator ({e})") from None
    modality = next((m for m, n in names.items() if n == est.extractor), None)
    if modality is None:
        raise SessionError(f"{path}: the estimator was fit on {est.extractor!r} features, "
                           f"but this extraction uses {names}")
    return ({d.session_id: est.estimate_dialogue(d.features[modality], d.speakers) for d in dialogues},
            {"source": "estimated", "estimator": est.to_json()})


def split_ids(ids: Sequence[str], test: Sequence[str] | None, test_fraction: float, seed: int) -> tuple[list, list]:
    """Explicit ``test`` ids, else a seeded ``test_fraction`` of the sessions (never all of them)."""
    if test:
        unknown = sorted(set(test) - set(ids))
        if unknown:
            raise SessionError(f"--test-sessions: unknown session ids {unknown} (have {sorted(ids)})")
        return [i for i in ids if i not in test], [i for i in ids if i in test]
    n_test = int(round(test_fraction * len(ids)))
    n_test = min(n_test, len(ids) - 1)
    perm = np.random.default_rng(seed).permutation(len(ids))
    chosen = {ids[i] for i in perm[:n_test]}
    return [i for i in ids if i not in chosen], [i for i in ids if i in chosen]


def write_layout(out: Path, dialogues: Sequence[ExtractedDialogue], dataset: str, names: dict[str, str],
                 dims: dict[str, int], train: list[str], test: list[str],
                 persona: dict[str, np.ndarray] | None, persona_meta: dict[str, Any]) -> dict[str, Any]:
    """Write the pickles and the sidecar (:mod:`prepare.pickles`); returns the meta."""
    feature_file = pickles.file_names(dataset)[0]
    ids = {d.session_id: d for d in dialogues}
    layout = pickles.Layout(
        dataset=dataset,
        utterance_ids={v: d.utterance_ids for v, d in ids.items()},
        speakers={v: pickles.speaker_slots(dataset, d.speakers) for v, d in ids.items()},
        speaker_names={v: d.speakers for v, d in ids.items()},
        labels={v: d.labels for v, d in ids.items()},
        sentences={v: d.sentences for v, d in ids.items()},
        features={m: ({v: list(d.features[m]) for v, d in ids.items()} if m in names else None)
                  for m in ("t", "a", "v")},
        train=train, test=test, dev=[],  # no dev ids: pcgnet train holds out --valid_rate of train
        persona=persona)
    meta = {
        "format": "pcgnet-features", "version": 1, "dataset": dataset, "labels": list(DATASETS[dataset].labels),
        "extractors": {m: {"name": names[m], "dim": dims[m]} for m in names},
        "absent": [m for m in ("t", "a", "v") if m not in names],
        "persona": persona_meta,
        "sessions": [{"session_id": d.session_id, "utterances": len(d.labels),
                      "unlabelled": sum(1 for x in d.labels if x < 0), "invalid": d.invalid} for d in dialogues],
        "train": train, "test": test,
    }
    # pcgnet.data reads <feature stem>.json first, else meta.json: writing both keeps a stale stem sidecar
    # (e.g. from pcgnet prepare-meld into the same folder) from describing these features.
    pickles.write_layout(out, layout, meta, ["meta.json", Path(feature_file).stem + ".json"])
    return meta


def extract_sessions(
    paths: Sequence[Path], out: Path, extractor_names: dict[str, str | None], *,
    dataset: str = "MELD", asr: str | None = None, max_frames: int = 4, test_sessions: Sequence[str] | None = None,
    test_fraction: float = 0.2, seed: int = 0, persona_json: Path | None = None,
    persona_estimator: Path | None = None, progress: Callable[[str], None] | None = None,
    create: Callable[..., Extractor] | None = None,
) -> dict[str, Any]:
    """Extract every session folder and write the layout; returns meta.json's content.

    ``extractor_names``: modality -> registry name, or None to leave the modality out (declared absent).
    """
    if dataset not in DATASETS:
        raise SessionError(f"--dataset {dataset!r}: expected one of MELD, IEMOCAP")
    if persona_json is not None and persona_estimator is not None:
        raise SessionError("give either --persona or --persona-estimator, not both")
    if not paths:
        raise SessionError("no session folders given")
    if create is None:
        from extractors import registry

        create = registry.create
    extractors: dict[str, Extractor] = {}
    for m, name in extractor_names.items():
        if not name:
            continue
        ex = create(name)
        if ex.modality != m:
            raise SessionError(f"extractor {name!r} is a {ex.modality!r} extractor, not {m!r}")
        extractors[m] = ex
    if not extractors:
        raise SessionError("no extractor selected: every modality would be absent")
    recognizer = None
    if asr:
        from extractors.asr import create_asr

        recognizer = create_asr(asr)
    dialogues = []
    seen: set[str] = set()
    for p in paths:
        if progress:
            progress(str(p))
        d = extract_session(Path(p), extractors, dataset, recognizer, max_frames)
        if d.session_id in seen:
            raise SessionError(f"{p}: duplicate session_id {d.session_id!r} (each session must be unique)")
        seen.add(d.session_id)
        dialogues.append(d)
    total = sum(len(d.labels) for d in dialogues)
    for m in list(extractors):
        if sum(d.invalid[m] for d in dialogues) == total:
            # Zeros for every utterance would only pretend to be a modality: declare it absent instead.
            log.warning("no session has usable %s media for %s; the modality is declared absent",
                        m, extractors[m].name)
            del extractors[m]
            for d in dialogues:
                d.features.pop(m)
                d.invalid.pop(m)
    if not extractors:
        raise SessionError("no modality has usable media in these sessions")
    names = {m: ex.name for m, ex in extractors.items()}
    dims = {m: ex.dim for m, ex in extractors.items()}
    train, test = split_ids([d.session_id for d in dialogues], test_sessions, test_fraction, seed)
    persona, persona_meta = None, {"source": "none"}
    if persona_json is not None:
        persona, persona_meta = load_persona_json(Path(persona_json), dialogues), {"source": "given"}
    elif persona_estimator is not None:
        persona, persona_meta = estimate_persona(Path(persona_estimator), dialogues, names)
    return write_layout(out, dialogues, dataset, names, dims, train, test, persona, persona_meta)
