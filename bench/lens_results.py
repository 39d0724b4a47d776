"""Logit lens vs tuned lens, per layer, on held-out text: the numbers in the README and bench/RESULTS.md.

TinyStories-656K is trained on ../shared/data/tinystories-656k-samples (its own samples) and SmolLM2-135M on
WikiText-2 (raw test split: the only split shipped offline); both are evaluated on rows from the *end* of their
corpus, which training never reads (``lens.data.split``). Run:

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/lens_results.py [--only tinystories|smollm2]

Writes the lenses to OUT/<name>/ and prints a markdown table per model plus timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import mechscope
from mechscope.lens import LogitLens, TrainConfig, evaluate, train
from mechscope.lens.data import split

SHARED = Path(__file__).resolve().parents[2] / "shared"
OUT = Path("/tmp/mechscope-lenses")
RUNS = {
    "tinystories": dict(
        model=str(SHARED / "models" / "TinyStories-656K"),
        data=SHARED / "data" / "tinystories-656k-samples" / "samples.jsonl",
        train=TrainConfig(steps=200, seq_len=128, batch_size=8, positions_per_step=512, holdout_rows=320,
                          train_rows=4096, checkpoint_every=50),
        eval_rows=320,  # the last 320 × 128 tokens, as shared/data/README.md suggests
    ),
    "smollm2": dict(
        model="smollm2-135m",
        data=SHARED / "data" / "wikitext-2-raw-test" / "wiki.test.raw",
        train=TrainConfig(steps=150, seq_len=128, batch_size=4, positions_per_step=128, holdout_rows=16,
                          train_rows=2048, checkpoint_every=5),
        eval_rows=16,
    ),
}


def run(name: str) -> dict:
    spec = RUNS[name]
    torch.manual_seed(0)
    model = mechscope.load(spec["model"])
    cfg: TrainConfig = spec["train"]
    out = OUT / name
    t0 = time.perf_counter()
    lens = train(model, spec["data"], out, cfg, resume=True)
    t_train = time.perf_counter() - t0
    rows = split(model, spec["data"], cfg.seq_len, 0, spec["eval_rows"]).eval
    t0 = time.perf_counter()
    ev = evaluate({"logit": LogitLens.from_model(model), "tuned": lens}, rows, show_progress=True)
    t_eval = time.perf_counter() - t0
    beats = all(float(ev.kl["tuned"][l]) < float(ev.kl["logit"][l]) for l in range(len(ev.layer_labels) - 1))
    print(f"\n## {name}: {model.cfg.family}, {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, "
          f"d_vocab {model.cfg.d_vocab}")
    print(f"trained {cfg.steps} steps × {cfg.positions_per_step} positions ({cfg.batch_size} rows of {cfg.seq_len}) "
          f"in {t_train:.0f} s; evaluated {ev.n_tokens} held-out tokens in {t_eval:.0f} s; "
          f"tuned lens lower KL at every layer: {beats}\n")
    print(ev.markdown())
    result = {"name": name, "train_s": t_train, "eval_s": t_eval, "beats_every_layer": beats,
              "config": cfg.__dict__, **ev.to_dict()}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=list(RUNS))
    ap.add_argument("--steps", type=int, help="Override the number of training steps.")
    ap.add_argument("--eval-rows", type=int, help="Override the number of held-out rows evaluated.")
    ap.add_argument("--out", type=Path, default=OUT, help="Where the lenses go (one folder per model).")
    args = ap.parse_args()
    OUT = args.out
    for spec in RUNS.values():
        if args.steps:
            spec["train"] = dataclasses.replace(spec["train"], steps=args.steps)
        if args.eval_rows:
            spec["eval_rows"] = args.eval_rows
    for n in [args.only] if args.only else list(RUNS):
        run(n)
