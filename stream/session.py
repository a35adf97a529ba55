"""Per-session conversation state: the model's window, speaker slots, personas, last emotions.

One :class:`SessionState` per conversation, owned by exactly one worker at a time (the scale-out
engineer moves them between processes with :meth:`SessionState.export` / :meth:`SessionState.restore`).
Nothing here touches asyncio: the runtime serialises access per session.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .events import new_run_id, utc_now_iso
from .params import PersonaParams

if TYPE_CHECKING:
    from pcgnet.streaming import ConversationState

log = logging.getLogger(__name__)


class SpeakerSlots:
    """Maps speaker names to the model's speaker slots (the qmask columns).

    New speakers take free slots in order of first appearance. With more speakers than slots, the slot
    of the least recently active speaker is reused (that speaker gets a fresh slot if they come back),
    so a long meeting with many participants keeps running; the reuse is logged.
    """

    def __init__(self, n_slots: int) -> None:
        assert n_slots > 0
        self.n_slots = n_slots
        self._slot_of: dict[str, int] = {}
        self._last_turn: dict[str, int] = {}
        self._turn = 0
        self.reused = 0

    def slot(self, speaker: str) -> int:
        self._turn += 1
        if speaker not in self._slot_of:
            used = set(self._slot_of.values())
            free = [s for s in range(self.n_slots) if s not in used]
            if free:
                self._slot_of[speaker] = free[0]
            else:
                victim = min(self._last_turn, key=self._last_turn.__getitem__)
                slot = self._slot_of.pop(victim)
                self._last_turn.pop(victim)
                self._slot_of[speaker] = slot
                self.reused += 1
                log.info("speaker slots full (%d): %r takes slot %d of %r", self.n_slots, speaker, slot, victim)
        self._last_turn[speaker] = self._turn
        return self._slot_of[speaker]

    @property
    def mapping(self) -> dict[str, int]:
        return dict(self._slot_of)

    def export(self) -> dict[str, Any]:
        return {"n_slots": self.n_slots, "slot_of": dict(self._slot_of), "last_turn": dict(self._last_turn),
                "turn": self._turn, "reused": self.reused}

    @classmethod
    def restore(cls, d: Mapping[str, Any]) -> SpeakerSlots:
        s = cls(int(d["n_slots"]))
        s._slot_of = {str(k): int(v) for k, v in d["slot_of"].items()}
        s._last_turn = {str(k): int(v) for k, v in d["last_turn"].items()}
        s._turn = int(d["turn"])
        s.reused = int(d.get("reused", 0))
        return s


PersonaEstimator = Callable[[Mapping[str, np.ndarray]], np.ndarray]
"""Utterance features (modality -> vector) -> a raw 5-d persona estimate."""


class PersonaTracker:
    """A persona per speaker: fixed (session config), estimated online and smoothed, or a neutral default.

    Args:
        dim: persona size (5).
        params: smoothing and the neutral default.
        fixed: speaker -> persona given by a session config; these never change.
        estimator: turns an utterance's features into a raw estimate; None = neutral default.
        smoothing: EMA weight of a new estimate (default ``params.smoothing``; a checkpoint's estimator
            brings the factor it was trained with).
    """

    def __init__(self, dim: int, params: PersonaParams, fixed: Mapping[str, Any] | None = None,
                 estimator: PersonaEstimator | None = None, smoothing: float | None = None) -> None:
        self.smoothing = params.smoothing if smoothing is None else smoothing
        assert 0.0 < self.smoothing <= 1.0, "smoothing must be in (0, 1]"
        self.dim = dim
        self.params = params
        self.estimator = estimator
        self._fixed = {k: self._check(k, v) for k, v in (fixed or {}).items()}
        self._smoothed: dict[str, np.ndarray] = {}

    def _check(self, speaker: str, v: Any) -> np.ndarray:
        a = np.asarray(v, dtype=np.float32).reshape(-1)
        if a.shape != (self.dim,) or not np.all(np.isfinite(a)):
            raise ValueError(f"persona of speaker {speaker!r} must be {self.dim} finite numbers (got {v!r})")
        return a

    @property
    def source(self) -> str:
        return "estimated" if self.estimator is not None else "default"

    def neutral(self) -> np.ndarray:
        return np.full(self.dim, self.params.neutral_value, dtype=np.float32)

    def update(self, speaker: str, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """The persona to use for this speaker's current utterance (updating the smoothed estimate)."""
        if speaker in self._fixed:
            return self._fixed[speaker]
        if self.estimator is None:
            return self._smoothed.setdefault(speaker, self.neutral())
        try:
            est = self._check(speaker, self.estimator(features))
        except (ValueError, KeyError) as e:  # e.g. the text modality is absent for this utterance: keep the last estimate
            log.debug("persona of %r not updated: %s", speaker, e)
            return self._smoothed.setdefault(speaker, self.neutral())
        prev = self._smoothed.get(speaker)
        alpha = self.smoothing
        cur = est if prev is None else (alpha * est + (1.0 - alpha) * prev).astype(np.float32)
        self._smoothed[speaker] = cur
        return cur

    def export(self) -> dict[str, list[float]]:
        return {k: [float(x) for x in v] for k, v in self._smoothed.items()}

    def restore(self, d: Mapping[str, Any]) -> None:
        self._smoothed = {k: self._check(k, v) for k, v in d.items()}


