"""Splicing dictionaries into a model: exactness with the error term, the hand-written replacement without it,
latents as hook points (cache, patch, gradients, ablation, steering), transcoders, SAELens's HookedSAETransformer."""

from __future__ import annotations

import math

import pytest
import torch

import mechscope
from families import make_pair
from mechscope.errors import HookNameError, InputError
from mechscope.patching import ablate
from mechscope.sae import (SAE, HookedSAETransformer, SAEConfig, attach_sae, detach_saes, feature_direction, splice,
                           spliced, steering_hook)

TOKENS = torch.tensor([[1, 5, 9, 33, 7, 2, 41], [3, 8, 8, 17, 60, 4, 12]])


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma2"])
def model(request):
    hf, _ = make_pair(request.param, torch.float32)
    return mechscope.Model.from_hf(hf)


@pytest.fixture(scope="module")
def llama():
    hf, _ = make_pair("llama", torch.float32)
    return mechscope.Model.from_hf(hf)


def width(m, name: str) -> int:
    return math.prod(a for a in m.hook_dict[name].shape if isinstance(a, int))


def make_sae(m, hook: str, arch: str = "topk", d_sae: int = 48, seed: int = 0, **kw) -> SAE:
    k = dict(k=6) if arch == "topk" else {}
    sae = SAE(SAEConfig(d_in=width(m, hook), d_sae=d_sae, architecture=arch, hook_name=hook, **k, **kw), seed=seed)
    with torch.no_grad():  # non-trivial biases so every term of encode/decode counts
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed))
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
    return sae


def replace_hook(sae: SAE):
    return lambda act, hook: sae(act.flatten(-2) if act.ndim == 4 else act).reshape(act.shape)


POINTS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.0.hook_mlp_out"]


@pytest.mark.parametrize("hook", POINTS)
def test_error_term_is_exact(model, hook):
    clean = model(TOKENS)
    sae = make_sae(model, hook)
    names_before = model.hook_names()
    with splice(model, sae, use_error_term=True) as (s,):
        assert torch.equal(model(TOKENS), clean)  # nothing watches: the dictionary's output is x itself
        logits, cache = model.run_with_cache(TOKENS)  # every point hooked: the delta path runs
        assert torch.equal(logits, clean)
        x = cache[s.prefix + "hook_sae_input"]
        # (allclose: watched pre-activations take the dense reference path, sae() the architecture's own)
        assert torch.allclose(cache[s.prefix + "hook_sae_acts_post"], sae.encode(x), atol=1e-5)
        assert torch.allclose(cache[s.prefix + "hook_sae_recons"], sae(x), atol=1e-5)
        assert torch.allclose(cache[s.prefix + "hook_sae_error"], x - sae(x))
        assert torch.equal(cache[s.prefix + "hook_sae_output"], x)
    assert model.hook_names() == names_before and not spliced(model)


@pytest.mark.parametrize("hook", POINTS)
def test_without_error_term_equals_hand_replacement(model, hook):
    sae = make_sae(model, hook)
    ref = model.run_with_hooks(TOKENS, fwd_hooks=[(hook, replace_hook(sae))])
    with splice(model, sae):
        assert torch.equal(model(TOKENS), ref)
        logits, cache = model.run_with_cache(TOKENS, names_filter=lambda n: ".sae." in n or n == hook)
    assert torch.allclose(logits, ref, atol=1e-5)  # the watched pre-activations take the dense reference path
    assert torch.equal(cache[hook], cache[hook + ".sae.hook_sae_output"].reshape(cache[hook].shape))
    assert not torch.equal(ref, model(TOKENS))


def test_patching_a_latent_matches_hand_reference(llama):
    hook = "blocks.0.hook_resid_post"
    sae = make_sae(llama, hook)
    acts = llama.run_with_cache(TOKENS, names_filter=hook)[1][hook]
    j = int(sae.encode(acts).ne(0).sum((0, 1)).argmax())  # a latent that fires

    def zero_j(f, hook):
        f = f.clone()
        f[..., j] = 0
        return f

    def by_hand(err):
        def fn(x, hook):
            f = sae.encode(x)
            fz = f.clone()
            fz[..., j] = 0
            return x + ((sae.decode(fz) - sae.decode(f)) + 0) if err else sae.decode(fz)
        return fn

    for err in (True, False):
        ref = llama.run_with_hooks(TOKENS, fwd_hooks=[(hook, by_hand(err))])
        with splice(llama, sae, use_error_term=err):
            got = llama.run_with_hooks(TOKENS, fwd_hooks=[(hook + ".sae.hook_sae_acts_post", zero_j)])
        assert torch.equal(got, ref)
        assert not torch.equal(got, llama(TOKENS))


