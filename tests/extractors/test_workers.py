"""Extractors off the event loop: thread pool and a spawned worker process."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from extractors import registry
from extractors.base import ExtractorError, UtteranceMedia
from extractors.workers import ProcessExtractor, batch_async, extract_async


def test_extract_async_keeps_the_loop_responsive(speech):
    ext = registry.create("mfcc")
    long = UtteranceMedia(audio=np.tile(speech.sent1, 6), sample_rate=16000)

    async def main() -> tuple[int, list]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        t = asyncio.create_task(ticker())
        with ThreadPoolExecutor(1) as pool:
            one = await extract_async(ext, long, pool)
            many = await batch_async(ext, [long, UtteranceMedia()], pool)
        t.cancel()
        return ticks, [one, *many]

    ticks, feats = asyncio.run(main())
    assert ticks > 0  # the loop ran while features were computed in the thread
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


def test_process_extractor_reports_load_errors():
    t = time.monotonic()
    with pytest.raises(ExtractorError, match="unknown extractor"):
        ProcessExtractor("no-such-extractor")
    assert time.monotonic() - t < 120


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
