"""Shared fixtures: a real mosquitto broker on a free loopback port, and a tiny causal checkpoint.

The broker runs with ``persistence false`` from a config written into the test's tmp dir, is started with
Popen, polled until its port accepts, and terminated (its own PID only) afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Set before torch is first imported: with OpenMP's default active waiting, 2-thread ops run 5-10x slower
# when the machine is loaded (CI, parallel jobs), because idle threads spin instead of yielding.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class MosquittoBroker:
    """A running mosquitto: ``url`` for the analyzer, ``port`` for plain clients."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_mosquitto(workdir: Path, extra: str = "") -> MosquittoBroker:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.skip("mosquitto is not installed (scripts/install.sh installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join([
        f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false", "log_dest stdout",
        "user root" if os.geteuid() == 0 else "", extra]) + "\n")
    log = workdir / "mosquitto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not _accepting(port):
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {log.read_text()[-1000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("mosquitto did not open its port")
        time.sleep(0.01)
    return MosquittoBroker(port, proc, log)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A fresh mosquitto (MQTT 5, anonymous, no persistence) on 127.0.0.1:<free port>."""
    broker = start_mosquitto(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic, untrained causal text-only PCGNet (minilm-l6 features, 4 speaker slots)."""
    from stream.testing import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")
