"""Edge attribution patching: EAP is the exact first-order term of ablating one edge, per receiver (finite
differences through the ablation forward, no autograd); EAP-IG is the same term averaged over Hanna et al.'s
interpolated inputs; the graph's structure (GQA kv receivers, parallel blocks, per-layer attention nodes under
sandwich norms, OLMo2's norm-less inputs, hybrid mixers) and its refusals. Tiny random float64 models from
tests/family_configs."""

from __future__ import annotations

import importlib

import pytest
import torch

import mechscope
from families import make_pair
from mechscope.errors import InputError, UnsupportedModelError
from mechscope.patching import Graph, eap
from mechscope.patching.eap import record
from mechscope.patching.graph import EdgeRun

FAMILIES = ["gpt2", "llama", "gpt_neox", "gemma3_text", "olmo2", "bamba"]


def metric(logits):
    return logits[:, -1, 5].mean() - logits[:, -1, 7].mean() + 0.1 * logits[:, 2, 9].mean()


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request):
    hf, _ = make_pair(request.param, torch.float64)
    model = mechscope.Model.from_hf(hf)
    gen = torch.Generator().manual_seed(0)
    clean, corrupted = torch.randint(3, 100, (2, 6), generator=gen), torch.randint(3, 100, (2, 6), generator=gen)
    return request.param, model, Graph(model), clean, corrupted


class _Shift(EdgeRun):
    """Ablation forward whose sender differences are fixed (clean − corrupted of the plain runs), for checking
    EAP-IG's gradients at interpolated inputs, where the run's own sender outputs are not the clean ones."""

    def __init__(self, graph, coef, diff, input=None):
        super().__init__(graph, coef=coef, corrupted=diff, input=input)

    def _sender(self, act, point, start, how):
        self.diff = self.corrupted


def _fd(model, g, clean, make_run, s, r, h):
    def f(t):
        coef = torch.zeros(g.n_senders, g.n_receivers, dtype=torch.float64)
        coef[s, r] = t
        with torch.no_grad():
            return float(metric(model.run_with_hooks(clean, fwd_hooks=make_run(coef).hooks())))
    return (f(h) - f(-h)) / (2 * h)


