"""Attribution patching: the exact first-order term (float64 finite differences; exact where the metric is linear
in the patched activation), two forwards and one backward, the engine's point names and dims, correlation."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from mechscope.errors import InputError
from mechscope.patching import AttributionResult, attribution_patch, attribution_patch_all, correlation
from mechscope.patching.attribution import first_order

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma3_text", "olmo2"]


def metric(logits):
    return logits[:, -1, 5].mean() - logits[:, -1, 6].mean()


def pair(seed=0, b=2, p=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 128, (b, p), generator=g), torch.randint(3, 128, (b, p), generator=g)


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    hf, _ = make_pair(request.param, torch.float32)
    return mechscope.Model.from_hf(hf)


@pytest.fixture(scope="module")
def model64():
    # GPT-2 computes in float64 end to end; Llama's RMSNorm and NeoX's rotary round through float32, which puts
    # 1e-3 of noise into a finite difference
    hf, _ = make_pair("gpt2", torch.float64)
    return mechscope.Model.from_hf(hf)


def test_equals_the_first_order_term_by_float64_finite_differences(model64):
    clean, corrupted = pair(0)
    res = attribution_patch_all(model64, clean, corrupted, metric, by_pos=True)
    _, cc = model64.run_with_cache(clean)
    _, kc = model64.run_with_cache(corrupted)

    def derivative(name, select):
        delta = torch.zeros_like(kc[name])
        delta[select] = (cc[name] - kc[name])[select]

        def at(eps):
            with torch.no_grad():
                logits = model64.run_with_hooks(corrupted, fwd_hooks=[(name, lambda a, h: a + eps * delta)])
                return float(metric(logits))
        return (at(1e-5) - at(-1e-5)) / 2e-5

    cases = [("resid_pre", "blocks.1.hook_resid_pre", (slice(None), 3), (1, 3)),
             ("mlp_out", "blocks.0.hook_mlp_out", (slice(None), 2), (0, 2)),
             ("z", "blocks.0.attn.hook_z", (slice(None), 4, 2), (0, 2, 4)),
             ("v", "blocks.0.attn.hook_v", (slice(None), 1, 1), (0, 1, 1)),
             ("pattern", "blocks.1.attn.hook_pattern", (slice(None), 3, 5), (1, 3, 5)),
             ("post", "blocks.1.mlp.hook_post", (slice(None), 5, 17), (1, 17, 5))]
    for point, name, select, cell in cases:
        r = res[point]
        assert float(r.values[cell] - r.baseline) == pytest.approx(derivative(name, select), rel=1e-6, abs=1e-9), point


def test_exact_where_the_metric_is_linear_in_the_patched_activation():
    hf, _ = make_pair("llama", torch.float64)
    m = mechscope.Model.from_hf(hf)
    clean, corrupted = pair(1)
    name = "ln_final.hook_out"  # logits = W_U · this: linear
    terms, baseline = first_order(m, corrupted, clean, metric, [name])
    _, cc = m.run_with_cache(clean, names_filter=name)
    with torch.no_grad():
        patched = float(metric(m.run_with_hooks(corrupted, fwd_hooks=[(name, lambda a, h: cc[name])])))
    assert baseline + float(terms[name].sum()) == pytest.approx(patched, rel=1e-12)


def test_two_forwards_and_one_backward_for_every_point():
    hf, _ = make_pair("llama", torch.float32)
    m = mechscope.Model.from_hf(hf)
    counts = {"fwd": 0, "bwd": 0}
    h1 = hf.register_forward_hook(lambda *a: counts.__setitem__("fwd", counts["fwd"] + 1))
    h2 = hf.lm_head.register_full_backward_hook(lambda *a: counts.__setitem__("bwd", counts["bwd"] + 1))
    try:
        res = attribution_patch_all(m, *pair(2), metric)
    finally:
        h1.remove()
        h2.remove()
    assert counts == {"fwd": 2, "bwd": 1}
    assert set(res) == {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "q", "k", "v", "pattern",
                        "post"}


def test_points_and_dims_match_activation_patching(model):
    clean, corrupted = pair(3)
    n, h, kv = model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_kv_heads
    r = attribution_patch(model, clean, corrupted, metric)
    assert isinstance(r, AttributionResult) and r.dims == ("layer", "pos") and r.values.shape == (n, 6)
    assert r.labels["pos"] == [f"#{int(t)}" for t in clean[0]]
    z = attribution_patch(model, clean, corrupted, metric, point="z")
    assert z.dims == ("layer", "head") and z.values.shape == (n, h)
    zp = attribution_patch(model, clean, corrupted, metric, point="z", by_pos=True)
    assert zp.dims == ("layer", "head", "pos") and zp.values.shape == (n, h, 6)
    torch.testing.assert_close(zp.effects().sum(-1), z.effects(), rtol=1e-4, atol=1e-5)
    assert attribution_patch(model, clean, corrupted, metric, point="k").values.shape == (n, kv)
    sub = attribution_patch(model, clean, corrupted, metric, point="q", layers=[1], heads=[0, 2])
    assert sub.values.shape == (1, 2) and sub.labels == {"layer": ["1"], "head": ["0", "2"]}
    assert attribution_patch(model, clean, corrupted, metric, point="post").dims == ("layer", "neuron")
    # noising mirrors denoising: base and source swap
    noise = attribution_patch(model, clean, corrupted, metric, point="z", direction="noise")
    with torch.no_grad():
        assert noise.baseline == pytest.approx(float(metric(model(clean))), abs=1e-5)
        assert z.baseline == pytest.approx(float(metric(model(corrupted))), abs=1e-5)
    # identical runs: no change anywhere
    same = attribution_patch(model, clean, clean, metric, point="resid_mid" if "blocks.0.hook_resid_mid"
                             in model.hook_dict else "resid_post")
    assert bool((same.effects() == 0).all())


def test_correlation():
    a = torch.tensor([[0.1, 2.0, -3.0], [0.5, 0.0, 1.0]])
    c = correlation(a, 2 * a + 1, baseline_b=1.0, k=2)
    assert c["pearson"] == pytest.approx(1.0) and c["spearman"] == pytest.approx(1.0) and c["top_k_overlap"] == 1.0
    assert correlation(a, -a)["spearman"] == pytest.approx(-1.0)
    ties = correlation(torch.tensor([1.0, 1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert ties["spearman"] == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr
    assert correlation(torch.tensor([1.0, float("nan"), 2.0]), torch.tensor([1.0, 5.0, 3.0]))["n"] == 2
    with pytest.raises(InputError, match="same cells"):
        correlation(a, a[0])


def test_bad_input_is_a_sentence():
    hf, _ = make_pair("gpt_neox", torch.float32)
    m = mechscope.Model.from_hf(hf)
    clean, corrupted = pair(4)
    with pytest.raises(InputError, match="no blocks.L.hook_resid_mid"):
        attribution_patch(m, clean, corrupted, metric, point="resid_mid")
    with pytest.raises(InputError, match="point must be one of"):
        attribution_patch(m, clean, corrupted, metric, point="resid")
    with pytest.raises(InputError, match="same number of prompts and tokens"):
        attribution_patch(m, clean, corrupted[:, :4], metric)
    with pytest.raises(InputError, match="heads= selects heads"):
        attribution_patch(m, clean, corrupted, metric, point="resid_pre", heads=[0])
    with pytest.raises(InputError, match="does not exist"):
        attribution_patch(m, clean, corrupted, metric, layers=[7])


@pytest.mark.parametrize("point", ["resid_pre", "resid_mid", "attn_out", "z", "q", "k", "v", "pattern", "post"])
@pytest.mark.parametrize("by_pos", [False, True])
def test_dims_and_labels_equal_activation_patch(point, by_pos):
    """Same dims, labels and shapes as exact activation patching (k/v under GQA: ``kv_head``), so the two can be
    compared cell for cell."""
    from mechscope.patching import activation_patch

    hf, _ = make_pair("llama", torch.float32)  # GQA: fewer key/value heads than query heads
    model = mechscope.Model.from_hf(hf)
    clean, corrupted = pair(5)
    a = activation_patch(model, clean, corrupted, metric, point=point, by_pos=by_pos)
    b = attribution_patch(model, clean, corrupted, metric, point=point, by_pos=by_pos)
    assert a.dims == b.dims and a.labels == b.labels and a.values.shape == b.values.shape


def test_leaves_the_model_untouched(model):
    """The backward needs activation gradients only: no weight gets a .grad, and every weight still requires grad."""
    clean, corrupted = pair(7)
    attribution_patch_all(model, clean, corrupted, metric)
    params = list(model.hf_model.parameters())
    assert all(p.grad is None for p in params) and all(p.requires_grad for p in params)


def test_correlation_with_activation_patch_result_uses_its_unpatched_run():
    """``correlation(attribution, activation_patch(...))``: the exact result holds patched metric values and the
    unpatched run's metric in ``baselines`` (corrupted when denoising, clean when noising); effects are measured from
    it, so the top-k overlap ranks by |effect|, not by |metric|."""
    from mechscope.patching import PatchResult

    values = torch.tensor([-0.6, -0.5, -0.1, -0.55])         # corrupted -0.6: effects 0, 0.1, 0.5, 0.05
    exact = PatchResult(values, ("x",), title="activation patching (denoise): z",
                        baselines={"clean": 0.0, "corrupted": -0.6})
    attr = torch.tensor([0.0, 0.1, 0.5, 0.05])
    c = correlation(attr, exact, k=1)
    assert c["top_k_overlap"] == 1.0   # both say cell 2 (before: |metric| ranked cell 0 first)
    noised = PatchResult(values, ("x",), title="activation patching (noise): z",
                         baselines={"clean": -0.1, "corrupted": -0.6})
    # effects from clean: -0.5, -0.4, 0, -0.45 -> cell 0 (by |metric| it would be cell 0 too; cell 2 by |effect| is 0)
    assert correlation(torch.tensor([0.0, 0.0, 1.0, 0.0]), noised, k=1)["top_k_overlap"] == 0.0
    assert correlation(torch.tensor([-0.5, -0.4, 0.0, -0.45]), noised, k=2)["top_k_overlap"] == 1.0
