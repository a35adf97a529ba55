"""Fixtures of the reliability tests: brokers a test can kill and restart, a throw-away PKI, password files."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real_parts import require_binary, require_mosquitto
from tests.support.broker import Mosquitto


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Makes (not starts) brokers that a test can kill and restart on the same port; all stopped at the end."""
    require_mosquitto()
    made: list[Mosquitto] = []

    def factory(**kw: Any) -> Mosquitto:
        made.append(Mosquitto(tmp_path / f"broker{len(made)}", **kw))
        return made[-1]

    yield factory
    for b in made:
        b.stop()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path, name: str = "ca") -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""
    require_binary("openssl")
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
    require_binary("mosquitto_passwd")
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
