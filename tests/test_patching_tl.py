"""TransformerLens's get_act_patch_* names equal a plain loop of run_with_hooks; activation_patch agrees with them."""

from __future__ import annotations

import itertools

import pytest
import torch

import mechscope
from families import make_pair
from mechscope import patching
from mechscope.patching import activation_patch, metrics

_MODELS: dict = {}

# name -> (shorthand, axes, what the setter indexes)
SWEEPS = {
    "get_act_patch_resid_pre": ("resid_pre", ("layer", "pos")),
    "get_act_patch_resid_mid": ("resid_mid", ("layer", "pos")),
    "get_act_patch_attn_out": ("attn_out", ("layer", "pos")),
    "get_act_patch_mlp_out": ("mlp_out", ("layer", "pos")),
    "get_act_patch_attn_head_out_by_pos": ("z", ("layer", "pos", "head")),
    "get_act_patch_attn_head_q_by_pos": ("q", ("layer", "pos", "head")),
    "get_act_patch_attn_head_k_by_pos": ("k", ("layer", "pos", "head")),
    "get_act_patch_attn_head_v_by_pos": ("v", ("layer", "pos", "head")),
    "get_act_patch_attn_head_pattern_by_pos": ("pattern", ("layer", "head", "dest_pos")),
    "get_act_patch_attn_head_pattern_dest_src_pos": ("pattern", ("layer", "head", "dest_pos", "src_pos")),
    "get_act_patch_attn_head_out_all_pos": ("z", ("layer", "head")),
    "get_act_patch_attn_head_q_all_pos": ("q", ("layer", "head")),
    "get_act_patch_attn_head_k_all_pos": ("k", ("layer", "head")),
    "get_act_patch_attn_head_v_all_pos": ("v", ("layer", "head")),
    "get_act_patch_attn_head_pattern_all_pos": ("pattern", ("layer", "head")),
}


def _setup(key):
    if key not in _MODELS:
        model = mechscope.Model.from_hf(make_pair(key, torch.float32)[0])
        g = torch.Generator().manual_seed(3)
        clean = torch.randint(3, model.cfg.d_vocab, (2, 5), generator=g)
        corrupted = clean.clone()
        corrupted[:, 1] = (clean[:, 1] + 7) % model.cfg.d_vocab
        _, cache = model.run_with_cache(clean)
        metric = lambda lg: metrics.logit_diff(lg, [5, 6], 9)  # noqa: E731
        _MODELS[key] = model, clean, corrupted, cache, metric
    return _MODELS[key]


def _reference(model, corrupted, cache, metric, short, axes):
    """TransformerLens's generic_activation_patch written as the plain loop it is."""
    n_pos = corrupted.shape[1]
    name0 = mechscope.act_name(short, 0)
    n_heads = model.hook_dict[name0].shape[2] if short in ("k", "v") else model.cfg.n_heads
    size = {"layer": model.cfg.n_layers, "pos": n_pos, "dest_pos": n_pos, "src_pos": n_pos, "head": n_heads}
    ranges = [size[a] for a in axes]
    out = torch.zeros(ranges)
    for index in itertools.product(*map(range, ranges)):
        name = mechscope.act_name(short, index[0])
        clean = cache[name]

        def hook(act, hook, index=index, clean=clean):
            act = act.clone()
            if short == "pattern":
                sl = (slice(None), *index[1:])
            elif len(axes) == 2 and short in ("z", "q", "k", "v"):
                sl = (slice(None), slice(None), index[1])
            else:
                sl = (slice(None), *index[1:])
            act[sl] = clean[sl]
            return act

        out[index] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])).item()
    return out


