"""A bounded, closable channel with a named full-queue policy.

Python 3.11's ``asyncio.Queue`` has no ``shutdown()`` (3.13), so stopping a consumer cleanly needs a
channel that can be closed: ``close()`` wakes every waiter and ends ``async for`` once the queued
items are drained. Every link between stages is one of these, and each names what happens when it is
full, so memory stays bounded under overload (docs/live.md lists them).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class FullPolicy(enum.StrEnum):
    """What ``put`` does when the channel is full."""

    BLOCK = "block"  # back-pressure: the producer waits
    DROP_OLDEST = "drop_oldest"  # keep the freshest items (events to a slow sink)
    DROP_NEWEST = "drop_newest"  # keep what is queued (capture blocks when segmentation lags)


class ChannelClosed(Exception):
    """Put on a closed channel."""


class Channel(Generic[T]):
    """Bounded FIFO between two tasks.

    Args:
        name: shown in logs and the UI's queue-depth footer.
        maxsize: capacity (> 0).
        policy: what a put on a full channel does.
    """

    def __init__(self, name: str, maxsize: int, policy: FullPolicy = FullPolicy.BLOCK) -> None:
        assert maxsize > 0, "channels are bounded"
        self.name = name
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._closed = False
        self._changed = asyncio.Event()
        self._last_warning = -1e9

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _drop(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_warning >= 5.0:  # at most one line per 5 s, however fast items are dropped
            self._last_warning = now
            log.warning("queue %s is full (%d): %s, %d dropped so far", self.name, self.maxsize,
                        self.policy.value, self.dropped)

    def put_nowait(self, item: T) -> bool:
        """Add without waiting; returns False when the item was not queued (dropped, or full with BLOCK)."""
        if self._closed:
            raise ChannelClosed(self.name)
        if len(self._items) >= self.maxsize:
            if self.policy is FullPolicy.DROP_OLDEST:
                self._items.popleft()
                self._drop()
            else:
                if self.policy is FullPolicy.DROP_NEWEST:
                    self._drop()
                return False
        self._items.append(item)
        self._notify()
        return True

    async def put(self, item: T) -> None:
        """Add; with BLOCK waits for room, otherwise applies the drop policy."""
        while True:
            if self._closed:
                raise ChannelClosed(self.name)
            if self.policy is not FullPolicy.BLOCK or len(self._items) < self.maxsize:
                self.put_nowait(item)
                return
            await self._changed.wait()

    async def get(self) -> T:
        """Next item; raises ChannelClosed when closed and empty."""
        while True:
            if self._items:
                item = self._items.popleft()
                self._notify()
                return item
            if self._closed:
                raise ChannelClosed(self.name)
            await self._changed.wait()

    def get_nowait(self) -> T | None:
        if not self._items:
            return None
        item = self._items.popleft()
        self._notify()
        return item

    def close(self) -> None:
        """No more puts; consumers get what is queued, then the iteration ends."""
        self._closed = True
        self._notify()

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            try:
                yield await self.get()
            except ChannelClosed:
                return