def test_gradients_reach_latents(llama):
    hook = "blocks.0.hook_resid_post"
    sae = make_sae(llama, hook)
    with splice(llama, sae, use_error_term=True):
        _, cache = llama.run_with_cache(TOKENS, names_filter=[hook + ".sae.hook_sae_acts_post",
                                                              hook + ".sae.hook_sae_output", "blocks.0.hook_resid_pre"],
                                        incl_bwd=True)
    g_out = cache[hook + ".sae.hook_sae_output_grad"]
    g_f = cache[hook + ".sae.hook_sae_acts_post_grad"]
    assert g_f.abs().sum() > 0
    assert torch.allclose(g_f, g_out @ sae.W_dec.T, atol=1e-6)
    _, clean = llama.run_with_cache(TOKENS, names_filter=["blocks.0.hook_resid_pre"], incl_bwd=True)
    # with the error term upstream points get the model's own gradient
    assert torch.allclose(cache["blocks.0.hook_resid_pre_grad"], clean["blocks.0.hook_resid_pre_grad"], atol=1e-6)


def test_ablation_and_steering_on_features(llama):
    hook = "blocks.1.hook_resid_post"
    sae = make_sae(llama, hook)
    with splice(llama, sae, use_error_term=True):
        point = hook + ".sae.hook_sae_acts_post"
        batched = ablate(llama, TOKENS, point=point)
        by_hand = llama.run_with_hooks(TOKENS, fwd_hooks=[(point, lambda f, h: torch.zeros_like(f))])
        assert torch.allclose(batched, by_hand, atol=1e-5)
        steer = steering_hook(sae, 3, 4.0)
        steered = llama.run_with_hooks(TOKENS, fwd_hooks=[(hook + ".sae.hook_sae_output", steer)])
    direction = feature_direction(sae, 3)
    ref = llama.run_with_hooks(TOKENS, fwd_hooks=[(hook, lambda x, h: x + 4.0 * direction)])
    assert torch.equal(steered, ref)


@pytest.mark.parametrize("skip", [False, True])
def test_transcoder(llama, skip):
    src, dst = "blocks.0.ln2.hook_out", "blocks.0.hook_mlp_out"
    d_in, d_out = width(llama, src), width(llama, dst)
    tc = SAE(SAEConfig(d_in=d_in, d_out=d_out, d_sae=40, architecture="relu", hook_name=src, hook_name_out=dst,
                       skip=skip), seed=1)
    if skip:
        with torch.no_grad():
            tc.W_skip.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    clean = llama(TOKENS)
    store = {}

    def grab(x, hook):
        store["x"] = x

    ref = llama.run_with_hooks(TOKENS, fwd_hooks=[(src, grab), (dst, lambda y, h: tc(store["x"]))])
    with splice(llama, tc) as (s,):
        assert s.prefix == dst + ".sae."
        assert torch.equal(llama(TOKENS), ref)
    with splice(llama, tc, use_error_term=True) as (s,):
        logits, cache = llama.run_with_cache(TOKENS, names_filter=lambda n: ".sae." in n or n == src)
        assert torch.equal(logits, clean)
        assert torch.equal(cache[s.prefix + "hook_sae_input"], cache[src])
        assert torch.equal(cache[s.prefix + "hook_sae_recons"], tc(cache[src]))


