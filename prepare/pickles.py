"""The one writer of the feature-pickle layout and its JSON sidecar, the files :mod:`pcgnet.data` reads.

Both preparers use it: ``pcgnet prepare-meld`` (:mod:`prepare.meld`) and ``pcgnet extract``
(:mod:`prepare.sessions`). Per dataset (file names from :mod:`pcgnet.data`):

* the MMGCN tuple (``MELD_features_raw1.pkl`` / ``IEMOCAP_features.pkl``): ``(videoIDs, videoSpeakers,
  videoLabels, videoText, videoAudio, videoVisual, videoSentence, trainVid, testVid)``, plus for MELD a 10th
  item, the dev ids. ``trainVid`` is train + dev, as in the original. An absent modality is ``None``.
* the COSMIC tuple (``meld_features_roberta.pkl`` / ``iemocap_features_roberta.pkl``), only with text
  features: the text vector fills all four "roberta" slots, so their mean is the extractor's vector.
  MELD: ``(speaker names, labels, sentiment (zeros, unused), t, t, t, t, sentences, trainIds, testIds,
  validIds)``; IEMOCAP: ``(speaker names, labels, t, t, t, t, sentences, trainIds, testIds, validIds)``.
* the persona pickle (``MELD_persona.pkl`` / ``IEMOCAP_persona.pkl``): ``{dialogue id: (L, 5)}``, when given.
* the sidecar: ``meta`` as indented JSON under each of the names the caller gives (``<feature stem>.json``
  and/or ``meta.json``; :mod:`pcgnet.data` reads either).

Pickles are written atomically (``.tmp`` then rename), protocol 4.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcgnet.config import DATASETS
from pcgnet.data import FEATURE_NAMES, PERSONA_NAMES, ROBERTA_NAMES


@dataclass
class Layout:
    """One dataset's dialogues, keyed by dialogue id in the order they are written."""

    dataset: str  # "MELD" or "IEMOCAP"
    utterance_ids: dict[Hashable, list[str]]
    speakers: dict[Hashable, list[Any]]  # per utterance: one-hot slot (MELD) or "M"/"F" (IEMOCAP)
    speaker_names: dict[Hashable, list[str]]
    labels: dict[Hashable, list[int]]
    sentences: dict[Hashable, list[str]]
    features: dict[str, dict[Hashable, list[np.ndarray]] | None]  # modality t/a/v -> per dialogue, None = absent
    train: list[Any]
    test: list[Any]
    dev: list[Any]
    persona: dict[Hashable, np.ndarray] | None = None


def speaker_slots(dataset: str, speakers: Sequence[str]) -> list[Any]:
    """Per-utterance speaker encoding, slots in first-appearance order: MELD a one-hot over its 9 slots,
    IEMOCAP 'M' for the first speaker and 'F' for the second (slot letters, not genders)."""
    order = {s: i for i, s in enumerate(dict.fromkeys(speakers))}
    if dataset == "MELD":
        eye = np.eye(DATASETS[dataset].n_speakers, dtype=np.float32)
        return [eye[order[s]].tolist() for s in speakers]
    return ["MF"[order[s]] for s in speakers]


def file_names(dataset: str) -> tuple[str, str, str]:
    """(feature, text, persona) pickle names of ``dataset``."""
    return FEATURE_NAMES[dataset], ROBERTA_NAMES[dataset], PERSONA_NAMES[dataset]


def write_layout(out: Path, layout: Layout, meta: dict[str, Any], sidecars: Iterable[str]) -> None:
    """Write the pickles of ``layout`` and ``meta`` under each name in ``sidecars`` into ``out``."""
    feature_file, text_file, persona_file = file_names(layout.dataset)
    out.mkdir(parents=True, exist_ok=True)
    f = layout.features
    text = f.get("t")
    mmgcn: tuple[Any, ...] = (layout.utterance_ids, layout.speakers, layout.labels, text, f.get("a"), f.get("v"),
                              layout.sentences, layout.train + layout.dev, layout.test)
    if layout.dataset == "MELD":
        mmgcn += (layout.dev,)
    files: dict[str, Any] = {feature_file: mmgcn}
    if text is not None:
        tail = (layout.sentences, layout.train, layout.test, layout.dev)
        if layout.dataset == "MELD":
            sentiment = {v: [0] * len(x) for v, x in layout.labels.items()}  # unused by PCGNet
            files[text_file] = (layout.speaker_names, layout.labels, sentiment, text, text, text, text, *tail)
        else:
            files[text_file] = (layout.speaker_names, layout.labels, text, text, text, text, *tail)
    if layout.persona is not None:
        files[persona_file] = layout.persona
    for name, obj in files.items():
        tmp = out / (name + ".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(obj, fh, protocol=4)
        tmp.replace(out / name)
    side = json.dumps(meta, indent=2) + "\n"
    for name in sidecars:
        (out / name).write_text(side, encoding="utf-8")
