"""Tiny configs for ``mechscope.families.frontier``: model_type (or variant key) → overrides of ``families.COMMON``.

Multimodal types (a config with a ``text_config``) get COMMON and these overrides in their text config."""

CONFIGS: dict[str, dict] = {
    "gemma3": dict(sliding_window=4, query_pre_attn_scalar=16),
}
EAGER_ONLY: set[str] = set()
"""model types whose HF class refuses SDPA"""
VARIANTS: dict[str, str] = {}
"""variant key → model_type, for a second config of one model type (e.g. gpt_neox_sequential)."""
