"""Tiny configs for ``mechscope.families.modern``: model_type (or variant key) → overrides of ``families.COMMON``."""

CONFIGS: dict[str, dict] = {}
EAGER_ONLY: set[str] = set()
"""model types whose HF class refuses SDPA"""
VARIANTS: dict[str, str] = {}
"""variant key → model_type, for a second config of one model type (e.g. gpt_neox_sequential)."""
