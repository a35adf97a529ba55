"""Extractors off the event loop: thread pool and a spawned worker process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from extractors import registry
from extractors.base import Extractor, ExtractorError, Feature, UtteranceMedia
from extractors.workers import ProcessExtractor, batch_async, extract_async
from tests.waiting import DEADLINE_S


class LoopWitness:
    """Wraps an extractor: each call records its thread and waits (up to a generous deadline) for the event
    loop to run a callback meanwhile, which only happens if the call does not block the loop."""

    def __init__(self, inner: Extractor, loop: asyncio.AbstractEventLoop) -> None:
        self.inner, self.loop = inner, loop
        self.name, self.modality, self.dim = inner.name, inner.modality, inner.dim
        self.threads: list[int] = []
        self.loop_ran: list[bool] = []

    def _witness(self) -> None:
        self.threads.append(threading.get_ident())
        ran = threading.Event()
        self.loop.call_soon_threadsafe(ran.set)
        self.loop_ran.append(ran.wait(timeout=DEADLINE_S))

    def __call__(self, media: UtteranceMedia) -> Feature:
        self._witness()
        return self.inner(media)

    def batch(self, media: Sequence[UtteranceMedia]) -> list[Feature]:
        self._witness()
        return self.inner.batch(media)


def test_extract_async_keeps_the_loop_responsive(speech):
    long = UtteranceMedia(audio=np.tile(speech.sent1, 6), sample_rate=16000)

    async def main() -> tuple[LoopWitness, list[Feature]]:
        ext = LoopWitness(registry.create("mfcc"), asyncio.get_running_loop())
        with ThreadPoolExecutor(1) as pool:
            one = await extract_async(ext, long, pool)
            many = await batch_async(ext, [long, UtteranceMedia()], pool)
        return ext, [one, *many]

    ext, feats = asyncio.run(main())
    assert threading.get_ident() not in ext.threads  # computed in the pool, not on the loop's thread
    assert ext.loop_ran == [True, True]  # the loop ran callbacks while features were computed
    assert feats[0].valid and feats[2].valid is False
    np.testing.assert_array_equal(feats[0].vector, feats[1].vector)


def test_process_extractor_matches_in_process(speech):
    m = UtteranceMedia(audio=speech.sent2, sample_rate=16000)
    local = registry.create("mfcc")(m)
    with ProcessExtractor("mfcc") as px:
        assert (px.name, px.modality, px.dim) == ("mfcc", "a", 95)
        np.testing.assert_allclose(px(m).vector, local.vector, rtol=1e-6)
        got = asyncio.run(px.abatch([m, UtteranceMedia()]))
        assert [f.valid for f in got] == [True, False]
        with pytest.raises(ExtractorError, match="NaN"):
            px(UtteranceMedia(audio=np.full(800, np.nan, np.float32), sample_rate=16000))


@pytest.mark.timeout(DEADLINE_S * 4)  # a pool that hung on the error would fail here, not hang CI
def test_process_extractor_reports_load_errors():
    with pytest.raises(ExtractorError, match="unknown extractor"):
        ProcessExtractor("no-such-extractor")


def test_one_extractor_shared_by_threads(speech):
    """The live runtime shares one extractor between worker threads: results must equal sequential ones."""
    texts = [UtteranceMedia(text=f"utterance number {i}, I am {'happy' if i % 2 else 'angry'}") for i in range(12)]
    audio = [UtteranceMedia(audio=speech.sent1[: 8000 * (1 + i % 3)], sample_rate=16000) for i in range(6)]
    for name, media in (("minilm-l6+lex", texts), ("egemaps", audio)):
        ex = registry.create(name)
        want = [f.vector for f in ex.batch(media)]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda m, ex=ex: ex(m).vector, media))
        for w, g in zip(want, got, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-5)
