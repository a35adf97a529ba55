"""Incremental inference: one ``model.step`` per utterance, micro-batched across sessions with ``step_many``.

The model runs in one dedicated thread (``torch`` releases the GIL inside kernels, so the event loop
keeps capturing and publishing while a batch runs). Results are converted to plain numpy at this
boundary so nothing downstream touches torch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .batching import MicroBatcher
from .params import InferenceParams

if TYPE_CHECKING:
    from pcgnet.model import PCGNet
    from pcgnet.streaming import ConversationState, StepInput

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StepRequest:
    """One pending step of one session."""

    state: ConversationState
    features: Mapping[str, np.ndarray]
    speaker_slot: int
    persona: np.ndarray


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What one step produced, as numpy.

    Parameters:
        emotion_probs: (C,) class probabilities of this utterance.
        shift_probs: (C*C,) transition probabilities vs this speaker's previous utterance, or None.
        prev_index: conversation index of that previous utterance, or None.
        index: this utterance's conversation index.
        state: the session's new ConversationState.
    """

    emotion_probs: np.ndarray
    shift_probs: np.ndarray | None
    prev_index: int | None
    index: int
    state: ConversationState


def resolve_device_name(name: str) -> str:
    """"auto" -> "cuda" when a GPU is usable, else "cpu"; other names pass through."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class ModelStepper:
    """Steps the causal model for every session: owns the model, its thread and the step micro-batcher.

    Args:
        model: a causal PCGNet in eval mode (``load_checkpoint(...).model``).
        params: batching and device.
        maxsize: queued steps before sessions wait (back-pressure).
    """

    def __init__(self, model: PCGNet, params: InferenceParams, maxsize: int = 256) -> None:
        self.model = model
        self.params = params
        p = next(iter(model.parameters()), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-inference",
                                        initializer=self._init_thread)
        self.batcher: MicroBatcher[StepRequest, StepOutput] = MicroBatcher(
            "inference", self._run_batch, self._pool, max_batch_size=params.max_batch_size, maxsize=maxsize,
            batch_wait_ms=params.batch_wait_ms)

    def _init_thread(self) -> None:
        torch.set_num_threads(max(1, self.params.torch_threads))

    def init_state(self) -> ConversationState:
        return self.model.init_state()

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=self.device)

    def _run_batch(self, reqs: Sequence[StepRequest]) -> list[StepOutput]:
        items: list[StepInput] = [
            (r.state, {m: self._tensor(v) for m, v in r.features.items()}, int(r.speaker_slot), self._tensor(r.persona))
            for r in reqs]
        with torch.inference_mode():
            if len(items) == 1:
                outs = [self.model.step(*items[0])]
            else:
                outs = list(self.model.step_many(items))
        res: list[StepOutput] = []
        for result, state in outs:
            shift = result.shift_probs
            res.append(StepOutput(
                emotion_probs=result.emotion_probs.detach().float().cpu().numpy(),
                shift_probs=None if shift is None else shift.detach().float().cpu().numpy(),
                prev_index=None if result.prev_index is None else int(result.prev_index),
                index=int(result.index),
                state=state,
            ))
        return res

    async def step(self, req: StepRequest) -> StepOutput:
        return await self.batcher.submit(req)

    async def run(self) -> None:
        await self.batcher.run()

    def queue_depths(self) -> dict[str, int]:
        """Steps waiting for the model (the runtime's footer and benchmarks read this, not the batcher)."""
        return {"inference": len(self.batcher.queue)}

    @property
    def mean_batch_size(self) -> float:
        """Steps per model call so far (how well micro-batching works under the current load)."""
        return self.batcher.items / max(1, self.batcher.batches)

    def close(self) -> None:
        self.batcher.close()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

