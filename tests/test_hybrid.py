"""Hybrid attention/state-space models: which blocks have which points, and that the points mean what they say.

The exactness suite (``test_exactness.py``) already proves every hybrid config bit-equal to HF; these tests check
the per-block structure (``cfg.attn_layers``, ``hook_mixer_out``) and the residual arithmetic each family's notes
promise, bit for bit, on the same tiny configs.
"""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from mechscope.errors import HookNameError

IDS = torch.randint(3, 128, (2, 10), generator=torch.Generator().manual_seed(3))


def _model(key: str) -> mechscope.Model:
    return mechscope.Model.from_hf(make_pair(key, torch.float32)[0])


def _mixer_layers(model) -> list[int]:
    return [l for l in range(model.cfg.n_layers) if f"blocks.{l}.hook_mixer_out" in model.hook_dict]


@pytest.mark.parametrize("key", ["lfm2", "bamba", "jamba", "qwen3_next", "olmo_hybrid", "kimi_linear",
                                 "recurrent_gemma", "granitemoehybrid"])
def test_every_block_is_attention_or_mixer(key):
    model = _model(key)
    mixers = _mixer_layers(model)
    assert model.cfg.attn_layers and mixers
    assert sorted(model.cfg.attn_layers + tuple(mixers)) == list(range(model.cfg.n_layers))
    for l in mixers:
        with pytest.raises(HookNameError, match="no softmax attention"):
            model.run_with_hooks(IDS, fwd_hooks=[(f"blocks.{l}.attn.hook_pattern", lambda a, h: None)])


@pytest.mark.parametrize("key", ["lfm2", "bamba", "jamba", "qwen3_next", "kimi_linear", "recurrent_gemma",
                                 "bailing_hybrid"])
def test_resid_mid_is_resid_pre_plus_mixer_or_attention(key):
    model = _model(key)
    _, cache = model.run_with_cache(IDS)
    for l in range(model.cfg.n_layers):
        out = cache[f"blocks.{l}.hook_mixer_out"] if f"blocks.{l}.hook_mixer_out" in cache else cache["attn_out", l]
        assert torch.equal(cache["resid_mid", l], cache["resid_pre", l] + out)


def test_zeroing_the_mixer_removes_its_contribution():
    model = _model("bamba")
    (l,) = _mixer_layers(model)
    with model.hooks(fwd_hooks=[(f"blocks.{l}.hook_mixer_out", lambda a, h: torch.zeros_like(a))]):
        _, cache = model.run_with_cache(IDS, names_filter=lambda n: n.startswith(f"blocks.{l}.hook_resid"))
    assert torch.equal(cache["resid_mid", l], cache["resid_pre", l])


def test_nemotron_h_blocks_add_one_mixer_each():
    model = _model("nemotron_h")
    _, cache = model.run_with_cache(IDS)
    kinds = []
    for l in range(model.cfg.n_layers):
        (point,) = [p for p in ("hook_attn_out", "hook_mixer_out", "hook_mlp_out") if f"blocks.{l}.{p}" in cache]
        kinds.append(point)
        assert f"blocks.{l}.hook_resid_mid" not in cache
        assert torch.equal(cache["resid_post", l], cache["resid_pre", l] + cache[f"blocks.{l}.{point}"])
    assert kinds == ["hook_attn_out", "hook_mixer_out", "hook_mlp_out", "hook_mlp_out"]  # config.layer_types


def test_falcon_h1_multipliers_are_where_the_notes_say():
    model = _model("falcon_h1")
    c = model.hf_model.config
    _, cache = model.run_with_cache(IDS)
    assert torch.equal(cache["resid_pre", 0], cache["embed"] * c.embedding_multiplier)
    for l in range(model.cfg.n_layers):
        added = (cache[f"blocks.{l}.hook_mixer_out"] * c.ssm_out_multiplier
                 + cache["attn_out", l] * c.attention_out_multiplier)
        assert torch.equal(cache["resid_mid", l], cache["resid_pre", l] + added)
        assert torch.equal(cache["resid_post", l], cache["resid_mid", l] + cache["mlp_out", l])


