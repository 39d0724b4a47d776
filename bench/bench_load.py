"""Load time of the named real models: mechscope's cached load vs transformers reading the GGUF file itself.

Each variant runs in a fresh Python process (so nothing is warm in memory but the OS page cache), ``ROUNDS``
times, interleaved; the first mechscope load (dequantise + save) is paid before timing. Prints the median wall
time of each variant and the ratio to the baseline. Run: ``.venv/bin/python bench/bench_load.py [smollm2-135m]``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

ROUNDS = 3
MODELS = sys.argv[1:] or ["smollm2-135m"]

MECHSCOPE = """
import time, mechscope
t = time.perf_counter(); mechscope.load({name!r}); print(time.perf_counter() - t)
"""
BASELINE = """
import time, torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging
logging.set_verbosity_error(); logging.disable_progress_bar()
from mechscope.zoo import named
path = Path(named({name!r}).gguf_path(progress=False))
t = time.perf_counter()
AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
print(time.perf_counter() - t)
"""


def timed(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    for name in MODELS:
        timed(MECHSCOPE.format(name=name))  # first load: dequantise and cache (not timed)
        runs: dict[str, list[float]] = {"transformers from GGUF (baseline)": [], "mechscope.load (cached)": []}
        for _ in range(ROUNDS):
            runs["transformers from GGUF (baseline)"].append(timed(BASELINE.format(name=name)))
            runs["mechscope.load (cached)"].append(timed(MECHSCOPE.format(name=name)))
        base = statistics.median(runs["transformers from GGUF (baseline)"])
        print(f"\n{name}: median of {ROUNDS} fresh processes (import time excluded)")
        print("| variant | s | × baseline |\n|---|---|---|")
        for variant, ts in runs.items():
            m = statistics.median(ts)
            print(f"| {variant} | {m:.2f} | {m / base:.3f}× |")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(bench took {time.perf_counter() - t0:.0f} s)")
