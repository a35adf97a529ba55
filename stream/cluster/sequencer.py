"""Exactly-once, in-order admission of one conversation's inputs: pure logic, no I/O.

An input may arrive twice (once through the worker's own subscription and once through the shared
one; again when a publisher re-sends after a hand-off) and out of order (a re-sent input overtaking a
new one). The sequencer admits each input once and in ``seq`` order:

* ``seq`` comes from the publisher (MQTT 5 user property ``seq``: 0, 1, 2, ... per conversation). Inputs
  below ``next_seq`` are duplicates; inputs above it wait in a bounded reorder buffer until the gap is
  filled, or until ``gap_timeout_s`` passes (then the gap is skipped, logged and counted: a publisher
  that does not re-send must not stall the conversation forever).
* Without ``seq`` the sequencer numbers inputs in arrival order and drops duplicates by key (the
  ``utterance_id``, else a digest of the payload) among the last ``recent_keys`` inputs.

``next_seq`` and the recent keys travel in the state blob, so a new owner continues the same numbering.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

__all__ = ["Offer", "Sequencer"]

T = TypeVar("T")
Offer = Literal["accepted", "duplicate", "overflow"]


@dataclass
class _Pending(Generic[T]):
    key: str
    item: T
    since: float = field(default=0.0)


class Sequencer(Generic[T]):
    """In-order, de-duplicated admission for one conversation.

    Args:
        next_seq: The first sequence number not yet processed.
        recent: Keys of recently processed inputs (oldest first).
        max_pending: Bound of the reorder buffer; beyond it new inputs are refused (``"overflow"``),
            which is safe because an unacknowledged input is re-sent by its publisher.
        recent_keys: How many processed keys are remembered for de-duplication.
        gap_timeout_s: How long a gap may hold back later inputs.
        clock: Monotonic clock in seconds.
    """

    def __init__(self, next_seq: int = 0, recent: Iterable[str] = (), *, max_pending: int = 256,
                 recent_keys: int = 256, gap_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.next_seq = next_seq
        self._recent: deque[str] = deque(recent, maxlen=recent_keys)
        self._recent_set = set(self._recent)
        self._pending: dict[int, _Pending[T]] = {}
        self.max_pending = max_pending
        self.gap_timeout_s = gap_timeout_s
        self._clock = clock
        self.duplicates = 0
        self.skipped = 0
        self._gap_since: float | None = None

    def offer(self, seq: int | None, key: str, item: T) -> Offer:
        """Admits an input into the reorder buffer, or says why not."""
        if key in self._recent_set or any(p.key == key for p in self._pending.values()):
            self.duplicates += 1
            return "duplicate"
        if seq is None:
            seq = max([self.next_seq - 1, *self._pending]) + 1
        if seq < self.next_seq or seq in self._pending:
            self.duplicates += 1
            return "duplicate"
        if len(self._pending) >= self.max_pending:
            return "overflow"
        self._pending[seq] = _Pending(key, item, self._clock())
        return "accepted"

    def ready(self) -> list[tuple[int, str, T]]:
        """Inputs that may be processed now, in order (not yet marked done)."""
        out = []
        seq = self.next_seq
        while seq in self._pending:
            p = self._pending[seq]
            out.append((seq, p.key, p.item))
            seq += 1
        if out or not self._pending:
            self._gap_since = None
        elif self._gap_since is None:
            self._gap_since = self._clock()
        return out

    def done(self, seq: int, key: str) -> None:
        """Marks ``seq`` processed (must be ``next_seq``)."""
        if seq != self.next_seq:
            raise ValueError(f"done({seq}) out of order: next_seq is {self.next_seq}")
        self._pending.pop(seq, None)
        self.next_seq = seq + 1
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(key)
        self._recent_set.add(key)

    def skip_gap(self, *, force: bool = False) -> int:
        """Skips a gap older than ``gap_timeout_s`` (or any gap when ``force``); returns inputs skipped."""
        if not self._pending or self.next_seq in self._pending:
            return 0
        if not force and (self._gap_since is None or self._clock() - self._gap_since < self.gap_timeout_s):
            return 0
        first = min(self._pending)
        skipped = first - self.next_seq
        self.next_seq = first
        self.skipped += skipped
        self._gap_since = None
        return skipped

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_items(self) -> list[T]:
        return [self._pending[s].item for s in sorted(self._pending)]

    def has_gap(self) -> bool:
        return bool(self._pending) and self.next_seq not in self._pending

    def to_meta(self) -> dict[str, Any]:
        """What goes into the state blob's header."""
        return {"next_seq": self.next_seq, "recent": list(self._recent)}

    @staticmethod
    def from_meta(meta: dict[str, Any]) -> tuple[int, list[str]]:
        next_seq = meta.get("next_seq", 0)
        recent = meta.get("recent", [])
        if not isinstance(next_seq, int) or isinstance(next_seq, bool) or next_seq < 0:
            raise ValueError(f"state header: next_seq must be an int >= 0, got {next_seq!r}")
        if not isinstance(recent, list) or not all(isinstance(k, str) for k in recent):
            raise ValueError("state header: recent must be a list of strings")
        return next_seq, recent
