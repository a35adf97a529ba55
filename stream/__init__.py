"""The live runtime: sources -> utterances -> features -> per-session state -> predictions -> sinks.

The main names are importable from here lazily (importing ``stream`` does not import torch):
``Analyzer``, ``load_analyzer``, ``Runtime``, ``Sink``, ``SinkSet``, ``LiveParams``, ``Utterance``,
``EventFrame``, ``ErrorFrame``. docs/live.md describes the architecture; docs/events.md the events.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Analyzer": "stream.analyzer", "load_analyzer": "stream.analyzer", "Runtime": "stream.runtime",
    "Sink": "stream.sinks.base", "SinkSet": "stream.sinks.base", "LiveParams": "stream.params",
    "Utterance": "stream.frames", "EventFrame": "stream.frames", "ErrorFrame": "stream.frames",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'stream' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)
