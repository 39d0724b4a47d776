"""The full layer × head ``z`` patching sweep (every position at once) on an IOI prompt: the batched engine against
one forward per patch (a plain ``run_with_hooks`` loop), in the same run; and TransformerLens 3.9's
``get_act_patch_attn_head_out_all_pos`` on the same GPT-2-small-size weights (its own venv, a subprocess).

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python bench/bench_patching.py [--models smollm2-135m,gpt2-small]

Models: SmolLM2-135M (real weights, 30 layers × 9 heads = 270 patches) and a GPT-2-small-size model (12 × 12 = 144
patches) with seeded random weights and the GPT-2 tokenizer from ``../shared/models``. Every timing is the best of
``--repeats`` rounds (each method once per round, so load from other processes hits all alike), wall time, on whatever machine runs this. The values of each method are
compared with the loop's (max |Δ|).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models"
TLPY = "/tmp/tlvenv/bin/python"
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Alice and Bob went to the store, John gave a drink to"  # ABC: the first two names replaced
ANSWER, WRONG = " Mary", " John"


def gpt2_small():
    """GPT-2 small's shape (12 layers, 12 heads, d_model 768, vocab 50257) with seeded random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SHARED / "gpt2-tokenizer")
    torch.manual_seed(0)
    cfg = AutoConfig.for_model("gpt2", vocab_size=len(tok), n_embd=768, n_layer=12, n_head=12, n_positions=1024,
                                n_ctx=1024)  # n_ctx: TransformerLens reads it
    cfg._attn_implementation = "eager"
    return AutoModelForCausalLM.from_config(cfg).eval(), tok


def load(name: str):
    import mechscope

    if name == "gpt2-small":
        hf, tok = gpt2_small()
        return mechscope.Model.from_hf(hf, tok)
    return mechscope.load(name)


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def sweep(name: str, repeats: int, out) -> dict:
    from mechscope.patching import get_act_patch_attn_head_out_all_pos, metrics, prefix_reuse

    model = load(name)
    clean, corrupt = model.to_tokens(CLEAN), model.to_tokens(CORRUPT)
    assert clean.shape == corrupt.shape, (model.to_str_tokens(CLEAN), model.to_str_tokens(CORRUPT))
    a, w = model.to_single_token(ANSWER), model.to_single_token(WRONG)
    metric = lambda lg: metrics.logit_diff(lg, a, w)  # noqa: E731
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("attn.hook_z"))
    n_l, n_h = model.cfg.n_layers, model.cfg.n_heads

    def loop():
        res = torch.zeros(n_l, n_h)
        with torch.no_grad():
            for l in range(n_l):
                name_z = f"blocks.{l}.attn.hook_z"
                for h in range(n_h):
                    def hook(z, hook, h=h, src=cache[name_z]):
                        z[:, :, h] = src[:, :, h]
                        return z
                    res[l, h] = metric(model.run_with_hooks(corrupt, fwd_hooks=[(name_z, hook)])).item()
        return res

    def one_forward():
        with torch.no_grad():
            return model(corrupt)

    args = (model, corrupt, cache, metric)
    get_act_patch_attn_head_out_all_pos(*args, max_batch=4)  # warm-up; the prefix self-check runs once here
    methods = {"one plain forward": one_forward,
               "loop (one run_with_hooks per patch)": loop,
               "batched, no prefix reuse": lambda: get_act_patch_attn_head_out_all_pos(*args, prefix=False),
               "batched (default)": lambda: get_act_patch_attn_head_out_all_pos(*args),
               "batched + logits_at=-1": lambda: get_act_patch_attn_head_out_all_pos(*args, logits_at=-1)}
    times: dict[str, list] = {k: [] for k in methods}
    values: dict[str, object] = {}
    for _ in range(repeats):  # rounds, each method once per round: load from other processes hits all alike
        for label, fn in methods.items():
            t, values[label] = best(fn, 1)
            times[label].append(t)
    t_fwd = min(times.pop("one plain forward"))
    ref = values["loop (one run_with_hooks per patch)"]
    t_loop = min(times["loop (one run_with_hooks per patch)"])
    rows = {k: (min(v), values[k]) for k, v in times.items()}
    out(f"\n### {name}: {n_l} layers × {n_h} heads = {n_l * n_h} patches, {clean.shape[1]} tokens\n")
    out(f"One plain forward: {t_fwd * 1000:.1f} ms. Prefix reuse: {prefix_reuse(model, corrupt) or 'yes'}. "
        f"Clean logit diff {float(metric(model(clean).detach())):.3f}, corrupted {float(metric(model(corrupt).detach())):.3f}.\n")
    out("| method | s per sweep | forwards-equivalent | speed-up vs loop | max abs diff vs loop |\n|---|---|---|---|---|")
    for label, (t, vals) in rows.items():
        out(f"| {label} | {t:.2f} | {t / t_fwd:.0f} | {t_loop / t:.1f}× | {float((vals - ref).abs().max()):.1e} |")
    return {"name": name, "ref": ref.tolist(), "t_loop": t_loop}