def test_several_saes_and_errors(llama):
    a = make_sae(llama, "blocks.0.hook_resid_post")
    b = make_sae(llama, "blocks.1.hook_mlp_out", seed=3)
    ref = llama.run_with_hooks(TOKENS, fwd_hooks=[(a.cfg.hook_name, replace_hook(a)), (b.cfg.hook_name, replace_hook(b))])
    with splice(llama, [a, b]):
        assert torch.equal(llama(TOKENS), ref)
        with pytest.raises(InputError, match="already has a dictionary"):
            attach_sae(llama, make_sae(llama, "blocks.0.hook_resid_post", seed=5))
    assert not spliced(llama)
    with pytest.raises(HookNameError, match="not a hook point"):
        attach_sae(llama, SAE(SAEConfig(d_in=64, d_sae=8, architecture="relu", hook_name="blocks.9.hook_resid_post")))
    with pytest.raises(InputError, match="d_in is 32"):
        attach_sae(llama, SAE(SAEConfig(d_in=32, d_sae=8, architecture="relu", hook_name="blocks.0.hook_resid_post")))
    with pytest.raises(InputError, match="does not come before"):
        attach_sae(llama, SAE(SAEConfig(d_in=64, d_sae=8, architecture="relu", hook_name="blocks.1.hook_resid_post",
                                        hook_name_out="blocks.0.hook_mlp_out")))
    with pytest.raises(InputError, match="cfg.hook_name is empty"):
        attach_sae(llama, SAE(SAEConfig(d_in=64, d_sae=8, architecture="relu")))
    with pytest.raises(InputError, match="matches"):
        detach_saes(llama, "blocks.0.hook_resid_post")
    assert not spliced(llama) and not any(".sae." in n for n in llama.hook_names())
    s = attach_sae(llama, a)
    llama.reset_hooks()  # TransformerLens's reset_hooks leaves spliced dictionaries in place
    assert torch.equal(llama(TOKENS), llama.run_with_hooks(TOKENS, fwd_hooks=[])) and spliced(llama)
    detach_saes(llama, a)
    assert not spliced(llama) and s.prefix + "hook_sae_acts_post" not in llama.hook_dict


def test_generate_with_a_spliced_sae(llama):
    sae = make_sae(llama, "blocks.0.hook_resid_post")
    plain = llama.generate(TOKENS[:1], max_new_tokens=4)
    with splice(llama, sae, use_error_term=True):
        assert torch.equal(llama.generate(TOKENS[:1], max_new_tokens=4), plain)
    with splice(llama, sae):
        assert llama.generate(TOKENS[:1], max_new_tokens=4).shape == plain.shape


def test_hooked_sae_transformer_semantics():
    hf, _ = make_pair("gpt2", torch.float32)
    m = HookedSAETransformer.from_hf(hf)
    assert isinstance(m, HookedSAETransformer) and isinstance(m, mechscope.Model)
    clean = m(TOKENS)
    a = make_sae(m, "blocks.0.hook_resid_post")
    a2 = make_sae(m, "blocks.0.hook_resid_post", seed=7)
    ref_a = m.run_with_hooks(TOKENS, fwd_hooks=[(a.cfg.hook_name, replace_hook(a))])
    ref_a2 = m.run_with_hooks(TOKENS, fwd_hooks=[(a.cfg.hook_name, replace_hook(a2))])

    m.add_sae(a)
    assert m.acts_to_saes == {"blocks.0.hook_resid_post": a}
    assert torch.equal(m(TOKENS), ref_a)
    # run_with_saes swaps in a2 for one call, then restores a
    assert torch.equal(m.run_with_saes(TOKENS, saes=[a2]), ref_a2)
    assert m.acts_to_saes["blocks.0.hook_resid_post"] is a and torch.equal(m(TOKENS), ref_a)
    out, cache = m.run_with_cache_with_saes(TOKENS, saes=a2, use_error_term=True)
    assert torch.equal(out, clean) and "blocks.0.hook_resid_post.sae.hook_sae_acts_post" in cache
    _, d = m.run_with_cache_with_saes(TOKENS, saes=[a2], return_cache_object=False,
                                      names_filter=lambda n: "acts_post" in n)
    assert isinstance(d, dict) and list(d) == ["blocks.0.hook_resid_post.sae.hook_sae_acts_post"]
    seen = []
    m.run_with_hooks_with_saes(TOKENS, saes=[a2], fwd_hooks=[("blocks.0.hook_resid_post.sae.hook_sae_acts_post",
                                                              lambda f, h: seen.append(f.shape))])
    assert seen == [(2, 7, 48)]
    with m.saes(saes=[a2], reset_saes_end=False):
        pass
    assert m.acts_to_saes["blocks.0.hook_resid_post"] is a2  # kept: reset_saes_end=False
    a2.use_error_term = True  # SAELens's attribute decides when use_error_term is None
    m.add_sae(a2)
    assert torch.equal(m(TOKENS), clean)
    m.reset_saes()
    assert m.acts_to_saes == {} and torch.equal(m(TOKENS), clean)
    m.add_sae(a)
    m.reset_saes("blocks.0.hook_resid_post")
    assert m.acts_to_saes == {}


