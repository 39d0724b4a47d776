"""Head detectors, attention entropy and attention to BOS: against plain per-head loops over a full pattern cache
on several families, TransformerLens's detect_head semantics (a transcription of its per-head code), templates,
padding, hybrids, the CLI, and SmolLM2-135M's induction heads checked by ablation."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from typer.testing import CliRunner

import mechscope
from families import make_pair
from mechscope.attention_analysis import attention_entropy, bos_attention
from mechscope.cli import app
from mechscope.detectors import (
    detect_head, detection_pattern, find_heads, head_scores, repeated_tokens,
)
from mechscope.errors import InputError

FAMILIES = ["llama", "gpt2", "gpt_neox", "olmo2"]
WORDS = [chr(97 + i) + chr(97 + j) for i in range(10) for j in range(10)]  # 100 one-token words


def _tokenizer():
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{w: 3 + i for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return mechscope.Model.from_hf(make_pair(request.param, torch.float32)[0], _tokenizer())


def _patterns(model, tokens, **kw) -> list[torch.Tensor]:
    """Reference: every layer's full (batch, head, q, k) pattern from run_with_cache."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"), **kw)
    return [cache["pattern", layer] for layer in range(model.cfg.n_layers)]


def test_repeated_tokens(model):
    toks = repeated_tokens(model, 3, 10, seed=1)
    assert toks.shape == (3, 21) and (toks[:, 0] == 1).all()
    assert torch.equal(toks[:, 1:11], toks[:, 11:]) and (toks[:, 1:] > 2).all()  # no special tokens
    assert torch.equal(toks, repeated_tokens(model, 3, 10, seed=1))
    assert not torch.equal(toks, repeated_tokens(model, 3, 10, seed=2))
    with pytest.raises(InputError, match="longer than the model's context of 64"):
        repeated_tokens(model, 1, 40)


