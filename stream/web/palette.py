"""Emotion colours shared by the live page (sent in its ``hello`` message), the report and its PNG."""

from __future__ import annotations

EMOTION_COLOURS: dict[str, str] = {
    "neutral": "#868e96",
    "happiness": "#2f9e44",
    "excitement": "#74b816",
    "surprise": "#f08c00",
    "fear": "#9c36b5",
    "anger": "#e03131",
    "frustration": "#e8590c",
    "disgust": "#5c7c0a",
    "sadness": "#1c7ed6",
}
OTHER_COLOUR = "#495057"
"""Colour of an expression name not listed (a checkpoint with other labels)."""


def colour_of(expression: str) -> str:
    return EMOTION_COLOURS.get(expression, OTHER_COLOUR)
