"""The named real models (SmolLM2-135M, Gemma-3-270M) for tests: skipped cleanly when a package is absent, loaded
once per test session (the microscope's real-model tests read them without changing them)."""

from __future__ import annotations

import functools

import pytest

import mechscope
from mechscope.zoo import MODELS


@functools.cache
def _load(name: str) -> mechscope.Model:
    return mechscope.load(name)


def real_model(name: str) -> mechscope.Model:
    """``mechscope.load(name)``, shared across tests; skips the test when the model's package is not installed."""
    if not MODELS[name].installed():
        pytest.skip(f"{name} needs its package: {MODELS[name].pip}")
    return _load(name)
