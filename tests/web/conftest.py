"""Fixtures of the dashboard tests: Debian's chromium driven by playwright, and ``live.py --web`` runs.

With CI=true a missing chromium or playwright fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def _missing(what: str) -> None:
    msg = f"{what} (scripts/install.sh test installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def docs_image(name: str, tmp_path: Path) -> Path:
    """Where a screenshot goes: docs/img/ when PCGNET_WRITE_DOCS_IMG=1 (then commit it), else tmp_path."""
    if os.environ.get("PCGNET_WRITE_DOCS_IMG") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        return ROOT / "docs" / "img" / name
    return tmp_path / name


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian chromium (never a downloaded browser: `playwright install` is not used)."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        _missing("Debian's chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


class LiveRun:
    """``live.py ... --no-tui --web 127.0.0.1:0`` in a subprocess; ``url`` once it listens."""

    def __init__(self, *args: str, web: str = "127.0.0.1:0", env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT),
                        **(env or {}))
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "live.py"), *args, "--no-tui", "--web", web],
                                     cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float = 90.0) -> str:
        """The first stderr line containing ``text``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.stderr):
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"live.py never printed {text!r}; stderr:\n" + "\n".join(self.stderr))

    @property
    def url(self) -> str:
        return self.wait_for("dashboard at").split("dashboard at ", 1)[1].split()[0]

    def wait(self, timeout_s: float) -> int:
        """The exit status of a run that ends by itself, once all its stderr is read."""
        rc = self.proc.wait(timeout_s)
        self._reader.join(5)
        return rc

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGINT (what Ctrl-C sends) and the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def poll_count(locator: Any, at_least: int, timeout_s: float = 60.0) -> int:
    """Wait until ``locator`` matches at least ``at_least`` elements (the page's CSP forbids the eval that
    playwright's wait_for_function needs)."""
    deadline = time.monotonic() + timeout_s
    while (n := locator.count()) < at_least:
        assert time.monotonic() < deadline, f"only {n} of {at_least} elements after {timeout_s} s"
        time.sleep(0.05)
    return n
