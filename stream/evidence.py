"""Does an utterance carry usable evidence for the checkpoint? No evidence, no emotion and no shift event.

A text-only model given an utterance without words (``--asr none``, a segment the recogniser left empty)
once stepped on an all-zero input and published emotions (confidence 0.15) and shifts ("neutral -> anger,
p=0.83") made of nothing. The analyzer asks :func:`has_evidence` first and skips such an utterance: no
event, no model step, so the speaker's previous expression stays what the shift rule compares against.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\w")


def usable_modalities(text: str | None, used: Sequence[str]) -> tuple[str, ...]:
    """The modalities among ``used`` (those the feature service filled for the checkpoint) that carry
    evidence: text only with at least one letter or digit (a lone "." from a recogniser is not words)."""
    return tuple(m for m in used if m != "t" or (text is not None and _WORD.search(text) is not None))


def has_evidence(text: str | None, used: Sequence[str]) -> bool:
    """True when at least one of the checkpoint's modalities has something to say about this utterance."""
    return bool(usable_modalities(text, used))
