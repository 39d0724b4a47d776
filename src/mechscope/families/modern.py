"""Newer dense decoder-only families whose attention goes through transformers' attention registry."""

from __future__ import annotations

from dataclasses import replace  # noqa: F401

from .base import GPT2, LLAMA, Family  # noqa: F401

FAMILIES: tuple[Family, ...] = ()
EXCLUDED: dict[str, str] = {}
"""model_type → reason, for types of this table's kind that are deliberately not wrapped."""
