"""Integrated gradients on the real models: completeness delta against n_steps and baseline, time per call, and
mechscope's batched IG against Captum's ``IntegratedGradients`` on the same forward.

    python bench/bench_attribution.py [--models smollm2-135m,gemma3-270m] [--out FILE]

The default baseline (``"auto"``: an ordinary token, `` the``) and ``n_steps`` (``IG_STEPS``) must keep the delta
under 5% on both models (docs/attribution.md). Timings are wall time on whatever machine runs this.
"""

from __future__ import annotations

import argparse
import time

import torch

import mechscope
from mechscope.attribution import IG_STEPS, integrated_gradients
from mechscope.attribution.runner import prepare

PROMPTS = [
    ("The capital of France is", " Paris"),
    ("When Mary and John went to the store, John gave a drink to", (" Mary", " John")),
    ("The cat sat on the", None),
    ("Robert Boulter is an English film , television and theatre", None),  # wikitext-2 test, first sentence
]
BASELINES = ["auto", "zeros", "pad"]
STEPS = [32, 64, 128]
BATCH = 16


def sweep(name: str, out) -> None:
    model = mechscope.load(name)
    out(f"\n### {name}\n\n| prompt | target | baseline | " + " | ".join(f"delta @{n}" for n in STEPS)
        + f" | s @{IG_STEPS} |\n|---|---|---|" + "---|" * (len(STEPS) + 1))
    for prompt, target in PROMPTS:
        for baseline in BASELINES:
            deltas, secs = [], None
            for n in STEPS:
                t = time.perf_counter()
                a = integrated_gradients(model, prompt, target, baseline=baseline, n_steps=n, batch_size=BATCH)
                if n == IG_STEPS:
                    secs = time.perf_counter() - t
                deltas.append(f"{a.delta:.2%}")
            out(f"| {prompt[:40]!r} | {a.target.split(' at ')[0]} | {a.params['baseline']} | " + " | ".join(deltas)
                + f" | {secs:.1f} |")


def versus_captum(name: str, out) -> None:
    from captum.attr import IntegratedGradients

    model = mechscope.load(name)
    prompt, target = PROMPTS[1]
    runner = prepare(model, prompt, target, batch_size=BATCH)
    x = runner.embeds
    base = runner.embed(torch.full_like(runner.tokens, model.to_single_token(" the")))
    ig = IntegratedGradients(lambda e: runner._target(e))
    out(f"\n### {name}: mechscope vs Captum, IG on the same forward (n_steps {IG_STEPS}, batch {BATCH}, "
        "baseline ' the' at every position incl. BOS)\n\n| implementation | s per call (best of 3) |\n|---|---|")
    for label, fn in [
        ("mechscope integrated_gradients", lambda: integrated_gradients(
            model, prompt, target, baseline=base[0], n_steps=IG_STEPS, batch_size=BATCH, include_bos=True)),
        ("captum IntegratedGradients", lambda: ig.attribute(x, baselines=base, n_steps=IG_STEPS,
                                                             internal_batch_size=BATCH)),
    ]:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out(f"| {label} | {min(times):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--out", default=None)
    ap.add_argument("--captum", action="store_true", help="also time Captum's IG")
    args = ap.parse_args()
    lines = []

    def out(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    torch.manual_seed(0)
    for name in args.models.split(","):
        sweep(name, out)
        if args.captum:
            versus_captum(name, out)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
