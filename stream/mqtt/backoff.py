"""The one retry policy of the project: exponential back-off with jitter and a cap."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Exponential back-off with jitter and a cap, for reconnect loops.

    The n-th consecutive failure waits a random time in ``[d/2, d]`` with
    ``d = min(max_s, initial_s * multiplier**n)`` ("equal jitter": never zero, so a broker that is down
    is not hammered, yet many clients restarted together spread out). :meth:`reset` after a success.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s or self.multiplier < 1:
            raise ValueError("Backoff needs 0 < initial_s <= max_s and multiplier >= 1")

    def next_delay(self) -> float:
        """The delay before the next attempt (and counts the failure)."""
        ceiling = min(self.max_s, self.initial_s * self.multiplier ** min(self.attempt, 64))
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