@dataclass
class SpeakerMemory:
    """What the runtime remembers about one speaker's recent predictions (for shifts and trends)."""

    expression: str
    utterance_id: str
    valences: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=4))
    utterances: int = 0

    def trend(self) -> str:
        """"rising", "falling" or "steady": the latest valence against the mean of the (up to 3) before it."""
        if len(self.valences) < 2:
            return "steady"
        before = list(self.valences)[:-1]
        delta = self.valences[-1] - sum(before) / len(before)
        return "rising" if delta > 0.15 else "falling" if delta < -0.15 else "steady"


class SessionState:
    """All state of one conversation.

    Args:
        session_id: the conversation id.
        model_state: the model's ConversationState (``model.init_state()``).
        n_slots: speaker slots of the model.
        persona: the session's persona tracker.
        context_utterances: how many recent (speaker, text) lines to keep for context-reading extractors.
    """

    def __init__(self, session_id: str, model_state: ConversationState, n_slots: int, persona: PersonaTracker,
                 context_utterances: int = 0) -> None:
        self.session_id = session_id
        self.model_state = model_state
        self.slots = SpeakerSlots(n_slots)
        self.persona = persona
        self.speakers: dict[str, SpeakerMemory] = {}
        self.utterances = 0
        self.seen_ids: collections.deque[str] = collections.deque(maxlen=256)
        self.index_to_utterance: dict[int, str] = {}
        # This incarnation of the session, in every event: a subscriber resets its duplicate filter on a new
        # one. It travels with the state (export/restore), so a conversation handed to another worker keeps it.
        self.run_id = new_run_id()
        self.started_at = utc_now_iso()  # wall clock of t = 0 (the session event carries it)
        self.recent: collections.deque[tuple[str, str]] = collections.deque(maxlen=max(context_utterances, 0))

    def is_duplicate(self, utterance_id: str) -> bool:
        """True when this utterance id was processed recently (a resent input is not processed twice)."""
        return utterance_id in self.seen_ids

    def remember(self, speaker: str, utterance_id: str, index: int, expression: str, valence: float) -> SpeakerMemory:
        self.seen_ids.append(utterance_id)
        self.index_to_utterance[index] = utterance_id
        self.index_to_utterance.pop(index - 4096, None)  # bounded: only recent indices are looked up
        mem = self.speakers.get(speaker)
        if mem is None:
            mem = self.speakers[speaker] = SpeakerMemory(expression, utterance_id)
        mem.expression = expression
        mem.utterance_id = utterance_id
        mem.valences.append(valence)
        mem.utterances += 1
        self.utterances += 1
        return mem

    def heard(self, speaker: str, text: str | None) -> None:
        """Keep a processed utterance's text as context for the next ones (bounded; empty text is skipped)."""
        if self.recent.maxlen and text and text.strip():
            self.recent.append((speaker, text))

    def export(self) -> dict[str, Any]:
        """JSON-able part of the state (the model state travels separately as tensors: ``to_tensors``)."""
        return {
            "session_id": self.session_id,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "slots": self.slots.export(),
            "persona": self.persona.export(),
            "speakers": {k: {"expression": m.expression, "utterance_id": m.utterance_id,
                             "valences": list(m.valences), "utterances": m.utterances}
                         for k, m in self.speakers.items()},
            "utterances": self.utterances,
            "seen_ids": list(self.seen_ids),
            "recent": [list(x) for x in self.recent],
        }

    def restore(self, d: Mapping[str, Any]) -> None:
        self.run_id = str(d.get("run_id") or self.run_id)
        self.started_at = str(d.get("started_at") or self.started_at)
        self.slots = SpeakerSlots.restore(d["slots"])
        self.persona.restore(d.get("persona", {}))
        self.speakers = {}
        for k, m in d.get("speakers", {}).items():
            mem = SpeakerMemory(str(m["expression"]), str(m["utterance_id"]), utterances=int(m["utterances"]))
            mem.valences.extend(float(x) for x in m.get("valences", []))
            self.speakers[str(k)] = mem
        self.utterances = int(d.get("utterances", 0))
        self.seen_ids.clear()
        self.seen_ids.extend(str(x) for x in d.get("seen_ids", []))
        self.recent.clear()
        self.recent.extend((str(s), str(t)) for s, t in d.get("recent", []))
