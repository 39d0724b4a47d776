"""Residual-stream algebra on ActivationCache: the decompositions are exact for the cached forward.

Identities (float tolerance, they are sums of float terms): every decomposition sums to the residual stream it
decomposes; logit attributions of a full decomposition plus the final norm's bias term plus b_U equal the logits.
On LayerNorm (gpt2, gpt_neox parallel, gptj parallel with one norm) and RMSNorm (llama, gemma3_text and olmo2 sandwich
norms) families, a hybrid (bamba), and the two real models.
"""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from real import real_model
from mechscope import residual
from mechscope.errors import HookNameError, InputError, UnsupportedModelError

FAMILIES = ["gpt2", "llama", "gpt_neox", "gptj", "gemma3_text", "olmo2", "bamba"]


def _close(a, b, tol=2e-5):
    torch.testing.assert_close(a.float(), b.float(), atol=tol * max(1.0, float(b.abs().max())), rtol=0)


@pytest.fixture(scope="module", params=FAMILIES)
def run(request):
    hf, _ = make_pair(request.param, torch.float32)
    model = mechscope.Model.from_hf(hf)
    tokens = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    logits, cache = model.run_with_cache(tokens)
    return model, logits.detach(), cache


def test_decompositions_sum_to_the_stream(run):
    model, _, cache = run
    n = model.cfg.n_layers
    final = cache["resid_post", n - 1]
    parts, labels = cache.decompose_resid(return_labels=True)
    assert parts.shape == (len(labels), *final.shape) and labels[0] == "embed"
    _close(parts.sum(0), final)
    _close(cache.decompose_resid(layer=1).sum(0), cache["resid_pre", 1])
    full, full_labels = cache.get_full_resid_decomposition(return_labels=True)
    assert full_labels[-1] == "bias" and full_labels.count("embed") == 1 and len(full_labels) == full.shape[0]
    _close(full.sum(0), final)
    _close(cache.get_full_resid_decomposition(expand_neurons=False).sum(0), final)
    _close(cache.get_full_resid_decomposition(layer=1).sum(0), cache["resid_pre", 1])
    heads, head_labels = cache.stack_head_results(incl_remainder=True, return_labels=True)
    assert head_labels[0] == "L0H0" and head_labels[-1] == "remainder"
    _close(heads.sum(0), final)


def test_mlp_input_and_mid(run):
    model, _, cache = run
    if model.cfg.parallel_attn_mlp:  # the MLP reads resid_pre: nothing between attention and MLP
        assert cache.accumulated_resid(layer=1, mlp_input=True, return_labels=True)[1] == ["0_pre", "1_pre"]
        _close(cache.decompose_resid(layer=1, mlp_input=True).sum(0), cache["resid_pre", 1])
        with pytest.raises(InputError, match="parallel"):
            cache.accumulated_resid(incl_mid=True)
        return
    acc, labels = cache.accumulated_resid(layer=1, incl_mid=True, mlp_input=True, return_labels=True)
    assert labels == ["0_pre", "0_mid", "1_pre", "1_mid"]
    assert torch.equal(acc[3], cache["resid_mid", 1])
    _close(cache.decompose_resid(layer=1, mlp_input=True).sum(0), cache["resid_mid", 1])
    _close(cache.get_full_resid_decomposition(layer=1, mlp_input=True).sum(0), cache["resid_mid", 1])


def test_logit_attrs_plus_biases_are_the_logits(run):
    model, logits, cache = run
    tokens = torch.randint(0, model.cfg.d_vocab, logits.shape[:2], generator=torch.Generator().manual_seed(1))
    want = logits.gather(-1, tokens[..., None])[..., 0]
    bias = residual.final_bias_terms(model, tokens)
    for stack in (cache.get_full_resid_decomposition(), cache.decompose_resid(), cache.accumulated_resid()[-1:]):
        _close(cache.logit_attrs(stack, tokens).sum(0) + bias, want)
    # one position, a logit difference, per-batch tokens
    t, w = tokens[:, -1], tokens[:, 0]
    diff = cache.logit_attrs(cache.decompose_resid(pos_slice=-1), t, incorrect_tokens=w, pos_slice=-1)
    last = logits[:, -1]
    _close(diff.sum(0) + residual.final_bias_terms(model, t) - residual.final_bias_terms(model, w),
           last.gather(-1, t[:, None])[:, 0] - last.gather(-1, w[:, None])[:, 0])


