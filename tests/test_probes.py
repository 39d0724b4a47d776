"""Linear probes: logistic regression against an independent Newton solver, difference of means against its
definition, activations gathered by hooks against run_with_cache, per-head probes, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mechscope
from families import make_pair
from mechscope.errors import InputError
from mechscope.probes import (
    activations_from_cache, collect_activations, fit_diff_means, fit_logistic, probe_cache, train_probe,
    train_test_split,
)

PROMPTS = ["a b c d", "e f", "g h i", "j k l m n", "o p", "q r s", "t u v w", "x y z"]


def _blobs(n=90, d=4, classes=3, seed=0, spread=1.5):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    centres = torch.randn(classes, d, generator=g) * spread
    x = centres[y] + torch.randn(n, d, generator=g) * torch.linspace(0.5, 3, d)  # unequal scales: standardising matters
    return x.double(), y


def _newton(x: np.ndarray, y: np.ndarray, c: int, l2: float, steps: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Reference: multinomial logistic regression by Newton's method in numpy, on features standardised as the
    probe does; returns (W in standardised coordinates (d, c), b (c,)) with b centred (b is defined up to a shift)."""
    z = (x - x.mean(0)) / x.std(0)
    n, d = z.shape
    za = np.hstack([z, np.ones((n, 1))])  # bias as a last, unpenalised feature
    theta = np.zeros((d + 1) * c)
    onehot = np.eye(c)[y]
    pen = np.kron(np.eye(d + 1) * np.r_[np.ones(d), 0], np.eye(c)) * l2  # theta laid out (feature, class)
    for _ in range(steps):
        logits = za @ theta.reshape(d + 1, c)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = (za.T @ (p - onehot)).reshape(-1) / n + pen @ theta
        hess = sum(np.kron(np.outer(za[i], za[i]), np.diag(p[i]) - np.outer(p[i], p[i])) for i in range(n)) / n + pen
        theta -= np.linalg.lstsq(hess, grad, rcond=None)[0]  # the bias shift direction is singular
    theta = theta.reshape(d + 1, c)
    return theta[:d], theta[d] - theta[d].mean()


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_matches_newton(classes):
    x, y = _blobs(classes=classes)
    l2 = 0.05
    res = fit_logistic(torch.stack([x, x.flip(-1)]), y, l2=l2, test_frac=0.0)  # two units fitted at once
    assert len(res.test_idx) == 0 and res.test_acc.isnan().all()
    w_ref, b_ref = _newton(x.numpy(), y.numpy(), classes, l2)
    std = x.std(0, correction=0)
    Ws = res.W[0].double() * std[:, None]  # back to standardised coordinates
    torch.testing.assert_close(Ws, torch.from_numpy(w_ref), atol=1e-4, rtol=1e-4)
    # same probabilities (b is only defined up to a shift common to all classes)
    logits = x @ res.W[0].double() + res.b[0].double()
    z = (x - x.mean(0)) / std
    ref = torch.from_numpy(z.numpy() @ w_ref + b_ref)
    torch.testing.assert_close(logits.softmax(-1), ref.softmax(-1), atol=1e-4, rtol=1e-4)
    # the second unit saw the same data with its features reversed: the same fit, reversed
    torch.testing.assert_close(res.W[1].flip(0), res.W[0], atol=1e-4, rtol=1e-4)
    acc = ((x @ res.W[0].double() + res.b[0].double()).argmax(-1) == y).double().mean()
    assert res.train_acc[0].item() == pytest.approx(acc.item())


def test_separable_toy_direction_and_accuracy():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(200) % 2
    x = torch.randn(200, 6, generator=g)
    x[:, 2] += torch.where(y == 1, 4.0, -4.0)  # the classes differ along axis 2 only
    for fit in (fit_logistic, fit_diff_means):
        res = fit(x, y.tolist())
        assert res.directions.shape == (1, 6)
        assert res.directions[0, 2] > (0.95 if fit is fit_diff_means else 0.85)  # logistic: any separating normal
        assert res.directions[0].abs().argmax() == 2 and res.test_acc.item() == 1.0 and res.train_acc.item() == 1.0
        assert torch.equal(res.predict(x[None])[0], y)


def test_diff_means_is_its_definition():
    x, y = _blobs(n=120, d=5, classes=3)
    res = fit_diff_means(torch.stack([x, 2 * x]), y, test_frac=0.25, seed=3)
    tr = res.train_idx
    mu = torch.stack([x[tr][y[tr] == c].mean(0) for c in range(3)])
    for c in range(3):
        v = mu[c] - (mu.sum(0) - mu[c]) / 2
        torch.testing.assert_close(res.directions[0, c].double(), v / v.norm(), atol=1e-6, rtol=1e-6)
    nearest = torch.cdist(x, mu).argmin(-1)  # nearest class mean
    te = res.test_idx
    assert res.test_acc[0].item() == pytest.approx((nearest[te] == y[te]).double().mean().item())
    assert res.test_acc[1].item() == pytest.approx(res.test_acc[0].item())  # scaling changes nothing
    yb = (y > 0).long()
    binary = fit_diff_means(x, yb.tolist())
    xt, yt = x[binary.train_idx], yb[binary.train_idx]
    m0, m1 = xt[yt == 0].mean(0), xt[yt == 1].mean(0)
    torch.testing.assert_close(binary.directions[0].double(), (m1 - m0) / (m1 - m0).norm(), atol=1e-6, rtol=1e-6)


