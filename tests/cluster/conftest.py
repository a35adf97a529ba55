"""Fixtures of the cluster tests: a real mosquitto on a free loopback port."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh mosquitto 2 broker (MQTT 5) on 127.0.0.1."""
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed (scripts/install.sh installs it)")
    with Mosquitto(tmp_path / "mosquitto") as b:
        yield b
