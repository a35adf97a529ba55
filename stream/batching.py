"""Micro-batching of blocking work (model steps, feature extraction) across sessions, off the event loop.

Sessions submit one item each and await its result. A single worker task takes whatever is queued
(up to ``max_batch_size``), runs the batch function in a one-thread executor so capture and I/O never
stall, and resolves each caller's future. When a batch fails as a whole, its items are retried one by
one so that one bad item only fails its own caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

from .channel import Channel, ChannelClosed, FullPolicy

log = logging.getLogger(__name__)
In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """Collects items from many callers into batches for one blocking function.

    Args:
        name: queue/task name.
        fn: the blocking batch function; returns one output per input, in order.
        executor: where ``fn`` runs (one thread: the function owns its model).
        max_batch_size: largest batch.
        maxsize: queued items before ``submit`` blocks (back-pressure on the sessions).
        batch_wait_ms: after the first item, wait this long for more (0: only what is already queued).
    """

    def __init__(self, name: str, fn: Callable[[Sequence[In]], Sequence[Out]], executor: Executor, *,
                 max_batch_size: int, maxsize: int, batch_wait_ms: float = 0.0) -> None:
        self.name = name
        self._fn = fn
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.batch_wait_ms = batch_wait_ms
        self.queue: Channel[tuple[In, asyncio.Future[Out]]] = Channel(name, maxsize, FullPolicy.BLOCK)
        self.batches = 0
        self.items = 0

    async def submit(self, item: In) -> Out:
        fut: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        await self.queue.put((item, fut))
        return await fut

    async def run(self) -> None:
        """The worker loop; ends when the queue is closed and drained."""
        while True:
            try:
                batch = await self._next_batch()
            except ChannelClosed:
                return
            if batch:
                await self._run(batch)
                self.batches += 1
                self.items += len(batch)

    async def _next_batch(self) -> list[tuple[In, asyncio.Future[Out]]]:
        """Waits for one item, then takes what else is queued (up to ``max_batch_size``); drops cancelled callers."""
        batch = [await self.queue.get()]
        if self.batch_wait_ms > 0:
            await asyncio.sleep(self.batch_wait_ms / 1000.0)
        while len(batch) < self.max_batch_size:
            nxt = self.queue.get_nowait()
            if nxt is None:
                break
            batch.append(nxt)
        return [(x, f) for x, f in batch if not f.cancelled()]

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        """Runs one batch off the loop and resolves its callers; a failed batch is retried item by item."""
        loop = asyncio.get_running_loop()
        inputs = [x for x, _ in batch]
        try:
            outputs = await loop.run_in_executor(self._executor, self._fn, inputs)
            if len(outputs) != len(inputs):
                raise RuntimeError(f"{self.name}: batch function returned {len(outputs)} for {len(inputs)}")
        except Exception as exc:  # noqa: BLE001 - isolate the failing item(s)
            if len(batch) == 1:
                _set_exception(batch[0][1], exc)
                return
            log.debug("%s: batch of %d failed (%s); retrying one by one", self.name, len(batch), exc)
            for x, f in batch:
                try:
                    (out,) = await loop.run_in_executor(self._executor, self._fn, [x])
                except Exception as exc1:  # noqa: BLE001 - this item's own failure goes to its caller
                    _set_exception(f, exc1)
                else:
                    _set_result(f, out)
            return
        for (_, f), out in zip(batch, outputs, strict=True):
            _set_result(f, out)

    def close(self) -> None:
        self.queue.close()



def _set_result(fut: asyncio.Future[Out], result: Out) -> None:
    if not fut.done():  # the caller may have been cancelled meanwhile
        fut.set_result(result)


def _set_exception(fut: asyncio.Future[Out], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
