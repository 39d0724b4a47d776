"""Mixture-of-experts router points and Multi-head Latent Attention points mean what their docs say.

The exactness suite already proves that caching or identity-replacing them keeps logits bit-equal; here the values
are checked against an independent computation from the router's and projections' weights, and writes are checked
to reach the experts.
"""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair

IDS = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(3))
ROUTER_POINTS = ("mlp.hook_router_logits", "mlp.hook_expert_indices", "mlp.hook_expert_weights")


def _wrap(key: str) -> mechscope.Model:
    return mechscope.Model.from_hf(make_pair(key, torch.float32)[0])


@pytest.fixture(scope="module")
def mixtral():
    return _wrap("mixtral")


@pytest.fixture(scope="module")
def deepseek():
    return _wrap("deepseek_v3")


@pytest.mark.parametrize("key", ["mixtral", "qwen2_moe", "olmoe", "granitemoe", "dbrx"])
def test_softmax_router_points_match_router_weights(key):
    """logits = ln2(x) @ W_router^T; indices = top-k of softmax(logits); weights = those probabilities (renormalised
    where the config says so)."""
    m = _wrap(key)
    logits, cache = m.run_with_cache(IDS)
    assert torch.equal(logits, m.hf_model(IDS).logits)
    c = m.hf_model.config
    k = m.cfg.experts_per_token
    for layer in range(m.cfg.n_layers):
        router = m.blocks[layer].get_submodule(m.family.router)
        w = getattr(router, "weight", None)
        if w is None:
            w = router.layer.weight
        x = cache[f"blocks.{layer}.ln2.hook_out"]
        expected = x @ w.T
        got = cache[f"blocks.{layer}.mlp.hook_router_logits"]
        assert got.shape == (2, 9, m.cfg.n_experts)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        probs = expected.float().softmax(-1)
        top, idx = probs.topk(k, dim=-1)
        if getattr(c, "norm_topk_prob", key in ("mixtral", "granitemoe", "dbrx")):
            top = top / top.sum(-1, keepdim=True)
        got_idx = cache[f"blocks.{layer}.mlp.hook_expert_indices"]
        got_w = cache[f"blocks.{layer}.mlp.hook_expert_weights"]
        assert got_idx.shape == got_w.shape == (2, 9, k)
        assert torch.equal(got_idx.sort(-1).values, idx.sort(-1).values)
        order = lambda i: i.argsort(-1)  # noqa: E731  compare weights expert by expert
        torch.testing.assert_close(got_w.gather(-1, order(got_idx)).float(), top.gather(-1, order(idx)),
                                   rtol=1e-5, atol=1e-6)


def test_deepseek_router_points(deepseek):
    """DeepSeek-V3: sigmoid scores, weights = chosen scores normalised and times routed_scaling_factor."""
    c = deepseek.hf_model.config
    _, cache = deepseek.run_with_cache(IDS)
    assert "blocks.0.mlp.hook_router_logits" not in cache  # layer 0 is dense (first_k_dense_replace=1)
    assert "blocks.0.mlp.hook_post" in cache and "blocks.1.mlp.hook_post" not in cache
    router = deepseek.blocks[1].mlp.gate
    logits = cache["blocks.1.ln2.hook_out"].float() @ router.weight.float().T
    torch.testing.assert_close(cache["blocks.1.mlp.hook_router_logits"], logits, rtol=1e-5, atol=1e-5)
    scores = logits.sigmoid()
    idx = cache["blocks.1.mlp.hook_expert_indices"]
    chosen = scores.gather(-1, idx)
    expected = chosen / (chosen.sum(-1, keepdim=True) + 1e-20) * c.routed_scaling_factor
    torch.testing.assert_close(cache["blocks.1.mlp.hook_expert_weights"], expected, rtol=1e-5, atol=1e-6)


def test_caching_router_points_keeps_logits(mixtral):
    logits, cache = mixtral.run_with_cache(IDS, names_filter=lambda n: n.endswith(ROUTER_POINTS))
    assert torch.equal(logits, mixtral.hf_model(IDS).logits)
    assert len(cache) == 3 * mixtral.cfg.n_layers


def test_writing_expert_weights_and_indices_reaches_the_experts(mixtral):
    plain = mixtral.run_with_cache(IDS, names_filter="blocks.1.hook_mlp_out")[1]["blocks.1.hook_mlp_out"]
    assert plain.abs().sum() > 0
    with mixtral.hooks([("blocks.1.mlp.hook_expert_weights", lambda w, hook: torch.zeros_like(w))]):
        _, cache = mixtral.run_with_cache(IDS, names_filter="blocks.1.hook_mlp_out")
    assert torch.equal(cache["blocks.1.hook_mlp_out"], torch.zeros_like(plain))  # no shared expert in Mixtral

    base = mixtral(IDS)
    steered = mixtral.run_with_hooks(IDS, fwd_hooks=[("blocks.0.mlp.hook_expert_indices",
                                                      lambda i, hook: (i + 1) % mixtral.cfg.n_experts)])
    assert not torch.equal(base, steered)


