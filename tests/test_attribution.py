"""Input attribution (``mechscope.attribution``): every method against an independent computation.

The reference forward is HF's own ``inputs_embeds`` path (``hf_model(inputs_embeds=e)``), not mechscope's
``hook_embed`` replacement, so each test also checks that the two agree. References: Captum's implementations
(skipped cleanly when captum is absent), ``torch.autograd.grad``, explicit loops, exact Shapley values by
enumerating every coalition, a numpy least-squares LIME fit, and a plain matrix-product rollout.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

import mechscope
from families import make_pair
from real import real_model
from mechscope.attribution import (Loss, Metric, TokenLogit, attention_rollout, attribute, grad_x_input,
                                   integrated_gradients, lime, occlusion, quadrature, saliency, shapley_values)
from mechscope.errors import InputError, InputTypeError

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma3_text", "olmo2"]  # RMS, LayerNorm+learned pos, parallel, sandwich
TOKENS = torch.tensor([[3, 17, 42, 9, 77, 5]])
TOKEN = 11  # the target token id


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    hf = make_pair(request.param, torch.float32)[0]
    return mechscope.Model.from_hf(hf)


def hf_embeds(model, tokens=TOKENS):
    """The token embeddings HF's inputs_embeds path expects (Gemma's embedding module includes its scale)."""
    return model.hf_model.get_input_embeddings()(tokens).detach()


def hf_f(model, embeds, token=TOKEN, pos=-1):
    """The target through HF's inputs_embeds path: logit of ``token`` at ``pos``, per row."""
    n = embeds.shape[0]
    return model.hf_model(inputs_embeds=embeds, attention_mask=torch.ones(n, embeds.shape[1])).logits[:, pos, token]


