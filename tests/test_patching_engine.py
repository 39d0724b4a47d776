"""The batched engine equals the plain loop of run_with_hooks, on several families, with padding and chunking."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from mechscope.patching import metrics, prefix_reuse, run_variants
from mechscope.patching.engine import parse_bytes

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma3", "olmo2", "falcon_alibi", "bloom", "bamba"]
_MODELS: dict = {}


def _model(key: str) -> mechscope.Model:
    if key not in _MODELS:
        _MODELS[key] = mechscope.Model.from_hf(make_pair(key, torch.float32)[0])
    return _MODELS[key]


def _tokens(model, b=2, pos=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.cfg.d_vocab, (b, pos), generator=g)


def _variants(model):
    """Variants touching every kind of point: heads (returning None after an in-place edit), the residual stream
    (two hooks on one point, applied in order), embeddings, MLP, several points at once, and no hook at all."""
    n = model.cfg.n_layers
    out = []
    for layer in model.cfg.attn_layers:
        def zero_head(z, hook, h=layer % model.cfg.n_heads):
            assert hook.name.endswith("attn.hook_z") and hook.layer() is not None
            z[:, :, h] = 0
        out.append([(f"blocks.{layer}.attn.hook_z", zero_head)])
    for layer in range(n):
        out.append([(f"blocks.{layer}.hook_resid_pre", lambda x, hook: x + 0.5),
                    (f"blocks.{layer}.hook_resid_pre", lambda x, hook: x * 1.5)])
    out.append([("hook_embed", lambda x, hook: x.flip(1))])
    out.append([(f"blocks.{n - 1}.hook_mlp_out", lambda x, hook: torch.zeros_like(x))])
    out.append([])
    out.append([(f"blocks.{n - 1}.hook_resid_post", lambda x, hook: x * 0.9),
                ("blocks.0.hook_resid_post", lambda x, hook: x.mul_(1.1))])
    return out


def _close(a, b):
    a, b = torch.stack(a), torch.stack(b)
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("key", FAMILIES)
def test_batched_equals_loop(key):
    model = _model(key)
    toks = _tokens(model)
    vs = _variants(model)
    loop = run_variants(model, toks, vs, method="loop")
    _close(run_variants(model, toks, vs), loop)
    _close(run_variants(model, toks, vs, max_batch=5), loop)  # chunks of two variants, the last one short


@pytest.mark.parametrize("key", ["llama", "gpt2", "gemma3", "bloom"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding(key, side):
    model = _model(key)
    toks = _tokens(model, b=3, pos=6, seed=1)
    mask = torch.ones_like(toks)
    if side == "left":
        mask[0, :2] = 0
        mask[2, :1] = 0
    else:
        mask[0, -2:] = 0
        mask[2, -1:] = 0
    vs = _variants(model)
    loop = run_variants(model, toks, vs, method="loop", attention_mask=mask)
    _close(run_variants(model, toks, vs, attention_mask=mask, max_batch=7), loop)


def test_prefix_reuse_is_used_where_exact_and_refused_with_a_reason_elsewhere():
    assert prefix_reuse(_model("llama"), _tokens(_model("llama"))) is None
    assert prefix_reuse(_model("gpt2"), _tokens(_model("gpt2"))) is None
    reason = prefix_reuse(_model("bloom"), _tokens(_model("bloom")))  # ALiBi shaped [batch * heads, 1, k_pos]
    assert reason is None or "expanding" in reason


def test_logits_at_keeps_only_those_positions():
    model = _model("llama")
    toks = _tokens(model)
    vs = _variants(model)[:3]
    full = run_variants(model, toks, vs, method="loop")
    last = run_variants(model, toks, vs, logits_at=-1)
    some = run_variants(model, toks, vs, logits_at=[1, -2])
    for f, l, s in zip(full, last, some):
        assert l.shape == (2, 1, model.cfg.d_vocab) and s.shape == (2, 2, model.cfg.d_vocab)
        torch.testing.assert_close(l[:, 0], f[:, -1], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(s, f[:, [1, -2]], rtol=1e-4, atol=1e-4)


def test_metric_is_applied_per_variant_on_its_own_rows():
    model = _model("gpt_neox")
    toks = _tokens(model, b=3)
    metric = lambda lg: metrics.logit_diff(lg, [5, 6, 7], 9)  # noqa: E731
    vs = _variants(model)
    a = run_variants(model, toks, vs, metric, method="loop")
    b = run_variants(model, toks, vs, metric, max_batch=4)
    assert all(x.ndim == 0 for x in b)
    _close(b, a)


def test_a_patch_with_its_own_activation_changes_nothing():
    model = _model("olmo2")
    toks = _tokens(model)
    _, cache = model.run_with_cache(toks)
    base = model(toks)
    vs = [[(n, lambda x, hook: cache[hook.name].clone())] for n in
          ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out", "blocks.0.attn.hook_v"]]
    for logits in run_variants(model, toks, vs):
        torch.testing.assert_close(logits, base, rtol=1e-5, atol=1e-5)


def test_bad_input_is_refused_with_a_sentence():
    model = _model("gpt2")
    toks = _tokens(model)
    with pytest.raises(mechscope.InputError, match="method"):
        run_variants(model, toks, [[]], method="fast")
    with pytest.raises(mechscope.MechscopeError, match="wrap it in a list"):
        run_variants(model, toks, [("blocks.0.hook_resid_pre", lambda x, h: x)])
    with pytest.raises(mechscope.MechscopeError, match="did you mean|hook"):
        run_variants(model, toks, [[("blocks.0.hook_resid_pree", lambda x, h: x)]])
    with pytest.raises(mechscope.InputError, match="memory"):
        run_variants(model, toks, [[]], memory="lots")
    with pytest.raises(mechscope.InputError, match="logits_at"):
        run_variants(model, toks, [[]], logits_at=99)
    with pytest.raises(mechscope.HookReturnError, match="shape"):
        run_variants(model, toks, [[], [("blocks.0.hook_resid_pre", lambda x, h: x[:, :1])]])
    with pytest.raises(mechscope.HookError, match="ZeroDivisionError"):
        run_variants(model, toks, [[("blocks.1.hook_resid_pre", lambda x, h: 1 / 0)], []])
    assert parse_bytes("2GB") == 2 * 10**9 and parse_bytes("512MiB") == 512 * 2**20


def test_memory_budget_chunks_and_agrees():
    model = _model("llama")
    toks = _tokens(model)
    vs = _variants(model)
    _close(run_variants(model, toks, vs, memory="200KB"), run_variants(model, toks, vs, method="loop"))