def test_scores_equal_per_head_loops(model):
    toks = repeated_tokens(model, 5, 8, seed=0)
    patterns = _patterns(model, toks)
    found = find_heads(model, toks, batch_size=2)  # three batches, hooks reduce as the model runs
    for kind in ("previous_token", "duplicate_token", "induction"):
        target = detection_pattern(toks, kind)
        rows = target.any(-1)
        ref = torch.tensor([[sum(float((patterns[l][b, h] * target[b]).sum(-1)[rows[b]].sum()) for b in range(5))
                             / float(rows.sum()) for h in range(model.cfg.n_heads)] for l in range(model.cfg.n_layers)])
        torch.testing.assert_close(found.scores[kind], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(head_scores(model, toks, kind), ref, atol=1e-5, rtol=1e-5)
    p = torch.stack(patterns)  # (layer, batch, head, q, k)
    entropy = -(p * p.clamp(min=1e-30).log()).sum(-1).mean((1, 3))
    torch.testing.assert_close(found.entropy, entropy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention_entropy(model, toks), entropy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(found.bos_attention, p[..., 1:, 0].mean((1, 3)), atol=1e-5, rtol=1e-5)
    per_pos = bos_attention(model, toks, per_position=True)
    assert per_pos.shape == (model.cfg.n_layers, model.cfg.n_heads, 17) and per_pos[..., 0].isnan().all()
    torch.testing.assert_close(per_pos[..., 1:], p[..., 1:, 0].mean(1), atol=1e-5, rtol=1e-5)


def test_templates_and_cache(model):
    toks = repeated_tokens(model, 2, 6, seed=3)
    named = head_scores(model, toks, "induction")
    torch.testing.assert_close(head_scores(model, toks, detection_pattern(toks, "induction").int()), named)
    torch.testing.assert_close(head_scores(model, toks, lambda t: detection_pattern(t, "induction")), named)
    n = toks.shape[1]
    diag = torch.eye(n, dtype=torch.bool)  # a (q, k) template shared by every row: attention to itself
    _, cache = model.run_with_cache(toks, names_filter=lambda name: name.endswith("hook_pattern"))
    self_attn = head_scores(model, toks, diag, cache=cache)
    ref = torch.stack([cache["pattern", l].diagonal(dim1=-2, dim2=-1).mean((0, 2)) for l in range(model.cfg.n_layers)])
    torch.testing.assert_close(self_attn, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(find_heads(model, toks, cache=cache).scores["induction"], named, atol=1e-6, rtol=1e-6)


def _tl_reference(pattern, det, exclude_bos, exclude_current_token, error_measure):
    """transformer_lens.head_detector.compute_head_attention_similarity_score, transcribed (one head)."""
    pattern = pattern.clone()
    if error_measure == "mul":
        if exclude_bos:
            pattern[:, 0] = 0
        if exclude_current_token:
            pattern.fill_diagonal_(0)
        return ((pattern * det).sum() / pattern.sum()).item()
    abs_diff = (pattern - det).abs()
    if exclude_bos:
        abs_diff[:, 0] = 0
    if exclude_current_token:
        abs_diff.fill_diagonal_(0)
    return 1 - round((abs_diff.mean() * len(abs_diff)).item(), 3)


@pytest.mark.parametrize("measure", ["mul", "abs"])
def test_detect_head_has_transformer_lens_semantics(model, measure):
    seq = "aa bb cc dd aa bb cc dd"
    toks = model.to_tokens(seq)
    patterns = _patterns(model, toks)
    for name in ("previous_token_head", "duplicate_token_head", "induction_head"):
        det = detection_pattern(toks, name.removesuffix("_head"))[0].float()
        for eb, ec in ((False, False), (True, False), (False, True), (True, True)):
            got = detect_head(model, seq, name, exclude_bos=eb, exclude_current_token=ec, error_measure=measure)
            ref = torch.tensor([[_tl_reference(patterns[l][0, h], det, eb, ec, measure)
                                 for h in range(model.cfg.n_heads)] for l in range(model.cfg.n_layers)])
            torch.testing.assert_close(got, ref, atol=2e-3 if measure == "abs" else 1e-5, rtol=0)
    # a graded pattern, a subset of heads, a cache without batch axis, a list of prompts
    graded = torch.rand(toks.shape[1], toks.shape[1], generator=torch.Generator().manual_seed(0)).tril()
    _, cache = model.run_with_cache(seq, remove_batch_dim=True)
    sub = detect_head(model, seq, graded, heads={1: [0, 2]}, cache=cache, error_measure="abs")
    assert (sub[0] == -1).all() and (sub[1, [1, 3]] == -1).all() and (sub[1, [0, 2]] != -1).all()
    both = detect_head(model, [seq, "aa bb aa bb"], "induction_head", error_measure=measure)
    torch.testing.assert_close(both, (detect_head(model, seq, "induction_head", error_measure=measure)
                                      + detect_head(model, "aa bb aa bb", "induction_head", error_measure=measure)) / 2)


def test_padding_is_not_counted():
    m = mechscope.Model.from_hf(make_pair("llama", torch.float32)[0], _tokenizer())
    prompts = ["aa bb cc aa bb cc", "dd ee dd"]
    for side in ("left", "right"):
        batch = m._batch(prompts, None, side)
        ent = attention_entropy(m, batch, per_position=False)
        bos = bos_attention(m, batch)
        ind = head_scores(m, batch, "induction")
        # the same numbers from each prompt alone, weighted by its number of counted queries
        alone = [(attention_entropy(m, p), bos_attention(m, p), head_scores(m, p, "induction"),
                  len(m.to_tokens(p)[0]), int(detection_pattern(m.to_tokens(p), "induction").any(-1).sum()))
                 for p in prompts]
        n = sum(a[3] for a in alone)
        torch.testing.assert_close(ent, sum(a[0] * a[3] for a in alone) / n, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bos, sum(a[1] * (a[3] - 1) for a in alone) / (n - 2), atol=1e-5, rtol=1e-5)
        k = sum(a[4] for a in alone)
        torch.testing.assert_close(ind, sum(a[2] * a[4] for a in alone) / k, atol=1e-5, rtol=1e-5)


def test_forced_patterns_and_hybrid_rows():
    m = mechscope.Model.from_hf(make_pair("llama", torch.float32)[0], _tokenizer())
    toks = repeated_tokens(m, 2, 5)

    def attend_previous(p, hook):  # every query attends to the token before it (position 0 to itself)
        out = torch.zeros_like(p)
        out[..., torch.arange(p.shape[-2]), (torch.arange(p.shape[-2]) - 1).clamp(min=0)] = 1
        return out

    with m.hooks([(lambda n: n.endswith("hook_pattern"), attend_previous)]):
        found = find_heads(m, toks)
    assert torch.allclose(found.scores["previous_token"], torch.ones(2, 4))
    assert torch.allclose(found.entropy, torch.zeros(2, 4))
    assert torch.allclose(found.bos_attention, torch.full((2, 4), 0.1))  # query 1 of 10 counted attends to BOS
    assert found.top("previous_token", 3)[0][2] == pytest.approx(1.0) and len(found.head_labels) == 8
    json.dumps(found.to_dict())

    hybrid = mechscope.Model.from_hf(make_pair("lfm2", torch.float32)[0])
    ids = torch.tensor([[1, 5, 6, 7, 5, 6, 7, 9]])
    found = find_heads(hybrid, ids)
    mixers = [l for l in range(hybrid.cfg.n_layers) if l not in hybrid.cfg.attn_layers]
    for t in (*found.scores.values(), found.entropy, found.bos_attention):
        assert t[mixers].isnan().all() and t[list(hybrid.cfg.attn_layers)].isfinite().all()
    assert all(layer in hybrid.cfg.attn_layers for layer, _, _ in found.top("induction", 100))
    assert json.dumps(found.to_dict()).count("null") >= len(mixers)


def test_bad_input_is_a_sentence(model):
    toks = repeated_tokens(model, 1, 4)
    with pytest.raises(InputError, match=r"has shape \(3, 3\), but the tokens \(1, 9\) need \(9, 9\)"):
        head_scores(model, toks, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(InputError, match="must be boolean"):
        head_scores(model, toks, torch.full((9, 9), 0.5))
    with pytest.raises(InputError, match="unknown detector 'inductoin'"):
        head_scores(model, toks, "inductoin")
    with pytest.raises(InputError, match="no induction targets"):
        head_scores(model, torch.tensor([[1, 5, 6, 7]]), "induction")
    with pytest.raises(InputError, match="error_measure"):
        detect_head(model, "aa bb aa", "induction_head", error_measure="max")
    with pytest.raises(InputError, match="lower triangular"):
        detect_head(model, "aa bb aa", torch.ones(4, 4))
    with pytest.raises(InputError, match="cannot be used with a list"):
        detect_head(model, ["aa bb", "aa"], "induction_head", cache={})


def test_cli_heads_writes_json(tmp_path):
    hf = make_pair("llama", torch.float32)[0]
    hf.save_pretrained(tmp_path / "m")
    _tokenizer().save_pretrained(tmp_path / "m")
    res = CliRunner().invoke(app, ["heads", str(tmp_path / "m"), "--top", "3", "--seg-len", "10", "--json",
                                   str(tmp_path / "h.json")])
    assert res.exit_code == 0, res.output
    assert "induction" in res.output and "bos" in res.output and "entropy" in res.output
    out = json.loads((tmp_path / "h.json").read_text())
    assert len(out["induction"]["scores"]) == 2 and len(out["induction"]["scores"][0]) == 4
    assert len(out["induction"]["top"]) == 3 and {"layer", "head", "score"} <= set(out["induction"]["top"][0])
    res = CliRunner().invoke(app, ["heads", str(tmp_path / "m"), "--detector", "inductoin"])
    assert res.exit_code == 2 and "unknown detector" in res.output


@pytest.mark.real_models
def test_smollm2_induction_heads_are_causal():
    """The heads listed in the README: found by attention, and ablating them breaks copying far more than
    ablating other heads."""
    from mechscope.zoo import MODELS

    if not MODELS["smollm2-135m"].installed():
        pytest.skip(f"smollm2-135m needs its package: {MODELS['smollm2-135m'].pip}")
    m = mechscope.load("smollm2-135m")
    toks = repeated_tokens(m, 4, 30, seed=0)
    found = find_heads(m, toks, detectors=("induction",))
    top = [(l, h) for l, h, _ in found.top("induction", 5)]
    assert set(top[:3]) <= {(18, 6), (17, 3), (17, 4), (17, 5), (18, 7)}
    assert found.scores["induction"][18, 6] > 0.7

    def loss_with(heads):
        def ablate(z, hook):
            z = z.clone()
            z[:, :, [h for l, h in heads if l == hook.layer()]] = 0
            return z

        hooks = [(f"blocks.{l}.attn.hook_z", ablate) for l in sorted({l for l, _ in heads})]
        with torch.inference_mode():
            logits = m.run_with_hooks(toks, fwd_hooks=hooks).float()
        logp = logits[:, :-1].log_softmax(-1).gather(-1, toks[:, 1:, None])[..., 0]
        return -logp[:, 31:].mean().item()  # the second copy, from its second token

    clean = loss_with([])
    others = [(l, h) for l in range(30) for h in range(9) if (l, h) not in top]
    g = torch.Generator().manual_seed(0)
    random_rise = sum(loss_with([others[int(i)] for i in torch.randperm(len(others), generator=g)[:5]]) - clean
                      for _ in range(3)) / 3
    assert loss_with(top) - clean > max(2.0, 3 * random_rise)