def test_split_is_stratified_and_seeded():
    y = torch.tensor([0] * 50 + [1] * 10 + [2] * 3)
    tr, te = train_test_split(y, 0.2, seed=7)
    assert sorted([*tr.tolist(), *te.tolist()]) == list(range(63))
    assert [int((y[te] == c).sum()) for c in range(3)] == [10, 2, 1]
    assert torch.equal(te, train_test_split(y, 0.2, seed=7)[1])
    assert not torch.equal(te, train_test_split(y, 0.2, seed=8)[1])


@pytest.fixture(scope="module", params=["llama", "gpt2", "gpt_neox", "olmo2"])
def model(request):
    return mechscope.Model.from_hf(make_pair(request.param, torch.float32)[0])


def _ids(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 100, (n, 9), generator=g)


def test_collected_activations_equal_the_cache(model):
    ids = _ids()
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith(("hook_resid_post", "attn.hook_z")))
    pos = torch.tensor([8, 3, 0, -1, 5, 2, -2, 7])
    acts = collect_activations(model, ids, position=pos, batch_size=3)
    assert acts.shape == (model.cfg.n_layers, 8, model.cfg.d_model)
    absolute = torch.where(pos < 0, pos + 9, pos)
    for layer in range(model.cfg.n_layers):
        assert torch.equal(acts[layer], cache["resid_post", layer][torch.arange(8), absolute])
    assert torch.equal(activations_from_cache(cache, "resid_post", position=pos), acts)
    z = collect_activations(model, ids, hook="z", layers=[-1])  # per head: (layer, head, n, d_head)
    assert z.shape == (1, model.cfg.n_heads, 8, model.cfg.d_head_v)
    assert torch.equal(z[0], cache["z", -1][:, -1].transpose(0, 1))
    assert torch.equal(activations_from_cache(cache, "z", layers=[model.cfg.n_layers - 1]), z)
    one = collect_activations(model, ids, hook="blocks.0.hook_resid_post", position=-1)
    assert torch.equal(one[0], cache["resid_post", 0][:, -1])


def test_train_probe_per_layer_and_per_head(model):
    ids = _ids(40, seed=1)
    labels = (ids[:, -1] % 2).tolist()  # the last token's parity: readable at the last position
    res = train_probe(model, ids, labels, l2=1e-2)
    assert res.train_acc.shape == res.test_acc.shape == (model.cfg.n_layers,) and res.unit_labels == ["L0", "L1"]
    assert res.directions.shape == (model.cfg.n_layers, model.cfg.d_model)
    assert torch.allclose(res.directions.norm(dim=-1), torch.ones(model.cfg.n_layers))
    heads = train_probe(model, ids, labels, method="diff_means", hook="z")
    assert heads.test_acc.shape == (len(model.cfg.attn_layers), model.cfg.n_heads)
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_post"))
    cached = probe_cache(cache, labels, l2=1e-2)
    assert torch.equal(cached.train_acc, res.train_acc) and torch.equal(cached.W, res.W)


def test_padded_prompts_use_each_prompts_last_token():
    hf = make_pair("llama", torch.float32)[0]
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{chr(97 + i): 3 + i for i in range(26)}}  # one token per letter
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    m = mechscope.Model.from_hf(hf, tok)
    acts = collect_activations(m, PROMPTS, layers=[1], batch_size=3)
    alone = torch.stack([m.run_with_cache(p, names_filter="blocks.1.hook_resid_post")[1]["resid_post", 1][0, -1]
                         for p in PROMPTS])
    torch.testing.assert_close(acts[0], alone, atol=1e-5, rtol=1e-5)  # padding changes only the matmul shapes
    with pytest.raises(InputError, match="outside prompt 1, which has 3 tokens"):
        collect_activations(m, PROMPTS, position=4)


def test_bad_input_is_a_sentence(model):
    x, y = _blobs()
    with pytest.raises(InputError, match="89 labels for 90 examples"):
        fit_logistic(x, y[:-1])
    with pytest.raises(InputError, match="at least two classes"):
        fit_diff_means(x, [0] * 90)
    with pytest.raises(InputError, match="neither a hook point"):
        collect_activations(model, _ids(), hook="resid_psot")
    with pytest.raises(InputError, match="a probe reads one position's vector"):
        collect_activations(model, _ids(), hook="pattern")
    with pytest.raises(InputError, match="one per prompt"):
        collect_activations(model, _ids(), position=[1, 2])
    with pytest.raises(InputError, match="test_frac"):
        fit_logistic(x, y, test_frac=1.5)