def test_apply_ln_uses_the_cached_scale(run):
    model, _, cache = run
    n = model.cfg.n_layers
    normed = cache.apply_ln_to_stack(cache["resid_post", n - 1][None])[0]
    assert torch.allclose(normed, cache["ln_final.hook_normalized"], atol=1e-5)
    if "blocks.1.ln1.hook_normalized" in cache:
        pre = cache.accumulated_resid(layer=1, apply_ln=True)[-1]
        assert torch.allclose(pre, cache["blocks.1.ln1.hook_normalized"], atol=1e-5)
    # logit lens: each layer normalised by its own statistics
    lens = cache.accumulated_resid(apply_ln=True, pos_slice=-1)
    assert lens.shape == (n + 1, 2, model.cfg.d_model)
    assert torch.allclose(lens[-1], cache["ln_final.hook_normalized"][:, -1], atol=1e-5)


def test_heads_and_neurons(run):
    model, _, cache = run
    lay = residual._layout(cache)
    for l in model.cfg.attn_layers:
        heads = cache.stack_head_results(l + 1)[-model.cfg.n_heads:]
        bias = residual._bias(cache, l + 1, False, False, residual.Slice()) - residual._bias(cache, l, False, False,
                                                                                          residual.Slice())
        _close(heads.sum(0) + bias, cache["attn_out", l])
    dense = [l for l in range(model.cfg.n_layers) if lay.neurons[l]]
    if not dense:
        return
    l = dense[-1]
    neurons = cache.get_neuron_results(l)
    assert neurons.shape == (2, 7, model.cfg.d_mlp, model.cfg.d_model)
    u = torch.randn(model.cfg.d_model, 3, generator=torch.Generator().manual_seed(2))
    _close(cache.get_neuron_results(l, project_output_onto=u), neurons @ u)
    full = cache.stack_neuron_results(l + 1, pos_slice=-1, apply_ln=True)
    folded = cache.stack_neuron_results(l + 1, pos_slice=-1, apply_ln=True, project_output_onto=u[:, 0])
    _close(folded, full @ u[:, 0])
    some, labels = cache.stack_neuron_results(l + 1, neuron_slice=[1, 5], return_labels=True)
    assert labels[-2:] == [f"L{l}N1", f"L{l}N5"] and some.shape[0] == len(labels)


def test_compute_head_results_matches_the_hook_point():
    hf, _ = make_pair("llama", torch.float32)
    model = mechscope.Model.from_hf(hf)
    tokens = torch.randint(3, 100, (1, 5))
    model.set_use_attn_result(True)
    _, with_point = model.run_with_cache(tokens)
    model.set_use_attn_result(False)
    _, cache = model.run_with_cache(tokens)
    cache.compute_head_results()
    for l in range(model.cfg.n_layers):
        assert torch.equal(cache["result", l], with_point["result", l])


def test_slices_follow_transformer_lens(run):
    model, _, cache = run
    full = cache.decompose_resid()
    assert torch.equal(cache.decompose_resid(pos_slice=-1), full[:, :, -1])
    assert torch.equal(cache.decompose_resid(pos_slice=(1, 4)), full[:, :, 1:4])
    assert torch.equal(cache.decompose_resid(pos_slice=[0, 2]), full[:, :, [0, 2]])
    one = cache.apply_slice_to_batch_dim(1)
    assert not one.has_batch_dim and one.model is model
    assert torch.equal(one.decompose_resid(), full[:, 1])
    assert torch.equal(cache.apply_slice_to_batch_dim([1]).decompose_resid(),
                       full[:, 1:])
    assert cache.stack_activation("resid_pre").shape == (model.cfg.n_layers, 2, 7, model.cfg.d_model)


