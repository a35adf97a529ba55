"""The core of the runtime: "process one utterance for session S" -> events.

:class:`Analyzer` owns the per-session :class:`~stream.session.SessionState` objects, the feature
service and the model stepper, and runs and closes them (:meth:`Analyzer.tasks`, :meth:`Analyzer.run`,
:meth:`Analyzer.close`). :meth:`Analyzer.process` is the single entry point every source
path ends in (local capture, transcripts, replay, MQTT input, and the scale-out workers), so that all
of them produce identical events for identical utterances. Calls for one session are serialised by a
per-session lock; different sessions run concurrently and share micro-batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pcgnet.checkpoint import shift_threshold

from . import events as ev
from .features import FeatureService
from .frames import EventFrame, EventKind, Utterance
from .inference import ModelStepper, StepOutput, StepRequest
from .params import LiveParams
from .session import PersonaEstimator, PersonaTracker, SessionState

if TYPE_CHECKING:
    import torch

    from extractors.base import Extractor
    from pcgnet.config import PCGNetConfig

log = logging.getLogger(__name__)


def persona_estimator_from(meta: Mapping[str, Any]) -> tuple[PersonaEstimator, float] | None:
    """The checkpoint's online persona estimator and its smoothing factor, when its config has one.

    The smoothing factor is the estimator's own (the one its training data was made with), so live
    personas match what the model was trained on.
    """
    spec = dict(meta.get("persona") or {})
    if spec.get("source") != "estimated" or not spec.get("estimator"):
        return None
    try:
        from pcgnet.persona import PersonaError
        from pcgnet.persona import PersonaEstimator as RidgeEstimator
    except ImportError:
        log.warning("checkpoint asks for an estimated persona but pcgnet.persona is missing; using the default")
        return None
    try:
        est = RidgeEstimator.from_json(spec["estimator"])
    except PersonaError as e:
        log.warning("checkpoint persona estimator unusable (%s); using the default persona", e)
        return None
    extractors = dict(meta.get("extractors") or {})
    modality = next((m for m, e in extractors.items() if isinstance(e, dict) and e.get("name") == est.extractor), "t")

    def run(features: Mapping[str, np.ndarray]) -> np.ndarray:
        x = features.get(modality)
        if x is None or x.shape != (est.dim,):
            raise ValueError(f"persona estimator needs {est.dim}-d {modality!r} features")
        return est.predict(x)
    return run, float(est.alpha)


class Analyzer:
    """Turns utterances into events, one session at a time per session.

    Args:
        config: the model's PCGNetConfig (labels, speaker slots, persona size).
        meta: the checkpoint's config.json (persona estimator).
        features: the feature service.
        stepper: steps the causal model for every session (micro-batched).
        params: runtime parameters.
        session_personas: session id -> {speaker: 5 numbers}, fixed personas from a session config.
        clock_ns: monotonic clock (injectable; latency = emit time - utterance end time).
    """

    def __init__(self, config: PCGNetConfig, meta: Mapping[str, Any], features: FeatureService, stepper: ModelStepper,
                 params: LiveParams, *, session_personas: Mapping[str, Mapping[str, Any]] | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.config = config
        self.labels: tuple[str, ...] = tuple(config.labels)
        self.features = features
        self.stepper = stepper
        self.params = params
        self._session_personas = dict(session_personas or {})
        self._estimator = persona_estimator_from(meta) if config.use_persona else None
        if self._estimator is not None:
            log.info("persona: estimated online by the checkpoint's estimator (smoothing %.2f)", self._estimator[1])
        self._clock_ns = clock_ns
        # Shift events: P(shift) >= the checkpoint's dev-chosen threshold (what `pcgnet evaluate` scores);
        # a checkpoint without one: whenever the speaker's expression changed.
        self.shift_threshold = shift_threshold(meta)
        self.sessions: dict[str, SessionState] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.processed = 0
        self.duplicates = 0

    # -- lifecycle --------------------------------------------------------------------------------

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """The loops that must run while utterances are processed: the model stepper's micro-batcher
        (``"inference"``) and the feature service's, by name (run them all, or use :meth:`run`)."""
        return {"inference": self.stepper.run(), **self.features.tasks()}

    async def run(self, name_prefix: str = "analyzer.") -> None:
        """Run :meth:`tasks` until they end (after :meth:`close`) or one fails; closes on the way out."""
        try:
            async with asyncio.TaskGroup() as tg:
                for name, coro in self.tasks().items():
                    tg.create_task(coro, name=f"{name_prefix}{name}")
        finally:
            self.close()

    def close(self) -> None:
        """Stop accepting work; the running loops finish what is queued and end."""
        self.stepper.close()
        self.features.close()

    def shutdown(self) -> None:
        """Release the model and feature threads (after the loops have ended or been cancelled)."""
        self.stepper.shutdown()
        self.features.shutdown()

    def queue_depths(self) -> dict[str, int]:
        """Work waiting for the model and for the feature extractors, by queue name."""
        return {**self.stepper.queue_depths(), **self.features.queue_depths()}

    @property
    def mean_batch_size(self) -> float:
        """Model steps per model call so far (how well micro-batching works under the current load)."""
        return self.stepper.mean_batch_size

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.stepper.device

    # -- sessions ---------------------------------------------------------------------------------

    def session(self, session_id: str) -> SessionState:
        """The state of a session, created on first use."""
        st = self.sessions.get(session_id)
        if st is None:
            est, alpha = self._estimator if self._estimator is not None else (None, None)
            persona = PersonaTracker(int(self.config.persona_dim), self.params.persona,
                                     fixed=self._session_personas.get(session_id), estimator=est,
                                     smoothing=alpha)
            st = SessionState(session_id, self.stepper.init_state(), int(self.config.n_speakers), persona,
                              context_utterances=self.features.context_utterances)
            self.sessions[session_id] = st
            self._locks[session_id] = asyncio.Lock()
            log.info("session %s started (%d speaker slots, persona %s)", session_id, st.slots.n_slots,
                     persona.source)
        return st

    def close_session(self, session_id: str) -> SessionState | None:
        """Forget a finished session (its state is returned for export)."""
        self._locks.pop(session_id, None)
        return self.sessions.pop(session_id, None)

    # -- the entry point --------------------------------------------------------------------------

    async def process(self, utt: Utterance) -> list[EventFrame]:
        """Process one utterance of session ``utt.session_id``; returns its events in the documented order:
        emotion, then shift (when the speaker's expression changed), then the speaker's new state.

        An utterance id the session has already processed is skipped (returns []), so a re-sent input
        has no second effect.
        """
        st = self.session(utt.session_id)
        async with self._locks[utt.session_id]:
            if st.is_duplicate(utt.utterance_id):
                self.duplicates += 1
                log.info("session %s: utterance %s already processed; skipped", utt.session_id, utt.utterance_id)
                return []
            feats = await self.features.extract(utt, st.recent)
            slot = st.slots.slot(utt.speaker)
            persona = st.persona.update(utt.speaker, {m: feats.vectors[m] for m in feats.used})
            out = await self.stepper.step(StepRequest(st.model_state, feats.vectors, slot, persona))
            st.model_state = out.state
            st.heard(utt.speaker, utt.text)
            latency_ms = (self._clock_ns() - utt.ended_at_ns) / 1e6
            return self._events(st, utt, out, feats.used, latency_ms)

    def _shift(self, before: str, now: str, p_shift: float | None,
               shift_probs: np.ndarray | None) -> tuple[str, str] | None:
        """(from, to) when this utterance is a shift event, else None.

        With a stored threshold the shift head decides (P(shift) >= threshold). ``from`` is always the
        speaker's previous expression (what subscribers saw in that emotion event); ``to`` is the current
        expression, or, when the emotion head's top label did not change, the shift head's most likely
        other emotion after ``from``.
        """
        if self.shift_threshold is None:
            return (before, now) if before != now else None
        if p_shift is None or p_shift < self.shift_threshold:
            return None
        if before != now:
            return before, now
        names = [ev.expression_name(lb) for lb in self.labels]  # expressions, not labels ("joy" -> "happiness")
        c, i = len(names), names.index(before)
        row = np.asarray(shift_probs, dtype=np.float64).reshape(c, c)[i].copy()
        row[i] = -1.0
        return before, names[int(row.argmax())]

    def _events(self, st: SessionState, utt: Utterance, out: StepOutput, used: tuple[str, ...],
                latency_ms: float) -> list[EventFrame]:
        wid = self.params.worker_id
        emo = ev.emotion_event(
            session=utt.session_id, utterance_id=utt.utterance_id, speaker=utt.speaker, t_start=utt.t_start,
            t_end=utt.t_end, text=utt.text, labels=self.labels, probs=[float(p) for p in out.emotion_probs],
            modalities=used, index=out.index, latency_ms=latency_ms, run_id=st.run_id, worker_id=wid)
        prev = st.speakers.get(utt.speaker)
        frames = [EventFrame(session_id=utt.session_id, kind=EventKind.EMOTION, payload=emo)]
        p_shift = out.shift_probability(len(self.labels))
        change = self._shift(prev.expression, emo["expression"], p_shift, out.shift_probs) if prev else None
        if prev is not None and change is not None:
            prev_id = st.index_to_utterance.get(out.prev_index, prev.utterance_id) \
                if out.prev_index is not None else prev.utterance_id
            shift = ev.shift_event(
                session=utt.session_id, utterance_id=utt.utterance_id, speaker=utt.speaker, t_start=utt.t_start,
                t_end=utt.t_end, from_expression=change[0], to_expression=change[1],
                previous_utterance_id=prev_id, probability=p_shift, latency_ms=latency_ms, run_id=st.run_id,
                worker_id=wid)
            frames.append(EventFrame(session_id=utt.session_id, kind=EventKind.SHIFT, payload=shift))
        mem = st.remember(utt.speaker, utt.utterance_id, out.index, emo["expression"], emo["valence"])
        spk = ev.speaker_state(session=utt.session_id, speaker=utt.speaker, emotion=emo, trend=mem.trend(),
                               utterances=mem.utterances, worker_id=wid)
        frames.append(EventFrame(session_id=utt.session_id, kind=EventKind.SPEAKER, payload=spk, speaker=utt.speaker))
        self.processed += 1
        return frames


