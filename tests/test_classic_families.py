"""Behaviours specific to the classic families (mechscope.families.classic) beyond the exactness suite."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_config, make_pair

IDS = torch.randint(3, 128, (2, 7), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("key,kind", [("bloom", "alibi"), ("mpt", "alibi"), ("ctrl", "sinusoidal"),
                                      ("xglm", "sinusoidal"), ("opt", "standard"), ("codegen", "rotary")])
def test_positional_scheme_is_reported(key, kind):
    assert mechscope.Model.from_hf(make_pair(key, torch.float32)[0]).cfg.positional_embedding_type == kind


def test_opt_mlp_points_are_unflattened():
    """OPT's block flattens (batch, pos) around its MLP; the points still read [batch, pos, ...] and replacing them
    with themselves changes nothing."""
    m = mechscope.Model.from_hf(make_pair("opt", torch.float32)[0])
    names = ["blocks.1.hook_resid_mid", "blocks.1.ln2.hook_scale", "blocks.1.mlp.hook_pre", "blocks.1.hook_mlp_out"]
    _, cache = m.run_with_cache(IDS, names_filter=names)
    assert [tuple(cache[n].shape) for n in names] == [(2, 7, 64), (2, 7, 1), (2, 7, 96), (2, 7, 64)]
    doubled = m.run_with_hooks(IDS, fwd_hooks=[("blocks.1.hook_resid_mid", lambda x, hook: 2 * x)])
    assert not torch.equal(doubled, m(IDS))


def test_post_ln_opt_is_refused():
    from transformers import AutoModelForCausalLM

    cfg = make_config("opt")
    cfg.do_layer_norm_before = False
    with pytest.raises(mechscope.UnsupportedModelError, match="do_layer_norm_before"):
        mechscope.Model.from_hf(AutoModelForCausalLM.from_config(cfg))


def test_openai_gpt_without_final_norm_stops_after_last_block():
    m = mechscope.Model.from_hf(make_pair("openai-gpt", torch.float32)[0])
    assert not any(n.startswith("ln_final") for n in m.hook_names())
    _, cache = m.run_with_cache(IDS, names_filter="blocks.1.hook_resid_post")
    assert torch.equal(m(IDS, stop_at_layer=2), cache["resid_post", 1])


def test_codegen_grouped_qkv_replacement_reaches_the_right_head():
    """CodeGen's qkv_proj is 4 shards of [q | v | k]; zeroing hook_v of one head must equal zeroing that head's z."""
    m = mechscope.Model.from_hf(make_pair("codegen", torch.float32)[0])

    def zero_head(x, hook):
        x = x.clone()
        x[:, :, 5] = 0
        return x

    a = m.run_with_hooks(IDS, fwd_hooks=[("blocks.0.attn.hook_v", zero_head)])
    b = m.run_with_hooks(IDS, fwd_hooks=[("blocks.0.attn.hook_z", zero_head)])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.equal(a, m(IDS))


@pytest.mark.parametrize("key,n_kv,parallel,rotary", [("falcon", 1, True, True),
                                                      ("falcon_interleaved_sequential", 4, False, True),
                                                      ("falcon_alibi", 1, True, False)])
def test_falcon_layout_follows_config(key, n_kv, parallel, rotary):
    m = mechscope.Model.from_hf(make_pair(key, torch.float32)[0])
    assert (m.cfg.n_kv_heads, m.cfg.parallel_attn_mlp) == (n_kv, parallel)
    assert ("blocks.0.hook_resid_mid" in m.hook_dict) != parallel
    assert ("blocks.0.attn.hook_rot_q" in m.hook_dict) == rotary
    _, c = m.run_with_cache(IDS)
    if parallel:  # HF adds attention's output into the MLP's output in place; the cached mlp_out must not see it
        assert torch.equal(c["resid_post", 0], (c["mlp_out", 0] + c["attn_out", 0]) + c["resid_pre", 0])


def test_falcon_new_decoder_architecture_is_refused():
    from transformers import AutoModelForCausalLM

    cfg = make_config("falcon")
    cfg.new_decoder_architecture = True
    with pytest.raises(mechscope.UnsupportedModelError, match="new_decoder_architecture"):
        mechscope.Model.from_hf(AutoModelForCausalLM.from_config(cfg))
