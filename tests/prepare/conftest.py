"""Fixtures shared by the dataset-preparation tests: the model tests' one-thread fixture."""

from tests.pcgnet.conftest import _one_thread  # noqa: F401 - autouse fixture, re-used rather than copied
