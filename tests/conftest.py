"""Shared fixtures: a real mosquitto broker on a free loopback port (tests/support), a tiny causal checkpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_parts import require_mosquitto
from tests.support.broker import Mosquitto

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Set before torch is first imported: with OpenMP's default active waiting, 2-thread ops run 5-10x slower
# when the machine is loaded (CI, parallel jobs), because idle threads spin instead of yielding.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu",
                     help="torch device of the tests that take the `device` fixture (scripts/gpu-check.sh: cuda)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """The ``--device`` option; asking for CUDA without a GPU is an error, never a silent CPU run."""
    name = str(request.config.getoption("--device"))
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.fail(f"--device {name}: torch sees no CUDA GPU", pytrace=False)
        # The tests compare paths to 1e-5; TF32 (cuDNN's default for the GRUs on Ampere and later) rounds
        # products to 10-bit mantissas, which is a precision setting, not what they check.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return name


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh mosquitto (MQTT 5, anonymous, no persistence) on 127.0.0.1:<free port>."""
    require_mosquitto()
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic, untrained causal text-only PCGNet (minilm-l6 features, 4 speaker slots)."""
    from tests.support.checkpoints import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")
