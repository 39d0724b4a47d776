"""Fused / sparse TopK path vs the dense reference: ms per training step (forward + backward + Adam step, with
the decoder-gradient projection and renormalisation) on the issue's benchmark shape, fp32 on CPU.

Run: OMP_NUM_THREADS=2 nice -n 10 python bench/bench_sae_kernels.py  (timings on a shared machine are rough)."""

import os
import time

import torch

from mechscope.sae import SAE, LossConfig, SAEConfig

BATCH, D_IN, D_SAE, K = 4096, 128, 2048, 32
THREADS = int(os.environ.get("OMP_NUM_THREADS", "2"))
WARMUP, STEPS = 3, 10
DEAD_FRACTION = 0.0  # > 0 turns AuxK on for that share of latents


def step_ms(sae: SAE, x: torch.Tensor, dead: torch.Tensor | None) -> float:
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    loss_cfg = LossConfig()

    def one():
        out = sae.training_forward(x, loss=loss_cfg, dead=dead)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.prepare_grads_()
        opt.step()
        sae.constrain_()

    for _ in range(WARMUP):
        one()
    times = []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        one()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 2]


def main() -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    x = torch.randn(BATCH, D_IN)
    dead = None
    if DEAD_FRACTION > 0:
        dead = torch.rand(D_SAE) < DEAD_FRACTION
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="topk", k=K)
    results = {}
    for name, fused, fast in (("reference", False, False), ("fused", True, False), ("fused+topk_exact", True, True)):
        sae = SAE(cfg, seed=0)
        sae.init_from_data_(x)
        sae.fused, sae.fast_topk = fused, fast
        results[name] = step_ms(sae, x, dead)
        print(f"{name:>18}: {results[name]:7.1f} ms/step  ({BATCH / results[name] * 1e3:,.0f} tokens/s)", flush=True)
    for name in ("fused", "fused+topk_exact"):
        print(f"{name} speed-up over reference: {results['reference'] / results[name]:.2f}x")
    # the two halves of the forward, for context
    pre = torch.addmm(torch.zeros(D_SAE), x, torch.randn(D_IN, D_SAE))
    for label, fn in (("encoder matmul", lambda: torch.addmm(torch.zeros(D_SAE), x, sae.W_enc.detach())),
                      ("torch.topk", lambda: pre.topk(K, sorted=False)),
                      ("topk_exact", lambda: __import__("mechscope.sae.kernels", fromlist=["x"]).topk_exact(pre, K))):
        fn()
        t0 = time.perf_counter()
        for _ in range(STEPS):
            fn()
        print(f"{label:>18}: {(time.perf_counter() - t0) / STEPS * 1e3:7.1f} ms")
    print(f"(batch {BATCH}, d_in {D_IN}, d_sae {D_SAE}, k {K}, {THREADS} threads, torch {torch.__version__})")


if __name__ == "__main__":
    main()
