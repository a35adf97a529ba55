"""``live.py --worker`` command line: help, and one-line errors (no traceback) for bad settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "live.py"), "--worker", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60)


def test_help_explains_the_worker() -> None:
    r = run("--help")
    assert r.returncode == 0
    assert "--worker-id" in r.stdout and "--mqtt" in r.stdout and "docs/deployment.md" in r.stdout
    assert "--nats" in r.stdout and "--member" in r.stdout and "JetStream" in r.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (("--checkpoint", "/nonexistent/ck"), "checkpoint /nonexistent/ck not found"),
    (("--mqtt", "mqtt://alice:s3cret@host:99999"), "bad MQTT URL"),  # refused before any model loads
    (("--worker-id", "a/b"), "bad worker id"),
    (("--member", "2/2"), "--member '2/2'"),
    (("--nats", "http://127.0.0.1:4222"), "bad NATS URL"),
])
def test_bad_settings_give_one_line(args: tuple[str, ...], expected: str) -> None:
    r = run(*args)
    assert r.returncode == 2
    assert expected in r.stderr
    assert "Traceback" not in r.stderr and "s3cret" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
