"""Causal tracing (Meng et al. 2022): the corrupted and clean ends, window semantics, seeded noise, the replay fast
path against the literal noise recipe, token categories, facts and the ``trace`` command."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import mechscope
from families import make_config, make_pair
from mechscope.datasets.facts import Fact, known_by, load_facts, subject_span
from mechscope.errors import InputError
from mechscope.patching.tracing import (CATEGORIES, Trace, average, categories, trace, trace_with_patch,
                                        window_layers)

TOKENS = torch.tensor([[1, 5, 9, 33, 17, 4, 60, 22]])
SUBJECT = (2, 5)


@pytest.fixture(scope="module", params=["llama", "gpt2", "gpt_neox", "gemma3"])
def tiny(request):
    eager, _ = make_pair(request.param, torch.float32)
    return mechscope.Model.from_hf(eager)


@pytest.fixture(scope="module")
def deep():
    """A 6-layer Llama, so that windows are narrower than the model."""
    cfg = make_config("llama")
    cfg.num_hidden_layers = 6
    torch.manual_seed(0)
    return mechscope.Model.from_hf(AutoModelForCausalLM.from_config(cfg).eval())


def test_trace_ends_are_clean_and_corrupted(tiny):
    """Restoring every state = the clean run; restoring nothing = the corrupted run; states before the subject
    never see the noise, so restoring them changes nothing; the last layer's residual at the last token is all
    the logits read, so restoring it alone gives the clean probability."""
    t = trace(tiny, TOKENS, SUBJECT, samples=3, window=2)
    n = tiny.cfg.n_layers
    states = [(f"blocks.{l}.hook_resid_post", p) for l in range(n) for p in range(TOKENS.shape[1])]
    assert trace_with_patch(tiny, TOKENS, SUBJECT, t.answer, states, sigma=t.sigma, samples=3) == pytest.approx(t.high, rel=1e-5)
    assert trace_with_patch(tiny, TOKENS, SUBJECT, t.answer, [], sigma=t.sigma, samples=3) == pytest.approx(t.low, rel=1e-6)
    assert t.high != pytest.approx(t.low, rel=1e-3)
    for kind in ("resid", "mlp", "attn"):
        v = t.results[kind].values
        assert v.shape == (n, TOKENS.shape[1]) and t.results[kind].dims == ("layer", "pos")
        assert torch.allclose(v[:, :SUBJECT[0]], torch.tensor(t.low), rtol=1e-5)
    assert float(t.results["resid"].values[-1, -1]) == pytest.approx(t.high, rel=1e-5)
    assert t.results["resid"].labels["pos"][SUBJECT[0]].endswith("*") and not t.tokens[0].endswith("*")


def test_replay_equals_the_literal_noise_recipe(tiny):
    fast = trace(tiny, TOKENS, SUBJECT, samples=2, window=2, method="replay")
    slow = trace(tiny, TOKENS, SUBJECT, samples=2, window=2, method="noise")
    for kind in fast.results:
        torch.testing.assert_close(fast.results[kind].values, slow.results[kind].values, rtol=1e-5, atol=1e-7)
    assert trace(tiny, TOKENS, SUBJECT, samples=2, kinds=("resid",)).method == "replay"  # auto picks replay here


def test_window_semantics(deep):
    assert list(window_layers(5, 10, 30)) == list(range(0, 10))
    assert list(window_layers(0, 10, 30)) == list(range(0, 5))
    assert list(window_layers(29, 10, 30)) == list(range(24, 30))
    assert list(window_layers(3, 3, 6)) == [2, 3, 4] and list(window_layers(3, 1, 6)) == [3]
    t = trace(deep, TOKENS, SUBJECT, samples=2, window=3, kinds=("mlp", "attn"))
    for kind, point in (("mlp", "hook_mlp_out"), ("attn", "hook_attn_out")):
        for layer, pos in ((0, 4), (3, 4), (5, 7), (2, 2)):
            states = [(f"blocks.{l}.{point}", pos) for l in window_layers(layer, 3, 6)]
            want = trace_with_patch(deep, TOKENS, SUBJECT, t.answer, states, sigma=t.sigma, samples=2)
            assert float(t.results[kind].values[layer, pos]) == pytest.approx(want, rel=1e-5)
    wide = trace(deep, TOKENS, SUBJECT, samples=2, window=12, kinds=("mlp",))
    every = [(f"blocks.{l}.hook_mlp_out", 4) for l in range(6)]  # a window wider than the model restores all layers
    assert float(wide.results["mlp"].values[2, 4]) == pytest.approx(
        trace_with_patch(deep, TOKENS, SUBJECT, wide.answer, every, sigma=wide.sigma, samples=2), rel=1e-5)


def test_noise_is_seeded(deep):
    a = trace(deep, TOKENS, SUBJECT, samples=2, kinds=("resid",), seed=7)
    b = trace(deep, TOKENS, SUBJECT, samples=2, kinds=("resid",), seed=7)
    c = trace(deep, TOKENS, SUBJECT, samples=2, kinds=("resid",), seed=8)
    assert torch.equal(a.results["resid"].values, b.results["resid"].values) and a.low == b.low
    assert a.low != c.low
    assert trace(deep, TOKENS, SUBJECT, samples=2, kinds=("resid",), noise=0.5).sigma == 0.5
    assert trace(deep, TOKENS, SUBJECT, samples=2, kinds=("resid",), noise="6x").sigma == pytest.approx(2 * a.sigma)


def test_categories_and_average(deep):
    cats = categories((2, 5), 8)
    assert cats == {"first subject token": [2], "middle subject tokens": [3], "last subject token": [4],
                    "first subsequent token": [5], "further tokens": [6], "last token": [7]}
    assert categories((1, 2), 4)["middle subject tokens"] == []
    t1 = trace(deep, TOKENS, SUBJECT, samples=2, kinds=("resid",))
    t2 = trace(deep, TOKENS[:, :6], (1, 2), samples=2, kinds=("resid",), noise=t1.sigma)
    avg = average([t1, t2])
    low = (t1.low + t2.low) / 2
    v1, v2 = t1.results["resid"].values, t2.results["resid"].values
    r = avg.results["resid"]
    assert r.dims == ("category", "layer") and r.labels["category"] == list(CATEGORIES)
    torch.testing.assert_close(r.values[0], (v1[:, 2] + v2[:, 1]) / 2 - low)
    torch.testing.assert_close(r.values[1], v1[:, 3] - low)                       # only t1 has a middle
    torch.testing.assert_close(r.values[4], (v1[:, 6] + v2[:, 3] + v2[:, 4]) / 3 - low)  # pooled per token
    assert avg.n == 2 and json.dumps(avg.to_dict())
    back = Trace.from_dict(json.loads(json.dumps(t1.to_dict())))
    assert torch.equal(back.results["resid"].values, t1.results["resid"].values) and back.subject == t1.subject


def test_bad_input(deep):
    with pytest.raises(InputError, match="kinds must be"):
        trace(deep, TOKENS, SUBJECT, kinds=("mlps",))
    with pytest.raises(InputError, match="window must be"):
        trace(deep, TOKENS, SUBJECT, window=0)
    with pytest.raises(InputError, match="not inside the prompt"):
        trace(deep, TOKENS, (5, 12))
    with pytest.raises(InputError, match="noise must be"):
        trace(deep, TOKENS, SUBJECT, noise="lots")
    with pytest.raises(InputError, match="token span"):
        trace(deep, TOKENS, "Paris")


def test_subject_span_by_character_offsets(shared):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(shared / "models" / "gpt2-tokenizer")
    ids, (a, b) = subject_span(tok, "The Vinson Massif is located in", "Vinson Massif", prepend_bos=True)
    assert tok.decode(ids[a:b]) == " Vinson Massif" and ids[0] == tok.bos_token_id
    ids, (a, b) = subject_span(tok, "Obama's wife is", "Obama", prepend_bos=False)  # merged with "'s"? still found
    assert "Obama" in tok.decode(ids[a:b])
    with pytest.raises(InputError, match="does not occur"):
        subject_span(tok, "Paris is", "London", prepend_bos=False)
    facts = load_facts()
    assert len(facts) == 1209 and facts[0].subject == "Vinson Massif" and facts[0].attribute == "Antarctica"


def test_known_by_and_trace_on_a_real_model(tinystories):
    """TinyStories-656K knows story facts, not world facts: known_by with a probability threshold on a story
    'fact', and a text trace whose subject is found in the prompt."""
    story = Fact(0, "Lily", "Lily", "Once upon a time, there was a girl named Lily. One day, Lily", "", "")
    t = trace(tinystories, story.prompt, "girl", samples=2, kinds=("resid",))
    assert t.subject[1] - t.subject[0] >= 1 and t.tokens[t.subject[0]].endswith("*")
    assert float(t.results["resid"].values[-1, -1]) == pytest.approx(t.high, rel=1e-5)
    assert isinstance(known_by(tinystories, [story], threshold=0.0)[0].p, float)


def test_trace_cli(tinystories, shared, tmp_path):
    from typer.testing import CliRunner

    from mechscope.cli import app

    path = str(shared / "models" / "TinyStories-656K")
    out, page = tmp_path / "t.json", tmp_path / "t.html"
    r = CliRunner().invoke(app, ["trace", path, "--fact", "Once upon a time, there was a little dog named Max. Max",
                                 "--subject", "dog", "--kind", "resid", "--samples", "2", "--json", str(out),
                                 "--html", str(page)])
    assert r.exit_code == 0, r.output
    assert "where restoring one state" in r.output and "residual" in r.output and page.stat().st_size > 1000
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"resid"} and data["samples"] == 2 and data["high"] > data["low"] - 1
    bad = CliRunner().invoke(app, ["trace", path, "--fact", "a dog", "--kind", "resid"])
    assert bad.exit_code == 2 and "--subject is needed" in bad.output
    bad = CliRunner().invoke(app, ["trace", path, "--fact", "known:x"])
    assert bad.exit_code == 2 and "known_1000 id" in bad.output