@pytest.mark.parametrize("key", ["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("fn", list(SWEEPS))
def test_tl_function_equals_a_loop_of_run_with_hooks(key, fn):
    model, clean, corrupted, cache, metric = _setup(key)
    short, axes = SWEEPS[fn]
    if short == "resid_mid" and model.cfg.parallel_attn_mlp:
        pytest.skip("no resid_mid")
    if fn.endswith("dest_src_pos") and key != "llama":
        pytest.skip("one family is enough for the largest sweep")
    got = getattr(patching, fn)(model, corrupted, cache, metric)
    want = _reference(model, corrupted, cache, metric, short, axes)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_every_functions_stack_with_gqa_padding():
    model, clean, corrupted, cache, metric = _setup("llama")  # 4 heads, 2 kv heads
    heads = patching.get_act_patch_attn_head_all_pos_every(model, corrupted, cache, metric)
    assert heads.shape == (5, 2, 4)
    assert torch.equal(heads[2, :, 2:], torch.zeros(2, 2))  # k padded to n_heads, as TransformerLens does
    by_pos = patching.get_act_patch_attn_head_by_pos_every(model, corrupted, cache, metric)
    assert by_pos.shape == (5, 2, 5, 4)
    torch.testing.assert_close(by_pos[4], patching.get_act_patch_attn_head_pattern_by_pos(
        model, corrupted, cache, metric).transpose(1, 2))
    block = patching.get_act_patch_block_every(model, corrupted, cache, metric)
    assert block.shape == (3, 2, 5)


def test_index_df_rows_and_return_index_df():
    model, clean, corrupted, cache, metric = _setup("gpt2")
    full = patching.get_act_patch_resid_pre(model, corrupted, cache, metric)
    rows = [(1, 3), (0, 1)]
    flat = patching.generic_activation_patch(model, corrupted, cache, metric, patching.layer_pos_patch_setter,
                                             "resid_pre", index_df=rows)
    torch.testing.assert_close(flat, torch.stack([full[1, 3], full[0, 1]]))
    out, index = patching.get_act_patch_resid_pre(model, corrupted, cache, metric, return_index_df=True)
    assert len(index) == 2 * 5


@pytest.mark.parametrize("key", ["llama", "gpt_neox", "olmo2"])
def test_activation_patch_matches_the_tl_names(key):
    model, clean, corrupted, cache, metric = _setup(key)
    r = activation_patch(model, clean, corrupted, metric, point="resid_pre")
    assert r.dims == ("layer", "pos") and r.values.shape == (model.cfg.n_layers, 5)
    torch.testing.assert_close(r.values, patching.get_act_patch_resid_pre(model, corrupted, cache, metric))
    z = activation_patch(model, clean, corrupted, metric, point="z")
    torch.testing.assert_close(z.values, patching.get_act_patch_attn_head_out_all_pos(model, corrupted, cache, metric))
    zp = activation_patch(model, clean, corrupted, metric, point="z", by_pos=True)
    assert zp.dims == ("layer", "head", "pos")
    torch.testing.assert_close(zp.values, patching.get_act_patch_attn_head_out_by_pos(
        model, corrupted, cache, metric).transpose(1, 2))
    k = activation_patch(model, clean, corrupted, metric, point="k")
    if model.cfg.n_kv_heads != model.cfg.n_heads:
        assert k.dims == ("layer", "kv_head")
    # denoising at the first block's residual stream (every position) restores the clean run exactly
    assert r.baselines["clean"] == pytest.approx(float(metric(model(clean).detach())), abs=1e-4)
    whole = activation_patch(model, clean, corrupted, metric, point="resid_pre", by_pos=False, layers=[0])
    assert float(whole.values[0]) == pytest.approx(r.baselines["clean"], abs=1e-4)


def test_activation_patch_noising_neurons_and_pattern():
    model, clean, corrupted, cache, metric = _setup("llama")
    noise = activation_patch(model, clean, corrupted, metric, point="resid_pre", by_pos=False, direction="noise")
    assert float(noise.values[0]) == pytest.approx(noise.baselines["corrupted"], abs=1e-4)
    post = activation_patch(model, clean, corrupted, metric, point="post", layers=[1], neurons=[0, 5, 7])
    assert post.dims == ("layer", "neuron") and post.shape == (1, 3)
    ref = patching.generic_activation_patch(
        model, corrupted, cache, metric, _set_neuron, "post", index_df=[(1, 0), (1, 5), (1, 7)])
    torch.testing.assert_close(post.values[0], ref)
    pat = activation_patch(model, clean, corrupted, metric, point="pattern", by_pos=True)
    assert pat.dims == ("layer", "head", "pos")
    torch.testing.assert_close(pat.values, patching.get_act_patch_attn_head_pattern_by_pos(model, corrupted, cache, metric))
    same = activation_patch(model, clean, clean, metric, point="z", by_pos=True)
    torch.testing.assert_close(same.values, torch.full_like(same.values, same.baselines["clean"]), rtol=1e-4, atol=1e-4)


def _set_neuron(act, index, clean):
    act[:, :, index[1]] = clean[:, :, index[1]]
    return act


def test_activation_patch_refuses_bad_input():
    model, clean, corrupted, cache, metric = _setup("gpt2")
    with pytest.raises(mechscope.InputError, match="same number of prompts and tokens"):
        activation_patch(model, clean, corrupted[:, :4], metric)
    with pytest.raises(mechscope.InputError, match="point must be one of"):
        activation_patch(model, clean, corrupted, metric, point="resid")
    with pytest.raises(mechscope.InputError, match="direction"):
        activation_patch(model, clean, corrupted, metric, direction="up")
    with pytest.raises(mechscope.InputError, match="out of range"):
        activation_patch(model, clean, corrupted, metric, point="z", heads=[9])
    with pytest.raises(mechscope.InputError, match="equal"):
        metrics.normalised(metric, 1.0, 1.0)


def test_metrics_are_differentiable_and_take_strings():
    model, clean, corrupted, cache, metric = _setup("llama")
    logits = model(clean).requires_grad_(True)
    for value in (metrics.logit_diff(logits, [5, 6], 9), metrics.prob(logits, 5),
                  metrics.kl(logits, logits.detach() + 0.1), metrics.loss(logits, clean),
                  metrics.normalised(lambda lg: metrics.logit_diff(lg, 5, 9), 2.0, 1.0)(logits)):
        assert value.ndim == 0 and value.requires_grad
    d = metrics.logit_diff(logits, 5, 9, reduce="none")
    assert d.shape == (2,)
    torch.testing.assert_close(d, logits[:, -1, 5] - logits[:, -1, 9])
    assert float(metrics.kl(logits, logits).detach()) == pytest.approx(0, abs=1e-6)
    with pytest.raises(mechscope.InputError, match="model="):
        metrics.logit_diff(logits, " Mary", 9)


def test_metric_with_one_value_per_prompt_is_a_sentence():
    """A metric that forgets to reduce over the batch gave torch's 'only one element tensors can be converted'
    (activation_patch, get_act_patch_*, path_patch) or a reshape error (knockout); now a sentence. And text where
    TransformerLens's functions take token ids is a sentence too."""
    from mechscope.errors import InputError, InputTypeError

    hf, _ = make_pair("llama", torch.float32)
    model = mechscope.Model.from_hf(hf)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, 128, (2, 6), generator=g)
    corrupted = clean.clone()
    corrupted[:, 1:3] = torch.randint(3, 128, (2, 2), generator=g)

    def per_prompt(logits):
        return logits[:, -1, 5]

    _, cache = model.run_with_cache(clean)
    for run in (lambda: activation_patch(model, clean, corrupted, per_prompt, point="z"),
                lambda: patching.get_act_patch_resid_pre(model, corrupted, cache, per_prompt),
                lambda: patching.path_patch(model, clean, corrupted, per_prompt),
                lambda: patching.knockout(model, clean, per_prompt, "heads")):
        with pytest.raises(InputError, match="one number per run"):
            run()
    with pytest.raises(InputTypeError, match="token ids"):
        patching.get_act_patch_resid_pre(model, "some text", cache, lambda lg: lg[:, -1, 5].mean())
