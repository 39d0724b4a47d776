"""Edge ablation and circuits: ablating nothing is the clean forward (bit for bit), ablating every edge into the
logits is the corrupted run, ablating every edge out of a node is activation patching of that node; extraction keeps
only edges on input → logits paths; faithfulness is 1 for the whole graph and 0 for the empty circuit, and the
batched curve equals one faithfulness call per size; `mechscope circuit` writes JSON (and HTML where the views exist);
the default model's induction circuit (real model, skipped when absent)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import mechscope
from families import make_pair
from mechscope import views
from mechscope.cli import app
from mechscope.errors import InputError
from mechscope.patching import (Circuit, Graph, ablate_edges, eap, extract, faithfulness, faithfulness_curve)
from mechscope.patching.circuit import prune

FAMILIES = ["gpt2", "llama", "gpt_neox", "gptj", "gemma3_text", "olmo2", "bamba"]


def metric(logits):
    return logits[:, -1, 5].mean() - logits[:, -1, 7].mean()


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request):
    hf, _ = make_pair(request.param, torch.float64)
    model = mechscope.Model.from_hf(hf)
    gen = torch.Generator().manual_seed(1)
    clean, corrupted = torch.randint(3, 100, (2, 6), generator=gen), torch.randint(3, 100, (2, 6), generator=gen)
    return model, Graph(model), clean, corrupted


def test_edge_ablation_identities(setup):
    model, g, clean, corrupted = setup
    lc, lr = model(clean), model(corrupted)
    assert torch.equal(ablate_edges(model, clean, corrupted, torch.zeros_like(g.valid), graph=g), lc)
    into_logits = torch.zeros_like(g.valid)
    into_logits[:, g.receiver_index("logits<in>")] = True
    torch.testing.assert_close(ablate_edges(model, clean, corrupted, into_logits, graph=g), lr, atol=1e-6, rtol=0)
    torch.testing.assert_close(ablate_edges(model, clean, corrupted, g.valid, graph=g), lr, atol=1e-6, rtol=0)


def test_ablating_a_node_out_edges_is_activation_patching(setup):
    model, g, clean, corrupted = setup
    _, cache = model.run_with_cache(corrupted, names_filter=["blocks.0.hook_mlp_out", "blocks.0.attn.hook_z",
                                                             "blocks.0.hook_attn_out"])
    out = lambda name: g.valid & (torch.arange(g.n_senders) == g.sender_index(name))[:, None]  # noqa: E731
    want = model.run_with_hooks(clean, fwd_hooks=[("blocks.0.hook_mlp_out",
                                                   lambda a, h: cache["blocks.0.hook_mlp_out"])])
    torch.testing.assert_close(ablate_edges(model, clean, corrupted, out("m0"), graph=g), want, atol=1e-6, rtol=0)
    if g.senders[1].kind == "head":
        def one_head(a, hook):
            a = a.clone()
            a[:, :, 1] = cache["blocks.0.attn.hook_z"][:, :, 1]
            return a
        want = model.run_with_hooks(clean, fwd_hooks=[("blocks.0.attn.hook_z", one_head)])
        got = ablate_edges(model, clean, corrupted, out("a0.h1"), graph=g)
    else:
        want = model.run_with_hooks(clean, fwd_hooks=[("blocks.0.hook_attn_out",
                                                       lambda a, h: cache["blocks.0.hook_attn_out"])])
        got = ablate_edges(model, clean, corrupted, out("a0"), graph=g)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_faithfulness_and_curve(setup):
    model, g, clean, corrupted = setup
    scores = eap(model, clean, corrupted, metric, graph=g)
    assert faithfulness(model, Circuit(g, g.valid.clone()), clean, corrupted, metric) == pytest.approx(1, abs=1e-9)
    assert faithfulness(model, Circuit(g, torch.zeros_like(g.valid)), clean, corrupted, metric) == pytest.approx(
        0, abs=1e-6)
    curve = faithfulness_curve(model, scores, clean, corrupted, metric, sizes=[3, 10, 10_000])
    # the curve runs on the batched engine: stacked forwards agree with single ones to float tolerance
    assert curve.sizes == [3, 10, g.n_edges] and curve.values[-1] == pytest.approx(1, abs=1e-6)
    one = faithfulness(model, extract(scores, n_edges=10), clean, corrupted, metric)
    assert curve.values[1] == pytest.approx(one, abs=1e-6)


def test_extract_prunes_to_paths():
    hf, _ = make_pair("llama", torch.float32)
    model = mechscope.Model.from_hf(hf)
    g = Graph(model)
    edges = g.edge_mask(["input->a0.h1<q>", "a0.h1->a1.kv1<k>", "a1.h2->logits<in>",  # a path
                         "input->a0.h3<q>",                                          # a dead end
                         "m0->logits<in>"])                                          # m0 never reached
    kept = prune(g, edges)
    assert {g.edge_name(s, r) for s, r in kept.nonzero().tolist()} == {
        "input->a0.h1<q>", "a0.h1->a1.kv1<k>", "a1.h2->logits<in>"}
    # a GQA key receiver feeds its whole group: a path through any head of the group counts
    kept = prune(g, g.edge_mask(["input->a0.kv0<k>", "a0.h1->logits<in>"]))
    assert kept.sum() == 2
    gen = torch.Generator().manual_seed(0)
    t, c = torch.randint(3, 100, (1, 5), generator=gen), torch.randint(3, 100, (1, 5), generator=gen)
    scores = eap(model, t, c, metric, graph=g)
    circ = extract(scores, n_edges=12)
    assert circ.n_edges <= 12 and torch.equal(prune(g, circ.edges), circ.edges)
    d = circ.to_dict()
    assert {"nodes", "edges", "faithfulness"} <= set(d) and all(e["port"] in "qkv in" for e in d["edges"])
    assert {n["name"] for n in d["nodes"]} >= {e["source"] for e in d["edges"]} | {e["target"] for e in d["edges"]}
    loose = Circuit(g, g.edge_mask(["input->a0.kv0<k>"]))            # unpruned: a dead end still names its node
    assert loose.nodes == ["input", "a0.h0"]
    with pytest.raises(InputError, match="exactly one of"):
        extract(scores)
    with pytest.raises(InputError, match="n_senders, n_receivers"):
        ablate_edges(model, t, c, torch.zeros(3, 3, dtype=torch.bool), graph=g)


def test_cli_circuit(tmp_path):
    runner = CliRunner()
    out = tmp_path / "c.json"
    html = tmp_path / "c.html"
    args = ["circuit", "default", "--task", "induction", "--n-prompts", "2", "--seg-len", "6", "--edges", "10",
            "--sizes", "5,10", "--json", str(out)]
    if hasattr(views, "circuit_graph"):
        args += ["--html", str(html)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["circuit"]["edges"] and 0 <= data["circuit"]["n_edges"] <= 10
    assert len(data["curve"]["faithfulness"]) == 2
    assert not hasattr(views, "circuit_graph") or html.read_text().startswith("<!")
    res = runner.invoke(app, ["circuit", "default", "--clean", "the cat saw the dog and the cat", "--corrupt",
                              "the cat saw the dog and the dog", "--answer", " saw", "--wrong", " and",
                              "--edges", "10", "--sizes", "10", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["task"] == "custom"
    res = runner.invoke(app, ["circuit", "default", "--method", "eapig"])
    assert res.exit_code == 2 and "method must be one of" in res.output
    res = runner.invoke(app, ["circuit", "default", "--clean", "Once upon a time"])
    assert res.exit_code == 2 and "--corrupt" in res.output


def test_default_model_induction_circuit():
    """TinyStories-656K: exact edge patching puts the previous-token head a0.h2 (the detectors' top previous-token
    head) upstream of block 1's heads' keys: ablating a0.h2's edges into the block-1 key inputs hurts induction."""
    from mechscope.patching.tasks import induction_task

    m = mechscope.load("default")
    t = induction_task(m, n_seqs=4, seg_len=12)
    g = Graph(m)
    ks = torch.zeros_like(g.valid)
    for h in range(m.cfg.n_heads):
        ks[g.sender_index("a0.h2"), g.receiver_index(f"a1.h{h}<k>")] = True
    with torch.no_grad():
        clean = float(t.metric(m(t.clean)))
    ablated = float(ablate_edges(m, t.clean, t.corrupted, ks, graph=g, metric=t.metric))
    assert ablated < clean - 0.1


