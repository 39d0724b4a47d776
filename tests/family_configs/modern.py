"""Tiny configs for ``mechscope.families.modern``: model_type (or variant key) → overrides of ``families.COMMON``."""

SWA = dict(sliding_window=4, layer_types=["sliding_attention", "full_attention"])
MLA = dict(head_dim=None, num_key_value_heads=4, q_lora_rank=24, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=12)
MULTIPLIERS = dict(embedding_multiplier=3.0, residual_multiplier=0.5, attention_multiplier=0.3, logits_scaling=2.0)

CONFIGS: dict[str, dict] = {
    "internlm3": {},
    "iquestcoder": {},
    "ernie4_5": dict(use_bias=True),
    "cwm": SWA,
    "ministral3": dict(rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=2.0,
                                            original_max_position_embeddings=32, llama_4_scaling_beta=0.1)),
    "hy_v3": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, mlp_layer_types=["dense", "sparse"]),
    "hunyuan_v1_dense": {},
    "glm": dict(partial_rotary_factor=0.5),
    "glm4": dict(partial_rotary_factor=0.5),
    "apertus": {},
    "granite": MULTIPLIERS,
    "hyperclovax": MULTIPLIERS,
    "bitnet": {},
    "inkling2_text": dict(swa_num_attention_heads=2, swa_num_key_value_heads=1, swa_head_dim=8, sliding_window_size=4,
                          d_rel=4, rel_extent=16, log_scaling_n_floor=4, num_hidden_layers=3,
                          layer_types=["hybrid_sliding", "hybrid", "hybrid_sliding"],
                          n_layers_per_attn_res_block=2, moe_intermediate_size=32, n_routed_experts=4,
                          num_experts_per_tok=2, unpadded_vocab_size=128),
    "nanochat": dict(final_logit_softcapping=15.0),
    "hy_v4": dict(MLA, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, index_topk=4,
                  index_head_dim=16, index_n_heads=2, hc_mult=2, mlp_layer_types=["dense", "sparse"]),
    "inkling_text": dict(swa_num_attention_heads=2, swa_num_key_value_heads=1, swa_head_dim=8, sliding_window_size=4,
                         d_rel=4, rel_extent=16, log_scaling_n_floor=4, layer_types=["hybrid_sliding", "hybrid"],
                         mlp_layer_types=["dense", "sparse"], moe_intermediate_size=32, n_routed_experts=4,
                         num_experts_per_tok=2, n_shared_experts=1),
    "axk2": dict(MLA, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, index_topk=4,
                 index_head_dim=16, index_n_heads=2, gated_norm_rank=4, mlp_layer_types=["dense", "sparse"]),
    "zaya": dict(num_experts=4, num_experts_per_tok=1, moe_intermediate_size=32, router_hidden_size=16),
    "beam": dict(SWA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_group=2, topk_group=1,
                 mlp_layer_types=["dense", "sparse"]),
    "doge": dict(keep_window_size=4),
    "doge_moe": dict(keep_window_size=4, is_moe=True, num_experts=16, num_experts_per_tok=2),
    "cohere_compass_text": dict(SWA, head_dim=None, logit_scale=0.5, rope_parameters={
        "sliding_attention": dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 3, 3]),
        "full_attention": None}),
    "youtu": MLA,
    "youtu_no_q_lora": dict(MLA, q_lora_rank=None, rope_interleave=False),
    "axk1": dict(MLA, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_group=2, topk_group=1,
                 mlp_layer_types=["dense", "sparse"]),
    "granite_swa": dict(MULTIPLIERS, **SWA, layer_rope_theta=[10000.0, 0]),
    "flint": dict(SWA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32,
                  mlp_only_layers=[0]),
    "vaultgemma": dict(SWA, attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
    "laguna": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, gating="per-head",
                   mlp_layer_types=["dense", "sparse"]),
    "mellum": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, mlp_layer_types=["dense", "sparse"]),
    "solar_open": dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
    "kolibri1": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32),
}
EAGER_ONLY: set[str] = {"vaultgemma", "flint", "granite_swa", "hy_v4", "inkling2_text"}
"""model types whose HF class refuses SDPA"""
VARIANTS: dict[str, str] = {"youtu_no_q_lora": "youtu", "doge_moe": "doge"}
"""variant key → model_type, for a second config of one model type (e.g. gpt_neox_sequential)."""
