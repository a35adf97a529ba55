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

from pcgnet.checkpoint import CheckpointError, CheckpointMeta
from pcgnet.shift import Decision, ShiftRuleError, decide

from . import events as ev
from .evidence import has_evidence
from .features import FeatureService
from .frames import EventFrame, EventKind, Utterance
from .inference import ModelStepper, StepOutput, StepRequest
from .params import LiveParams
from .session import PersonaEstimator, PersonaTracker, SessionState, SpeakerMemory

if TYPE_CHECKING:
    import torch

    from extractors.base import Extractor
    from pcgnet.config import PCGNetConfig

log = logging.getLogger(__name__)


class DuplicateUtterance(ValueError):
    """An utterance id this run of the session already processed: a re-sent input, or two inputs with one
    id. Not processed again (its events exist already); reported as an input error naming the id."""


def persona_estimator_from(meta: CheckpointMeta) -> tuple[PersonaEstimator, float] | None:
    """The checkpoint's online persona estimator and its smoothing factor, when its config has one.

    The smoothing factor is the estimator's own (the one its training data was made with), so live
    personas match what the model was trained on. An estimator that cannot be used is a CheckpointError
    (the model was trained on estimated personas: a neutral default would silently change its inputs).
    """
    if meta.persona_source != "estimated" or not meta.persona.get("estimator"):
        return None
    from pcgnet.persona import PersonaError
    from pcgnet.persona import PersonaEstimator as RidgeEstimator

    try:
        est = RidgeEstimator.from_json(meta.persona["estimator"])
    except PersonaError as e:
        raise CheckpointError(f"checkpoint persona estimator unusable ({e})") from None
    modality = meta.persona_modality(est.extractor)

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
        meta: the checkpoint's typed metadata (persona estimator, shift rule).
        features: the feature service.
        stepper: steps the causal model for every session (micro-batched).
        params: runtime parameters.
        session_personas: session id -> {speaker: 5 numbers}, fixed personas from a session config.
        clock_ns: monotonic clock (injectable; latency = emit time - utterance end time).
    """

    def __init__(self, config: PCGNetConfig, meta: CheckpointMeta, features: FeatureService, stepper: ModelStepper,
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
        # The one shift rule (pcgnet.shift: what `pcgnet evaluate` scores) at the chosen operating profile.
        self.shift_rule = meta.shift_rule
        self.shift_profile = params.shift_profile or self.shift_rule.default_profile
        self.shift_threshold = self.shift_rule.threshold(self.shift_profile)  # ShiftRuleError: unknown profile
        self._names = [ev.expression_name(lb) for lb in self.labels]
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
        """Forget a session here (its state is returned for export, e.g. to hand it to another worker)."""
        self._locks.pop(session_id, None)
        return self.sessions.pop(session_id, None)

    def end_session(self, session_id: str, reason: str = "end") -> list[EventFrame]:
        """Close a finished session: its run's ``session`` ``ended`` record (none if it never started)."""
        st = self.close_session(session_id)
        if st is None or not st.utterances:
            return []
        return [self._session_frame(st, "ended", reason)]

    def _session_frame(self, st: SessionState, state: str, reason: str | None = None) -> EventFrame:
        payload = ev.session_event(session=st.session_id, run_id=st.run_id, state=state, started_at=st.started_at,
                                   process=self.params.process_id, utterances=st.utterances, reason=reason,
                                   worker_id=self.params.worker_id)
        return EventFrame(session_id=st.session_id, kind=EventKind.SESSION, payload=payload)

    # -- the entry point --------------------------------------------------------------------------

    async def process(self, utt: Utterance) -> list[EventFrame]:
        """Process one utterance of session ``utt.session_id``; returns its events in the documented order:
        the run's ``session`` ``started`` record (first utterance only), emotion, then shift (exactly when the
        speaker's reported expression changed), then the speaker's new state.

        An utterance id the session has already processed raises :class:`DuplicateUtterance` (a re-sent input
        has no second effect, and the runtime reports it as an input error naming the id).
        """
        st = self.session(utt.session_id)
        async with self._locks[utt.session_id]:
            if st.is_duplicate(utt.utterance_id):
                self.duplicates += 1
                raise DuplicateUtterance(
                    f"utterance id {utt.utterance_id!r} was already processed in run {st.run_id} of session "
                    f"{utt.session_id!r} (a re-sent input, or another input with the same id): not processed again")
            feats = await self.features.extract(utt, st.recent)
            if not has_evidence(utt.text, feats.used):  # no evidence, no event (stream/evidence.py)
                return []
            slot = st.slots.slot(utt.speaker)
            persona = st.persona.update(utt.speaker, {m: feats.vectors[m] for m in feats.used})
            out = await self.stepper.step(StepRequest(st.model_state, feats.vectors, slot, persona))
            st.model_state = out.state
            st.heard(utt.speaker, utt.text)
            latency_ms = (self._clock_ns() - utt.ended_at_ns) / 1e6
            started = [self._session_frame(st, "started")] if not st.utterances else []
            return started + self._events(st, utt, out, feats.used, latency_ms)

    def decide(self, prev: SpeakerMemory | None, out: StepOutput) -> Decision:
        """This turn's reported expression and shift, from both heads (pcgnet.shift.decide)."""
        before = None if prev is None else self._names.index(prev.expression)
        return decide(out.emotion_probs, out.shift_probs, before, self.shift_rule.weight, self.shift_threshold,
                      self.shift_rule.mix)

    def _events(self, st: SessionState, utt: Utterance, out: StepOutput, used: tuple[str, ...],
                latency_ms: float) -> list[EventFrame]:
        """emotion, shift (exactly when the reported expression changed), speaker: coherent by construction."""
        wid = self.params.worker_id
        prev = st.speakers.get(utt.speaker)
        decision = self.decide(prev, out)
        emo = ev.emotion_event(
            session=utt.session_id, utterance_id=utt.utterance_id, speaker=utt.speaker, t_start=utt.t_start,
            t_end=utt.t_end, text=utt.text, labels=self.labels, probs=[float(p) for p in out.emotion_probs],
            modalities=used, index=out.index, latency_ms=latency_ms, run_id=st.run_id, worker_id=wid,
            expression_index=decision.expression, shift_probability=decision.probability, overlap=utt.overlap)
        frames = [EventFrame(session_id=utt.session_id, kind=EventKind.EMOTION, payload=emo)]
        if prev is not None and decision.shift:
            prev_id = st.index_to_utterance.get(out.prev_index, prev.utterance_id) \
                if out.prev_index is not None else prev.utterance_id
            shift = ev.shift_event(
                session=utt.session_id, utterance_id=utt.utterance_id, speaker=utt.speaker, t_start=utt.t_start,
                t_end=utt.t_end, from_expression=prev.expression, to_expression=emo["expression"],
                previous_utterance_id=prev_id, probability=decision.probability, profile=self.shift_profile,
                latency_ms=latency_ms, run_id=st.run_id, worker_id=wid)
            frames.append(EventFrame(session_id=utt.session_id, kind=EventKind.SHIFT, payload=shift))
        mem = st.remember(utt.speaker, utt.utterance_id, out.index, emo["expression"], emo["valence"])
        spk = ev.speaker_state(session=utt.session_id, speaker=utt.speaker, emotion=emo, trend=mem.trend(),
                               utterances=mem.utterances, worker_id=wid, process=self.params.process_id)
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
    from pcgnet.checkpoint import load_checkpoint

    from .features import FeatureConfigError, FeatureService, build_extractors

    params = params or LiveParams()
    ck = load_checkpoint(checkpoint, device=params.inference.device)
    if not ck.config.causal:
        raise CheckpointError(f"{checkpoint}: not a causal model (config.causal=false); live inference needs one")
    if extractors is None:
        exs = build_extractors(ck.info.extractors, ck.config.modalities, ck.config.dims, where=str(checkpoint),
                               dtype=params.inference.text_dtype, backend=params.inference.text_backend)
    else:
        missing = [m for m in ck.config.modalities if m not in extractors]
        if missing:
            raise FeatureConfigError(f"{checkpoint}: no extractor given for modality {missing[0]!r}")
        ck.info.check_extractors(extractors, str(checkpoint))  # CheckpointError naming name or size
        exs = {m: extractors[m] for m in ck.config.modalities}
    features = FeatureService(exs, workers=params.inference.feature_workers,
                              max_batch_size=params.inference.max_batch_size)
    stepper = ModelStepper(ck.model, params.inference, maxsize=params.queues.inference_requests)
    try:
        return Analyzer(ck.config, ck.info, features, stepper, params, session_personas=session_personas)
    except ShiftRuleError as e:  # an unknown --shift-profile: one line naming the checkpoint's profiles
        raise CheckpointError(f"{checkpoint}: {e}") from None
