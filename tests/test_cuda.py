"""CUDA correctness (skipped without a GPU): the same exactness promises on the device, and CPU vs CUDA."""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import make_pair

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("key", ["gpt2", "gpt_neox", "llama", "qwen3", "gemma2", "phi3", "olmo2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_exactness(key, dtype):
    eager, fast = make_pair(key, dtype)
    eager, fast = mechscope.Model.from_hf(eager.cuda()), mechscope.Model.from_hf(fast.cuda())
    ids = torch.randint(3, 128, (2, 12), device="cuda")
    assert torch.equal(fast(ids), fast.hf_model(ids).logits)
    logits, cache = eager.run_with_cache(ids, device="cpu")
    assert torch.equal(logits, eager.hf_model(ids).logits)
    assert cache["pattern", 0].device.type == "cpu"


def test_cpu_and_cuda_caches_agree():
    cpu, _ = make_pair("llama", torch.float32)
    gpu, _ = make_pair("llama", torch.float32)
    cpu, gpu = mechscope.Model.from_hf(cpu), mechscope.Model.from_hf(gpu.cuda())
    ids = torch.randint(3, 128, (2, 12))
    _, c1 = cpu.run_with_cache(ids)
    _, c2 = gpu.run_with_cache(ids.cuda(), device="cpu")
    for name in c1:
        torch.testing.assert_close(c1[name], c2[name], atol=1e-4, rtol=1e-4)
