"""Run extractors off the event loop: in a thread pool (default) or in worker processes.

Threads suit every extractor here: torch, libSMILE, OpenCV and pocketsphinx do their work in native code.
A process pool isolates a heavy or crash-prone extractor (or a third-party one holding the GIL); each worker
builds its own copy from the registry name once, and only media and vectors cross the process boundary.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

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


# -- process workers: one extractor per worker process, built by name ----------------------------------

_WORKER: Extractor | None = None


def _get(name: str, options: dict[str, Any]) -> Extractor:
    """This worker's extractor, built on first use (an initializer error would break the whole pool,
    while an error here reaches the caller as the task's exception)."""
    global _WORKER  # one per worker process: the process is the extractor's owner
    if _WORKER is None:
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


class ProcessExtractor:
    """A registry extractor living in ``workers`` spawned processes, with the Extractor interface.

    ``name``/``modality``/``dim`` are read from a worker at start (so loading errors surface here).
    Use :meth:`acall`/:meth:`abatch` from async code, and :meth:`close` (or ``with``) to stop the workers.
    """

    def __init__(self, name: str, workers: int = 1, **options: Any) -> None:
        ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
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


__all__ = ["ProcessExtractor", "batch_async", "extract_async"]
