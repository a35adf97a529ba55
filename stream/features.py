"""Per-utterance features through the extractor registry, micro-batched across sessions off the loop.

The checkpoint's ``config.json`` names, per modality, the extractor and dimension the model was trained
on; this service builds exactly those and refuses a mismatch (features from another extractor are
meaningless to the model). A modality an utterance has no media for (no audio from a transcript, no
face) becomes an explicit "absent" zero vector, and the event lists only the modalities actually used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from extractors.base import Extractor, ExtractorError, Feature, UtteranceMedia

from .batching import MicroBatcher
from .frames import Utterance

if TYPE_CHECKING:
    from pcgnet.checkpoint_meta import ExtractorSpec

log = logging.getLogger(__name__)


class FeatureConfigError(ValueError):
    """The checkpoint's extractor spec cannot be satisfied here (unknown extractor, wrong dim)."""


@dataclass(frozen=True, slots=True)
class UtteranceFeatures:
    """Model input of one utterance: modality -> float32 vector (zeros when absent) and what was present."""

    vectors: dict[str, np.ndarray]
    used: tuple[str, ...]


def media_of(utt: Utterance, context: Sequence[tuple[str, str]] = ()) -> UtteranceMedia:
    """The extractor input of ``utt``; ``context`` = the session's earlier (speaker, text), oldest first."""
    return UtteranceMedia(text=utt.text or None, audio=utt.audio, sample_rate=utt.sample_rate, frames=utt.frames,
                          speaker=utt.speaker, context=tuple(context))


def build_extractors(spec: Mapping[str, ExtractorSpec], modalities: Sequence[str], dims: Mapping[str, int],
                     where: str = "checkpoint", dtype: str = "auto", backend: str = "torch") -> dict[str, Extractor]:
    """Create the extractor named for each modality the model uses (``spec``: the checkpoint's,
    :attr:`pcgnet.checkpoint_meta.CheckpointMeta.extractors`); checks each one's dim. ``dtype``: the text
    encoders' (``auto|float32|bfloat16``, :func:`extractors.cpu.choose_dtype`), ``backend`` their runtime
    (``torch|onnx``)."""
    from extractors import registry

    out: dict[str, Extractor] = {}
    for m in modalities:
        entry = spec.get(m)
        if entry is None or not entry.name:
            raise FeatureConfigError(f"{where}: config.json names no extractor for modality {m!r} "
                                     f"(its 'extractors' section has {sorted(spec)})")
        name = entry.name
        try:
            ex = registry.create(name, dtype=dtype, backend=backend)
        except ExtractorError as e:
            raise FeatureConfigError(f"{where}: modality {m!r} needs extractor {name!r}: {e}") from None
        if ex.dim != dims[m]:
            raise FeatureConfigError(f"{where}: extractor {name!r} gives {ex.dim}-d features, the model expects "
                                     f"{dims[m]}-d for modality {m!r}")
        out[m] = ex
    return out


class FeatureService:
    """Runs the checkpoint's extractors for utterances from all sessions.

    One micro-batcher per modality, all on one shared pool of ``workers`` threads, so sessions that
    finish utterances at the same moment share one extractor call (MiniLM's batch is much cheaper than
    its calls one by one).

    Args:
        extractors: modality -> extractor (see :func:`build_extractors`).
        workers: threads for extraction.
        max_batch_size: largest batch per extractor call.
    """

    def __init__(self, extractors: Mapping[str, Extractor], *, workers: int = 1, max_batch_size: int = 32,
                 maxsize: int = 256) -> None:
        self.extractors = dict(extractors)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stream-features")
        self.batchers: dict[str, MicroBatcher[UtteranceMedia, Feature | Exception]] = {
            m: MicroBatcher(f"features.{m}", self._batch_fn(ex), self._pool,
                            max_batch_size=max_batch_size, maxsize=maxsize)
            for m, ex in self.extractors.items()
        }

    @staticmethod
    def _batch_fn(ex: Extractor):  # type: ignore[no-untyped-def]
        def run(media: Sequence[UtteranceMedia]) -> list[Feature | Exception]:
            try:
                return list(ex.batch(list(media)))
            except ExtractorError:
                # one unusable item (e.g. corrupt audio) must not fail its batch-mates
                out: list[Feature | Exception] = []
                for m in media:
                    try:
                        out.append(ex(m))
                    except ExtractorError as e:
                        out.append(e)
                return out
        return run

    @property
    def context_utterances(self) -> int:
        """How many earlier utterances of a session the extractors read (sessions keep that many)."""
        return max((int(getattr(ex, "context_utterances", 0)) for ex in self.extractors.values()), default=0)

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """Coroutines to run under the supervisor: one batch worker per modality."""
        return {f"features.{m}": b.run() for m, b in self.batchers.items()}

    @staticmethod
    def _has_media(modality: str, media: UtteranceMedia) -> bool:
        if modality == "t":
            return bool(media.text and media.text.strip())
        if modality == "a":
            return media.audio is not None and media.sample_rate is not None and len(media.audio) > 0
        if modality == "v":
            return len(media.frames) > 0
        return True

    async def extract(self, utt: Utterance, context: Sequence[tuple[str, str]] = ()) -> UtteranceFeatures:
        media = media_of(utt, context)
        mods = list(self.extractors)
        present = [m for m in mods if self._has_media(m, media)]
        results = await asyncio.gather(*(self.batchers[m].submit(media) for m in present))
        vectors: dict[str, np.ndarray] = {}
        used: list[str] = []
        got = dict(zip(present, results, strict=True))
        for m in mods:
            ex = self.extractors[m]
            r = got.get(m)
            if isinstance(r, Exception):
                log.warning("session %s utterance %s: %s features unusable (%s)", utt.session_id,
                            utt.utterance_id, ex.name, r)
                r = None
            if r is None or not r.valid:
                vectors[m] = np.zeros(ex.dim, dtype=np.float32)
                continue
            vec = np.asarray(r.vector, dtype=np.float32).reshape(-1)
            if vec.shape != (ex.dim,) or not np.all(np.isfinite(vec)):
                log.warning("extractor %s returned shape %s / non-finite values; treated as absent", ex.name, vec.shape)
                vectors[m] = np.zeros(ex.dim, dtype=np.float32)
                continue
            vectors[m] = vec
            used.append(m)
        return UtteranceFeatures(vectors, tuple(used))

    def close(self) -> None:
        for b in self.batchers.values():
            b.close()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def queue_depths(self) -> dict[str, int]:
        return {b.name: len(b.queue) for b in self.batchers.values()}
