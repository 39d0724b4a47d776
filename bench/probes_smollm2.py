"""Linear probes on SmolLM2-135M: where does the model know which name is the indirect object?

IOI prompts (``../shared/data/ioi/ioi.json``, Wang et al. 2022 templates): "After Angie and Leigh went to the
shop, Leigh gave a orange to" → " Angie". Label: is the answer the *first* name of the "A and B" pair (ABBA) or
the second (BABA)? Both orders use the same names and templates, so no single token gives it away: at the last
token (" to") the model must have worked out which name was repeated. Probes ``resid_post`` of every layer at
that token, logistic regression and difference of means, 80/20 stratified split (seed 0).

Run: ``.venv/bin/python bench/probes_smollm2.py`` (about 1 minute on 2 CPU cores). Prints a markdown table.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import mechscope
from mechscope.probes import collect_activations, fit_diff_means, fit_logistic

MODEL = "smollm2-135m"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ioi" / "ioi.json"
HOOK, L2, TEST_FRAC, SEED = "resid_post", 1e-2, 0.2, 0


def main() -> None:
    records = json.loads(DATA.read_text())
    prompts = [r["prompt"] for r in records]
    labels = ["first" if r["answer"] == re.search(r"(\w+) and (\w+)", r["prompt"]).group(1) else "second"
              for r in records]
    model = mechscope.load(MODEL)
    start = time.perf_counter()
    acts = collect_activations(model, prompts, hook=HOOK, position=-1, batch_size=32)  # (layer, n, d_model)
    collected = time.perf_counter() - start
    start = time.perf_counter()
    logistic = fit_logistic(acts, labels, l2=L2, test_frac=TEST_FRAC, seed=SEED)
    fitted = time.perf_counter() - start
    means = fit_diff_means(acts, labels, test_frac=TEST_FRAC, seed=SEED)
    print(f"## Probing {MODEL}: is the IOI answer the first or the second name?\n")
    print(f"{len(prompts)} prompts ({labels.count('first')} first, {labels.count('second')} second), {HOOK} at the "
          f"last token, {len(logistic.train_idx)} train / {len(logistic.test_idx)} test. Activations "
          f"{tuple(acts.shape)} collected in {collected:.1f} s; logistic regression on all layers at once "
          f"(l2 {L2}) in {fitted:.1f} s.\n")
    print("| layer | logistic train | logistic test | diff-of-means train | diff-of-means test |")
    print("|---|---|---|---|---|")
    for layer in range(acts.shape[0]):
        print(f"| {layer} | {logistic.train_acc[layer]:.3f} | {logistic.test_acc[layer]:.3f} | "
              f"{means.train_acc[layer]:.3f} | {means.test_acc[layer]:.3f} |")


if __name__ == "__main__":
    main()
