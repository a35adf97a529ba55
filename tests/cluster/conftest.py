"""Fixtures of the cluster tests: a real mosquitto on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_parts import require_mosquitto
from tests.support.broker import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh mosquitto 2 broker (MQTT 5) on 127.0.0.1."""
    require_mosquitto()
    with Mosquitto(tmp_path / "mosquitto") as b:
        yield b
