"""Fixtures of the live-runtime tests: one MiniLM shared by every in-process analyzer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream.params import LiveParams


@pytest.fixture(scope="session")
def minilm() -> Any:
    from extractors import registry

    return registry.create("minilm-l6")


@pytest.fixture
def make_runtime(tiny_checkpoint: Path, minilm: Any) -> Callable[..., Any]:
    """Build a Runtime on the tiny checkpoint: ``make_runtime(sinks, params=None, recorder_factory=None)``."""
    from stream.analyzer import load_analyzer
    from stream.runtime import Runtime
    from stream.sinks.base import SinkSet

    def make(sinks: list[Any], params: LiveParams | None = None, **kw: Any) -> Runtime:
        params = params or LiveParams(drain_timeout_s=3.0, cancel_timeout_s=2.0)
        analyzer = load_analyzer(tiny_checkpoint, params, extractors={"t": minilm})
        return Runtime(analyzer, SinkSet(sinks), params, **kw)
    return make
