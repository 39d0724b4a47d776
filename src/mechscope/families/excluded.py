"""Model types in transformers' causal-LM mapping that mechscope deliberately does not wrap, each with its reason.

``tests/test_family_coverage.py`` walks the mapping and fails on any type that is neither supported nor listed
here, so a new transformers release announces its new families in CI.
"""

from __future__ import annotations

EXCLUDED: dict[str, str] = {}
"""model_type → why it is not wrapped (encoder-only, encoder-decoder, no attention, ...)."""
