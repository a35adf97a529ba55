"""The extractor contract: one utterance's media in, one fixed-size float32 vector out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


class ExtractorError(ValueError):
    """Input an extractor cannot turn into features (wrong rate, corrupt or empty media)."""


@dataclass(frozen=True)
class UtteranceMedia:
    """What one utterance carries into feature extraction.

    Parameters:
        text: the transcript, if known.
        audio: float32 mono samples in [-1, 1].
        sample_rate: samples per second of ``audio``.
        frames: BGR uint8 video frames seen during the utterance.
        speaker: who said it (context-aware text encoders mark which past lines are the same speaker's).
        context: the conversation's earlier utterances as ``(speaker, text)``, oldest first; only what
            came before (causal). Context-free extractors ignore it.
    """

    text: str | None = None
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    frames: tuple[np.ndarray, ...] = ()
    speaker: str | None = None
    context: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Feature:
    """A per-utterance vector, or an explicit "absent" (``valid=False``, zeros) when the modality has no signal."""

    vector: np.ndarray
    valid: bool = True


@runtime_checkable
class Extractor(Protocol):
    name: str
    modality: str  # "t", "a" or "v"
    dim: int

    def __call__(self, media: UtteranceMedia) -> Feature: ...

    def batch(self, media: Sequence[UtteranceMedia]) -> list[Feature]: ...


def default_cache_dir() -> Path:
    """Where packaged weights that are joined or unpacked once are kept (Whisper base, all-mpnet-base-v2):
    ``$PCGNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/pcgnet``, else ``~/.cache/pcgnet``."""
    env = os.environ.get("PCGNET_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pcgnet"
