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

DOTS3 = dict(  # block 0: indexed (DSA, top 4 keys) MLA, dense MLP; block 1: sliding MLA with 2 narrower heads, MoE
    num_key_value_heads=4, layer_types=["indexed_attention", "sliding_attention"], mlp_layer_types=["dense", "sparse"],
    n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_experts_intermediate_size=32,
    kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=12, head_dim=24,
    index_topk=4, index_head_dim=16, index_n_heads=2, sliding_window=4, swa_num_attention_heads=2,
    swa_num_key_value_heads=2, swa_q_lora_rank=16, swa_kv_lora_rank=16, swa_head_dim=24, swa_qk_nope_head_dim=16,
    swa_v_head_dim=8,
)

GEMMA3N = dict(  # 4 AltUp streams, LAuReL, per-layer inputs; block 0 has activation sparsity
    layer_types=["sliding_attention", "full_attention"], sliding_window=4, num_kv_shared_layers=0, laurel_rank=8,
    hidden_size_per_layer_input=8, vocab_size_per_layer_input=128, activation_sparsity_pattern=[0.95, 0.0],
)

QWEN4_EXP = dict(  # 2 hyper-connection streams; block 0: QSA-indexed attention; block 1: gated DeltaNet with PLE
    layer_types=["indexed_attention", "linear_attention"], hc_count=2, hc_lowrank=8, ple_layer_ids=[2], ple_embed_dim=16,
    ngram_vocab_size_base=1000, split_ngram_parts=4, heads_per_ngram=2, make_ngram_vocab_size_divisible_by=8,
    indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=16, indexer_budget=4, indexer_compress_ratio=2,
    num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32,
    linear_conv_kernel_dim=3, linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
    linear_num_value_heads=4,
)

CONFIGS: dict[str, dict] = {
    "gemma3": dict(sliding_window=4, query_pre_attn_scalar=16),
    "llama4_text": LLAMA4,
    "llama4": LLAMA4,
    "gemma3n_text": GEMMA3N,
    "gemma3n": dict(GEMMA3N, top_level=dict(audio_config=dict(
        hidden_size=16, conf_num_hidden_layers=1, conf_num_attention_heads=2, sscp_conv_channel_size=[8, 8]))),
    "gemma4_text": GEMMA4,
    "gemma4_text_shared_moe": GEMMA4_SHARED_MOE,
    "gemma4": GEMMA4,
    "gemma4_unified_text": GEMMA4_UNIFIED,
    "gemma4_unified": GEMMA4_UNIFIED,
    "minimax_m3_vl_text": MINIMAX_M3,
    "dots3_note_text": DOTS3,
    "dots3_note": dict(DOTS3, top_level=dict(vision_config=dict(adapter_out_dim=64), audio_config=dict(adapter_out_dim=64))),
    "qwen4_exp_text": QWEN4_EXP,
    "qwen4_exp": QWEN4_EXP,
    "qwen3_5_text": QWEN3_5,
    "qwen3_5": QWEN3_5,
    "qwen3_5_moe_text": QWEN3_5_MOE,
    "qwen3_5_moe": QWEN3_5_MOE,
}
EAGER_ONLY: set[str] = set()
"""model types whose HF class refuses SDPA"""
REQUIRES: dict[str, tuple[str, ...]] = {"gemma3n": ("timm", "PIL")}
"""config key → modules its HF class needs (Gemma 3n's wrapper builds a timm vision tower); skipped without them."""
VARIANTS: dict[str, str] = {"gemma4_text_shared_moe": "gemma4_text"}
"""variant key → model_type, for a second config of one model type (e.g. gpt_neox_sequential)."""
