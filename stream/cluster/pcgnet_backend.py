"""The causal PCGNet behind the cluster's backend seam, through the live runtime's own Analyzer.

A worker processes utterances exactly as ``live.py`` does (:class:`stream.analyzer.Analyzer`: the
checkpoint's extractors, per-session :class:`~stream.session.SessionState`, micro-batched
``model.step_many``, the same event builder), so a conversation's events do not depend on whether one
process or a cluster analysed it. What this module adds is the snapshot: the model's
``ConversationState.to_tensors()`` as arrays plus ``SessionState.export()`` (speaker slots, personas,
last expressions) as JSON, tagged with the checkpoint's weight digest so a worker running another
model refuses to resume from it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.cluster.backend import Snapshot
from stream.frames import EventFrame
from stream.mqtt.inbound import InboundUtterance
from stream.mqtt.wire import to_utterance

if TYPE_CHECKING:
    import torch

    from stream.analyzer import Analyzer

__all__ = ["PCGNetBackend"]

log = logging.getLogger(__name__)

BACKEND_NAME = "pcgnet"  # written as "engine" in state blobs (wire format, unchanged)


class PCGNetBackend:
    """Conversations analysed by a causal PCGNet checkpoint (one model per worker process).

    Build with :meth:`from_checkpoint`.
    """

    name = BACKEND_NAME

    def __init__(self, analyzer: Analyzer, fingerprint: str, device: torch.device) -> None:
        self.analyzer = analyzer
        self.fingerprint = fingerprint
        self.device = device
        self._prev_end: dict[str, float] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, worker_id: str, device: str = "cpu") -> PCGNetBackend:
        """Loads the checkpoint and its extractors.

        Raises:
            ValueError: one line naming the checkpoint and the problem (missing, not causal, extractor
                mismatch, tampered weights).
        """
        import json

        import torch

        from pcgnet.checkpoint import CheckpointError
        from stream.analyzer import load_analyzer
        from stream.features import FeatureConfigError
        from stream.params import InferenceParams, LiveParams

        torch.set_num_threads(1)
        params = LiveParams(checkpoint=str(path), worker_id=worker_id, inference=InferenceParams(device=device))
        try:
            analyzer = load_analyzer(path, params)  # the same wiring as live.py: identical events
            meta = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
        except (CheckpointError, FeatureConfigError) as exc:
            raise ValueError(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}/config.json: {exc}") from None
        return cls(analyzer, str(meta.get("weights_sha256") or ""), analyzer.device)

    async def run(self) -> None:
        """The feature and inference micro-batchers (shared by all conversations of this worker)."""
        await self.analyzer.run(name_prefix="cluster.")

    async def open(self, session_id: str, snapshot: Snapshot | None) -> _PCGNetConversation:
        from pcgnet.streaming import ConversationState

        self.close(session_id)
        st = self.analyzer.session(session_id)
        prev_end = 0.0
        if snapshot is not None:
            meta = snapshot.meta
            if meta.get("engine") != BACKEND_NAME:
                raise ValueError(f"state of {session_id!r} was made by backend {meta.get('engine')!r}")
            if meta.get("weights_sha256") != self.fingerprint:
                raise ValueError(f"state of {session_id!r} was made by another checkpoint "
                                 f"(weights {str(meta.get('weights_sha256'))[:12]}, ours {self.fingerprint[:12]})")
            ints = meta.get("model_ints")
            if not isinstance(ints, dict):
                raise ValueError(f"state of {session_id!r} has no model_ints")
            try:
                import torch

                tensors: dict[str, Any] = {k: torch.from_numpy(np.array(v)).to(self.device)
                                           for k, v in snapshot.arrays.items()}
                st.model_state = ConversationState.from_tensors({**tensors, **ints})
                st.restore(meta["session"])
            except (KeyError, TypeError, ValueError) as exc:
                self.close(session_id)
                raise ValueError(f"state of {session_id!r}: {exc}") from None
            prev_end = float(meta.get("prev_end", 0.0))
        self._prev_end[session_id] = prev_end
        return _PCGNetConversation(self, session_id)

    def close(self, session_id: str) -> None:
        self.analyzer.close_session(session_id)
        self._prev_end.pop(session_id, None)


class _PCGNetConversation:
    def __init__(self, backend: PCGNetBackend, session: str) -> None:
        self.backend = backend
        self.session = session

    async def process(self, utterance: InboundUtterance, number: int) -> list[EventFrame]:
        # Missing times are derived from the conversation itself (not a wall clock), so every owner
        # of the conversation derives the same ones.
        frame = to_utterance(utterance, number=number, prev_end_s=self.backend._prev_end.get(self.session, 0.0),
                             ended_ns=time.monotonic_ns())
        frames = await self.backend.analyzer.process(frame)
        self.backend._prev_end[self.session] = frame.t_end
        return list(frames)

    async def snapshot(self) -> Snapshot:
        import torch

        st = self.backend.analyzer.session(self.session)
        arrays: dict[str, np.ndarray] = {}
        ints: dict[str, int] = {}
        for k, v in st.model_state.to_tensors().items():
            if isinstance(v, torch.Tensor):
                arrays[k] = v.detach().cpu().numpy()
            else:
                ints[k] = int(v)
        meta = {"engine": BACKEND_NAME, "weights_sha256": self.backend.fingerprint, "model_ints": ints,
                "session": st.export(), "prev_end": self.backend._prev_end.get(self.session, 0.0)}
        return Snapshot(arrays, meta)
