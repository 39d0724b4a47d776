"""ActivationCache indexing, tokenisation of ragged batches, generation, weight views."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from mechscope import InputError, act_name


@pytest.fixture(scope="module")
def gpt2():
    eager, _ = make_pair("gpt2", torch.float32)
    return mechscope.Model.from_hf(eager)


@pytest.fixture(scope="module")
def neox():
    eager, _ = make_pair("gpt_neox", torch.float32)
    return mechscope.Model.from_hf(eager)


IDS = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(0))


def test_act_name_shorthand():
    assert act_name("pattern", 4) == "blocks.4.attn.hook_pattern"
    assert act_name("resid_post", 0) == "blocks.0.hook_resid_post"
    assert act_name("scale", 2, "ln2") == "blocks.2.ln2.hook_scale"
    assert act_name("normalized") == "ln_final.hook_normalized"
    assert act_name("embed") == "hook_embed"
    assert act_name("z_grad", 1) == "blocks.1.attn.hook_z_grad"
    with pytest.raises(InputError, match="needs a layer"):
        act_name("pattern")


def test_cache_indexing_and_utilities(gpt2):
    _, cache = gpt2.run_with_cache(IDS[:1])
    assert torch.equal(cache["pattern", -1], cache["blocks.1.attn.hook_pattern"])
    assert ("resid_post", 1) in cache and "nope" not in cache
    assert cache.nbytes == sum(t.numel() * t.element_size() for t in cache.values())
    flat = cache.remove_batch_dim()
    assert flat["resid_pre", 0].shape == (9, 64)
    assert flat.to("cpu")["q", 0].shape == (9, 4, 16)
    with pytest.raises(mechscope.HookNameError, match="did you mean"):
        cache["blocks.0.hook_resid_prex"]


def test_cache_costs_only_what_was_asked(gpt2):
    _, cache = gpt2.run_with_cache(IDS, names_filter=lambda n: "resid" in n)
    assert set(cache) == {n for n in gpt2.hook_names() if "resid" in n}
    assert gpt2.hf_model.config._attn_implementation == "eager"


def test_cache_device_and_batch_dim_errors(gpt2):
    _, cache = gpt2.run_with_cache(IDS, names_filter="hook_embed", device="cpu")
    with pytest.raises(InputError, match="batch of one"):
        cache.remove_batch_dim()


def test_interleaved_qkv_matches_fused_projection(neox):
    """NeoX's fused projection is per-head [q | k | v]; hook_q/k/v must slice it the same way HF does."""
    _, cache = neox.run_with_cache(IDS, names_filter=["blocks.0.ln1.hook_out", "blocks.0.attn.hook_q",
                                                      "blocks.0.attn.hook_k", "blocks.0.attn.hook_v"])
    x = cache["blocks.0.ln1.hook_out"]
    for name, W, b in (("q", neox.W_Q, neox.b_Q), ("k", neox.W_K, neox.b_K), ("v", neox.W_V, neox.b_V)):
        ref = torch.einsum("bpd,hde->bphe", x, W[0]) + b[0]
        torch.testing.assert_close(cache[name, 0], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("key", ["gpt2", "llama", "phi3", "gpt_bigcode", "gptj", "glm", "apertus", "nanochat", "codegen",
                                 "bloom", "mpt", "opt"])
def test_weight_views_reproduce_activations(key):
    m = mechscope.Model.from_hf(make_pair(key, torch.float32)[0])
    names = ["blocks.0.ln1.hook_out", "blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_z",
             "blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre"]
    _, c = m.run_with_cache(IDS, names_filter=names)
    x = c["blocks.0.ln1.hook_out"]
    tol = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(c["q", 0], torch.einsum("bpd,hde->bphe", x, m.W_Q[0]) + m.b_Q[0], **tol)
    torch.testing.assert_close(c["k", 0], torch.einsum("bpd,hde->bphe", x, m.W_K[0]) + m.b_K[0], **tol)
    assert m.W_O.shape == (2, m.cfg.n_heads, m.cfg.d_head, m.cfg.d_model)
    assert m.W_out.shape == (2, m.cfg.d_mlp, m.cfg.d_model) and m.W_in.shape == (2, m.cfg.d_model, m.cfg.d_mlp)
    assert m.W_U.shape == (m.cfg.d_model, m.cfg.d_vocab) and m.W_E.shape == (m.cfg.d_vocab, m.cfg.d_model)
    if not m.cfg.gated_mlp and "blocks.0.ln2.hook_out" in m.hook_dict:  # plain MLP: pre = ln2 out @ W_in + b_in
        _, c2 = m.run_with_cache(IDS, names_filter=["blocks.0.ln2.hook_out", "blocks.0.mlp.hook_pre"])
        torch.testing.assert_close(c2["pre", 0], c2["blocks.0.ln2.hook_out"] @ m.W_in[0] + m.b_in[0], **tol)


def test_gpt2_has_positional_embedding_weights(gpt2):
    assert gpt2.W_pos.shape == (64, 64)
    _, c = gpt2.run_with_cache(IDS, names_filter=["hook_pos_embed", "hook_embed", "blocks.0.hook_resid_pre"])
    assert torch.equal(c["pos_embed"][0], gpt2.W_pos[:9])
    assert torch.equal(c["embed"] + c["pos_embed"], c["resid_pre", 0])  # dropout is off in eval


def test_config_summary():
    m = mechscope.Model.from_hf(make_pair("gemma2", torch.float32)[0])
    assert (m.cfg.n_layers, m.cfg.d_model, m.cfg.n_heads, m.cfg.n_kv_heads, m.cfg.d_head) == (2, 64, 4, 2, 16)
    assert m.cfg.post_norms and m.cfg.gated_mlp and m.cfg.normalization == "RMS"
    assert m.cfg.positional_embedding_type == "rotary" and m.cfg.attn_softcap == 50.0
    neox = mechscope.Model.from_hf(make_pair("gpt_neox", torch.float32)[0])
    assert neox.cfg.parallel_attn_mlp and not neox.cfg.gated_mlp and neox.cfg.normalization == "LN"


def test_unsupported_model_names_families():
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(mechscope.UnsupportedModelError, match=r"'bert'.*llama.*mechscope/families/"):
        mechscope.Model.from_hf(bert)


def test_to_casts_and_updates_cfg():
    eager, _ = make_pair("llama", torch.float32)
    m = mechscope.Model.from_hf(eager)
    assert m.to(torch.bfloat16) is m and m.cfg.dtype == torch.bfloat16
    assert m(IDS).dtype == torch.bfloat16