def tl_sweep() -> None:
    """Runs inside /tmp/tlvenv: TransformerLens's own sweep on the same GPT-2-small-size weights."""
    import tempfile

    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer, patching

    hf, tok = gpt2_small()
    folder = Path(tempfile.mkdtemp(prefix="tlx-"))
    hf.config.architectures = ["GPT2LMHeadModel"]
    hf.config.save_pretrained(folder)
    loading.get_official_model_name = lambda name: name
    tl = HookedTransformer.from_pretrained_no_processing(str(folder), hf_model=hf, tokenizer=tok, device="cpu",
                                                         dtype=torch.float32, default_prepend_bos=True)  # as mechscope: BOS first
    clean, corrupt = tl.to_tokens(CLEAN), tl.to_tokens(CORRUPT)
    a, w = tl.to_single_token(ANSWER), tl.to_single_token(WRONG)
    metric = lambda lg: (lg[:, -1, a] - lg[:, -1, w]).mean()  # noqa: E731
    _, cache = tl.run_with_cache(clean)
    times, vals = [], None
    for _ in range(int(os.environ.get("REPEATS", "1"))):
        t = time.perf_counter()
        vals = patching.get_act_patch_attn_head_out_all_pos(tl, corrupt, cache, metric)
        times.append(time.perf_counter() - t)
    print(json.dumps({"t": min(times), "values": vals.tolist()}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="smollm2-135m,gpt2-small")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tl", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.tl:
        tl_sweep()
        return
    out = print
    out("## Activation patching: the full layer × head z sweep, batched engine vs one forward per patch\n")
    out(f"`bench/bench_patching.py`, IOI prompt {CLEAN!r} vs ABC corruption {CORRUPT!r}, metric logit({ANSWER!r}) - "
        f"logit({WRONG!r}); CPU, OMP_NUM_THREADS=1, best of {a.repeats}.")
    results = {}
    for name in a.models.split(","):
        results[name] = sweep(name, a.repeats, out)
    if "gpt2-small" in results and Path(TLPY).exists():
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "HF_HUB_OFFLINE": "1",
               "REPEATS": str(a.repeats)}
        run = subprocess.run([TLPY, __file__, "--tl"], capture_output=True, text=True, env=env)
        if run.returncode:
            out(f"\nTransformerLens did not run: {run.stderr.strip().splitlines()[-1]}")
        else:
            tl = json.loads(run.stdout.strip().splitlines()[-1])
            ref = torch.tensor(results["gpt2-small"]["ref"])
            diff = float((torch.tensor(tl["values"]) - ref).abs().max())
            out(f"\nTransformerLens 3.9 `get_act_patch_attn_head_out_all_pos` on the same GPT-2-small-size weights "
                f"(its own venv, `from_pretrained_no_processing`): {tl['t']:.2f} s per sweep "
                f"({results['gpt2-small']['t_loop'] / tl['t']:.2f}× the mechscope loop's speed); max |Δ| vs the "
                f"mechscope loop {diff:.1e}.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
