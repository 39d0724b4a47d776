"""Harvesting activations for SAE training: several hook points per pass equal run_with_cache, stopping early
changes nothing, the shuffle buffer serves every token once per epoch, and resume is exact."""

from __future__ import annotations

import json

import pytest
import torch
from families import make_pair

import mechscope
from mechscope.errors import HookNameError, InputError
from mechscope.sae import (ActivationSource, Harvester, IterableSource, ModelSource, TensorSource,
                           activation_source)

HOOKS = ["blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request):
    return mechscope.Model.from_hf(make_pair(request.param, torch.float32)[0])


def _rows(model, n=12, ctx=16, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (n, ctx), generator=torch.Generator().manual_seed(seed))


def test_harvest_equals_run_with_cache(model):
    rows = _rows(model, n=5)
    hooks = [*HOOKS, "blocks.1.attn.hook_z"]
    h = Harvester(model, hooks, model_batch_size=2)
    assert h.stop_at_layer == 2 and h.d["blocks.1.attn.hook_z"] == model.cfg.n_heads * model.cfg.d_head_v
    got = h(rows)
    _, cache = model.run_with_cache(rows, names_filter=hooks)
    for name in hooks:
        assert torch.equal(got[name], cache[name].reshape(rows.numel(), -1).float()), name


def test_stopping_early_changes_nothing(model):
    rows = _rows(model, n=4)
    h = Harvester(model, HOOKS)
    assert h.stop_at_layer == 1  # points inside block 0 (ln2, the MLP) still fire: stop *after* block 0
    stopped = h(rows)
    h.stop_at_layer = None
    full = h(rows)
    assert all(torch.equal(stopped[k], full[k]) for k in HOOKS)
    assert Harvester(model, ["hook_embed"]).stop_at_layer == 0
    assert Harvester(model, ["ln_final.hook_normalized"]).stop_at_layer is None


def test_hook_errors(model):
    with pytest.raises(HookNameError, match="did you mean"):
        Harvester(model, ["blocks.0.hook_resid_postt"])
    with pytest.raises(InputError, match="name a point twice"):
        Harvester(model, [HOOKS[0], HOOKS[0]])
    with pytest.raises(InputError, match="no activation per token"):
        Harvester(model, ["blocks.0.attn.hook_pattern"])


def _source(model, **kw):
    kw = dict(batch_size=32, buffer_tokens=64, seed=3) | kw
    return ModelSource(model, _rows(model), HOOKS[1:], context_size=16, **kw)


def test_buffer_serves_every_token_once_per_epoch(model):
    src = _source(model)
    assert isinstance(src, ActivationSource) and (src.buffer_rows, src.n_buffers) == (4, 3)
    it = iter(src)
    epochs = [[next(it) for _ in range(6)] for _ in range(2)]  # 12 rows x 16 tokens / 32 = 6 batches an epoch
    whole = Harvester(model, HOOKS[1:])(_rows(model))["blocks.0.hook_mlp_out"]
    key = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731
    for ep in epochs:
        served = torch.cat([b["blocks.0.hook_mlp_out"] for b in ep])
        assert torch.equal(key(served), key(whole))  # a permutation of all the tokens
    assert not torch.equal(epochs[0][0]["blocks.0.hook_mlp_out"], epochs[1][0]["blocks.0.hook_mlp_out"])
    assert not torch.equal(epochs[0][0]["blocks.0.hook_mlp_out"], whole[:32])  # shuffled
    other = _source(model, shuffle=False)
    first = next(iter(other))
    assert torch.equal(first["blocks.0.hook_mlp_out"], whole[:32])


@pytest.mark.parametrize("stop", [1, 2, 6, 7, 13])  # mid-buffer, buffer boundary, epoch boundary, after it
def test_exact_resume(model, stop):
    it = iter(_source(model))
    unbroken = [next(it) for _ in range(16)]
    first = _source(model)
    it = iter(first)
    for _ in range(stop):
        next(it)
    state = first.state_dict()
    state = json.loads(json.dumps(state))  # small and JSON-able
    resumed = _source(model)
    resumed.load_state_dict(state)
    it = iter(resumed)
    for want in unbroken[stop:]:
        got = next(it)
        assert all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(InputError, match="different data or settings"):
        _source(model, seed=4).load_state_dict(state)


def test_prefetch_serves_the_same_batches(model):
    it = iter(_source(model))
    want = [next(it) for _ in range(14)]
    src = _source(model, prefetch=True)
    it = iter(src)
    got = [next(it) for _ in range(3)]
    state = src.state_dict()
    src.close()  # the next harvest runs in the background: wait for it before the model is used again
    resumed = _source(model, prefetch=True)  # a prefetching source resumes exactly too
    resumed.load_state_dict(state)
    it = iter(resumed)
    got += [next(it) for _ in range(11)]
    resumed.close()  # the model is shared with the other tests: no harvest may still run on it
    assert all(torch.equal(g[k], w[k]) for g, w in zip(got, want) for k in w)


def test_exclude_special_tokens(model):
    rows = _rows(model, n=4)
    rows[:, 0] = 7
    h = Harvester(model, HOOKS[1:2], exclude_special_tokens=[7])
    got = h(rows)[HOOKS[1]]
    full = Harvester(model, HOOKS[1:2])(rows)[HOOKS[1]]
    assert torch.equal(got, full[(rows != 7).reshape(-1)])


def test_activation_source_dispatch(model, tmp_path):
    x = torch.randn(100, 8)
    assert isinstance(activation_source(x, batch_size=10), TensorSource)
    src = activation_source({"a": x, "b": x * 2}, batch_size=10)
    batch = next(iter(src))
    assert torch.equal(batch["b"], 2 * batch["a"])  # the hooks of one batch are the same rows
    assert isinstance(activation_source(_rows(model), model=model, hooks=HOOKS[1], batch_size=32,
                                        context_size=16), ModelSource)
    assert activation_source(src) is src
    with pytest.raises(InputError, match="needs hooks"):
        activation_source(_rows(model), model=model)
    with pytest.raises(TypeError, match="cannot train on str"):
        activation_source("some text")


@pytest.mark.parametrize("one_shot", [False, True])
def test_iterable_source_batches_and_resume(one_shot):
    chunks = [torch.randn(n, 4, generator=torch.Generator().manual_seed(n)) for n in (7, 13, 5, 11)]  # 36 rows
    make = (lambda: iter(chunks)) if one_shot else (lambda: chunks)  # noqa: E731
    src = activation_source(make(), batch_size=8)
    assert isinstance(src, IterableSource) and src.d == {"x": 4}
    it = iter(src)
    got = [next(it)["x"] for _ in range(4)]
    assert torch.equal(torch.cat(got), torch.cat(chunks)[:32])
    if one_shot:
        with pytest.raises(InputError, match="ran out after 32 rows"):
            next(it)
    else:
        assert torch.equal(next(it)["x"], torch.cat(chunks)[:8])  # epoch 2 starts again
    again = activation_source(make(), batch_size=8)
    again.load_state_dict({"kind": "iterable", "epoch": 0, "rows": 16, "batch_size": 8})
    assert torch.equal(next(iter(again))["x"], torch.cat(chunks)[16:24])
