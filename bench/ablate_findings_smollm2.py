"""Findings on SmolLM2-135M IOI: exact activation patching of heads and resid_pre, attribution patching against
it, path patching from heads to the logits and into the q/k/v of the heads that matter, knock-outs of the top heads.

Run in two independent parts (about 8 and 12 min of one CPU core; they can run side by side):
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python bench/ablate_findings_smollm2.py a   # patching, attribution
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python bench/ablate_findings_smollm2.py b   # path patching, knock-outs
    (add "kv" after b to also path-patch into the keys and values of the chosen heads, or run part c with the heads
    part b chose: ... ablate_findings_smollm2.py c 29.1,23.0,23.7)
Writes bench/ablate_findings_<part>.json and prints a markdown summary (the README's numbers).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import mechscope
from mechscope.datasets.ioi import ioi_dataset
from mechscope.patching import ablate, attribution_patch_all, correlation, knockout, path_patch, run_variants

MODEL = "smollm2-135m"
N_PROMPTS, SEED = 64, 0      # generated IOI prompts; the largest unpadded template group is used
BATCH = 6                    # prompts of that group used
TOP = 5                      # heads reported per sweep


def exact_resid_pre(model, clean, corrupted, metric):
    """Exact denoising activation patching of resid_pre, a plain run_with_hooks loop: [layer, pos]."""
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_resid_pre"))
    n, p = model.cfg.n_layers, clean.shape[1]
    variants = []
    for l in range(n):
        name = f"blocks.{l}.hook_resid_pre"
        for i in range(p):
            def fn(act, hook, name=name, i=i):
                act = act.clone()
                act[:, i] = cache[name][:, i]
                return act
            variants.append([(name, fn)])
    return torch.stack(run_variants(model, corrupted, variants, metric)).reshape(n, p)


def main(part: str, kv: bool):
    t0 = time.time()
    torch.manual_seed(0)
    model = mechscope.load(MODEL)
    ds = ioi_dataset(model, n=N_PROMPTS, seed=SEED)
    group = max(ds.by_template().values(), key=len)[:BATCH]
    clean, corrupted, metric = group.tokens, group.corrupted_tokens, group.metric()
    metric.__name__ = "logit difference"
    out = {"model": MODEL, "prompts": group.texts, "corrupted": group.corrupted_texts}
    with torch.no_grad():
        ld_clean, ld_corr = float(metric(model(clean))), float(metric(model(corrupted))),
    out["logit_diff"] = {"clean": ld_clean, "corrupted": ld_corr}
    print(f"## SmolLM2-135M IOI: {len(group)} prompts ({clean.shape[1]} tokens), e.g. {group.texts[0]!r} / "
          f"{group.corrupted_texts[0]!r}")
    print(f"logit difference clean {ld_clean:.3f}, ABC-corrupted {ld_corr:.3f}")

    if part == "a":
        part_a(model, clean, corrupted, metric, ld_corr, out)
    elif part == "c":
        movers = [tuple(int(x) for x in h.split(".")) for h in sys.argv[2].split(",")]
        path_into_heads(model, clean, corrupted, metric, out, movers, ("kv",))
    else:
        part_b(model, clean, corrupted, metric, out, kv)
    path = Path(__file__).with_name(f"ablate_findings_{part}.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path} in {time.time() - t0:.0f}s")


def part_a(model, clean, corrupted, metric, ld_corr, out):
    # exact activation patching of every head's z (denoise) == path patching to the logits with nothing frozen
    t = time.time()
    act_z = path_patch(model, clean, corrupted, metric, senders="heads", freeze_heads=False)
    out["act_patch_z"] = act_z.to_dict()
    print(f"\n### Activation patching of z (denoise), {time.time() - t:.0f}s; baseline {act_z.baseline:.3f}")
    print("largest effects on the logit difference:", ", ".join(f"{l} {v:+.3f}" for l, v in
                                                     _top(act_z.values - act_z.baseline, act_z, TOP)))

    t = time.time()
    exact_rp = exact_resid_pre(model, clean, corrupted, metric)
    t_exact_rp = time.time() - t
    t = time.time()
    attr = attribution_patch_all(model, clean, corrupted, metric, points=["resid_pre", "z"])
    t_attr = time.time() - t
    c_rp = correlation(attr["resid_pre"], exact_rp, baseline_b=ld_corr)
    c_z = correlation(attr["z"], act_z)
    out["attribution"] = {"resid_pre": attr["resid_pre"].to_dict(), "z": attr["z"].to_dict(),
                          "exact_resid_pre": exact_rp.tolist(), "corr_resid_pre": c_rp, "corr_z": c_z,
                          "seconds_attribution": t_attr, "seconds_exact_resid_pre": t_exact_rp}
    print(f"\n### Attribution vs exact patching ({t_attr:.1f}s for both points vs {t_exact_rp:.0f}s exact resid_pre)")
    print(f"resid_pre (layer x pos, {c_rp['n']} cells): Pearson {c_rp['pearson']:.3f}, Spearman "
          f"{c_rp['spearman']:.3f}, top-{c_rp['k']} overlap {c_rp['top_k_overlap']:.2f}")
    print(f"z (layer x head, {c_z['n']} cells): Pearson {c_z['pearson']:.3f}, Spearman {c_z['spearman']:.3f}, "
          f"top-{c_z['k']} overlap {c_z['top_k_overlap']:.2f}")
    print("attribution top heads:", ", ".join(f"{l} {v:+.3f}" for l, v in _top(attr["z"].effects(), attr["z"], TOP)))


def part_b(model, clean, corrupted, metric, out, kv):
    # path patching to the logits, Wang et al.'s noising form: the clean run with one head from the ABC run
    t = time.time()
    pl = path_patch(model, clean, corrupted, metric, senders="heads", receivers="logits", direction="noise")
    out["path_logits"] = pl.to_dict()
    eff = pl.values - pl.baseline
    print(f"\n### Path patching heads -> logits (noise), {time.time() - t:.0f}s; baseline {pl.baseline:.3f}")
    print("largest effects:", ", ".join(f"{l} {v:+.3f}" for l, v in _top(eff, pl, 8)))
    movers = [(int(pl.labels["layer"][i]), int(pl.labels["head"][j]))
              for i, j in (divmod(int(k), eff.shape[1]) for k in eff.flatten().argsort()[:3])]
    out["movers"] = movers
    print("receivers chosen (most negative: the name-mover analogues):", movers)

    path_into_heads(model, clean, corrupted, metric, out, movers, ("q", "kv") if kv else ("q",))
    knockouts(model, clean, corrupted, metric, out, movers)


def path_into_heads(model, clean, corrupted, metric, out, movers, inputs):
    for which in inputs:
        t = time.time()
        r = path_patch(model, clean, corrupted, metric, senders="heads",
                       receivers=[(l, h if which == "q" else h // (model.cfg.n_heads // model.cfg.n_kv_heads), which)
                                  for l, h in movers], direction="noise")
        out[f"path_{which}"] = r.to_dict()
        e = r.values - r.baseline
        print(f"\n### Path patching heads -> {which} of {movers} (noise), {time.time() - t:.0f}s")
        print("largest effects:", ", ".join(f"{l} {v:+.3f}" for l, v in _top(e, r, 8)))


def knockouts(model, clean, corrupted, metric, out, movers):
    # knock-outs of the top heads, one at a time and together
    top_heads = sorted(set(movers) | {(23, 3), (29, 1)})
    out["knockout"] = {}
    print("\n### Knock-outs on the clean prompts (logit difference; baseline clean)")
    for method, ref in (("zero", None), ("mean", corrupted), ("resample", corrupted)):
        k1 = knockout(model, clean, metric, [tuple(h) for h in top_heads], method, ref)
        all_v = float(ablate(model, clean, metric, heads=top_heads, method=method, reference=ref))
        out["knockout"][method] = {"single": k1.to_dict(), "all_together": all_v}
        print(f"{method}: baseline {k1.baseline:.3f}; " + ", ".join(
            f"{lab} {v:.3f}" for lab, v in zip(k1.labels["component"], k1.values.tolist()))
            + f"; all {len(top_heads)} together {all_v:.3f}")


def _top(values, result, k):
    flat = values.flatten()
    order = flat.abs().argsort(descending=True)[:k]
    return [(result.label(tuple(int(i) for i in torch.unravel_index(j, values.shape))), float(flat[j]))
            for j in order]


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "a", "kv" in sys.argv[2:])
