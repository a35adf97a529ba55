"""Run extractors off the event loop: in a thread pool (default) or in worker processes.

Threads suit the feature extractors here: torch, libSMILE and OpenCV release the GIL in native code.
A process pool isolates a heavy or crash-prone extractor, or one holding the GIL: pocketsphinx keeps it for a
whole decode (measured: a thread waking every 1 ms ran 7 times in a 2.4 s decode), so :class:`ProcessAsr`
runs a recogniser in its own process. Each worker builds its own copy by name once, and only media, vectors
and transcripts cross the process boundary.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import numpy as np

from extractors.base import Extractor, Feature, UtteranceMedia


async def extract_async(extractor: Extractor, media: UtteranceMedia, executor: Executor | None = None) -> Feature:
    """``extractor(media)`` in ``executor`` (the loop's default thread pool when None); the loop stays free."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, extractor, media)


async def batch_async(extractor: Extractor, media: Sequence[UtteranceMedia],
                      executor: Executor | None = None) -> list[Feature]:
    """``extractor.batch(media)`` in ``executor``."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, extractor.batch, list(media))


# -- process workers: one extractor (or recogniser) per worker process, built by name -------------------

_WORKER: Any = None


def _get(name: str, options: dict[str, Any]) -> Any:
    """This worker's extractor (or, for names ``asr:SPEC``, recogniser), built on first use (an initializer
    error would break the whole pool, while an error here reaches the caller as the task's exception)."""
    global _WORKER  # one per worker process: the process is the extractor's owner
    if _WORKER is None:
        if name.startswith("asr:"):
            from extractors.asr import create_asr

            _WORKER = create_asr(name.removeprefix("asr:"), **options)
        else:
            from extractors import registry

            _WORKER = registry.create(name, **options)
    return _WORKER


def _describe(name: str, options: dict[str, Any]) -> tuple[str, str, int]:
    ex = _get(name, options)
    return ex.name, ex.modality, ex.dim


def _call(name: str, options: dict[str, Any], media: UtteranceMedia) -> Feature:
    return _get(name, options)(media)


def _batch(name: str, options: dict[str, Any], media: list[UtteranceMedia]) -> list[Feature]:
    return _get(name, options).batch(media)


def _transcribe(name: str, options: dict[str, Any], audio: np.ndarray, sample_rate: int, prompt: str | None) -> Any:
    return _get(name, options).transcribe(audio, sample_rate, prompt)


def _spawn_pool(workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: forking after torch has started threads can deadlock
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


class ProcessAsr:
    """A recogniser (:func:`extractors.asr.create_asr` spec) in its own process, with the Recognizer interface.

    ``transcribe`` blocks only the calling thread, never the caller's GIL. The recogniser is built at start so
    loading errors surface here. :meth:`close` stops the process.
    """

    def __init__(self, spec: str, **options: Any) -> None:
        self._pool = _spawn_pool(1)
        self._spec = (f"asr:{spec}", dict(options))
        try:
            self.name = self._pool.submit(_describe_asr, *self._spec).result()
        except BaseException:
            self._pool.shutdown(cancel_futures=True)
            raise

    def __repr__(self) -> str:
        return f"ProcessAsr({self.name!r})"

    def transcribe(self, audio: np.ndarray, sample_rate: int, prompt: str | None = None) -> Any:
        return self._pool.submit(_transcribe, *self._spec, audio, sample_rate, prompt).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _describe_asr(name: str, options: dict[str, Any]) -> str:
    return str(_get(name, options).name)


class ProcessExtractor:
    """A registry extractor living in ``workers`` spawned processes, with the Extractor interface.

    ``name``/``modality``/``dim`` are read from a worker at start (so loading errors surface here).
    Use :meth:`acall`/:meth:`abatch` from async code, and :meth:`close` (or ``with``) to stop the workers.
    """

    def __init__(self, name: str, workers: int = 1, **options: Any) -> None:
        self._pool = _spawn_pool(workers)
        self._spec = (name, dict(options))
        try:
            self.name, self.modality, self.dim = self._pool.submit(_describe, *self._spec).result()
        except BaseException:
            self._pool.shutdown(cancel_futures=True)
            raise

    def __repr__(self) -> str:
        return f"ProcessExtractor({self.name!r}, dim={self.dim})"

    def __call__(self, media: UtteranceMedia) -> Feature:
        return self._pool.submit(_call, *self._spec, media).result()

    def batch(self, media: Sequence[UtteranceMedia]) -> list[Feature]:
        return self._pool.submit(_batch, *self._spec, list(media)).result()

    async def acall(self, media: UtteranceMedia) -> Feature:
        return await asyncio.wrap_future(self._pool.submit(_call, *self._spec, media))

    async def abatch(self, media: Sequence[UtteranceMedia]) -> list[Feature]:
        return await asyncio.wrap_future(self._pool.submit(_batch, *self._spec, list(media)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ProcessAsr", "ProcessExtractor", "batch_async", "extract_async"]
