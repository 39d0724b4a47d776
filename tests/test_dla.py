"""Direct logit attribution, checked against an independent computation through the model's own modules: a head's
attribution is the change in the logit difference when its contribution is removed from the final residual stream
and the logits are recomputed by the model's own final norm, frozen at its cached scale."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from real import real_model
from mechscope.errors import InputError

FAMILIES = ["gpt2", "llama", "gpt_neox", "gemma3_text"]
T, B = 17, 42  # target and baseline token ids in the tiny configs' vocabulary


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    hf, _ = make_pair(request.param, torch.float32)
    return mechscope.Model.from_hf(hf)


def _tokens():
    return torch.randint(3, 100, (7,), generator=torch.Generator().manual_seed(3))


@torch.no_grad()
def _ablated_logit_diff(model, tokens, layer: int, head: int) -> float:
    """logit[T] - logit[B] at the last position with head (layer, head)'s output removed from the final stream only."""
    n = model.cfg.n_layers
    logits, cache = model.run_with_cache(tokens)
    post_scale = f"blocks.{layer}.ln1_post.hook_scale"

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    frozen = [(post_scale, lambda s, hook: cache[post_scale])] if post_scale in model.hook_dict else []
    store = {}
    with model.hooks([(f"blocks.{layer}.attn.hook_z", zero_head), *frozen,
                      (f"blocks.{layer}.hook_attn_out", lambda a, hook: store.__setitem__("a", a.detach()))]):
        model(tokens)
    delta = cache["attn_out", layer] - store["a"]  # this head's contribution, through the block's own modules
    logits2 = model.run_with_hooks(tokens, fwd_hooks=[
        (f"blocks.{n - 1}.hook_resid_post", lambda r, hook: r - delta),
        ("ln_final.hook_scale", lambda s, hook: cache["ln_final.hook_scale"]),
    ])
    before = logits[0, -1, T] - logits[0, -1, B]
    after = logits2[0, -1, T] - logits2[0, -1, B]
    return float(before - after)


@torch.no_grad()
def _ablated_source_position(model, tokens, k: int) -> float:
    """logit[T] - logit[B] change when what every head reads from source position k (its value vectors) is removed
    from the final stream: per layer, zero hook_v at k with the post-norm frozen, and take the change in attn_out."""
    n = model.cfg.n_layers
    logits, cache = model.run_with_cache(tokens)
    delta = 0
    for layer in model.cfg.attn_layers:
        store, scale = {}, f"blocks.{layer}.ln1_post.hook_scale"

        def zero_v(v, hook):
            v = v.clone()
            v[:, k] = 0
            return v

        frozen = [(scale, lambda s, hook: cache[scale])] if scale in model.hook_dict else []
        with model.hooks([(f"blocks.{layer}.attn.hook_v", zero_v), *frozen,
                          (f"blocks.{layer}.hook_attn_out", lambda a, hook: store.__setitem__("a", a))]):
            model(tokens)
        delta = delta + cache["attn_out", layer] - store["a"]
    logits2 = model.run_with_hooks(tokens, fwd_hooks=[
        (f"blocks.{n - 1}.hook_resid_post", lambda r, hook: r - delta),
        ("ln_final.hook_scale", lambda s, hook: cache["ln_final.hook_scale"]),
    ])
    return float((logits[0, -1, T] - logits[0, -1, B]) - (logits2[0, -1, T] - logits2[0, -1, B]))


def test_head_attribution_matches_ablation(model):
    tokens = _tokens()
    res = mechscope.direct_logit_attribution(model, tokens, target=T, minus=B, by="head")
    assert res.values.shape == (model.cfg.n_layers * model.cfg.n_heads,)
    for layer, head in ((0, 1), (model.cfg.n_layers - 1, 2)):
        want = _ablated_logit_diff(model, tokens, layer, head)
        got = float(res.values[res.labels.index(f"L{layer}H{head}")])
        assert abs(got - want) < 1e-5 * max(1.0, abs(want)), (layer, head, got, want)


def test_full_and_layer_attributions_sum_to_the_logit_difference(model):
    tokens = _tokens()
    with torch.no_grad():
        logits = model(tokens)
    want = logits[0, -1, T] - logits[0, -1, B]
    for by in ("layer", "full"):
        res = mechscope.direct_logit_attribution(model, tokens, target=T, minus=B, by=by)
        assert abs(float(res.logit - want)) < 1e-5
        assert abs(float(res.values.sum() + res.constant - want)) < 1e-5
    every = mechscope.direct_logit_attribution(model, tokens, target=T, by="layer", position=None)
    assert every.values.shape == (len(every.labels), 7)
    torch.testing.assert_close(every.values.sum(0) + every.constant, logits[0, :, T], atol=1e-5, rtol=0)


