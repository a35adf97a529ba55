"""A real mosquitto broker on loopback, for tests and benchmarks (never a mock: the tests run the real edge)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from stream.mqtt.settings import MqttSettings


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (the broker binds it a moment later)."""
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
    def settings(self) -> MqttSettings:
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
