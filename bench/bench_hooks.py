"""Hook and cache overhead of mechscope against plain HuggingFace, raw torch hooks and (if installed) nnsight.

    python bench/bench_hooks.py                # full run (make bench): ~9 min on an idle 2-core CPU
    python bench/bench_hooks.py --quick        # smoke check: a few rounds, numbers not meaningful
    python bench/bench_hooks.py --out FILE.md  # also write the tables as markdown
    python bench/bench_hooks.py --threads 1    # when other jobs share the cores (see below)

Variants of one workload run interleaved (each round calls every variant in turn), so a change in background
load hits all of them alike; tables report medians and ratios to baselines measured in the same run.
On a busy machine, torch's default of one OpenMP thread per core makes each op wait for a descheduled thread
(a 1-layer model took 72 ms per call instead of 0.3 ms): check `uptime` first, or pass --threads 1.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from rich.console import Console
from rich.table import Table
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, LlamaConfig

import mechscope

BATCHES = (1, 8)
SEQ = 128
WARMUP = 2  # untimed rounds per workload
ITERS = 10  # timed rounds per workload
ROUND_S = 0.2  # within a round, a fast call is repeated until the baseline takes about this long
TINY_ROUNDS = 30  # rounds for the per-call overhead on a 1-layer model
TINY_TOKENS = 4
TINY_CONFIGS = {
    "gpt2": GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32),
    "llama": LlamaConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=64, max_position_embeddings=32),
}

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"  # the repo's parent holds shared/
GPT2_DIR, TINYSTORIES_DIR = SHARED / "gpt2-tokenizer", SHARED / "TinyStories-656K"
IMPLS = ("eager", "sdpa")
HF, HF_EAGER, RAW = "HF forward", "HF forward, eager (reference)", "raw hooks: every block's output"
console = Console(width=None if sys.stdout.isatty() else 150)
Rows = list[list[str]]


@dataclass(frozen=True)
class Budget:
    warmup: int = WARMUP
    rounds: int = ITERS
    tiny_rounds: int = TINY_ROUNDS


QUICK = Budget(warmup=0, rounds=2, tiny_rounds=3)


def measure(variants: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, tuple[float, float]]:
    """Median (wall, kernel) seconds per call of each variant. Kernel (system) time is summed over threads;
    here it is mostly page faults, i.e. memory the allocator returned to the OS being mapped in again."""
    baseline = next(iter(variants.values()))
    baseline()
    t0 = time.perf_counter()
    baseline()
    calls = max(1, round(ROUND_S / (time.perf_counter() - t0)))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for r in range(warmup + rounds):
        for name, fn in variants.items():
            sys0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime, time.perf_counter()
            for _ in range(calls):
                fn()
            wall, kernel = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0
            if r >= warmup:
                times[name].append((wall / calls, kernel / calls))
    return {name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
            for name, ts in times.items()}


# ------------------------------------------------------------------------------------------- workloads
def raw_hook_cache(hf, blocks, tokens) -> list:
    """The cheapest residual-stream cache: one forward hook per block that keeps its output."""
    store = []

    def keep(module, args, output):
        store.append(output[0] if isinstance(output, tuple) else output)

    handles = [b.register_forward_hook(keep) for b in blocks]
    try:
        hf(input_ids=tokens)
    finally:
        for h in handles:
            h.remove()
    return store


def nnsight_variants(nnsight, model: mechscope.Model, tokens) -> dict[str, Callable]:
    """The nnsight equivalents, on a deep copy of the model: NNsight replaces ``forward`` on every module
    instance it wraps, which would also slow down the plain-HF and mechscope variants sharing those modules."""
    if nnsight is None:
        return {}
    nn_model = nnsight.NNsight(copy.deepcopy(model.hf_model))
    blocks = functools.reduce(getattr, model.family.layers.split("."), nn_model)

    def trace():
        with nn_model.trace(tokens):
            pass

    def save_blocks():
        with nn_model.trace(tokens):
            outs = nnsight.save([b.output for b in blocks])
        return outs

    return {"nnsight trace, no saves": trace, "nnsight trace, save every block output": save_blocks}


def matrix(title: str, models: dict[str, mechscope.Model], nnsight, budget: Budget) -> list[tuple[str, Rows]]:
    """Sections 1-3: every variant at each batch size, one table per attention implementation."""
    tables = []
    gen = torch.Generator().manual_seed(0)
    for impl in IMPLS:
        model = models[impl]
        hf, blocks = model.hf_model, model.blocks
        rows: dict[str, list[str]] = {}
        for batch in BATCHES:
            tokens = torch.randint(0, model.cfg.d_vocab, (batch, SEQ), generator=gen)
            v: dict[str, Callable] = {HF: lambda: hf(input_ids=tokens)}
            if impl != "eager":
                v[HF_EAGER] = lambda: models["eager"].hf_model(input_ids=tokens)
            v[RAW] = lambda: raw_hook_cache(hf, blocks, tokens)
            v["mechscope forward, no hooks"] = lambda: model(tokens)
            v["mechscope cache resid_post"] = lambda: model.run_with_cache(
                tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
            v["mechscope cache resid_pre/mid/post"] = lambda: model.run_with_cache(
                tokens, names_filter=lambda n: "hook_resid" in n)
            v["mechscope cache every point"] = lambda: model.run_with_cache(tokens)
            v.update(nnsight_variants(nnsight, model, tokens))
            refs = {name: RAW for name in v if name.startswith(("mechscope cache resid", "nnsight trace, save"))}
            if impl != "eager":
                refs["mechscope cache every point"] = HF_EAGER
            console.log(f"{title} {impl} batch {batch}: {len(v)} variants x {budget.rounds} rounds")
            med = measure(v, budget.rounds, budget.warmup)
            for name, (t, kernel) in med.items():
                ref = refs.get(name)
                vs_ref = f"{t / med[ref][0]:.3f}× {'eager' if ref == HF_EAGER else 'raw hooks'}" if ref else ""
                rows.setdefault(name, [name]).extend(
                    [f"{t * 1e3:.2f}", f"{kernel * 1e3:.1f}", f"{t / med[HF][0]:.3f}×", vs_ref])
        header = ["variant"] + [f"{h} b={b}" for b in BATCHES for h in ("ms", "sys ms", "× HF", "× ref")]
        tables.append((f"{title}, attn_implementation={impl!r}, {SEQ} tokens", [header, *rows.values()]))
    return tables


def gpt2_models() -> dict[str, mechscope.Model] | None:
    if not GPT2_DIR.is_dir():
        return None
    cfg = AutoConfig.from_pretrained(GPT2_DIR)
    out = {}
    for impl in IMPLS:
        torch.manual_seed(0)  # the same random weights for both implementations
        out[impl] = mechscope.Model.from_hf(AutoModelForCausalLM.from_config(cfg, attn_implementation=impl).eval())
    return out


def tinystories_models() -> dict[str, mechscope.Model] | None:
    if not TINYSTORIES_DIR.is_dir():
        return None
    return {impl: mechscope.load(TINYSTORIES_DIR, attn_implementation=impl) for impl in IMPLS}


def fixed_overhead(nnsight, budget: Budget) -> list[tuple[str, Rows]]:
    """Section 4: per-call cost on a 1-layer d_model-16 model, whose forward is almost free."""
    tables = []
    point = "blocks.0.hook_resid_post"
    for family, cfg in TINY_CONFIGS.items():
        torch.manual_seed(0)
        model = mechscope.Model.from_hf(AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval())
        hf, tokens = model.hf_model, torch.randint(0, cfg.vocab_size, (1, TINY_TOKENS))
        v: dict[str, Callable] = {
            HF: lambda: hf(input_ids=tokens),
            "raw hook on block 0 (register, run, remove)": lambda: raw_hook_cache(hf, model.blocks, tokens),
            "mechscope forward, no hooks": lambda: model(tokens),
            f"mechscope run_with_hooks {point} (no-op)": lambda: model.run_with_hooks(
                tokens, fwd_hooks=[(point, lambda act, hook: None)]),
            f"mechscope run_with_cache {point}": lambda: model.run_with_cache(tokens, names_filter=point),
            "mechscope run_with_cache every point": lambda: model.run_with_cache(tokens),
            **nnsight_variants(nnsight, model, tokens),
        }
        console.log(f"fixed overhead {family}: {len(v)} variants x {budget.tiny_rounds} rounds")
        med = measure(v, budget.tiny_rounds, budget.warmup)
        base = med[HF][0]
        rows = [["variant", "µs / call", "+µs vs HF", "× HF"]]
        rows += [[n, f"{t * 1e6:.0f}", f"{(t - base) * 1e6:+.0f}", f"{t / base:.2f}×"] for n, (t, _) in med.items()]
        tables.append((f"Fixed per-call overhead: 1-layer d_model-16 {family}, eager, {TINY_TOKENS} tokens", rows))
    return tables


# ------------------------------------------------------------------------------------------------ output
def show(title: str, rows: Rows) -> None:
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(rows[0]):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows[1:]:
        table.add_row(*row)
    console.print(table)


def markdown(title: str, rows: Rows) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]]) + "\n"


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few rounds only (smoke check)")
    parser.add_argument("--out", type=Path, help="also write the tables as markdown to this file")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = QUICK if args.quick else Budget()
    try:  # optional: pip install nnsight (the `bench` extra); never a dependency of mechscope
        import nnsight
    except ImportError:
        nnsight = None
    env = (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
           f"threads), transformers {transformers.__version__}, "
           f"nnsight {nnsight.__version__ if nnsight else 'not installed (skipped)'}")
    start_load = load_average()
    console.log(f"{env}; load average {start_load}")
    tables = []
    with torch.inference_mode():
        tables += fixed_overhead(nnsight, budget)
        for title, build in (("GPT-2-small size (random weights)", gpt2_models),
                             ("TinyStories-656K (Llama, real weights)", tinystories_models)):
            models = build()
            if models is None:
                console.log(f"[yellow]skipping {title}: no model folder under {SHARED}")
                continue
            tables += matrix(title, models, nnsight, budget)
            del models
    loads = f"load average at start {start_load}, at end {load_average()}"
    for title, rows in tables:
        show(title, rows)
    console.log(loads)
    if args.out:
        note = f"{budget.rounds} rounds after {budget.warmup} warm-up" + (" (--quick: do not trust)" if args.quick else "")
        body = "\n".join(markdown(t, r) for t, r in tables)
        args.out.write_text(f"_{env}; {loads}; {note}_\n\n{body}")
        console.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
