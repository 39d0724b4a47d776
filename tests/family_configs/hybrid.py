"""Tiny configs for ``mechscope.families.hybrid``: model_type (or variant key) → overrides of ``families.COMMON``.

Each config has at least one block of every kind its model type mixes (attention, state-space / linear-attention /
convolution, dense MLP, MoE), with an attention block first so the KV-cache and gradient checks see a pattern early.
"""

CONFIGS: dict[str, dict] = {
    "lfm2": dict(layer_types=["full_attention", "conv"], conv_L_cache=3, block_auto_adjust_ff_dim=False),
}
EAGER_ONLY: set[str] = set()
"""model types whose HF class refuses SDPA"""
VARIANTS: dict[str, str] = {}
"""variant key → model_type, for a second config of one model type (e.g. gpt_neox_sequential)."""
