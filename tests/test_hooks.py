"""Interventions, hook lifetimes and the errors users see."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from mechscope import HookNameError, HookReturnError, InputError


@pytest.fixture(scope="module")
def llama():
    eager, _ = make_pair("llama", torch.float32)
    return mechscope.Model.from_hf(eager)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 128, (2, 10), generator=torch.Generator().manual_seed(0))


def test_replacing_an_activation_changes_downstream(llama, ids):
    clean = llama(ids)
    zeroed = llama.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_mlp_out", lambda a, h: torch.zeros_like(a))])
    assert not torch.equal(clean, zeroed)
    # resid_post(0) = resid_mid(0) + mlp_out(0): zeroing mlp_out leaves resid_mid
    with llama.hooks([("blocks.0.hook_mlp_out", lambda a, h: torch.zeros_like(a))]):
        _, c2 = llama.run_with_cache(ids, names_filter=["blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"])
    assert torch.equal(c2["resid_mid", 0], c2["resid_post", 0])


def test_head_ablation_via_z_only_changes_that_head(llama, ids):
    def ablate(z, hook):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    with llama.hooks([("blocks.0.attn.hook_z", ablate)]):
        _, cache = llama.run_with_cache(ids, names_filter="blocks.0.attn.hook_z")
    assert cache["z", 0][:, :, 1].abs().sum() == 0  # later hooks see the replaced value
    _, clean = llama.run_with_cache(ids, names_filter="blocks.0.attn.hook_z")
    assert torch.equal(cache["z", 0][:, :, 0], clean["z", 0][:, :, 0])


def test_pattern_replacement_reaches_z(llama, ids):
    """Uniform attention over the first token means z at every position equals v at position 0."""
    def first_token(p, hook):
        out = torch.zeros_like(p)
        out[..., 0] = 1
        return out

    with llama.hooks([("blocks.0.attn.hook_pattern", first_token)]):
        _, cache = llama.run_with_cache(ids, names_filter=["blocks.0.attn.hook_z", "blocks.0.attn.hook_v"])
    v0 = cache["v", 0][:, :1].repeat_interleave(llama.cfg.n_heads // llama.cfg.n_kv_heads, dim=2)
    torch.testing.assert_close(cache["z", 0], v0.expand_as(cache["z", 0]))


def test_resid_mid_replacement_feeds_mlp_and_residual(llama, ids):
    with llama.hooks([("blocks.0.hook_resid_mid", lambda a, h: torch.zeros_like(a))]):
        _, cache = llama.run_with_cache(ids, names_filter=["blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"])
    torch.testing.assert_close(cache["resid_post", 0], cache["mlp_out", 0])


def test_scale_replacement_rescales_norm_output(llama, ids):
    names = ["blocks.0.ln1.hook_normalized", "blocks.0.ln1.hook_out"]
    _, clean = llama.run_with_cache(ids, names_filter=names)
    with llama.hooks([("blocks.0.ln1.hook_scale", lambda s, h: s * 2)]):
        _, c = llama.run_with_cache(ids, names_filter=names)
    torch.testing.assert_close(c["blocks.0.ln1.hook_out"], clean["blocks.0.ln1.hook_out"] / 2)
    torch.testing.assert_close(c["normalized", 0, "ln1"], clean["normalized", 0, "ln1"] / 2)  # x / new scale


def test_scale_matches_definition(llama, ids):
    _, c = llama.run_with_cache(ids, names_filter=["blocks.0.hook_resid_pre", "blocks.0.ln1.hook_scale",
                                                   "blocks.0.ln1.hook_normalized", "blocks.0.ln1.hook_out"])
    x = c["resid_pre", 0]
    norm = llama.blocks[0].input_layernorm
    assert torch.equal(c["blocks.0.ln1.hook_normalized"], x / c["scale", 0, "ln1"])
    torch.testing.assert_close(c["blocks.0.ln1.hook_out"], x / c["scale", 0, "ln1"] * norm.weight)


def test_hooks_removed_after_exception(llama, ids):
    def boom(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        llama.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_pattern", boom)])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in llama.hf_model.modules())
    assert llama.hf_model.config._attn_implementation == "eager"
    assert torch.equal(llama(ids), llama.hf_model(ids).logits)


def test_context_and_persistent_hooks(llama, ids):
    calls = []
    llama.add_hook("blocks.0.hook_resid_post", lambda a, h: calls.append(h.name))
    llama(ids)
    llama(ids)
    llama.reset_hooks()
    llama(ids)
    assert calls == ["blocks.0.hook_resid_post"] * 2
    with llama.hooks([("blocks.1.hook_resid_post", lambda a, h: calls.append(h.layer()))]):
        llama(ids)
    llama(ids)
    assert calls[-1] == 1 and len(calls) == 3


def test_filter_hooks_and_hook_object(llama, ids):
    seen = []
    llama.run_with_hooks(ids, fwd_hooks=[(lambda n: n.endswith("hook_pattern"), lambda a, h: seen.append((h.name, h.layer())))])
    assert seen == [("blocks.0.attn.hook_pattern", 0), ("blocks.1.attn.hook_pattern", 1)]


def test_backward_hooks_see_gradients(llama, ids):
    grads = {}
    def save(g, hook):
        grads[hook.name] = g

    logits = llama.run_with_hooks(ids, bwd_hooks=[("blocks.0.hook_resid_post", save), ("blocks.0.attn.hook_pattern", save)])
    logits[:, -1].sum().backward()
    assert grads["blocks.0.hook_resid_post"].shape == (2, 10, 64)
    assert grads["blocks.0.attn.hook_pattern"].shape == (2, 4, 10, 10)
    llama.hf_model.zero_grad()


def test_backward_hook_can_replace_gradient(llama, ids):
    x = llama.hf_model.get_input_embeddings().weight
    llama.hf_model.zero_grad()
    logits = llama.run_with_hooks(ids, bwd_hooks=[("blocks.0.hook_resid_pre", lambda g, h: torch.zeros_like(g))])
    logits.sum().backward()
    assert x.grad is None or x.grad.abs().sum() == 0
    llama.hf_model.zero_grad()


def test_unknown_hook_suggests_close_names(llama, ids):
    with pytest.raises(HookNameError, match="did you mean 'blocks.0.attn.hook_z'"):
        llama.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_zz", lambda a, h: None)])


def test_wrong_shape_names_hook_and_shapes(llama, ids):
    with pytest.raises(HookReturnError, match=r"blocks.0.hook_resid_post.*\(2, 10, 32\).*\(2, 10, 64\)"):
        llama.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_resid_post", lambda a, h: a[..., :32])])
    with pytest.raises(HookReturnError, match="bfloat16"):
        llama.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_resid_post", lambda a, h: a.bfloat16())])


def test_opt_in_and_absent_points_explain_themselves(llama, ids):
    with pytest.raises(HookNameError, match="set_use_attn_result"):
        llama.run_with_cache(ids, names_filter="blocks.0.attn.hook_result")
    eager, _ = make_pair("gpt_neox", torch.float32)
    neox = mechscope.Model.from_hf(eager)
    with pytest.raises(HookNameError, match="parallel"):
        neox.run_with_cache(ids, names_filter="blocks.0.hook_resid_mid")
    gpt2 = mechscope.Model.from_hf(make_pair("gpt2", torch.float32)[0])
    with pytest.raises(HookNameError, match="rotary"):
        gpt2.run_with_cache(ids, names_filter="blocks.0.attn.hook_rot_q")


def test_attn_result_sums_to_attn_out(llama, ids):
    llama.set_use_attn_result(True)
    try:
        _, c = llama.run_with_cache(ids, names_filter=["blocks.0.attn.hook_result", "blocks.0.hook_attn_out"])
        torch.testing.assert_close(c["result", 0].sum(2), c["attn_out", 0], atol=1e-5, rtol=1e-5)
        with pytest.raises(HookReturnError, match="read-only"):
            llama.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_result", lambda a, h: a * 0)])
    finally:
        llama.set_use_attn_result(False)


def test_stop_at_layer_returns_residual(llama, ids):
    _, cache = llama.run_with_cache(ids, names_filter="blocks.1.hook_resid_pre")
    resid = llama(ids, stop_at_layer=1)
    assert torch.equal(resid, cache["resid_pre", 1])
    resid, c2 = llama.run_with_cache(ids, stop_at_layer=-1)
    assert "blocks.1.hook_resid_post" not in c2 and "blocks.0.hook_resid_post" in c2
    with pytest.raises(InputError, match="out of range"):
        llama(ids, stop_at_layer=7)


def test_gptj_pattern_replacement_restores_method():
    eager, _ = make_pair("gptj", torch.float32)
    m = mechscope.Model.from_hf(eager)
    ids = torch.randint(3, 128, (1, 6))
    m.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda p, h: p)])
    assert "_attn" not in eager.transformer.h[0].attn.__dict__


def test_reorder_and_upcast_gpt2_is_refused_for_internals():
    eager, _ = make_pair("gpt2", torch.float32)
    eager.config.reorder_and_upcast_attn = True
    m = mechscope.Model.from_hf(eager)
    ids = torch.randint(3, 128, (1, 6))
    with pytest.raises(InputError, match="reorder_and_upcast_attn"):
        m.run_with_cache(ids, names_filter="blocks.0.attn.hook_pattern")
    assert not any(m_._forward_hooks for m_ in eager.modules())
    m.run_with_cache(ids, names_filter="blocks.0.hook_resid_post")  # points outside attention still work


def test_points_added_at_run_time_behave_like_model_points(llama, ids):
    """An SAE spliced in at a point fires its latents as a new named point (the roadmap's SAE splicing)."""
    name = "blocks.0.hook_resid_post.sae.hook_sae_acts_post"
    pt = llama.add_point(name, ("batch", "pos", 32), "toy SAE latents", layer=0)
    W_enc = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))

    def splice(x, hook):
        acts = pt.fire(torch.relu(x @ W_enc))
        return x + 0 * acts.sum()  # keep x; the latents only need to be fired

    llama.add_hook("blocks.0.hook_resid_post", splice)
    try:
        _, cache = llama.run_with_cache(ids, names_filter=lambda n: "sae" in n)
        assert cache[name].shape == (2, 10, 32) and (cache[name] >= 0).all()
        seen = []
        llama.run_with_hooks(ids, fwd_hooks=[(name, lambda a, h: seen.append(h.layer()))])
        assert seen == [0]
        with pytest.raises(InputError, match="already exists"):
            llama.add_point(name, ("batch",))
    finally:
        llama.reset_hooks()
        llama.remove_point(name)
    assert name not in llama.hook_names()


