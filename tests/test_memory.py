"""Cache memory: the estimate from point shapes equals what a cache really takes, and run_with_cache refuses up front
when it cannot fit (free memory is monkeypatched: no test allocates gigabytes)."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair
from mechscope import memory
from mechscope.cli import _cache_estimates
from mechscope.memory import CacheMemoryError

IDS = torch.randint(3, 128, (3, 10), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=[("llama", torch.float32), ("gpt2", torch.float32), ("gemma2", torch.bfloat16)],
                ids=["llama-fp32", "gpt2-fp32", "gemma2-bf16"])
def model(request):
    key, dtype = request.param
    m = mechscope.Model.from_hf(make_pair(key, dtype)[0])
    m.set_use_attn_result(True)
    return m


@pytest.mark.parametrize("incl_bwd", [False, True])
def test_estimate_equals_cache_size(model, incl_bwd):
    _, cache = model.run_with_cache(IDS, incl_bwd=incl_bwd)
    b, p = IDS.shape
    assert sum(model.cache_bytes(model.hook_names(), b, p, incl_bwd=incl_bwd).values()) == cache.nbytes


def test_estimate_on_a_kv_cache_step(model):
    hf = model.hf_model
    past = hf(IDS[:, :7], use_cache=True).past_key_values
    names = [n for n in model.hook_names() if "attn" in n]
    _, cache = model.run_with_cache(IDS[:, 7:], names_filter=names, past_key_values=past, use_cache=True)
    est = sum(model.cache_bytes(names, 3, 3, k_pos=10).values())
    if getattr(hf.config, "sliding_window", None) is None:
        assert est == cache.nbytes
    else:  # a sliding window keeps fewer keys in some layers: the estimate is an upper bound
        assert est > cache.nbytes


def test_refuses_with_numbers_and_fixes(model, monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 1000)
    with pytest.raises(CacheMemoryError) as err:
        model.run_with_cache(IDS)
    msg = str(err.value)
    needed = sum(model.cache_bytes(model.hook_names(), *IDS.shape).values())
    assert memory.format_bytes(needed) in msg and "1000 B is free" in msg and "on cpu" in msg
    assert "names_filter" in msg and "smaller batch" in msg and "check_memory=False" in msg
    assert not any(m._forward_hooks for m in model.hf_model.modules())  # refused before anything was attached
    # what fits still runs, and the check can be skipped
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10 * model.cache_bytes(
        ["blocks.0.hook_resid_post"], *IDS.shape)[torch.device("cpu")])
    model.run_with_cache(IDS, names_filter="blocks.0.hook_resid_post")
    _, cache = model.run_with_cache(IDS, check_memory=False)
    assert len(cache) == len(model.hook_names())


def test_stop_at_layer_counts_only_points_that_run(model, monkeypatch):
    b, p = IDS.shape
    early = [n for n in model.hook_names() if model.hook_dict[n].layer_idx in (None, 0)]
    monkeypatch.setattr(memory, "free_bytes", lambda device: int(sum(model.cache_bytes(early, b, p).values()) / 0.9) + 1)
    with pytest.raises(CacheMemoryError):
        model.run_with_cache(IDS)
    model.run_with_cache(IDS, stop_at_layer=1)


def test_gpu_cache_suggests_cpu(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 2**30)
    with pytest.raises(CacheMemoryError, match='device="cpu"'):
        memory.check({torch.device("cuda", 0): 2**31}, n_points=10, batch=8, pos=128, moved=False)
    with pytest.raises(CacheMemoryError) as err:
        memory.check({torch.device("cpu"): 2**31}, n_points=10, batch=8, pos=128, moved=False)
    assert 'device="cpu"' not in str(err.value)
    monkeypatch.undo()
    memory.check({torch.device("meta"): 2**40}, n_points=1, batch=1, pos=1, moved=False)  # unknown: no check


def test_free_memory_is_read_on_cpu():
    free = memory.free_bytes(torch.device("cpu"))
    assert free is not None and free > 0


def test_info_prints_the_estimate_per_batch_size(model):
    text = _cache_estimates(model, pos=10, batches=(1, 3))
    _, cache = model.run_with_cache(IDS)
    assert f"batch   3: {memory.format_bytes(cache.nbytes)} on cpu" in text
    assert f"{len(model.hook_names())} hook points" in text
