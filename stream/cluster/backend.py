"""The seam between the cluster layer and whatever analyses a conversation (its backend).

The cluster layer only moves conversations between workers; it needs three things from a backend:
open a conversation (fresh, or from a snapshot), process one validated utterance into events, and
snapshot the conversation as arrays + JSON. ``stream.cluster.pcgnet_backend`` plugs in the causal
PCGNet; the tests plug in a small deterministic recurrent model (``tests/support/toy_backend.py``) so the
coordination can be tested in seconds without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream.frames import EventFrame
from stream.mqtt.inbound import InboundUtterance

__all__ = ["Conversation", "ConversationBackend", "Snapshot"]


@dataclass
class Snapshot:
    """A conversation's resumable state: arrays (saved as safetensors) and small JSON metadata."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # JSON values; "engine" names the backend (wire key)


class Conversation(Protocol):
    """One conversation's analysis state inside a backend. Calls for one conversation never overlap."""

    async def process(self, utterance: InboundUtterance, number: int) -> list[EventFrame]:
        """Steps the conversation by its ``number``-th (1-based) input; returns its events (emotion first).

        The utterance id and missing times come from :func:`stream.mqtt.wire.to_utterance`, as in ``live.py``.
        """
        ...

    async def snapshot(self) -> Snapshot:
        """Everything the next step depends on, so another process can resume exactly here."""
        ...


class ConversationBackend(Protocol):
    """Creates conversations; one backend per worker process (it holds the model).

    Events it makes carry the worker id it was built with.
    """

    name: str

    async def run(self) -> None:
        """Background work (micro-batchers) for the worker's lifetime; returns when cancelled."""
        ...

    async def open(self, session_id: str, snapshot: Snapshot | None) -> Conversation:
        """A new conversation (``snapshot`` is None) or one resumed from a snapshot.

        Raises:
            ValueError: the snapshot does not belong to this backend (wrong name/shape); one line.
        """
        ...

    def close(self, session_id: str) -> None:
        """Forgets a conversation this worker no longer owns."""
        ...
