"""Read and validate the paper's feature pickles (MMGCN + COSMIC RoBERTa + persona) into dialogues.

The files are the community-standard pickles the paper uses (spec section 1): they are data here, not
models, but unpickling can still run code, so they are read with a restricted unpickler that only
rebuilds plain containers and numpy arrays, and only from paths the user names. Every problem is reported
as one ``DataError`` line naming the file and what is wrong with it.

Layouts (by position):
* IEMOCAP features, 9-tuple: ids, speakers ('M'/'F'), labels, text100 (unused), audio 1582, visual 342,
  sentences, trainVid, testVid.
* MELD features, 10-tuple: the same with text600 (unused), audio 300, 9-d one-hot speakers, and a 10th
  unused item.
* IEMOCAP RoBERTa (COSMIC), 10-tuple: speakers, labels, roberta1..4, sentences, train, test, valid ids.
* MELD RoBERTa (COSMIC), 11-tuple: speakers, emotion labels, sentiment labels, roberta1..4, sentences,
  train, test, valid ids.
* persona: dict dialogue id -> (L, 5) float array.
A modality whose dict is ``None`` in the feature pickle (as ``pcgnet prepare-meld`` writes for media it
did not have) is absent; so is text when the RoBERTa pickle's four dicts are ``None``.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcgnet.batch import DialogueBatch
from pcgnet.config import DATASETS, MODALITIES, DatasetSpec

log = logging.getLogger(__name__)

ROBERTA_NAMES = {"IEMOCAP": "iemocap_features_roberta.pkl", "MELD": "meld_features_roberta.pkl"}
PERSONA_NAMES = {"IEMOCAP": "IEMOCAP_persona.pkl", "MELD": "MELD_persona.pkl"}
FEATURE_NAMES = {"IEMOCAP": "IEMOCAP_features.pkl", "MELD": "MELD_features_raw1.pkl"}
FEATURE_TUPLE_LEN = {"IEMOCAP": 9, "MELD": 10}
ROBERTA_TUPLE_LEN = {"IEMOCAP": 10, "MELD": 11}
ROBERTA_FIRST = {"IEMOCAP": 2, "MELD": 3}  # position of roberta1 in the COSMIC tuple
# What produced the paper's features (recorded in checkpoints so live extractors can be matched against it).
PAPER_EXTRACTORS = {
    "IEMOCAP": {"t": "cosmic-roberta-large-mean4", "a": "opensmile-is10", "v": "denseface"},
    "MELD": {"t": "cosmic-roberta-large-mean4", "a": "meld-audio-300", "v": "denseface"},
}
PERSONA_DIM = 5


class DataError(Exception):
    """A dataset file is missing or malformed; the message is one line naming the file and the problem."""


# ------------------------------------------------------------------------------------------------ pickles
_ALLOWED_GLOBALS = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "dict"), ("builtins", "list"),
    ("builtins", "tuple"), ("builtins", "bytearray"), ("builtins", "complex"), ("builtins", "slice"),
    ("__builtin__", "set"), ("__builtin__", "frozenset"),
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("_codecs", "encode"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


_TEXT_CODECS = {"latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"}


def _bytearray(*args: Any) -> bytearray:
    """``bytearray`` of bytes or text only: ``bytearray(10**10)`` in a pickle would fill memory with zeros."""
    if args and not isinstance(args[0], bytes | bytearray | str):
        raise pickle.UnpicklingError(f"refusing bytearray({type(args[0]).__name__}) (only bytes or text)")
    return bytearray(*args)


def _encode(obj: Any, encoding: str = "utf-8", *rest: Any) -> Any:
    """``_codecs.encode`` restricted to the text codecs Python-2 pickles use for their bytes."""
    if not isinstance(encoding, str) or encoding.lower() not in _TEXT_CODECS:
        raise pickle.UnpicklingError(f"refusing codec {encoding!r} (only {sorted(_TEXT_CODECS)})")
    return codecs.encode(obj, encoding, *rest)


_GUARDED = {("builtins", "bytearray"): _bytearray, ("__builtin__", "bytearray"): _bytearray, ("_codecs", "encode"): _encode}


class _DataUnpickler(pickle.Unpickler):
    """Rebuilds only containers, strings, numbers and numpy arrays: a pickle cannot run code through us."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _GUARDED:
            return _GUARDED[module, name]
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain data and numpy arrays)")