def load_analyzer(checkpoint: str | Path, params: LiveParams | None = None, *,
                  session_personas: Mapping[str, Mapping[str, Any]] | None = None,
                  extractors: Mapping[str, Extractor] | None = None) -> Analyzer:
    """Checkpoint path -> a ready Analyzer (model, its extractors, feature service, inference engine).

    Raises CheckpointError / FeatureConfigError with a one-line message naming the file and the problem.

    Args:
        checkpoint: a causal checkpoint directory.
        params: runtime parameters (device, batching, personas).
        session_personas: fixed personas per session and speaker.
        extractors: prebuilt extractors (modality -> Extractor) to share between analyzers; checked
            against the checkpoint's names and dims like freshly built ones.
    """
    from pcgnet.checkpoint import CheckpointError, load_checkpoint

    from .features import FeatureConfigError, FeatureService, build_extractors

    params = params or LiveParams()
    ck = load_checkpoint(checkpoint, device=params.inference.device)
    if not ck.config.causal:
        raise CheckpointError(f"{checkpoint}: not a causal model (config.causal=false); live inference needs one")
    if extractors is None:
        exs = build_extractors(ck.extractors, ck.config.modalities, ck.config.dims, where=str(checkpoint),
                               dtype=params.inference.text_dtype, backend=params.inference.text_backend)
    else:
        exs = {}
        for m in ck.config.modalities:
            want = ck.extractors.get(m) or {}
            ex = extractors.get(m)
            if ex is None or ex.name != want.get("name") or ex.dim != ck.config.dims[m]:
                raise FeatureConfigError(f"{checkpoint}: modality {m!r} needs extractor {want.get('name')!r} "
                                         f"({ck.config.dims[m]}-d)")
            exs[m] = ex
    features = FeatureService(exs, workers=params.inference.feature_workers,
                              max_batch_size=params.inference.max_batch_size)
    stepper = ModelStepper(ck.model, params.inference, maxsize=params.queues.inference_requests)
    return Analyzer(ck.config, ck.meta, features, stepper, params, session_personas=session_personas)