@pytest.mark.parametrize("key, point", [("ctrl", "hook_embed"), ("falcon", "blocks.0.hook_mlp_out")])
def test_points_that_read_a_copy(key, point):
    """HF modifies these tensors in place after the hook has seen them (CTRL scales its embedding by sqrt(d_model),
    Falcon's parallel block adds attention into the MLP output): the cache holds the value at the point, and a hook
    that edits the copy in place (returning None or the same tensor) changes the model like one returning it."""
    hf = make_pair(key, torch.float32)[0]
    model = mechscope.Model.from_hf(hf)
    ids = torch.tensor([[3, 17, 5, 9, 2, 11]])
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=point)
        if point == "hook_embed":
            assert torch.equal(cache[point], model.W_E[ids])  # not the in-place scaled tensor

        def halve_in_place(act, hook):
            act.mul_(0.5)

        def halve_in_place_returned(act, hook):
            return act.mul_(0.5)

        want = model.run_with_hooks(ids, fwd_hooks=[(point, lambda act, hook: act * 0.5)])
        assert not torch.equal(want, model(ids))
        for fn in (halve_in_place, halve_in_place_returned):
            assert torch.equal(model.run_with_hooks(ids, fwd_hooks=[(point, fn)]), want), fn.__name__


def test_copied_points_under_inference_mode():
    """Inference tensors have no version counter: an in-place edit of a copied read is still written back."""
    model = mechscope.Model.from_hf(make_pair("ctrl", torch.float32)[0])
    ids = torch.tensor([[3, 17, 5, 9, 2, 11]])

    def halve_in_place(act, hook):
        act.mul_(0.5)

    with torch.inference_mode():
        want = model.run_with_hooks(ids, fwd_hooks=[("hook_embed", lambda act, hook: act * 0.5)])
        got = model.run_with_hooks(ids, fwd_hooks=[("hook_embed", halve_in_place)])
        _, cache = model.run_with_cache(ids, names_filter="hook_embed")
    assert torch.equal(got, want) and torch.equal(cache["hook_embed"], model.W_E[ids])
