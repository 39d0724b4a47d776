"""Attribution patching's cost in forward-equivalents: ``attribution_patch_all`` (every point, layer, head, position
and neuron at once) against one plain forward of the same batch, in the same run.

    python bench/bench_attribution_patching.py [--model smollm2-135m] [--n 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

import mechscope
from mechscope.datasets import ioi_dataset
from mechscope.patching import attribution_patch, attribution_patch_all


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    model = mechscope.load(a.model)
    ds = ioi_dataset(model, a.n, seed=0)
    clean, corrupted = ds.tokens, ds.corrupted_tokens
    metric = lambda logits: ds.logit_diff(logits).mean()
    with torch.no_grad():
        fwd = best(lambda: model(clean), a.repeats)

    print(f"{a.model}: batch {tuple(clean.shape)}; one forward (no grad) {fwd * 1e3:.0f} ms")
    for point in ("resid_pre", "z"):
        t = best(lambda: attribution_patch(model, clean, corrupted, metric, point=point), a.repeats)
        print(f"  attribution_patch(point={point!r}): {t * 1e3:.0f} ms = {t / fwd:.2f} forward-equivalents")
    att = best(lambda: attribution_patch_all(model, clean, corrupted, metric), a.repeats)
    print(f"  attribution_patch_all (every point, layer, head, position, neuron): {att * 1e3:.0f} ms = "
          f"{att / fwd:.2f} forward-equivalents")


if __name__ == "__main__":
    main()