def read_pickle(path: str | Path) -> Any:
    """Load a data pickle (latin1 for the Python-2-era MMGCN files) with the restricted unpickler."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = path.read_bytes()
        return _DataUnpickler(io.BytesIO(data), encoding="latin1").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    except Exception as e:  # noqa: BLE001 - only allowed constructors run; any of their errors is "malformed"
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise DataError(f"{path}: not a readable data pickle ({type(e).__name__}: {first})") from None


# ----------------------------------------------------------------------------------------------- dialogues
@dataclass
class Dialogue:
    """One dialogue: per-utterance arrays of the same length L."""

    id: Any
    features: dict[str, np.ndarray]  # modality -> (L, D_m) float32
    speakers: np.ndarray  # (L,) int64 speaker slots
    labels: np.ndarray  # (L,) int64, -1 = unlabelled
    persona: np.ndarray  # (L, 5) float32

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DialogueDataset:
    """A dataset split into train / valid / test dialogues, with what the checkpoint needs to know."""

    name: str
    labels: tuple[str, ...]
    dims: dict[str, int]  # modality -> dim, only the present modalities
    n_speakers: int
    train: list[Dialogue]
    valid: list[Dialogue]
    test: list[Dialogue]
    files: dict[str, str] = field(default_factory=dict)
    extractors: dict[str, dict[str, Any]] = field(default_factory=dict)
    persona_source: str = "given"  # given | estimated | none
    valid_source: str = "none"  # how the validation split was made (printed by train)
    persona_estimator: dict[str, Any] | None = None  # the sidecar's online estimator (source "estimated")

    @property
    def persona_meta(self) -> dict[str, Any]:
        """What a checkpoint records about persona: the source, and the estimator the live runtime runs."""
        meta: dict[str, Any] = {"source": self.persona_source}
        if self.persona_estimator is not None:
            meta["estimator"] = self.persona_estimator
        return meta

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.dims)

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def split(self, name: str) -> list[Dialogue]:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def collate(dialogues: Sequence[Dialogue], modalities: Iterable[str] | None = None) -> DialogueBatch:
    """Pad dialogues (batch-first) into a DialogueBatch; padding has speaker -1, label -1, mask False."""
    if not dialogues:
        raise ValueError("collate needs at least one dialogue")
    mods = tuple(modalities) if modalities is not None else tuple(dialogues[0].features)
    b, t = len(dialogues), max(len(d) for d in dialogues)
    feats = {m: torch.zeros(b, t, dialogues[0].features[m].shape[1]) for m in mods}
    speakers = torch.full((b, t), -1, dtype=torch.long)
    labels = torch.full((b, t), -1, dtype=torch.long)
    mask = torch.zeros(b, t, dtype=torch.bool)
    persona = torch.zeros(b, t, PERSONA_DIM)
    for i, d in enumerate(dialogues):
        n = len(d)
        for m in mods:
            feats[m][i, :n] = torch.from_numpy(d.features[m])
        speakers[i, :n] = torch.from_numpy(d.speakers)
        labels[i, :n] = torch.from_numpy(d.labels)
        persona[i, :n] = torch.from_numpy(d.persona)
        mask[i, :n] = True
    return DialogueBatch(feats, speakers, mask, persona, labels, [d.id for d in dialogues])


def batches(dialogues: Sequence[Dialogue], batch_size: int, modalities: Iterable[str] | None = None,
            generator: torch.Generator | None = None) -> Iterable[DialogueBatch]:
    """Yield DialogueBatches; shuffled with ``generator`` when given, else in order."""
    order = (torch.randperm(len(dialogues), generator=generator).tolist() if generator is not None
             else list(range(len(dialogues))))
    mods = tuple(modalities) if modalities is not None else None
    for s in range(0, len(order), batch_size):
        yield collate([dialogues[i] for i in order[s:s + batch_size]], mods)


# -------------------------------------------------------------------------------------------- validation
def _need_dict(path: Path, obj: Any, what: str) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {what} must be a dict keyed by dialogue id, got {type(obj).__name__}")
    return obj


def _matrix(path: Path, rows: Any, vid: Any, what: str, n: int) -> np.ndarray:
    """(n, D) float32 from a per-utterance list of vectors (or a 2-D array); checks the length."""
    try:
        arr = np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError):
        raise DataError(f"{path}: {what} of dialogue {vid!r} is not a list of equal-length numeric vectors") from None
    if arr.ndim != 2:
        raise DataError(f"{path}: {what} of dialogue {vid!r} has shape {arr.shape}, expected (utterances, dim)")
    if arr.shape[0] != n:
        raise DataError(f"{path}: {what} of dialogue {vid!r} has {arr.shape[0]} utterances, the dialogue has {n}")
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: {what} of dialogue {vid!r} contains NaN or infinite values")
    return arr


def _speaker_slots(path: Path, raw: Any, vid: Any, n: int, n_speakers: int) -> np.ndarray:
    if raw is None or len(raw) != n:
        got = "none" if raw is None else len(raw)
        raise DataError(f"{path}: speakers of dialogue {vid!r}: {got} entries, the dialogue has {n} utterances")
    out = np.empty(n, dtype=np.int64)
    for i, s in enumerate(raw):
        if isinstance(s, str):
            if s not in ("M", "F"):
                raise DataError(f"{path}: speaker {s!r} in dialogue {vid!r} (IEMOCAP speakers are 'M' or 'F')")
            out[i] = 0 if s == "M" else 1
        elif isinstance(s, (int, np.integer)) and not isinstance(s, bool):
            out[i] = int(s)
        else:
            v = np.asarray(s, dtype=np.float32).reshape(-1)
            if v.size != n_speakers:
                raise DataError(f"{path}: speaker one-hot in dialogue {vid!r} has {v.size} entries, expected {n_speakers}")
            out[i] = int(v.argmax())
        if not 0 <= out[i] < n_speakers:
            raise DataError(f"{path}: speaker slot {out[i]} in dialogue {vid!r} outside 0..{n_speakers - 1}")
    return out


def _ids(path: Path, obj: Any, what: str) -> list:
    if obj is None or isinstance(obj, (str, bytes)) or not hasattr(obj, "__iter__"):
        raise DataError(f"{path}: {what} must be a collection of dialogue ids, got {type(obj).__name__}")
    ids = list(obj)
    try:
        return sorted(ids)  # sets have no stable order across processes; sorting makes splits reproducible
    except TypeError:
        raise DataError(f"{path}: {what} mixes dialogue id types") from None


# ------------------------------------------------------------------------------------------------ locating
def find_companion(feature_path: Path, filename: str) -> Path | None:
    """A companion pickle beside the feature pickle, or in a sibling personaERC/ folder (the repo layout)."""
    d = feature_path.parent
    for cand in (d / filename, d / "personaERC" / filename, d.parent / "personaERC" / filename):
        if cand.is_file():
            return cand
    return None


def _sidecar(feature_path: Path, dataset: str) -> dict[str, Any]:
    """Optional ``<feature pickle>.json`` or ``meta.json`` beside it: {"extractors": {...}, "persona": {...}}.

    ``pcgnet prepare-meld`` and ``pcgnet synth`` write it, so checkpoints record which extractor produced
    each modality (the paper's own pickles have none; their extractors are known).
    """
    for p in (feature_path.with_suffix(".json"), feature_path.parent / "meta.json"):
        if p.is_file():
            break
    else:
        return {}
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: unreadable metadata ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{p}: expected a JSON object")
    if meta.get("dataset", dataset) != dataset:
        return {}  # describes another dataset sharing the folder
    return meta


def load_dataset(
    dataset: str,
    data_path: str | Path,
    *,
    roberta_path: str | Path | None = None,
    persona_path: str | Path | None = None,
    modalities: Iterable[str] | None = None,
    need_persona: bool = True,
    valid_rate: float = 0.1,
    seed: int = 0,
) -> DialogueDataset:
    """Read, validate and split one dataset.

    ``modalities``: which modalities must be present (default: every modality the files provide).
    ``valid_rate``: fraction of the training dialogues held out for model selection (0 = none: the paper's
    protocol, which then selects on test). The hold-out is a seeded permutation of the sorted train ids.
    """
    if dataset not in DATASETS:
        raise DataError(f"--dataset {dataset!r}: unknown (choose from {', '.join(DATASETS)})")
    if not 0.0 <= valid_rate < 1.0:
        raise DataError(f"--valid_rate {valid_rate}: must be in [0, 1)")
    spec: DatasetSpec = DATASETS[dataset]
    fpath = Path(data_path)
    if fpath.is_dir():
        fpath = fpath / FEATURE_NAMES[dataset]
    feat = read_pickle(fpath)
    want_len = FEATURE_TUPLE_LEN[dataset]
    if not isinstance(feat, (tuple, list)) or len(feat) != want_len:
        got = f"a {len(feat)}-tuple" if isinstance(feat, (tuple, list)) else type(feat).__name__
        raise DataError(f"{fpath}: expected the {dataset} MMGCN layout (a {want_len}-tuple), got {got}")
    vids = _need_dict(fpath, feat[0], "item 1 (videoIDs)")
    spk = _need_dict(fpath, feat[1], "item 2 (videoSpeakers)")
    lab = _need_dict(fpath, feat[2], "item 3 (videoLabels)")
    raw_mod = {"a": feat[4], "v": feat[5]}
    train_ids = _ids(fpath, feat[7], "item 8 (trainVid)")
    test_ids = _ids(fpath, feat[8], "item 9 (testVid)")
    all_ids = train_ids + test_ids
    if set(train_ids) & set(test_ids):
        raise DataError(f"{fpath}: {len(set(train_ids) & set(test_ids))} dialogue ids are in both trainVid and testVid")

    sources: dict[str, tuple[Path, dict]] = {}
    for m, item in raw_mod.items():
        if item is not None:
            sources[m] = (fpath, _need_dict(fpath, item, f"the {m} features"))

    files = {"features": str(fpath)}
    # Text: COSMIC RoBERTa, the mean of the four layers' vectors.
    text_dicts: list[dict] = []
    rpath = Path(roberta_path) if roberta_path else find_companion(fpath, ROBERTA_NAMES[dataset])
    wanted = set(modalities) if modalities is not None else None
    if wanted is not None and "t" not in wanted:
        rpath = None  # text not used: do not read (or require) the large RoBERTa pickle
    elif rpath is None:
        if wanted is not None and "t" in wanted:
            raise DataError(f"{fpath.parent / ROBERTA_NAMES[dataset]}: file not found (text features; "
                            "give --roberta_path, or drop 'l' from --modals)")
    if rpath is not None:
        rob = read_pickle(rpath)
        rlen = ROBERTA_TUPLE_LEN[dataset]
        if not isinstance(rob, (tuple, list)) or len(rob) != rlen:
            got = f"a {len(rob)}-tuple" if isinstance(rob, (tuple, list)) else type(rob).__name__
            raise DataError(f"{rpath}: expected the {dataset} COSMIC RoBERTa layout (a {rlen}-tuple), got {got}")
        first = ROBERTA_FIRST[dataset]
        text_dicts = [_need_dict(rpath, rob[first + k], f"item {first + k + 1} (roberta{k + 1})")
                      for k in range(4) if rob[first + k] is not None]
        files["roberta"] = str(rpath)
        if text_dicts:
            sources["t"] = (rpath, {})

    present = tuple(m for m in MODALITIES if m in sources)
    if wanted is not None:
        missing = [m for m in MODALITIES if m in wanted and m not in present]
        if missing:
            raise DataError(f"{fpath}: modalities {missing} requested but absent from the data files")
        present = tuple(m for m in MODALITIES if m in wanted)
    if not present:
        raise DataError(f"{fpath}: no modality has features")

    # Persona: per-utterance 5-d apparent Big-Five vectors.
    sidecar = _sidecar(fpath, dataset)
    pers: dict | None = None
    ppath = Path(persona_path) if persona_path else find_companion(fpath, PERSONA_NAMES[dataset])
    if ppath is not None:
        pers = _need_dict(ppath, read_pickle(ppath), "the persona pickle")
        files["persona"] = str(ppath)
    elif need_persona:
        raise DataError(f"{fpath.parent / PERSONA_NAMES[dataset]}: file not found (persona vectors, also looked "
                        "for in personaERC/; give --persona_path, or train with --wo_persona)")

    dims: dict[str, int] = {}
    dialogues: dict[Any, Dialogue] = {}
    for vid in all_ids:
        if vid not in vids:
            raise DataError(f"{fpath}: dialogue {vid!r} is in the split lists but not in videoIDs")
        n = len(vids[vid])
        if n == 0:
            raise DataError(f"{fpath}: dialogue {vid!r} has no utterances")
        if vid not in lab:
            raise DataError(f"{fpath}: dialogue {vid!r} has no labels")
        labels = np.asarray(lab[vid], dtype=np.int64).reshape(-1)
        if labels.shape[0] != n:
            raise DataError(f"{fpath}: labels of dialogue {vid!r} has {labels.shape[0]} utterances, the dialogue has {n}")
        if ((labels < -1) | (labels >= len(spec.labels))).any():
            bad = labels[(labels < -1) | (labels >= len(spec.labels))][0]
            raise DataError(f"{fpath}: label {bad} in dialogue {vid!r} outside 0..{len(spec.labels) - 1}")
        speakers = _speaker_slots(fpath, spk.get(vid), vid, n, spec.n_speakers)
        feats: dict[str, np.ndarray] = {}
        for m in present:
            if m == "t":
                mats = []
                for k, d in enumerate(text_dicts):
                    if vid not in d:
                        raise DataError(f"{rpath}: dialogue {vid!r} missing from roberta{k + 1}")
                    mats.append(_matrix(rpath, d[vid], vid, f"roberta{k + 1}", n))
                if len({x.shape[1] for x in mats}) != 1:
                    raise DataError(f"{rpath}: roberta1..4 of dialogue {vid!r} have different dims")
                arr = np.mean(np.stack(mats), axis=0, dtype=np.float32)
            else:
                src, d = sources[m]
                if vid not in d:
                    raise DataError(f"{src}: dialogue {vid!r} missing from the {m} features")
                arr = _matrix(src, d[vid], vid, f"{m} features", n)
            if dims.setdefault(m, arr.shape[1]) != arr.shape[1]:
                raise DataError(f"{sources[m][0]}: {m} features of dialogue {vid!r} are {arr.shape[1]}-d, "
                                f"earlier dialogues are {dims[m]}-d")
            feats[m] = np.ascontiguousarray(arr)
        if pers is not None:
            if vid not in pers:
                raise DataError(f"{ppath}: dialogue {vid!r} has no persona vectors")
            persona = _matrix(ppath, pers[vid], vid, "persona", n)
            if persona.shape[1] != PERSONA_DIM:
                raise DataError(f"{ppath}: persona of dialogue {vid!r} is {persona.shape[1]}-d, expected {PERSONA_DIM}")
        else:
            persona = np.zeros((n, PERSONA_DIM), dtype=np.float32)
        dialogues[vid] = Dialogue(vid, feats, speakers, labels, persona)

    for m, d in dims.items():
        if m in spec.dims and d != spec.dims[m]:
            log.info("%s: %s features are %d-d (the paper's are %d-d)", fpath, m, d, spec.dims[m])

    train = [dialogues[v] for v in train_ids]
    valid: list[Dialogue] = []
    valid_source = "none"
    dev_ids = _dev_ids(feat, dataset, train_ids)
    if valid_rate > 0 and dev_ids:
        # MELD's official dev split, when the pickle names it (prepare-meld writes it as the 10th item).
        valid = [dialogues[v] for v in train_ids if v in dev_ids]
        train = [dialogues[v] for v in train_ids if v not in dev_ids]
        valid_source = f"the dev ids in item 10 of {fpath.name} ({len(valid)} dialogues)"
    elif valid_rate > 0 and train:
        n_valid = max(1, int(valid_rate * len(train)))
        if n_valid >= len(train):
            raise DataError(f"--valid_rate {valid_rate} leaves no training dialogues ({len(train)} in {fpath})")
        perm = np.random.default_rng(seed).permutation(len(train))
        held = set(perm[:n_valid].tolist())
        valid = [d for i, d in enumerate(train) if i in held]
        train = [d for i, d in enumerate(train) if i not in held]
        valid_source = f"{n_valid} random train dialogues (--valid_rate {valid_rate}, seed {seed})"
    if not train:
        raise DataError(f"{fpath}: trainVid is empty")

    extractors = {m: {"name": PAPER_EXTRACTORS[dataset][m], "dim": dims[m]} for m in present}
    for m, e in (sidecar.get("extractors") or {}).items():
        if m in extractors:
            extractors[m] = {"name": e.get("name") if isinstance(e, dict) else str(e), "dim": dims[m]}
    persona_side = sidecar.get("persona") or {}
    persona_source = "none" if pers is None else str(persona_side.get("source", "given"))
    estimator = persona_side.get("estimator") if persona_source == "estimated" else None
    return DialogueDataset(
        name=dataset, labels=spec.labels, dims=dims, n_speakers=spec.n_speakers,
        train=train, valid=valid, test=[dialogues[v] for v in test_ids],
        files=files, extractors=extractors, persona_source=persona_source, valid_source=valid_source,
        persona_estimator=estimator if isinstance(estimator, dict) else None,
    )


def add_training_views(ds: DialogueDataset, other: DialogueDataset, where: str) -> DialogueDataset:
    """``ds`` with ``other``'s training dialogues added: the same dialogues seen another way (e.g. as ASR-style
    text), so one model learns both. Only training grows; validation and test stay ``ds``'s own."""
    mine: dict[Any, Dialogue] = {}
    for d in ds.train:  # its own dialogues: the first of each id (an earlier call appended other views)
        mine.setdefault(d.id, d)
    theirs = {d.id: d for d in other.train}
    if set(mine) != set(theirs):
        raise DataError(f"{where}: its training dialogues are not those of {ds.files.get('features')} "
                        f"({len(set(mine) ^ set(theirs))} ids differ)")
    if other.dims != ds.dims or other.extractors != ds.extractors:
        raise DataError(f"{where}: features {other.extractors} do not match {ds.extractors}")
    for vid, d in mine.items():
        o = theirs[vid]
        if not (np.array_equal(d.labels, o.labels) and np.array_equal(d.speakers, o.speakers)):
            raise DataError(f"{where}: dialogue {vid} has other labels or speakers than in {ds.files.get('features')}")
    files = {**ds.files, "train_also": ";".join(filter(None, (ds.files.get("train_also"), where)))}
    return replace(ds, train=ds.train + [theirs[vid] for vid in mine], files=files)


def _dev_ids(feat: Sequence[Any], dataset: str, train_ids: list) -> set:
    """MELD's dev ids when item 10 of the feature tuple lists them (a non-empty proper subset of trainVid)."""
    if dataset != "MELD" or len(feat) < 10:
        return set()
    item = feat[9]
    if item is None or isinstance(item, (str, bytes, dict)) or not hasattr(item, "__iter__"):
        return set()
    try:
        ids = set(item)
    except TypeError:
        return set()
    train = set(train_ids)
    return ids if ids and ids < train else set()