def test_grad_x_input_and_saliency_match_autograd(model):
    e = hf_embeds(model).requires_grad_(True)
    (g,) = torch.autograd.grad(hf_f(model, e).sum(), e)
    gxi = grad_x_input(model, TOKENS, TOKEN)
    torch.testing.assert_close(gxi.dim_scores, (g * e)[0].detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gxi.scores, (g * e)[0].sum(-1).detach(), rtol=1e-4, atol=1e-5)
    sal = saliency(model, TOKENS, TOKEN)
    torch.testing.assert_close(sal.dim_scores, g[0].abs(), rtol=1e-4, atol=1e-6)
    signed = saliency(model, TOKENS, TOKEN, abs=False)
    torch.testing.assert_close(signed.dim_scores, g[0], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        assert gxi.positions == list(range(6)) and gxi.value == pytest.approx(float(hf_f(model, e)[0]), rel=1e-5)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_integrated_gradients_match_captum(model, method):
    captum = pytest.importorskip("captum.attr")
    ig = integrated_gradients(model, TOKENS, TOKEN, n_steps=12, method=method, batch_size=5, baseline="zeros")
    x = hf_embeds(model)
    ref, delta = captum.IntegratedGradients(lambda e: hf_f(model, e)).attribute(
        x, baselines=torch.zeros_like(x), n_steps=12, method=method, internal_batch_size=5,
        return_convergence_delta=True)
    if method == "riemann_trapezoid":  # Captum's trapezoid weights sum to (n-1)/n (1/n steps on a 1/(n-1) grid)
        ref, delta = ref * 12 / 11, None
    torch.testing.assert_close(ig.dim_scores, ref[0], rtol=1e-3, atol=1e-4)
    if delta is not None:
        diff = ig.value - ig.baseline_value
        assert ig.delta == pytest.approx(abs(float(delta)) / abs(diff), rel=1e-2, abs=1e-5)


def test_integrated_gradients_completeness_within_delta(model):
    ig = integrated_gradients(model, TOKENS, TOKEN, n_steps=64, baseline=7)  # from token 7's embedding
    x = hf_embeds(model)
    with torch.no_grad():
        f1, f0 = float(hf_f(model, x)), float(hf_f(model, hf_embeds(model, torch.full_like(TOKENS, 7))))
    assert ig.value == pytest.approx(f1, rel=1e-5, abs=1e-5) and ig.baseline_value == pytest.approx(f0, abs=1e-5)
    gap = abs(float(ig.scores.sum()) - (f1 - f0))
    assert gap <= ig.delta * abs(f1 - f0) * 1.01 + 1e-5
    assert ig.delta < 0.05  # tiny smooth models converge within 64 Gauss-Legendre points


def test_quadrature_rules_integrate_polynomials():
    for method in ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right"):
        a, w = quadrature(method, 400)
        assert float(w.sum()) == pytest.approx(1.0) and 0 <= float(a.min()) and float(a.max()) <= 1
        assert float((w * a ** 2).sum()) == pytest.approx(1 / 3, abs=3e-3)
    a, w = quadrature("gausslegendre", 4)  # exact for degree 7
    assert float((w * a ** 7).sum()) == pytest.approx(1 / 8, abs=1e-12)


def _replaced(x, base, keep):
    """``x (1, pos, d)`` with the positions where ``keep`` is False taken from ``base``."""
    return torch.where(torch.as_tensor(keep)[None, :, None], x, base)


def test_occlusion_matches_explicit_loop(model):
    att = occlusion(model, TOKENS, TOKEN, window=2, stride=1, baseline=7)
    x, base = hf_embeds(model), hf_embeds(model, torch.full_like(TOKENS, 7))
    with torch.no_grad():
        f = float(hf_f(model, x))
        total, count = [0.0] * 6, [0] * 6
        for start in range(5):
            keep = [not start <= i < start + 2 for i in range(6)]
            drop = f - float(hf_f(model, _replaced(x, base, keep)))
            for i in range(start, start + 2):
                total[i] += drop
                count[i] += 1
    torch.testing.assert_close(att.scores, torch.tensor([t / c for t, c in zip(total, count)]), rtol=1e-4, atol=1e-4)


def test_occlusion_matches_captum(model):
    captum = pytest.importorskip("captum.attr")
    att = occlusion(model, TOKENS, TOKEN, window=3, stride=2, baseline="zeros")
    x = hf_embeds(model)
    d = x.shape[-1]
    with torch.no_grad():
        ref = captum.Occlusion(lambda e: hf_f(model, e)).attribute(
            x, sliding_window_shapes=(3, d), strides=(2, d), baselines=0.0)
    torch.testing.assert_close(att.scores, ref[0, :, 0], rtol=1e-4, atol=1e-4)


def exact_shapley(v, n):
    """Shapley values by the coalition formula: phi_i = sum_S |S|!(n-|S|-1)!/n! (v(S + i) - v(S))."""
    phi = [0.0] * n
    for i in range(n):
        rest = [j for j in range(n) if j != i]
        for k in range(n):
            for S in itertools.combinations(rest, k):
                w = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                phi[i] += w * (v(set(S) | {i}) - v(set(S)))
    return phi


def test_shapley_exact_matches_coalition_enumeration(model):
    tokens = TOKENS[:, :5]
    att = shapley_values(model, tokens, TOKEN, n_samples=120, baseline="zeros")  # 5! = 120: every ordering
    assert att.params["exact"]
    x = hf_embeds(model, tokens)
    memo = {}

    def v(S):
        key = frozenset(S)
        if key not in memo:
            with torch.no_grad():
                memo[key] = float(hf_f(model, _replaced(x, torch.zeros_like(x), [i in S for i in range(5)])))
        return memo[key]

    torch.testing.assert_close(att.scores, torch.tensor(exact_shapley(v, 5)), rtol=1e-4, atol=1e-4)


def test_shapley_sampling_is_efficient_and_matches_captum_exact(model):
    att = shapley_values(model, TOKENS, TOKEN, n_samples=8, seed=3, baseline=7)
    assert not att.params["exact"] and att.delta < 1e-4  # every ordering telescopes to f(x) - f(x')
    captum = pytest.importorskip("captum.attr")
    tokens = TOKENS[:, :4]
    exact = shapley_values(model, tokens, TOKEN, n_samples=24, baseline="zeros")
    x = hf_embeds(model, tokens)
    with torch.no_grad():
        ref = captum.ShapleyValues(lambda e: hf_f(model, e)).attribute(
            x, baselines=0.0, feature_mask=torch.arange(4)[None, :, None].expand_as(x).contiguous())
    torch.testing.assert_close(exact.scores, ref[0, :, 0], rtol=1e-4, atol=1e-4)


def test_lime_matches_numpy_weighted_least_squares(model):
    gen = torch.Generator().manual_seed(0)
    masks = torch.cat([torch.ones(1, 6, dtype=torch.bool), torch.rand(40, 6, generator=gen) < 0.5])
    att = lime(model, TOKENS, TOKEN, masks=masks, alpha=0.5, kernel_width=0.3, baseline="zeros")
    x = hf_embeds(model)
    with torch.no_grad():
        y = np.array([float(hf_f(model, _replaced(x, torch.zeros_like(x), m))) for m in masks])
    M = masks.numpy().astype(float)
    cos = M.sum(1) / (np.linalg.norm(M, axis=1) * np.sqrt(6) + 1e-300)
    w = np.exp(-((1 - cos) / 0.3) ** 2)
    A = np.hstack([M, np.ones((len(M), 1))])
    # ridge on the coefficients only: append sqrt(alpha) rows for them
    A_aug = np.vstack([A * np.sqrt(w)[:, None], np.hstack([np.eye(6) * np.sqrt(0.5), np.zeros((6, 1))])])
    y_aug = np.concatenate([y * np.sqrt(w), np.zeros(6)])
    coef = np.linalg.lstsq(A_aug, y_aug, rcond=None)[0]
    torch.testing.assert_close(att.scores, torch.tensor(coef[:6], dtype=torch.float32), rtol=1e-3, atol=1e-3)
    assert att.params["intercept"] == pytest.approx(coef[6], rel=1e-3, abs=1e-3)


def test_rollout_matches_plain_matrix_product(model):
    att = attention_rollout(model, TOKENS, position=-2)
    with torch.no_grad():
        pats = model.hf_model(TOKENS, output_attentions=True).attentions  # eager model: HF's own patterns
    R = np.eye(6)
    for p in pats:
        A = 0.5 * p[0].double().mean(0).numpy() + 0.5 * np.eye(6)
        A = A / A.sum(-1, keepdims=True)
        R = A @ R
    torch.testing.assert_close(att.scores, torch.tensor(R[4], dtype=torch.float32), rtol=1e-5, atol=1e-6)
    assert float(att.scores.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def llama():
    return mechscope.Model.from_hf(make_pair("llama", torch.float32)[0])


def test_targets(llama):
    a = grad_x_input(llama, TOKENS, TOKEN, position=3)
    b = grad_x_input(llama, TOKENS, 20, position=3)
    diff = grad_x_input(llama, TOKENS, (TOKEN, 20), position=3)  # a pair: the logit difference
    torch.testing.assert_close(diff.dim_scores, a.dim_scores - b.dim_scores, rtol=1e-4, atol=1e-6)
    assert diff.positions == list(range(6)) and "position 3" in diff.target
    metric = grad_x_input(llama, TOKENS, Metric(lambda logits: logits[:, 3, TOKEN]))
    torch.testing.assert_close(metric.scores, a.scores)
    logp = grad_x_input(llama, TOKENS, TokenLogit(TOKEN, position=3, log_prob=True))
    with torch.no_grad():
        assert logp.value == pytest.approx(float(llama(TOKENS)[0, 3].log_softmax(-1)[TOKEN]), rel=1e-5)
    loss = occlusion(llama, TOKENS, Loss())
    with torch.no_grad():
        assert loss.value == pytest.approx(float(llama(TOKENS, return_type="loss")), rel=1e-5)
    pred = saliency(llama, TOKENS)  # None: the predicted token
    with torch.no_grad():
        assert f"logit(#{int(llama(TOKENS)[0, -1].argmax())})" in pred.target


def test_result_to_dict_and_top(llama):
    att = integrated_gradients(llama, TOKENS, TOKEN, n_steps=8)
    d = json.loads(json.dumps(att.to_dict()))
    assert set(d["scores"]) == {f"{p}:#{t}" for p, t in enumerate(TOKENS[0].tolist())}
    assert d["method"] == "ig" and d["delta"] == pytest.approx(att.delta) and d["params"]["n_steps"] == 8
    top = att.top(2)
    assert len(top) == 2 and abs(top[0].score) >= abs(top[1].score) and top[0].score == float(att.scores.max()) \
        or top[0].score == float(att.scores.min())
    assert "ig" in repr(att)


def test_batch_size_does_not_change_results(llama):
    a = integrated_gradients(llama, TOKENS, TOKEN, n_steps=10, batch_size=3)
    b = integrated_gradients(llama, TOKENS, TOKEN, n_steps=10, batch_size=10)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    c = shapley_values(llama, TOKENS, TOKEN, n_samples=4, batch_size=2)
    d = shapley_values(llama, TOKENS, TOKEN, n_samples=4, batch_size=64)
    torch.testing.assert_close(c.scores, d.scores, rtol=1e-5, atol=1e-5)


def test_bos_is_kept_and_not_attributed(tinystories):
    prompt = "Once upon a time there was a cat"
    att = attribute(tinystories, prompt, None, method="occlusion")
    assert att.positions[0] == 1 and att.prompt_tokens[0] == tinystories.tokenizer.bos_token
    with_bos = attribute(tinystories, prompt, None, method="occlusion", include_bos=True)
    assert with_bos.positions[0] == 0 and len(with_bos.scores) == len(att.scores) + 1
    ig = attribute(tinystories, prompt, None, method="ig")
    assert ig.delta is not None and len(ig.tokens) == len(ig.positions) and "auto" in ig.params["baseline"]


def test_bad_input(llama):
    with pytest.raises(InputError, match="unknown attribution method"):
        attribute(llama, TOKENS, TOKEN, method="deeplift")
    with pytest.raises(InputError, match="takes no target"):
        attribute(llama, TOKENS, TOKEN, method="rollout")
    with pytest.raises(InputError, match="outside the prompt"):
        attribute(llama, TOKENS, TOKEN, method="saliency", position=6)
    with pytest.raises(InputError, match="outside the model's vocabulary"):
        attribute(llama, TOKENS, 10_000, method="saliency")
    with pytest.raises(InputError, match="one value per row"):
        attribute(llama, TOKENS, lambda logits: logits[:, -1, 3].sum(), method="saliency")
    with pytest.raises(InputError, match="baseline tensor"):
        attribute(llama, TOKENS, TOKEN, baseline=torch.zeros(3))
    with pytest.raises(InputError, match="pad token"):
        attribute(llama, TOKENS, TOKEN, method="occlusion", baseline="pad")
    with pytest.raises(InputError, match="window"):
        attribute(llama, TOKENS, TOKEN, method="occlusion", window=9)
    with pytest.raises(InputError, match="n_steps"):
        attribute(llama, TOKENS, TOKEN, method="ig", n_steps=0)
    with pytest.raises(InputError, match="takes"):
        attribute(llama, TOKENS, TOKEN, method="saliency", n_steps=3)
    with pytest.raises(InputError, match="one prompt"):
        attribute(llama, TOKENS.expand(2, -1), TOKEN)
    with pytest.raises(InputTypeError, match="target must be"):
        attribute(llama, TOKENS, 1.5)


@pytest.mark.real_models
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_ig_defaults_keep_delta_under_5_percent_on_real_models(name):
    model = real_model(name)
    ig = integrated_gradients(model, "The capital of France is", " Paris")  # defaults: auto baseline, IG_STEPS
    assert ig.delta < 0.05, ig
    assert ig.tokens == ["The", " capital", " of", " France", " is"]  # BOS kept, not attributed
    assert abs(float(ig.scores.sum()) - (ig.value - ig.baseline_value)) <= ig.delta * abs(ig.value - ig.baseline_value) + 1e-4


def test_runner_is_a_captum_forward_func(llama):
    captum = pytest.importorskip("captum.attr")
    from mechscope.attribution import prepare

    r = prepare(llama, TOKENS, TOKEN)
    ref = captum.InputXGradient(r).attribute(r.embeds.clone().requires_grad_(True))
    torch.testing.assert_close(ref[0].detach(), grad_x_input(llama, TOKENS, TOKEN).dim_scores)


@pytest.mark.parametrize("method", ["ig", "rollout"])
def test_cli_attribute_prints_a_table_and_writes_json(shared, tmp_path, method):
    from typer.testing import CliRunner

    from mechscope.cli import app

    path = tmp_path / "out.json"
    model = str(shared / "models" / "TinyStories-656K")
    args = ["attribute", model, "Once upon a time there was a cat", "--method", method, "--steps", "8",
            "--json", str(path)]
    if method == "rollout":
        args.remove("--steps"), args.remove("8")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    assert data["method"] == method and len(data["scores"]) == len(data["prompt_tokens"]) - 1  # BOS not attributed
    assert (data["delta"] is not None) == (method == "ig") and "score" in data["tokens"][0]
    bad = CliRunner().invoke(app, ["attribute", model, "a cat", "--method", "nope"])
    assert bad.exit_code == 2 and "unknown attribution method" in bad.output


def test_kernel_shap_exact_matches_coalition_enumeration_and_sampling_is_efficient(model):
    from mechscope.attribution import kernel_shap

    tokens = TOKENS[:, :5]
    att = kernel_shap(model, tokens, TOKEN, n_samples=30, baseline="zeros")  # 2^5 - 2 = 30: every coalition
    assert att.params["exact"]
    x = hf_embeds(model, tokens)

    def v(S):
        with torch.no_grad():
            return float(hf_f(model, _replaced(x, torch.zeros_like(x), [i in S for i in range(5)])))

    torch.testing.assert_close(att.scores, torch.tensor(exact_shapley(v, 5)), rtol=1e-4, atol=1e-4)
    sampled = kernel_shap(model, TOKENS, TOKEN, n_samples=20, baseline=7)
    assert not sampled.params["exact"] and sampled.delta < 1e-6  # the efficiency constraint holds exactly


def test_gradient_methods_refuse_inference_mode_with_a_sentence():
    model = mechscope.load("default")
    with torch.inference_mode(), pytest.raises(InputError, match="inference_mode"):
        attribute(model, "the cat sat on the", " cat", method="saliency")
    with torch.no_grad():  # no_grad is fine: the methods turn gradients back on
        assert attribute(model, "the cat sat on the", " cat", method="saliency").scores.shape == (5,)
