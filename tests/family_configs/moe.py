"""Tiny configs for ``mechscope.families.moe``: model_type (or variant key) → overrides of ``families.COMMON``.

Two layers each; where a family mixes dense and MoE blocks, layer 0 is dense and layer 1 MoE so both kinds run.
"""

MLA = dict(num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
           v_head_dim=12, head_dim=None)
"""Multi-head Latent Attention: q/k heads 16 wide (8 non-rotary + 8 rotary), value heads 12 wide."""

CONFIGS: dict[str, dict] = {
    "aria_text": dict(moe_num_experts=4, moe_topk=2, moe_num_shared_experts=1),
    "olmoe": dict(num_experts=4, num_experts_per_tok=2),
    "flex_olmo": dict(num_experts=4, num_experts_per_tok=2),
    "phimoe": dict(num_local_experts=4, num_experts_per_tok=2),
    "minimax_m2": dict(num_local_experts=4, num_experts_per_tok=2),
    "dots1": dict(n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                  first_k_dense_replace=1),
    "ernie4_5_moe": dict(moe_num_experts=4, moe_k=2, moe_num_shared_experts=1, moe_intermediate_size=32,
                         moe_layer_start_index=1),
    "exaone_moe": dict(num_experts=4, num_experts_per_tok=2, num_shared_experts=1, moe_intermediate_size=32,
                       first_k_dense_replace=1, sliding_window=4),
    "glm4_moe": dict(n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                     first_k_dense_replace=1, use_qk_norm=True),
    "hunyuan_v1_moe": dict(num_experts=4, moe_topk=2, use_qk_norm=True),
    "cohere2_moe": dict(num_experts=4, num_experts_per_tok=2, sliding_window=4),
    "granitemoe": dict(num_local_experts=4, num_experts_per_tok=2, embedding_multiplier=2.0, residual_multiplier=0.5,
                       attention_multiplier=0.3, logits_scaling=3.0),
    "granitemoe_swa": dict(num_local_experts=4, num_experts_per_tok=2, embedding_multiplier=2.0,
                           residual_multiplier=0.5, attention_multiplier=0.3, logits_scaling=3.0, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"], layer_rope_theta=[10000.0, 0]),
    "granitemoeshared": dict(num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=32,
                             embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.3,
                             logits_scaling=3.0),
    "afmoe": dict(num_experts=4, num_experts_per_tok=2, num_shared_experts=1, moe_intermediate_size=32,
                  num_dense_layers=1, sliding_window=4, layer_types=["sliding_attention", "full_attention"]),
    "deepseek_v2": dict(MLA, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                        moe_intermediate_size=32, first_k_dense_replace=1),
    "deepseek_v3": dict(MLA, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                        moe_intermediate_size=32, first_k_dense_replace=1, n_group=2, topk_group=1),
    "glm4_moe_lite": dict(MLA, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                          moe_intermediate_size=32, mlp_layer_types=["dense", "sparse"]),
    "deepseek_v32": dict(MLA, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                         moe_intermediate_size=32, mlp_layer_types=["dense", "sparse"], n_group=2, topk_group=1,
                         index_topk=4, index_head_dim=16, index_n_heads=2),
    "glm_moe_dsa": dict(MLA, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                        moe_intermediate_size=32, mlp_layer_types=["dense", "sparse"], index_topk=4,
                        index_head_dim=16, index_n_heads=2, indexer_types=["full", "shared"]),
    "mimo_v2_flash": dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, v_head_dim=8,
                          sliding_window=4, layer_types=["full_attention", "sliding_attention"],
                          mlp_layer_types=["dense", "sparse"], attention_value_scale=0.7),
    "minicpm3": dict(MLA, scale_emb=2.0, scale_depth=1.4, dim_model_base=32),
    "dbrx": dict(d_model=64, n_heads=4, n_layers=2, max_seq_len=64,
                 attn_config={"kv_n_heads": 2, "clip_qkv": 0.5, "rope_theta": 10000.0},
                 ffn_config={"ffn_hidden_size": 32, "moe_num_experts": 4, "moe_top_k": 2}),
}
EAGER_ONLY: set[str] = {"mimo_v2_flash", "granitemoe_swa"}
"""model types whose HF class refuses SDPA"""
VARIANTS: dict[str, str] = {}
"""variant key → model_type, for a second config of one model type (e.g. gpt_neox_sequential)."""
