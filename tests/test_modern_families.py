"""Semantics of the points that newer families place differently (multipliers, a reused norm, latent attention,
hyper-connection streams, sub-norms), on the tiny configs of ``family_configs.modern``."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from mechscope.errors import UnsupportedModelError

IDS = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(0))


def _model(key: str) -> mechscope.Model:
    return mechscope.Model.from_hf(make_pair(key, torch.float32)[0])


def test_granite_points_sit_before_the_residual_multiplier():
    """hook_attn_out/hook_mlp_out are the branch outputs; residual_multiplier scales them on the way in."""
    m = _model("granite")
    c = m.hf_model.config
    _, cache = m.run_with_cache(IDS)
    torch.testing.assert_close(cache["resid_mid", 0], cache["resid_pre", 0] + cache["attn_out", 0] * c.residual_multiplier)
    torch.testing.assert_close(cache["resid_post", 0], cache["resid_mid", 0] + cache["mlp_out", 0] * c.residual_multiplier)
    assert torch.equal(cache["resid_pre", 0], cache["embed"] * c.embedding_multiplier)


def test_nanochat_final_norm_points_are_its_call_after_the_blocks():
    m = _model("nanochat")
    calls = []
    out = m.hf_model(IDS, output_hidden_states=True)
    logits, cache = m.run_with_cache(IDS)
    m.run_with_hooks(IDS, fwd_hooks=[("ln_final.hook_normalized", lambda act, hook: calls.append(act.shape))])
    assert len(calls) == 1
    assert torch.equal(cache["ln_final.hook_out"], out.hidden_states[-1])
    assert torch.equal(m(IDS, stop_at_layer=m.cfg.n_layers), cache["resid_post", m.cfg.n_layers - 1])
    # doubling the final norm's output changes only the unembedding's input, not the embeddings too
    doubled = m.run_with_hooks(IDS, fwd_hooks=[("ln_final.hook_out", lambda act, hook: act * 2)])
    cap = m.hf_model.config.final_logit_softcapping
    ref = torch.tanh(m.hf_model.lm_head(out.hidden_states[-1] * 2) / cap) * cap
    assert torch.equal(doubled, ref)
    assert torch.equal(cache["resid_pre", 0], out.hidden_states[0])


@pytest.mark.parametrize("key", ["youtu", "zaya"])
def test_latent_attention_kv_points(key):
    """MLA (Youtu) reads k/v off the latent's up-projection, over k_pos; Zaya's convolved q/k/v exist only inside."""
    m = _model(key)
    names = m.hook_names()
    assert "blocks.0.attn.hook_rot_k" in names
    if key == "zaya":
        assert "blocks.0.attn.hook_k" not in names
    else:
        c = m.hf_model.config
        _, kv = m.run_with_cache(IDS, names_filter=["blocks.0.attn.hook_k", "blocks.0.attn.hook_v"])
        assert kv["k", 0].shape == (*IDS.shape, c.num_key_value_heads, c.qk_nope_head_dim)
        assert kv["v", 0].shape == (*IDS.shape, c.num_key_value_heads, c.v_head_dim)
    with pytest.raises(UnsupportedModelError, match="inside attention"):
        m.W_K
    _, cache = m.run_with_cache(IDS, names_filter=lambda n: n.startswith("blocks.0.attn"))
    assert cache["z", 0].shape[-1] == m.cfg.d_head_v and cache["z", 0].shape[-2] == m.cfg.n_heads


def test_mla_head_widths():
    m = _model("youtu")
    c = m.hf_model.config
    _, cache = m.run_with_cache(IDS, names_filter=lambda n: n.startswith("blocks.0.attn"))
    qk = c.qk_nope_head_dim + c.qk_rope_head_dim
    assert cache["q", 0].shape[-1] == qk and cache["rot_k", 0].shape[-1] == qk
    assert m.cfg.d_head == qk and m.cfg.d_head_v == c.v_head_dim and m.W_O.shape[-2] == c.v_head_dim


def test_hyper_connection_streams():
    m = _model("hy_v4")
    _, cache = m.run_with_cache(IDS, names_filter=lambda n: n.startswith(("hook_embed", "blocks.0.hook")))
    streams = m.hf_model.config.hc_mult
    assert cache["resid_pre", 0].shape == (2, 9, streams, m.cfg.d_model)
    assert m.hook_dict["blocks.0.hook_resid_post"].shape[2] == streams
    assert torch.equal(cache["resid_pre", 0], cache["embed"][:, :, None].expand(-1, -1, streams, -1))


def test_bitnet_z_and_post_are_before_the_sub_norms():
    m = _model("bitnet")
    attn, mlp = m.blocks[0].self_attn, m.blocks[0].mlp
    _, cache = m.run_with_cache(IDS, names_filter=["blocks.0.attn.hook_z", "blocks.0.mlp.hook_post",
                                                   "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out"])
    assert torch.equal(attn.o_proj(attn.attn_sub_norm(cache["z", 0].flatten(-2))), cache["attn_out", 0])
    assert torch.equal(mlp.down_proj(mlp.ffn_sub_norm(cache["post", 0])), cache["mlp_out", 0])


def test_per_layer_head_geometry():
    """Inkling's sliding layers have their own head counts and widths."""
    m = _model("inkling_text")
    c = m.hf_model.config
    shapes = {n: p.shape for n, p in m.hook_dict.items()}
    sliding = c.layer_types.index("hybrid_sliding")
    full = c.layer_types.index("hybrid")
    assert shapes[f"blocks.{sliding}.attn.hook_k"][2:] == (c.swa_num_key_value_heads, c.swa_head_dim)
    assert shapes[f"blocks.{full}.attn.hook_q"][2:] == (c.num_attention_heads, c.head_dim)
    _, cache = m.run_with_cache(IDS)
    assert cache["pattern", sliding].shape[1] == c.swa_num_attention_heads


def test_model_config_reads_modern_families():
    m = _model("glm4")
    assert (m.cfg.n_heads, m.cfg.n_kv_heads, m.cfg.d_head, m.cfg.d_mlp) == (4, 2, 16, 96)
    assert m.cfg.post_norms and m.cfg.gated_mlp
    assert _model("laguna").cfg.d_mlp == 96  # its dense blocks' MLP width (MoE blocks have none)


def test_weights_of_layers_with_different_head_geometry_raise_clearly():
    m = _model("inkling_text")
    with pytest.raises(UnsupportedModelError, match="per layer"):
        m.W_Q
