"""The newest generations (Gemma 3n/4, Qwen 3.5/4, Llama 4, dots3, MiniMax-M3 text) and the text models inside their multimodal wrappers."""

from __future__ import annotations

from dataclasses import replace  # noqa: F401

from .base import GPT2, LLAMA, Family  # noqa: F401

FAMILIES: tuple[Family, ...] = ()
EXCLUDED: dict[str, str] = {}
"""model_type → reason, for types of this table's kind that are deliberately not wrapped."""