def test_missing_activations_name_the_hook_and_the_filter():
    hf, _ = make_pair("llama", torch.float32)
    model = mechscope.Model.from_hf(hf)
    _, cache = model.run_with_cache(torch.randint(3, 100, (1, 5)), names_filter=lambda n: "resid" in n)
    with pytest.raises(HookNameError, match=r"'hook_embed'.*names_filter"):
        cache.decompose_resid()
    with pytest.raises(HookNameError, match=r"blocks\.0\.hook_attn_out.*names_filter"):
        cache.decompose_resid(incl_embeds=False)
    with pytest.raises(HookNameError, match="ln_final.hook_scale"):
        cache.apply_ln_to_stack(cache.accumulated_resid())
    _, cache = model.run_with_cache(torch.randint(3, 100, (1, 5)), names_filter=residual.names_filter)
    cache.get_full_resid_decomposition()  # the filter holds everything
    with pytest.raises(InputError, match="layer=7 is out of range"):
        cache.decompose_resid(layer=7)
    with pytest.raises(InputError, match="mode must be"):
        cache.decompose_resid(mode="heads")
    bare = mechscope.ActivationCache(dict(cache.items()), model.cfg.n_layers)
    with pytest.raises(InputError, match="no model attached"):
        bare.decompose_resid()


@pytest.mark.parametrize("key, match", [
    ("mixtral", "mixture of experts"),                  # MoE: neurons are per expert
    ("granite", "not the sum of hook_resid_pre"),       # muP multipliers scale what blocks add
    ("bitnet", "sits between the heads"),               # a norm between hook_z and o_proj
    ("openai-gpt", "post-LN"),
])
def test_structures_without_a_decomposition_are_refused(key, match):
    hf, _ = make_pair(key, torch.float32)
    model = mechscope.Model.from_hf(hf)
    _, cache = model.run_with_cache(torch.randint(3, 100, (1, 5)))
    with pytest.raises(UnsupportedModelError, match=match):
        cache.get_full_resid_decomposition()


@pytest.mark.parametrize("key", ["bloom", "recurrent_gemma"])
def test_transformed_embeddings_become_what_enters_block_0(key):
    hf, _ = make_pair(key, torch.float32)  # Bloom: LayerNorm on the embeddings; RecurrentGemma: scale outside it
    model = mechscope.Model.from_hf(hf)
    _, cache = model.run_with_cache(torch.randint(3, 100, (1, 5)))
    stack, labels = cache.get_full_resid_decomposition(return_labels=True)
    assert torch.equal(stack[labels.index("embed")], cache["resid_pre", 0])
    _close(stack.sum(0), cache["resid_post", -1])


def test_moe_blocks_are_one_component_each():
    hf, _ = make_pair("mixtral", torch.float32)
    model = mechscope.Model.from_hf(hf)
    _, cache = model.run_with_cache(torch.randint(3, 100, (1, 5)))
    full, labels = cache.get_full_resid_decomposition(expand_neurons=False, return_labels=True)
    assert "0_mlp_out" in labels
    _close(full.sum(0), cache["resid_post", -1])


@pytest.mark.real_models
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_real_models(name):
    model = real_model(name)
    with torch.no_grad():
        logits, cache = model.run_with_cache("When Mary and John went to the store, John gave a drink to",
                                             names_filter=residual.names_filter)
    final = cache["resid_post", -1]
    full = cache.get_full_resid_decomposition(pos_slice=-1, expand_neurons=False)
    _close(full.sum(0), final[:, -1], tol=1e-5)
    mary, john = model.to_single_token(" Mary"), model.to_single_token(" John")
    u = model.tokens_to_residual_directions(mary) - model.tokens_to_residual_directions(john)
    neurons = cache.get_full_resid_decomposition(pos_slice=-1, apply_ln=True, project_output_onto=u)
    attrs = cache.logit_attrs(full, mary, incorrect_tokens=john, pos_slice=-1)
    want = logits[0, -1, mary] - logits[0, -1, john]
    bias = residual.final_bias_terms(model, mary) - residual.final_bias_terms(model, john)
    assert abs(float(attrs.sum() + bias - want)) < 1e-3 * max(1.0, abs(float(want)))
    assert abs(float(neurons.sum() + bias - want)) < 1e-3 * max(1.0, abs(float(want)))
