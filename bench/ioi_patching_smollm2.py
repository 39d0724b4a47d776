"""IOI activation-patching findings on SmolLM2-135M: the residual stream by layer × position and every head's output
(all positions) by layer × head, denoising clean into ABC-corrupted runs, normalised (0 = corrupted, 1 = clean),
averaged over prompts.

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python bench/ioi_patching_smollm2.py [--what resid,heads]

Prompts: one Wang et al. (2022) template, ``When {A} and {B} went to the {place}, {S} gave a {object} to``, in
ABBA and BABA order, with names, places and objects that are single tokens for SmolLM2's tokenizer, so every
prompt has the same length and the batch runs as one. The ABC corruption replaces the first two names by two
other names. The metric is logit(IO) - logit(S) at the last position, averaged over the batch. Writes
``bench/ioi_patching_smollm2.json`` and HTML views under ``--views`` (render with ``bench/screenshot.py``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

import mechscope
from mechscope.patching import activation_patch, metrics

TEMPLATE = "When {A} and {B} went to the {place}, {S} gave a {object} to"
NAMES = [" Mary", " John", " Tom", " James", " Sarah", " David", " Anna", " Paul", " Lisa", " Mark", " Emma",
         " Peter", " Kate", " Jack", " Alice", " Bob"]
PLACES = ["store", "park", "market", "school"]
OBJECTS = ["drink", "ball", "book", "gift"]


def prompts(model, n: int, seed: int = 0):
    rng = random.Random(seed)
    names = [x for x in NAMES if len(model.to_tokens(x, prepend_bos=False)[0]) == 1]
    out = []
    while len(out) < n:
        io, s, c, d = rng.sample(names, 4)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        a, b = (io, s) if len(out) % 2 == 0 else (s, io)  # ABBA, then BABA
        fill = dict(place=place, object=obj, S=s.strip())
        clean = TEMPLATE.format(A=a.strip(), B=b.strip(), **fill)
        corrupt = TEMPLATE.format(A=c.strip(), B=d.strip(), **fill)
        if model.to_tokens(clean).shape != model.to_tokens(corrupt).shape:
            continue
        out.append((clean, corrupt, io, s))
    lengths = {model.to_tokens(p[0]).shape[1] for p in out}
    if len(lengths) != 1:  # places/objects of different token lengths: keep the most common length
        common = max(lengths, key=lambda L: sum(model.to_tokens(p[0]).shape[1] == L for p in out))
        out = [p for p in out if model.to_tokens(p[0]).shape[1] == common]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--what", default="resid,heads")
    ap.add_argument("--out", default=str(Path(__file__).with_name("ioi_patching_smollm2.json")))
    ap.add_argument("--views", default="/tmp/ioi-views")
    a = ap.parse_args()
    model = mechscope.load(a.model)
    ps = prompts(model, 2 * a.n)[:a.n]
    if len(ps) < a.n:
        raise SystemExit(f"only {len(ps)} prompts of one token length could be made; add names, places or objects")
    clean, corrupt = [p[0] for p in ps], [p[1] for p in ps]
    io = [model.to_single_token(p[2]) for p in ps]
    s = [model.to_single_token(p[3]) for p in ps]
    metric = lambda lg: metrics.logit_diff(lg, io, s)  # noqa: E731
    per_prompt = lambda lg: metrics.logit_diff(lg, io, s, reduce="none")  # noqa: E731
    with torch.no_grad():
        lc, lx = per_prompt(model(clean)), per_prompt(model(corrupt))
    print(f"{len(ps)} prompts, {model.to_tokens(clean).shape[1]} tokens each, e.g. {clean[0]!r} / {corrupt[0]!r}")
    print(f"clean logit diff: mean {lc.mean():.3f} (per prompt {', '.join(f'{v:.2f}' for v in lc.tolist())})")
    print(f"corrupted logit diff: mean {lx.mean():.3f} (per prompt {', '.join(f'{v:.2f}' for v in lx.tolist())})")
    out = {"model": a.model, "prompts": ps, "clean_logit_diff": lc.tolist(), "corrupted_logit_diff": lx.tolist()}
    if Path(a.out).exists():
        out = {**json.loads(Path(a.out).read_text()), **out}
    Path(a.views).mkdir(parents=True, exist_ok=True)
    norm = metrics.normalised(metric, float(lc.mean()), float(lx.mean()))
    for what in filter(None, a.what.split(",")):
        point, by_pos = {"resid": ("resid_pre", True), "heads": ("z", False)}[what]
        t = time.perf_counter()
        res = activation_patch(model, clean, corrupt, norm, point=point, by_pos=by_pos, logits_at=-1)
        secs = time.perf_counter() - t
        res.metric = "normalised logit difference"
        res.title = f"SmolLM2-135M, IOI ({len(ps)} prompts): patching {point} clean → ABC-corrupted"
        print(f"\n{point} ({', '.join(res.dims)}), {res.values.numel()} patches × {len(ps)} prompts in {secs:.0f} s")
        for label, v in res.top(12, by_abs=False):
            print(f"  {label}: {v:.3f}")
        if what == "resid":
            final = res.values[-1]
            print("  last layer by position: " + ", ".join(f"{lab!r} {v:.2f}" for lab, v in
                                                          zip(res.labels["pos"], final.tolist())))
        out[what] = {**res.to_dict(), "seconds": secs}
        res.view().save(f"{a.views}/ioi_{what}.html")
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
