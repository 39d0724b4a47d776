"""Tiny configs for ``mechscope.families.frontier``: model_type (or variant key) → overrides of ``families.COMMON``.

Multimodal types (a config with a ``text_config``) get COMMON and these overrides in their text config."""

LLAMA4 = dict(  # layer 0: RoPE, chunked attention, dense MLP; layer 1: NoPE + temperature tuning, full attention, MoE
    intermediate_size=32, intermediate_size_mlp=96, num_local_experts=4, num_experts_per_tok=1,
    interleave_moe_layer_step=2, no_rope_layer_interval=2, attention_chunk_size=4, floor_scale=4,
)

QWEN3_5 = dict(  # attention block first, then a gated-DeltaNet block
    layer_types=["full_attention", "linear_attention"], linear_conv_kernel_dim=3, linear_key_head_dim=8,
    linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
)
QWEN3_5_MOE = dict(QWEN3_5, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                   shared_expert_intermediate_size=32)

CONFIGS: dict[str, dict] = {
    "gemma3": dict(sliding_window=4, query_pre_attn_scalar=16),
    "llama4_text": LLAMA4,
    "llama4": LLAMA4,
    "qwen3_5_text": QWEN3_5,
    "qwen3_5": QWEN3_5,
    "qwen3_5_moe_text": QWEN3_5_MOE,
    "qwen3_5_moe": QWEN3_5_MOE,
}
EAGER_ONLY: set[str] = set()
"""model types whose HF class refuses SDPA"""
VARIANTS: dict[str, str] = {}
"""variant key → model_type, for a second config of one model type (e.g. gpt_neox_sequential)."""