def test_minimax_post_norm_residual_and_resid_mid_replacement():
    model = _model("minimax")
    c = model.hf_model.config
    alpha = {"full_attention": c.full_attn_alpha_factor, "linear_attention": c.linear_attn_alpha_factor}
    beta = {"full_attention": c.full_attn_beta_factor, "linear_attention": c.linear_attn_beta_factor}
    _, cache = model.run_with_cache(IDS)
    for l, kind in enumerate(c.layer_types):
        out = cache[f"blocks.{l}.hook_mixer_out"] if kind == "linear_attention" else cache["attn_out", l]
        assert torch.equal(cache["resid_mid", l], cache[f"blocks.{l}.ln1.hook_out"] * alpha[kind] + out * beta[kind])
    # the skip branch is ln2's output, so a replaced resid_mid reaches the residual through ln2 only (no fix-up)
    new = torch.randn(cache["resid_mid", 0].shape, generator=torch.Generator().manual_seed(0))
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_mid", lambda a, h: new)]):
        _, patched = model.run_with_cache(IDS, names_filter=lambda n: n.startswith("blocks.0."))
    expected = patched["blocks.0.ln2.hook_out"] * c.mlp_alpha_factor + patched["mlp_out", 0] * c.mlp_beta_factor
    assert torch.equal(patched["resid_post", 0], expected)


def test_zamba_attention_feeds_the_mamba_input_not_the_residual():
    model = _model("zamba")
    assert model.cfg.attn_layers == (0,)
    names = model.hook_names()
    assert "blocks.0.attn.hook_pattern" in names and "blocks.0.hook_attn_out" not in names
    _, cache = model.run_with_cache(IDS)
    for l in range(model.cfg.n_layers):
        assert torch.equal(cache["resid_post", l], cache["resid_pre", l] + cache[f"blocks.{l}.hook_mixer_out"])


def test_latent_attention_has_no_k_v_and_its_own_value_width():
    model = _model("bailing_hybrid")
    c = model.hf_model.config
    assert (model.cfg.d_head, model.cfg.d_head_v) == (c.qk_nope_head_dim + c.qk_rope_head_dim, c.v_head_dim)
    _, cache = model.run_with_cache(IDS)
    assert "blocks.0.attn.hook_k" not in cache and "blocks.0.attn.hook_v" not in cache
    assert cache["z", 0].shape == (2, 10, model.cfg.n_heads, c.v_head_dim)
    assert cache["rot_k", 0].shape == (2, 10, model.cfg.n_kv_heads, model.cfg.d_head)
    with pytest.raises(AttributeError, match="attention only in blocks"):
        model.W_Q


def test_gated_query_is_the_query_half():
    """Qwen3-Next's q_proj emits [query | gate] per head; hook_q and W_Q take the query half."""
    from families import make_config
    from transformers import AutoModelForCausalLM

    cfg = make_config("qwen3_next")
    cfg.layer_types = ["full_attention"] * cfg.num_hidden_layers  # every block attention, so W_Q stacks
    torch.manual_seed(0)
    model = mechscope.Model.from_hf(AutoModelForCausalLM.from_config(cfg).eval())
    _, cache = model.run_with_cache(IDS, names_filter=lambda n: n.startswith("blocks.0.") and "hook_q" in n
                                    or n == "blocks.0.ln1.hook_out")
    h, dh = model.cfg.n_heads, model.cfg.d_head
    raw = model.blocks[0].self_attn.q_proj(cache["blocks.0.ln1.hook_out"]).unflatten(-1, (h, 2 * dh))
    assert torch.equal(cache["q", 0], raw[..., :dh])
    w_q = model.W_Q[0]  # (head, d_model, d_head)
    torch.testing.assert_close(torch.einsum("bpm,hmd->bphd", cache["blocks.0.ln1.hook_out"], w_q), cache["q", 0])


def test_hybrid_weight_views_raise_a_clear_error():
    model = _model("lfm2")
    with pytest.raises(AttributeError, match=r"attention only in blocks \[0\]"):
        model.W_O
    assert model.W_E.shape == (128, 64) and model.W_in.shape[0] == model.cfg.n_layers  # every block has an MLP


def test_head_detectors_leave_mixer_blocks_empty():
    from mechscope.detectors import head_scores

    model = _model("lfm2")
    scores = head_scores(model, IDS, "previous_token")
    assert scores.shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert scores[list(model.cfg.attn_layers)].isfinite().all() and scores[_mixer_layers(model)].isnan().all()