@torch.no_grad()
def test_patch_features_matches_a_loop(llama):
    from mechscope.sae import patch_features

    hook = "blocks.0.hook_resid_post"
    sae = make_sae(llama, hook)
    clean, corrupt = TOKENS[:1], TOKENS[1:]
    metric = lambda logits: logits[0, -1, 5] - logits[0, -1, 9]  # noqa: E731
    with splice(llama, sae, use_error_term=True) as (s,):
        name = s.prefix + "hook_sae_acts_post"
        res = patch_features(llama, clean, corrupt, metric, hook)
        src = llama.run_with_cache(clean, names_filter=name)[1][name]
        feats = [int(f) for f in res.labels["feature"]]
        assert feats and len(feats) == res.values.shape[0]
        for i, j in enumerate(feats[:3]):
            def put(f, h, j=j):
                f = f.clone()
                f[..., j] = src[..., j]
                return f
            assert torch.allclose(res.values[i], metric(llama.run_with_hooks(corrupt, fwd_hooks=[(name, put)])), atol=1e-5)
        assert res.baselines["clean"] == pytest.approx(float(metric(llama(clean))), abs=1e-5)
        by_pos = patch_features(llama, clean, corrupt, metric, name, features=feats[:2], by_pos=True, positions=[0, -1])
        assert by_pos.dims == ("feature", "pos") and by_pos.values.shape == (2, 2)
    with pytest.raises(InputError, match="no dictionary is spliced"):
        patch_features(llama, clean, corrupt, metric, hook)


@pytest.mark.parametrize("grad", [True, False])
def test_in_place_edits_with_and_without_a_graph(llama, grad):
    """Under no_grad the dictionary runs once (unchanged values stand for the clean ones); with a graph the clean
    path is apart. Both must see in-place edits of latents and error, and leave an unedited run exact."""
    hook = "blocks.0.hook_resid_post"
    sae = make_sae(llama, hook)
    clean = llama(TOKENS)
    acts = llama.run_with_cache(TOKENS, names_filter=hook)[1][hook]
    j = int(sae.encode(acts).ne(0).sum((0, 1)).argmax())

    def zero_in_place(f, hook):
        f[..., j] = 0

    def ref(x, hook):
        f = sae.encode(x)
        fz = f.clone()
        fz[..., j] = 0
        return x + ((sae.decode(fz) - sae.decode(f)) + 0)

    with torch.set_grad_enabled(grad):
        want = llama.run_with_hooks(TOKENS, fwd_hooks=[(hook, ref)])
        without_error = llama.run_with_hooks(TOKENS, fwd_hooks=[(hook, replace_hook(sae))])
        with splice(llama, sae, use_error_term=True) as (s,):
            watched = llama.run_with_hooks(TOKENS, fwd_hooks=[(s.prefix + n, lambda a, h: None) for n in
                                                              ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post",
                                                               "hook_sae_recons", "hook_sae_error")])
            assert torch.equal(watched, clean)
            got = llama.run_with_hooks(TOKENS, fwd_hooks=[(s.prefix + "hook_sae_acts_post", zero_in_place)])
            no_error = llama.run_with_hooks(TOKENS, fwd_hooks=[(s.prefix + "hook_sae_error", lambda e, h: e.mul_(0))])
    assert torch.allclose(got, want, atol=1e-6) and not torch.equal(got, clean)
    assert torch.allclose(no_error, without_error, atol=1e-5)


@torch.no_grad()
def test_hooked_sae_transformer_from_pretrained(shared):
    m = HookedSAETransformer.from_pretrained(str(shared / "models" / "TinyStories-656K"))
    assert isinstance(m, HookedSAETransformer) and m.tokenizer is not None
    sae = make_sae(m, "blocks.1.hook_resid_post")
    text = "Once upon a time, a cat sat on the mat."
    assert torch.equal(m.run_with_saes(text, saes=[sae], use_error_term=True), m(text))
    assert not torch.equal(m.run_with_saes(text, saes=[sae]), m(text)) and m.acts_to_saes == {}
    tokens = m.to_tokens(text)
    bos = tokens == m.tokenizer.bos_token_id
    want = m.run_with_hooks(tokens, fwd_hooks=[(sae.cfg.hook_name, lambda a, h: torch.where(bos[..., None], a, sae(a)))])
    m.add_sae(sae, exclude_special_tokens=True)
    assert torch.equal(m(text), want) and torch.equal(m.run_with_cache(tokens, names_filter=lambda n: n.endswith("acts_post"))[0], want)
    m.add_sae(sae, exclude_special_tokens=[m.tokenizer.bos_token_id])
    assert torch.equal(m(tokens), want)
    m.reset_saes()
    with pytest.raises(InputError, match="exclude_special_tokens"):
        m.add_sae(sae, exclude_special_tokens="bos")