def _edges(g, n=14):
    idx = g.valid.nonzero().tolist()
    return idx[::max(1, len(idx) // n)] + [idx[-1]]


def test_eap_is_the_first_order_term_of_each_edge(setup):
    fam, model, g, clean, corrupted = setup
    scores = eap(model, clean, corrupted, metric, graph=g)
    _, acts = record(model, g, corrupted)
    # only GPT-2 runs all in float64 (RMSNorm, rotary and some softmaxes run in float32 even in a float64 model):
    # a wider step and tolerance for the others
    h, tol = (1e-6, 1e-7) if fam == "gpt2" else (1e-3, 2e-3)
    scale = float(scores.scores.abs().max())
    for s, r in _edges(g):
        fd = _fd(model, g, clean, lambda c: EdgeRun(g, coef=c, corrupted=acts), s, r, h)
        assert abs(fd - float(scores.scores[s, r])) <= tol * scale, (fam, g.edge_name(s, r))
    assert torch.equal(scores.scores[~g.valid], torch.zeros_like(scores.scores[~g.valid]))


def test_eap_ig_averages_the_gradient_over_interpolated_inputs(setup):
    fam, model, g, clean, corrupted = setup
    steps = 3
    ig = eap(model, clean, corrupted, metric, graph=g, method="eap-ig", ig_steps=steps, ig_batch=2)
    _, a_clean = record(model, g, clean)
    _, a_corr = record(model, g, corrupted)
    diff = a_corr - a_clean
    h, tol = (1e-6, 1e-7) if fam == "gpt2" else (1e-3, 2e-3)
    scale = float(ig.scores.abs().max())
    for s, r in _edges(g, 6):
        want = 0.0
        for k in range(steps):
            x = a_corr[0] + k / steps * (a_clean[0] - a_corr[0])
            want += _fd(model, g, clean, lambda c: _Shift(g, c, diff, x), s, r, h) / steps
        assert abs(want - float(ig.scores[s, r])) <= tol * scale, (fam, g.edge_name(s, r))


def test_exact_scores_are_single_edge_ablations(setup):
    _, model, g, clean, corrupted = setup
    edges = torch.zeros_like(g.valid)
    edges.view(-1)[g.valid.view(-1).nonzero()[::7, 0]] = True
    ex = eap(model, clean, corrupted, metric, graph=g, method="exact", edges=edges)
    _, acts = record(model, g, corrupted)
    s, r = edges.nonzero()[1].tolist()
    one = torch.zeros(g.n_senders, g.n_receivers, dtype=torch.float64)
    one[s, r] = 1
    with torch.no_grad():
        m = metric(model.run_with_hooks(clean, fwd_hooks=EdgeRun(g, coef=one, corrupted=acts).hooks()))
    assert float(ex.scores[s, r]) == pytest.approx(float(m) - ex.clean, abs=1e-12)
    assert (ex.scores[~edges] == 0).all()


def test_graph_structure():
    hf, _ = make_pair("llama", torch.float32)
    g = Graph(mechscope.Model.from_hf(hf))                 # 4 heads, 2 kv heads
    names = [r.name for r in g.receivers]
    assert names[:9] == ["a0.h0<q>", "a0.h1<q>", "a0.h2<q>", "a0.h3<q>", "a0.kv0<k>", "a0.kv1<k>", "a0.kv0<v>",
                         "a0.kv1<v>", "m0<in>"]
    assert g.receivers[4].feeds == ("a0.h0", "a0.h1")
    assert g.valid[g.sender_index("a0.h1"), g.receiver_index("m0<in>")]          # sequential: attn → MLP
    assert not g.valid[g.sender_index("m0"), g.receiver_index("a0.h1<q>")]
    assert g.valid[:, g.receiver_index("logits<in>")].all()
    hf, _ = make_pair("gpt_neox", torch.float32)
    g = Graph(mechscope.Model.from_hf(hf))
    assert not g.valid[g.sender_index("a0.h1"), g.receiver_index("m0<in>")]      # parallel: MLP reads resid_pre
    assert g.valid[g.sender_index("a0.h1"), g.receiver_index("m1<in>")]
    hf, _ = make_pair("gemma3_text", torch.float32)
    g = Graph(mechscope.Model.from_hf(hf))
    assert [n.name for n in g.senders] == ["input", "a0", "m0", "a1", "m1"]      # post-attention norm: one node
    assert g.receivers[0].feeds == ("a0",)
    hf, _ = make_pair("olmo2", torch.float32)       # no pre-norms: the MLP's input is read by gate_proj and up_proj
    g = Graph(mechscope.Model.from_hf(hf))
    assert [grp.point for grp in g.groups if grp.receivers == range(g.receiver_index("m0<in>"),
                                                                    g.receiver_index("m0<in>") + 1)] == [
        "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_pre_linear"]
    hf, _ = make_pair("bamba", torch.float32)                                   # hybrid: block 1 is a Mamba block
    g = Graph(mechscope.Model.from_hf(hf))
    assert [n.name for n in g.senders][-2:] == ["x1", "m1"] and "x1<in>" in [r.name for r in g.receivers]
    assert g.valid[g.sender_index("x1"), g.receiver_index("m1<in>")]


def test_refusals_and_bad_input(monkeypatch):
    for fam, why in (("granite", "scales, gates or normalises the residual stream"),   # muP branch multipliers
                     ("openai-gpt", "post-LN"),
                     ("deepseek_v3", "multi-head latent attention")):
        hf, _ = make_pair(fam, torch.float32)
        with pytest.raises(UnsupportedModelError, match=why):
            Graph(mechscope.Model.from_hf(hf))
    hf, _ = make_pair("llama", torch.float32)
    model = mechscope.Model.from_hf(hf)
    g = Graph(model)
    t = torch.randint(3, 100, (1, 5))
    with pytest.raises(InputError, match="same shape"):
        eap(model, t, torch.randint(3, 100, (1, 6)), metric, graph=g)
    with pytest.raises(InputError, match="method must be one of"):
        eap(model, t, t, metric, method="eap_ig", graph=g)
    with pytest.raises(InputError, match="0-d tensor"):
        eap(model, t, t, lambda lg: lg[:, -1, 5], graph=g)
    monkeypatch.setattr(importlib.import_module("mechscope.patching.eap"), "EXACT_LIMIT", 5)
    with pytest.raises(InputError, match="one forward per edge"):
        eap(model, t, t, metric, method="exact", graph=g)
    with pytest.raises(InputError, match="no edge"):
        g.edge_mask(["m1->a0.h1<q>"])
    with pytest.raises(InputError, match="did you mean"):
        g.edge_mask(["a0.h9->m1<in>"])


def test_texts_padded_differently_are_refused_like_activation_patching():
    """Two lists of texts whose pairs differ in length pad to the same shape, so the shape check passed and EAP,
    exact edge patching and faithfulness silently swapped misaligned positions; activation patching refuses them.
    Now the edge functions do too."""
    from mechscope.patching import activation_patch, faithfulness

    model = mechscope.load("default")
    clean, corrupted = ["the cat sat on the", "the cat sat"], ["the dog sat", "the dog sat on the"]
    cat = model.to_single_token("cat")

    def metric(logits):
        return logits[:, -1, cat].mean()

    assert model.to_tokens(clean).shape == model.to_tokens(corrupted).shape
    with pytest.raises(InputError, match="padded differently"):
        activation_patch(model, clean, corrupted, metric)
    for method in ("eap", "exact"):
        with pytest.raises(InputError, match="padded differently"):
            eap(model, clean, corrupted, metric, method=method)
    scores = eap(model, ["the cat sat on the", "the cat sat"], ["the dog sat on the", "the dog sat"], metric)
    with pytest.raises(InputError, match="padded differently"):
        faithfulness(model, scores.extract(n_edges=5), clean, corrupted, metric)
