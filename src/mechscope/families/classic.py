"""Classic architectures (GPT-Neo, OPT, Bloom, Falcon, CodeGen, MPT, ...), including those whose attention does not go through transformers' attention registry (ALiBi, custom ``_attn``): those get the treatment GPT-J got, never a reimplemented model."""

from __future__ import annotations

from dataclasses import replace  # noqa: F401

from .base import GPT2, LLAMA, Family  # noqa: F401

FAMILIES: tuple[Family, ...] = ()
EXCLUDED: dict[str, str] = {}
"""model_type → reason, for types of this table's kind that are deliberately not wrapped."""