def test_neurons_positions_and_heads_agree(model):
    tokens = _tokens()
    heads = mechscope.direct_logit_attribution(model, tokens, target=T, minus=B, by="head")
    pos = mechscope.direct_logit_attribution(model, tokens, target=T, minus=B, by="position")
    assert pos.values.shape == (7,)
    assert abs(float(pos.values.sum() - heads.values.sum())) < 1e-5  # every head's output split by source position
    want = _ablated_source_position(model, tokens, 2)
    assert abs(float(pos.values[2]) - want) < 1e-5 * max(1.0, abs(want))
    neurons = mechscope.direct_logit_attribution(model, tokens, target=T, minus=B, by="neuron")
    _, cache = model.run_with_cache(tokens)
    u = model.tokens_to_residual_directions(T) - model.tokens_to_residual_directions(B)
    stack = cache.stack_neuron_results(model.cfg.n_layers, pos_slice=-1, apply_ln=True)[:, 0]
    torch.testing.assert_close(neurons.values, stack @ u, atol=1e-5, rtol=0)


def test_direction_and_batches():
    model = mechscope.load("default")
    prompts = ["i saw one two three", "the cat sat on the"]
    four, big = model.to_single_token(" four"), model.to_single_token(" big")
    batch = mechscope.direct_logit_attribution(model, prompts, target=torch.tensor([four, big]), by="head")
    assert batch.values.shape == (8, 2) and len(batch.tokens) == 2
    for i, (p, t) in enumerate(zip(prompts, (" four", " big"))):
        one = mechscope.direct_logit_attribution(model, p, target=t, by="head")
        torch.testing.assert_close(batch.values[:, i], one.values, atol=1e-4, rtol=0)  # left padding: pos -1 is last
        assert one.tokens[-1] == p.split()[-1]
    u = model.tokens_to_residual_directions(four)
    by_dir = mechscope.direct_logit_attribution(model, prompts[0], direction=u, by="layer")
    by_tok = mechscope.direct_logit_attribution(model, prompts[0], target=" four", by="layer")
    torch.testing.assert_close(by_dir.values, by_tok.values)
    raw = mechscope.direct_logit_attribution(model, prompts[0], direction=u, by="layer", apply_ln=False)
    _, cache = model.run_with_cache(prompts[0])
    torch.testing.assert_close(raw.values, cache.decompose_resid(pos_slice=-1)[:, 0] @ u)
    grid = mechscope.direct_logit_attribution(model, prompts[0], target=" four", by="head").grid()
    assert grid.values.shape == (2, 4) and grid.row_labels == ["L0", "L1"] and grid.col_labels[-1] == "H3"
    top = by_tok.top(2)
    assert top[0].label in by_tok.labels and abs(top[0].value) >= abs(top[1].value)
    assert set(by_tok.to_dict()) >= {"labels", "values", "tokens", "logit", "constant"}


def test_bad_arguments():
    model = mechscope.load("default")
    with pytest.raises(InputError, match="target"):
        mechscope.direct_logit_attribution(model, "the cat")
    with pytest.raises(InputError, match="not both"):
        mechscope.direct_logit_attribution(model, "the cat", target=" big", direction=torch.zeros(128))
    with pytest.raises(InputError, match="by must be"):
        mechscope.direct_logit_attribution(model, "the cat", target=" big", by="heads")
    with pytest.raises(InputError, match="not one"):
        mechscope.direct_logit_attribution(model, "the cat", target=" big cat")
    with pytest.raises(InputError, match="d_model"):
        mechscope.direct_logit_attribution(model, "the cat", direction=torch.zeros(5))


def test_cli(tmp_path):
    import json

    from typer.testing import CliRunner

    from mechscope.cli import app

    out = tmp_path / "dla.json"
    result = CliRunner().invoke(app, ["dla", "default", "i saw one two three", "--target", " four", "--minus",
                                      " five", "--by", "layer", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "0_mlp_out" in result.output and "sum to" in result.output
    data = json.loads(out.read_text())
    assert data["labels"][0] == "embed" and len(data["values"]) == len(data["labels"])
    bad = CliRunner().invoke(app, ["dla", "default", "the cat", "--target", " big", "--by", "heads"])
    assert bad.exit_code == 2 and "by must be" in bad.output


def test_softcapped_logits_are_attributed_before_the_cap():
    hf, _ = make_pair("gemma2", torch.float32)
    hf.config.final_logit_softcapping = 0.5  # strong, so the cap is visible
    model = mechscope.Model.from_hf(hf)
    tokens = _tokens()
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    res = mechscope.direct_logit_attribution(model, tokens, target=T, by="full")
    pre_cap = (cache["ln_final.hook_out"][0, -1] @ model.W_U + model.b_U)[T].detach()
    assert abs(float(res.values.sum() + res.constant - pre_cap)) < 1e-5
    assert abs(float(res.logit - logits[0, -1, T])) > 1e-3


@pytest.mark.real_models
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_ioi_on_real_models(name):
    model = real_model(name)
    prompt = "When Mary and John went to the store, John gave a drink to"
    with torch.no_grad():
        logits = model(prompt)
    mary, john = model.to_single_token(" Mary"), model.to_single_token(" John")
    want = float(logits[0, -1, mary] - logits[0, -1, john])
    res = mechscope.direct_logit_attribution(model, prompt, target=" Mary", minus=" John", by="full")
    assert want > 0 and abs(float(res.values.sum() + res.constant) - want) < 1e-3 * max(1.0, want)
    heads = mechscope.direct_logit_attribution(model, prompt, target=" Mary", minus=" John", by="head")
    label, value = heads.top(1)[0]
    assert value == pytest.approx(float(res.values[res.labels.index(label)]), abs=1e-4)
