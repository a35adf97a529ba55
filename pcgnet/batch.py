"""The seam between datasets and the model: one padded batch of dialogues, batch-first."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DialogueBatch:
    """A batch of B dialogues padded to T utterances.

    Parameters:
        features: modality ("t", "a", "v") -> (B, T, D_m) float32. Text is already the mean of the four
            RoBERTa layers when read from the paper's pickles.
        speakers: (B, T) long, the speaker slot of each utterance (argmax of the paper's qmask); -1 on padding.
        mask: (B, T) bool, True on real utterances.
        persona: (B, T, 5) float32 per-utterance persona vectors.
        labels: (B, T) long emotion labels; -1 on padding and on unlabelled utterances.
        dialogue_ids: one id per dialogue, in batch order.
    """

    features: dict[str, Tensor]
    speakers: Tensor
    mask: Tensor
    persona: Tensor
    labels: Tensor
    dialogue_ids: list

    @property
    def lengths(self) -> Tensor:
        return self.mask.sum(1)

    def to(self, device: torch.device | str) -> DialogueBatch:
        return DialogueBatch(
            {m: x.to(device) for m, x in self.features.items()},
            self.speakers.to(device), self.mask.to(device), self.persona.to(device),
            self.labels.to(device), self.dialogue_ids,
        )
