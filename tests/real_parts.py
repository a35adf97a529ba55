"""Real parts the tests need (mosquitto, espeak-ng, openssl, installed packages): skip locally, fail in CI.

A skipped test proves nothing. On a developer machine without a system package a skip with the install hint
is convenient; with ``CI=true`` (set by CI services) the same absence fails the test, so a broken install
can never turn 64 tests into a green run.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

HINT = "scripts/install.sh installs it"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(what: str) -> None:
    """Skip (developer machine) or fail (``CI=true``) because ``what`` is absent."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: a missing real part fails instead of skipping)", pytrace=False)
    pytest.skip(what)


def require_binary(name: str, *fallbacks: str) -> str:
    """Path of the executable ``name`` (on PATH or at one of ``fallbacks``)."""
    found = shutil.which(name) or next((p for p in fallbacks if Path(p).exists()), None)
    if found is None:
        missing(f"{name} is not installed ({HINT})")
    return str(found)


def require_module(name: str) -> ModuleType:
    """``import name`` for a third-party dependency of the ``all``/``test`` extras."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"{name} is not importable ({e}; {HINT})")
        raise  # unreachable: missing() raises


def require_mosquitto() -> str:
    return require_binary("mosquitto", "/usr/sbin/mosquitto")
