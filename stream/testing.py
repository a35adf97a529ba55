"""Deprecated: moved to ``tests/support`` (test-only code does not ship in the package).

Kept only while importers the house branch may not edit still name it (tests/conftest.py,
benchmarks/soak.py, and the audio/model/evidence branches). Lead finishes after merge: point them at
``tests.support.broker`` / ``tests.support.checkpoints`` / ``tests.support.replay`` and delete this file
(tests/test_architecture.py lists it as an allowed stream -> tests import until then).
"""

from __future__ import annotations

from tests.support.broker import Mosquitto, free_loopback_port
from tests.support.checkpoints import make_tiny_checkpoint
from tests.support.replay import CollectSink, replay_events

__all__ = ["CollectSink", "Mosquitto", "free_loopback_port", "make_tiny_checkpoint", "replay_events"]