def test_router_logits_replacement_reaches_hf_router_output(mixtral):
    """Replacing hook_router_logits changes what HF reports as router_logits (and its load-balancing loss), not
    the routing, which the router has already decided."""
    out = mixtral.hf_model(IDS, output_router_logits=True)
    with mixtral.hooks([("blocks.0.mlp.hook_router_logits", lambda x, hook: x * 0)]):
        hooked = mixtral.hf_model(IDS, output_router_logits=True)
    assert torch.equal(hooked.logits, out.logits)
    assert torch.equal(hooked.router_logits[0], torch.zeros_like(out.router_logits[0]))


def test_dbrx_router_logits_decide_the_routing():
    """DBRX picks experts from the logits its router returns, so replacing them reroutes."""
    m = _wrap("dbrx")
    favour = torch.tensor([5.0, 4.0, 0.0, 0.0])
    with m.hooks([("blocks.0.mlp.hook_router_logits", lambda x, hook: x * 0 + favour)]):
        _, cache = m.run_with_cache(IDS, names_filter="blocks.0.mlp.hook_expert_indices")
    assert torch.equal(cache["blocks.0.mlp.hook_expert_indices"].sort(-1).values,
                       torch.tensor([0, 1]).expand(2, 9, 2))


def test_moe_config_and_weight_views(mixtral, deepseek):
    assert (mixtral.cfg.n_experts, mixtral.cfg.experts_per_token, mixtral.cfg.d_mlp) == (4, 2, None)
    with pytest.raises(AttributeError, match="mixture-of-experts"):
        mixtral.W_in
    assert mixtral.W_Q.shape == (2, 4, 64, 16)
    with pytest.raises(AttributeError, match="Latent Attention"):
        deepseek.W_Q


def test_mla_points(deepseek):
    """hook_q/hook_k/hook_v are the projections' per-head parts: the non-rotary parts reach the scores unchanged,
    the values are what the pattern averages, and z has the value width."""
    cfg = deepseek.cfg
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_head_v) == (4, 4, 16, 12)
    _, cache = deepseek.run_with_cache(IDS)
    nope = 8
    for layer in range(cfg.n_layers):
        q, k, v = cache["q", layer], cache["k", layer], cache["v", layer]
        assert q.shape == (2, 9, 4, 16) and k.shape == (2, 9, 4, nope) and v.shape == (2, 9, 4, 12)
        assert torch.equal(cache["rot_q", layer][..., :nope], q[..., :nope])
        assert torch.equal(cache["rot_k", layer][..., :nope], k)
        rot_k = cache["rot_k", layer][..., nope:]
        assert torch.equal(rot_k, rot_k[:, :, :1].expand_as(rot_k))  # the rotary key part is shared by all heads
        z = torch.einsum("bhqk,bkhd->bqhd", cache["pattern", layer], v)
        torch.testing.assert_close(cache["z", layer], z, rtol=1e-5, atol=1e-6)
    assert deepseek.W_O.shape == (2, 4, 12, 64)


def test_mla_kv_cache_step_spans_cached_positions(deepseek):
    hf = deepseek.hf_model
    pkv = hf(IDS[:, :6], use_cache=True).past_key_values
    ref = hf(IDS[:, 6:7], past_key_values=hf(IDS[:, :6], use_cache=True).past_key_values).logits
    logits, cache = deepseek.run_with_cache(IDS[:, 6:7], past_key_values=pkv, use_cache=True)
    assert torch.equal(logits, ref)
    assert cache["q", 0].shape[1] == 1 and cache["k", 0].shape[1] == cache["v", 0].shape[1] == 7


@pytest.mark.parametrize("key", ["deepseek_v32", "glm_moe_dsa"])
def test_sparse_attention_indices_mask_the_pattern(key):
    """DeepSeek Sparse Attention: under mechscope's attention each query still attends to at most index_topk keys."""
    m = _wrap(key)
    logits, cache = m.run_with_cache(IDS)
    assert torch.equal(logits, m.hf_model(IDS, output_attentions=False).logits)
    top_k = m.hf_model.config.index_topk
    for layer in range(m.cfg.n_layers):
        attended = (cache["pattern", layer] > 0).sum(-1)
        assert attended.max() == top_k < IDS.shape[1]


@pytest.mark.parametrize("key", ["dbrx", "mimo_v2_flash", "afmoe"])
def test_attention_weight_views(key):
    """W_Q reproduces hook_q (DBRX: a slice of the fused Wqkv); W_O has the value width; per-layer head counts
    that cannot be stacked raise."""
    m = _wrap(key)
    _, c = m.run_with_cache(IDS, names_filter=["blocks.0.ln1.hook_out", "blocks.0.attn.hook_q"])
    expected = torch.einsum("bpd,hde->bphe", c["blocks.0.ln1.hook_out"], m.W_Q[0]) + m.b_Q[0]
    torch.testing.assert_close(c["q", 0], expected, atol=1e-5, rtol=1e-5)
    assert m.W_O.shape == (2, m.cfg.n_heads, m.cfg.d_head_v, m.cfg.d_model)
    if key == "mimo_v2_flash":
        with pytest.raises(AttributeError, match="kv heads"):
            m.W_K
    else:
        assert m.W_K.shape == (2, m.cfg.n_kv_heads, m.cfg.d_model, m.cfg.d_head)
