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

GEMMA4 = dict(  # sliding block with 2 kv heads of 16, full block with 1 kv head of 32 and k == v; per-layer inputs
    layer_types=["sliding_attention", "full_attention"], sliding_window=4, global_head_dim=32,
    num_global_key_value_heads=1, attention_k_eq_v=True, hidden_size_per_layer_input=8, vocab_size_per_layer_input=128,
)
GEMMA4_UNIFIED = {k: v for k, v in GEMMA4.items() if "per_layer" not in k}  # no per-layer inputs
GEMMA4_SHARED_MOE = dict(  # blocks 2-3 reuse the KV of blocks 0-1, with double-wide MLPs; dense MLP + experts
    GEMMA4, num_hidden_layers=4, layer_types=["sliding_attention", "full_attention"] * 2, num_kv_shared_layers=2,
    use_double_wide_mlp=True, enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=32,
    attention_k_eq_v=False,
)

MINIMAX_M3 = dict(  # block 0: sparse attention (blocks of 2 keys, top 2), dense MLP; block 1: full attention, MoE
    layer_types=["minimax_m3_sparse", "full_attention"], mlp_layer_types=["dense", "sparse"], num_local_experts=4,
    num_experts_per_tok=2, dense_intermediate_size=96, shared_intermediate_size=32, intermediate_size=32,
    rotary_dim=8, index_n_heads=2, index_head_dim=8, index_block_size=2, index_topk_blocks=2,
)

CONFIGS: dict[str, dict] = {
    "gemma3": dict(sliding_window=4, query_pre_attn_scalar=16),
    "llama4_text": LLAMA4,
    "llama4": LLAMA4,
    "gemma4_text": GEMMA4,
    "gemma4_text_shared_moe": GEMMA4_SHARED_MOE,
    "gemma4": GEMMA4,
    "gemma4_unified_text": GEMMA4_UNIFIED,
    "gemma4_unified": GEMMA4_UNIFIED,
    "minimax_m3_vl_text": MINIMAX_M3,
    "qwen3_5_text": QWEN3_5,
    "qwen3_5": QWEN3_5,
    "qwen3_5_moe_text": QWEN3_5_MOE,
    "qwen3_5_moe": QWEN3_5_MOE,
}
EAGER_ONLY: set[str] = set()
"""model types whose HF class refuses SDPA"""
VARIANTS: dict[str, str] = {"gemma4_text_shared_moe": "gemma4_text"}
"""variant key → model_type, for a second config of one model type (e.g. gpt_neox_sequential)."""
