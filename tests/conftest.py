from __future__ import annotations

import os
import tempfile
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
# the embedded default model trains once per test run, into a fresh folder, unless MECHSCOPE_CACHE is set
os.environ.setdefault("MECHSCOPE_CACHE", tempfile.mkdtemp(prefix="mechscope-test-cache-"))
sys.path.insert(0, str(Path(__file__).parent))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (real model assets); tests that need it skip cleanly when it is absent."""
    if not (SHARED / "models").is_dir():
        pytest.skip("../shared/models is not present")
    return SHARED


@pytest.fixture(scope="session")
def tinystories(shared):
    import mechscope

    path = shared / "models" / "TinyStories-656K"
    if not path.is_dir():
        pytest.skip("TinyStories-656K is not present in ../shared/models")
    return mechscope.load(path, attn_implementation="eager")
