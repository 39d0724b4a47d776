"""Evaluation and splicing on TinyStories-656K: a TopK SAE (k=32, d_sae=2048, blocks.1.hook_resid_post) trained
here with a minimal loop over the contract's ``training_forward`` (the team's trainer is mechscope.sae.train;
this script only needs a real dictionary to measure), then

* ``evaluate`` on the held-out last 320 x 128 tokens (figures, seconds);
* the cost of splicing: a forward with the SAE spliced in (no error term / error term with nothing watching /
  error term with the latents cached) against the plain forward, and that the error-term logits equal the plain ones.

Run: ``nice -n 10 python bench/bench_sae_eval.py [--tokens 1000000]``. Timings on a shared CPU are rough.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import mechscope
from mechscope.lens.data import split
from mechscope.sae import SAE, SAEConfig, evaluate, splice

SHARED = Path(__file__).resolve().parents[2] / "shared"
HOOK = "blocks.1.hook_resid_post"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    m = mechscope.load(SHARED / "models" / "TinyStories-656K")
    data = SHARED / "data" / "tinystories-656k-samples" / "samples.jsonl"
    ctx = 128
    parts = split(m, data, ctx, a.tokens // ctx, 320)
    t0 = time.perf_counter()
    acts = []
    with torch.no_grad():
        for i in range(0, parts.train.shape[0], 64):
            _, c = m.run_with_cache(parts.train[i:i + 64], names_filter=HOOK, stop_at_layer=2)
            acts.append(c[HOOK][:, 1:].reshape(-1, m.cfg.d_model))  # BOS left out, as evaluate does
    acts = torch.cat(acts)[torch.randperm(sum(len(x) for x in acts))]
    harvest_s = time.perf_counter() - t0
    sae = SAE(SAEConfig(d_in=128, d_sae=2048, architecture="topk", k=32, hook_name=HOOK, context_size=ctx,
                        normalize_activations="expected_average_only_in"), seed=0)
    sae.init_from_data_(acts[:65536])
    opt = torch.optim.Adam(sae.parameters(), lr=4e-4)
    fired = torch.zeros(2048, dtype=torch.long)
    t0 = time.perf_counter()
    for step, i in enumerate(range(0, len(acts) - 4095, 4096)):
        out = sae.training_forward(acts[i:i + 4096], dead=(fired > 100) if step > 100 else None)
        opt.zero_grad()
        out.loss.backward()
        sae.prepare_grads_()
        opt.step()
        sae.constrain_()
        fired = torch.where(out.fired, 0, fired + 1)
    train_s = time.perf_counter() - t0
    sae.fold_norm_scale_()
    sae.eval()
    t0 = time.perf_counter()
    ev = evaluate(sae, m, parts.eval, batch_size=32)
    eval_s = time.perf_counter() - t0
    print(ev)
    tokens = parts.eval[:32]
    timings = {}
    with torch.no_grad():
        plain = m(tokens)

        def clock(fn, n=10):
            fn()
            t = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - t) / n

        timings["plain"] = clock(lambda: m(tokens))
        with splice(m, sae):
            timings["spliced"] = clock(lambda: m(tokens))
        with splice(m, sae, use_error_term=True) as (s,):
            timings["error_term_unwatched"] = clock(lambda: m(tokens))
            exact_unwatched = torch.equal(m(tokens), plain)
            name = s.prefix + "hook_sae_acts_post"
            timings["error_term_latents_cached"] = clock(lambda: m.run_with_cache(tokens, names_filter=name))
            exact_cached = torch.equal(m.run_with_cache(tokens, names_filter=name)[0], plain)
    res = {"train_tokens": len(acts), "harvest_s": harvest_s, "train_s": train_s, "eval_tokens": parts.eval.numel(),
           "eval_s": eval_s, "forward_s_32x128": timings, "error_term_exact": [exact_unwatched, exact_cached],
           **ev.to_dict(density=False)}
    print(json.dumps({k: v for k, v in res.items() if k not in ("histogram_edges", "histogram_counts")}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