def test_view_and_memory_refusal(monkeypatch):
    import importlib

    from mechscope.memory import CacheMemoryError

    eap_module = importlib.import_module("mechscope.patching.eap")   # the module, not the function it exports

    hf, _ = make_pair("gemma3_text", torch.float32)          # whole-layer attention nodes: per-head edges merged
    model = mechscope.Model.from_hf(hf)
    g = Graph(model)
    t, c = torch.randint(3, 100, (1, 5)), torch.randint(3, 100, (1, 5))
    monkeypatch.setattr(eap_module, "free_bytes", lambda device: 1000)
    with pytest.raises(CacheMemoryError, match="fewer or shorter prompts"):
        eap(model, t, c, metric, graph=g)
    monkeypatch.undo()
    circ = extract(eap(model, t, c, metric, graph=g), n_edges=g.n_edges)
    if not hasattr(views, "circuit_graph"):
        with pytest.raises(InputError, match="circuit_graph"):
            circ.view()
        pytest.skip("views.circuit_graph is not in this checkout yet")
    html = circ.view().html
    assert "circuit_graph" in html


def test_shared_norm_block_recomputes_every_head():
    """GPT-J's MLP and attention read one ln1 output. Giving the MLP of block 1 its own input there and one head's
    query its own input must leave the other heads reading the plain ln1 output: checked against q/k/v recomputed
    by hand from the weights (W_Q, W_K, W_V), not through the graph's code."""
    hf, _ = make_pair("gptj", torch.float64)
    model = mechscope.Model.from_hf(hf)
    g = Graph(model)
    gen = torch.Generator().manual_seed(2)
    clean, corrupted = torch.randint(3, 100, (2, 6), generator=gen), torch.randint(3, 100, (2, 6), generator=gen)
    got = ablate_edges(model, clean, corrupted, ["input->m1<in>", "input->a1.h0<q>"], graph=g)
    _, cc = model.run_with_cache(clean, names_filter=["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"])
    _, cr = model.run_with_cache(corrupted, names_filter=["blocks.0.hook_resid_pre"])
    delta = cr["blocks.0.hook_resid_pre"] - cc["blocks.0.hook_resid_pre"]
    ln1 = model.blocks[1].ln_1
    plain, shifted = ln1(cc["blocks.1.hook_resid_pre"]), ln1(cc["blocks.1.hook_resid_pre"] + delta)

    def qkv(which, w):
        def fn(act, hook):
            new = torch.einsum("bpd,hde->bphe", plain, w[1])
            if which == "q":
                new[:, :, 0] = torch.einsum("bpd,de->bpe", shifted, w[1, 0])
            return new
        return fn

    want = model.run_with_hooks(clean, fwd_hooks=[
        ("blocks.1.ln1.hook_out", lambda act, hook: shifted),
        ("blocks.1.attn.hook_q", qkv("q", model.W_Q.detach())),
        ("blocks.1.attn.hook_k", qkv("k", model.W_K.detach())),
        ("blocks.1.attn.hook_v", qkv("v", model.W_V.detach()))])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_faithfulness_refuses_an_unchanged_metric():
    """Corrupted == clean: faithfulness is 0/0; a sentence, not NaN (as metrics.normalised)."""
    from mechscope.errors import InputError
    from mechscope.patching import eap, extract, faithfulness, faithfulness_curve

    model = mechscope.load("default")
    tokens = model.to_tokens(["the cat sat on the mat"])
    metric = lambda logits: logits[:, -1, 5].mean()
    scores = eap(model, tokens, tokens, metric)
    with pytest.raises(InputError, match="equal"):
        faithfulness(model, extract(scores, n_edges=5), tokens, tokens, metric)
    with pytest.raises(InputError, match="equal"):
        faithfulness_curve(model, scores, tokens, tokens, metric, sizes=[5])
