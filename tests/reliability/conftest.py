"""Fixtures of the reliability tests: a real mosquitto that a test can kill and restart on the same port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """A mosquitto process on a fixed loopback port; ``kill()`` + ``start()`` simulate an outage.

    Args:
        workdir: where the config, log and persistence files go.
        extra: extra config lines (auth, ACL, TLS listener options).
        persistence: keep sessions and queued QoS 1 messages on disk, saved on every change, so a
            persistent subscriber's session survives even a SIGKILL of the broker.
    """

    def __init__(self, workdir: Path, *, port: int | None = None, extra: str = "", persistence: bool = False,
                 listener_opts: str = "") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            listener_opts,
            # tests run as root: mosquitto would drop to user 'mosquitto' and then fail to read files
            # under pytest's 0700 tmp dirs (password file, ACL, certificates).
            "user root" if os.geteuid() == 0 else "",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1",
                      "autosave_on_changes true"]
        else:
            lines.append("persistence false")
        if "allow_anonymous" not in extra:
            lines.append("allow_anonymous true")
        lines.append(extra)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(x for x in lines if x) + "\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not _accepting(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not start listening")
            time.sleep(0.01)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[type[Broker]]:
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed (scripts/install.sh installs it)")
    made: list[Broker] = []

    class _Factory(Broker):
        def __init__(self, **kw: object) -> None:
            super().__init__(tmp_path / f"broker{len(made)}", **kw)  # type: ignore[arg-type]
            made.append(self)

    yield _Factory
    for b in made:
        b.kill(signal.SIGTERM)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path, name: str = "ca") -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=pcgnet test {name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    out = {"ca": d / f"{name}.crt"}
    for who in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout", f"{who}.key",
                 "-out", f"{who}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", f"{name}.crt", "-CAkey", f"{name}.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{who}.crt",
                 *(["-extfile", "san.ext"] if who == "server" else []), cwd=d)
        out[who + "_crt"] = d / f"{who}.crt"
        out[who + "_key"] = d / f"{who}.key"
    return out


def make_passwd(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file made with mosquitto_passwd (hashed, as in production)."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed")
    path.write_text("")
    for user, pw in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, pw], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def minilm_extractor():
    from extractors import registry

    return registry.create("minilm-l6")


@pytest.fixture
def runtime_factory(tiny_checkpoint: Path, minilm_extractor):
    """``runtime_factory(sinks, params=None)``: the real Runtime on the tiny checkpoint and MiniLM."""
    from stream.analyzer import load_analyzer
    from stream.params import LiveParams
    from stream.runtime import Runtime
    from stream.sinks.base import SinkSet

    def make(sinks, params=None, **kw):
        params = params or LiveParams(drain_timeout_s=3.0, cancel_timeout_s=2.0)
        analyzer = load_analyzer(tiny_checkpoint, params, extractors={"t": minilm_extractor})
        return Runtime(analyzer, SinkSet(sinks), params, **kw)

    return make
