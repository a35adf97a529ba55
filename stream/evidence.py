"""Does an utterance carry usable evidence for the checkpoint? No evidence, no emotion and no shift event.

A text-only model given an utterance without words (``--asr none``, a segment the recogniser left empty)
once stepped on an all-zero input and published emotions (confidence 0.15) and shifts ("neutral -> anger,
p=0.83") made of nothing. The analyzer asks :func:`has_evidence` first and skips such an utterance: no
event, no model step, so the speaker's previous expression stays what the shift rule compares against.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence


def _has_content(text: str | None) -> bool:
    """A letter, digit or symbol (an emoji says something in a chat); punctuation and spaces alone do not."""
    return text is not None and any(unicodedata.category(ch)[0] in "LNS" for ch in text)


def usable_modalities(text: str | None, used: Sequence[str]) -> tuple[str, ...]:
    """The modalities among ``used`` (those the feature service filled for the checkpoint) that carry
    evidence: text only with a letter, digit or symbol (a lone "." from a recogniser is not words)."""
    return tuple(m for m in used if m != "t" or _has_content(text))


def has_evidence(text: str | None, used: Sequence[str]) -> bool:
    """True when at least one of the checkpoint's modalities has something to say about this utterance."""
    return bool(usable_modalities(text, used))
