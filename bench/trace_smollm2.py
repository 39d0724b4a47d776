"""Causal tracing findings on SmolLM2-135M (Meng et al. 2022, Figures 1-2): the known_1000 facts it knows, traced
for the residual stream, MLPs and attention, averaged by token category.

    nice -n 10 python bench/trace_smollm2.py [--minutes 14] [--samples 2] [--scan 300]

Facts are traced in known_1000 order until the time budget is spent; after each fact the averages are rewritten
to bench/trace_smollm2.json, so a stopped run keeps what it did. At the end the views are saved as HTML under
/tmp and rendered to docs/images/trace_*.png (headless Chromium, bench/screenshot.py).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "src"))  # after PYTHONPATH: a checkout given there wins
sys.path.insert(0, str(ROOT / "bench"))

MODEL = "smollm2-135m"
NOISE_FACTOR = 3.0        # σ = 3 × std of the known_1000 subject embeddings (ROME)
WINDOW = 10
SEED = 1
OUT = ROOT / "bench" / "trace_smollm2.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=14.0, help="time budget for tracing (after loading and scanning)")
    ap.add_argument("--samples", type=int, default=2, help="noise draws per fact (Meng et al.: 10)")
    ap.add_argument("--scan", type=int, default=300, help="scan the first N known_1000 facts for those the model knows")
    ap.add_argument("--max-facts", type=int, default=1000)
    ap.add_argument("--resume", action="store_true", help="keep the traces already in the JSON and go on after them")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    import mechscope
    from mechscope.datasets.facts import known_by, load_facts
    from mechscope.patching import engine
    from mechscope.patching.tracing import Trace, average, subject_embedding_std, trace

    t0 = time.time()
    model = mechscope.load(MODEL)
    facts = load_facts()
    sigma = NOISE_FACTOR * subject_embedding_std(model, [f.subject for f in facts])
    t1 = time.time()
    known = known_by(model, facts[:a.scan])
    t2 = time.time()
    print(f"{MODEL}: knows {len(known)} of the first {a.scan} known_1000 facts (top-1 token begins the attribute; "
          f"scan {t2 - t1:.0f} s); σ = {sigma:.4f} (3 × std of {len(facts)} subject embeddings)", flush=True)
    # keep only last-position logits where the engine offers it (the batched engine does; the reference loop ignores)
    opts = {"logits_at": -1} if "logits_at" in inspect.signature(engine.run_variants).parameters else {}
    traces, times = [], []
    if a.resume and OUT.is_file() and all("trace" in f for f in json.loads(OUT.read_text())["facts"]):
        old = json.loads(OUT.read_text())
        by_id = {k.fact.known_id: k for k in known}
        traces = [(by_id[f["known_id"]], Trace.from_dict(f["trace"])) for f in old["facts"]]
        times = [old["seconds_per_fact"]] * len(traces)
        print(f"resuming after {len(traces)} traced facts", flush=True)
    done = {k.fact.known_id for k, _ in traces}
    for k in [k for k in known if k.fact.known_id not in done][:max(0, a.max_facts - len(traces))]:
        if time.time() - t2 > a.minutes * 60:
            break
        ts = time.time()
        tr = trace(model, k.fact.prompt, k.fact.subject, k.answer, window=WINDOW, noise=sigma, samples=a.samples,
                   seed=SEED, **opts)
        times.append(time.time() - ts)
        traces.append((k, tr))
        print(f"[{len(traces)}] {k.fact.prompt!r} → {tr.answer_str!r}: clean {tr.high:.3f}, corrupted {tr.low:.3f}, "
              f"{len(tr.tokens)} tokens, {times[-1]:.0f} s, method {tr.method}", flush=True)
        avg = average([t for _, t in traces])
        OUT.write_text(json.dumps({
            "model": MODEL, "scanned": a.scan, "known": len(known), "traced": len(traces), "samples": a.samples,
            "window": WINDOW, "sigma": sigma, "seed": SEED, "seconds_per_fact": sum(times) / len(times),
            "engine_options": opts, "average": avg.to_dict(), "summary": summary(avg),
            "facts": [{"known_id": kf.fact.known_id, "prompt": kf.fact.prompt, "subject": kf.fact.subject,
                       "answer": t.answer_str, "high": t.high, "low": t.low, "peaks": t.peaks(), "trace": t.to_dict()}
                      for kf, t in traces],
        }, indent=1) + "\n")
    avg = average([t for _, t in traces])
    print(json.dumps(summary(avg), indent=1))
    print(f"total {time.time() - t0:.0f} s; {len(traces)} facts at {sum(times) / max(1, len(times)):.0f} s each")
    pictures(avg, traces)


def summary(avg) -> dict:
    """Where each kind's average indirect effect peaks, per category, and overall."""
    out = {"average_total_effect": avg.high - avg.low, "high": avg.high, "low": avg.low, "n": avg.n}
    for kind, r in avg.results.items():
        v = r.values
        per = {}
        for i, c in enumerate(r.labels["category"]):
            row = v[i]
            if torch.isnan(row).all():
                continue
            layer = int(row.nan_to_num(float("-inf")).argmax())
            per[c] = {"layer": layer, "aie": float(row[layer])}
        out[kind] = per
    return out


def pictures(avg, traces) -> None:
    from screenshot import screenshot

    pages = {"trace_average": avg.view(f"{MODEL}: average indirect effect of restoring one state, {avg.n} known facts")}
    for i, (k, t) in enumerate(traces[:2]):
        pages[f"trace_fact{i}"] = t.view(f"{MODEL}: {k.fact.prompt!r} → {t.answer_str!r}")
    for name, view in pages.items():  # HTML first, so a failed screenshot can be redone from it
        view.save(f"/tmp/{name}.html")
    for name in pages:
        try:
            screenshot(f"/tmp/{name}.html", ROOT / "docs" / "images" / f"{name}.png", width=1100, height=900)
        except Exception as e:  # noqa: BLE001 - a missing browser must not lose the run's numbers
            print(f"screenshot of /tmp/{name}.html failed: {e}")


if __name__ == "__main__":
    main()
