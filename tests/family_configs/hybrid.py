"""Tiny configs for ``mechscope.families.hybrid``: model_type (or variant key) → overrides of ``families.COMMON``.

Each config has at least one block of every kind its model type mixes (attention, state-space / linear-attention /
convolution, dense MLP, MoE), with an attention block first so the KV-cache and gradient checks see a pattern early.
"""

CONFIGS: dict[str, dict] = {
    "lfm2": dict(layer_types=["full_attention", "conv"], conv_L_cache=3, block_auto_adjust_ff_dim=False),
    "lfm2_moe": dict(layer_types=["full_attention", "conv"], conv_L_cache=3, num_dense_layers=1, num_experts=4,
                     num_experts_per_tok=2, moe_intermediate_size=32),
    "lfm3": dict(layer_types=["sliding_attention", "conv", "full_attention"], num_hidden_layers=3, conv_L_cache=3,
                 sliding_window=4),
    "lfm3_no_sandwich": dict(layer_types=["full_attention", "conv"], conv_L_cache=3, use_sandwich_norm=False,
                             use_attention_gate=False),
    "bamba": dict(attn_layer_indices=[0], mamba_n_heads=8, mamba_d_state=16, mamba_chunk_size=8),
    "jamba": dict(attn_layer_period=2, attn_layer_offset=0, expert_layer_period=2, expert_layer_offset=1,
                  num_experts=4),
    "granitemoehybrid": dict(layer_types=["full_attention", "linear_attention"], num_local_experts=4,
                             num_experts_per_tok=2, shared_intermediate_size=32, mamba_n_heads=8, mamba_d_state=16,
                             mamba_chunk_size=8, position_embedding_type="rope", embedding_multiplier=2.0,
                             residual_multiplier=0.5, attention_multiplier=0.2, logits_scaling=2.0),
    "falcon_h1": dict(mamba_d_ssm=64, mamba_n_heads=8, mamba_d_state=16, mamba_chunk_size=8, embedding_multiplier=2.0,
                      attention_in_multiplier=0.5, attention_out_multiplier=0.7, ssm_out_multiplier=0.6,
                      key_multiplier=0.8, lm_head_multiplier=0.5, mlp_multipliers=[0.9, 1.1]),
    "minimax": dict(layer_types=["full_attention", "linear_attention"], num_local_experts=4, num_experts_per_tok=2,
                    block_size=4, full_attn_alpha_factor=0.8, full_attn_beta_factor=1.2, linear_attn_alpha_factor=0.9,
                    linear_attn_beta_factor=1.1, mlp_alpha_factor=0.7, mlp_beta_factor=1.3),
    "olmo_hybrid": dict(layer_types=["full_attention", "linear_attention"], linear_num_key_heads=2,
                        linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16),
    "bailing_hybrid": dict(layer_types=["full_attention", "linear_attention"], mlp_layer_types=["dense", "sparse"],
                           num_key_value_heads=4, kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=16,
                           v_head_dim=16, num_local_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                           n_group=1, topk_group=1, first_k_dense_replace=1),
    "kimi_linear": dict(layer_types=["full_attention", "linear_attention"], mlp_layer_types=["dense", "sparse"],
                        num_key_value_heads=4, kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=16,
                        v_head_dim=16, num_local_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                        linear_head_dim=16, linear_num_heads=4),
    "recurrent_gemma": dict(block_types=["attention", "recurrent"], lru_width=64, attention_window_size=4,
                            num_key_value_heads=1),
    "zamba": dict(layers_block_type=["hybrid", "mamba"], n_mamba_heads=2, mamba_d_state=16,
                  num_key_value_heads=4, head_dim=None),
    "zamba2": dict(layers_block_type=["hybrid", "mamba"], n_mamba_heads=8, mamba_d_state=16, chunk_size=8,
                   use_mem_rope=True, head_dim=None),
    "zamba2_adapter": dict(layers_block_type=["hybrid", "mamba", "hybrid"], num_hidden_layers=3, n_mamba_heads=8,
                           mamba_d_state=16, chunk_size=8, num_mem_blocks=2, use_shared_attention_adapter=True,
                           adapter_rank=8, num_key_value_heads=4, head_dim=None),
    "nemotron_h": dict(layers_block_type=["full_attention", "linear_attention", "mlp", "moe"], num_hidden_layers=4,
                       ssm_state_size=16, mamba_num_heads=8, mamba_head_dim=16, n_groups=2, chunk_size=8,
                       n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                       moe_shared_expert_intermediate_size=32),
    "qwen3_next": dict(layer_types=["full_attention", "linear_attention"], linear_num_key_heads=2,
                       linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16, num_experts=4,
                       num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32),
}
EAGER_ONLY: set[str] = set()
"""model types whose HF class refuses SDPA"""
VARIANTS: dict[str, str] = {"lfm3_no_sandwich": "lfm3", "zamba2_adapter": "zamba2"}
"""variant key → model_type, for a second config of one model type (e.g. gpt_neox_sequential)."""
