"""Helpers for tests, benchmarks and bug reports: a real mosquitto on loopback, a tiny causal checkpoint.

The real model (``checkpoints/default``) is trained on MELD; plumbing tests and latency benchmarks need
only a causal PCGNet with the right interfaces, made here from a fixed seed in well under a second.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from .sinks.base import Sink, SinkFrame
from .sinks.jsonl import frame_json


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A mosquitto broker process on ``127.0.0.1:port``; ``kill()`` then ``start()`` simulates an outage.

    Args:
        workdir: where the config, the log and (with ``persistence``) the session store go.
        port: fixed port, or a free one.
        extra: more config lines (password file, ACL, TLS options; they follow the listener line).
        persistence: keep persistent sessions and queued QoS 1 messages on disk, saved on every change, so
            a persistent subscriber's session survives even a SIGKILL of the broker.
    """

    def __init__(self, workdir: str | Path, *, port: int | None = None, extra: str = "",
                 persistence: bool = False) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto is not installed (scripts/install.sh installs it)")
        self.exe = exe
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_loopback_port()
        lines = [
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            # As root, mosquitto drops to user 'mosquitto' and then cannot read files under pytest's 0700
            # tmp dirs (password file, ACL, certificates).
            "user root" if os.geteuid() == 0 else "",
            "log_dest stdout", "log_type error", "log_type warning",
            "max_queued_messages 100000",  # benchmarks burst thousands of QoS 1 events at one subscriber
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1",
                      "autosave_on_changes true"]
        else:
            lines.append("persistence false")
        if "allow_anonymous" not in extra:
            lines.append("allow_anonymous true")
        lines.append(extra)
        self.config = self.workdir / "mosquitto.conf"
        self.config.write_text("\n".join(x for x in lines if x) + "\n")
        self.log = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def settings(self) -> Any:
        from .mqtt.settings import MqttSettings

        return MqttSettings(host="127.0.0.1", port=self.port)

    def start(self) -> Mosquitto:
        """Starts (or restarts, on the same port) and waits until the port accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("mosquitto did not open its port within 10 s")
            time.sleep(0.01)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        try:
            self.kill(signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def make_tiny_checkpoint(path: str | Path, *, seed: int = 3, hidden: int = 16, n_speakers: int = 4,
                         window_utterances: int = 16, extractor: str = "minilm-l6", dim: int = 384,
                         persona: dict[str, Any] | None = None) -> Path:
    """Save a randomly initialised causal text-only PCGNet (MELD labels) to ``path``; returns the path."""
    import torch

    from pcgnet.checkpoint import save_checkpoint
    from pcgnet.config import MELD_LABELS, PCGNetConfig
    from pcgnet.model import PCGNet

    cfg = PCGNetConfig(labels=MELD_LABELS, modalities=("t",), dims={"t": dim}, n_speakers=n_speakers,
                       hidden=hidden, persona_heads=4, interactive_heads=4, causal=True,
                       window_utterances=window_utterances)
    torch.manual_seed(seed)
    model = PCGNet(cfg).eval()
    return save_checkpoint(path, model, extractors={"t": {"name": extractor, "dim": dim}},
                           persona=persona or {"source": "none"}, training={"note": "untrained, for tests"})


class CollectSink(Sink):
    """A sink that keeps every event object in memory (tests and bug reproductions)."""

    name = "collect"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    async def handle(self, frame: SinkFrame) -> None:
        self.events.append(frame_json(frame))


def replay_events(checkpoint: str | Path, folder: str | Path, *, speed: float = 0.0,
                  session_id: str | None = None) -> list[dict[str, Any]]:
    """Replay a recorded session folder through a fresh runtime; returns every event object, in order.

    The shortest reproduction of a live-analyzer bug: ``replay_events("checkpoints/default", "runs/x")``.
    """
    import asyncio

    from .analyzer import load_analyzer
    from .capture.replay import ReplaySource
    from .params import LiveParams
    from .runtime import Runtime
    from .sinks.base import SinkSet

    async def go() -> list[dict[str, Any]]:
        params = LiveParams()
        sink = CollectSink()
        rt = Runtime(load_analyzer(checkpoint, params), SinkSet([sink]), params)
        rt.add_source(ReplaySource(folder, speed=speed, session_id=session_id), finite=True)
        await rt.run()
        return list(sink.events)

    return asyncio.run(go())
