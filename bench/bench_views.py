"""Build and render times of the patching views in headless Chromium (for docs/views.md's table).

    PYTHONPATH=src python bench/bench_views.py

Each view is saved to a file and opened; the time is from navigation start until every figure reports it has
rendered (``data-msv-rendered``), best of 3. Sizes are what SmolLM2-135M's sweeps produce (30 layers, 9 heads).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mechscope import views

LAYERS, HEADS, POS = 30, 9, 15
REPEATS = 3


def cases() -> dict[str, object]:
    """name → a function that builds the view."""
    g = torch.Generator().manual_seed(0)
    toks = [f" t{i}" for i in range(POS)]
    rng = np.random.default_rng(0)
    nodes = [{"name": "input", "kind": "input"}, {"name": "logits", "kind": "logits"}]
    nodes += [{"name": f"a{l}.h{h}", "layer": l, "kind": "head"} for l in range(LAYERS) for h in range(HEADS)]
    nodes += [{"name": f"m{l}", "layer": l, "kind": "mlp"} for l in range(LAYERS)]
    rank = {n["name"]: -1 if n["kind"] == "input" else 99 if n["kind"] == "logits" else n["layer"] for n in nodes}
    edges, seen = [], set()
    while len(edges) < 100:
        s, t = (nodes[i]["name"] for i in rng.choice(len(nodes), 2, replace=False))
        port = str(rng.choice(["q", "k", "v"])) if t.startswith("a") else None
        if rank[s] < rank[t] and (s, t, port) not in seen:
            seen.add((s, t, port))
            edges.append({"source": s, "target": t, "score": float(rng.normal()), "port": port})
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    return {
        f"layer × head heatmap {LAYERS}×{HEADS}": lambda: views.heatmap(rand(LAYERS, HEADS), None, None),
        f"block_every panels 3×{LAYERS}×{POS}": lambda: views.heatmaps(rand(3, LAYERS, POS), None, toks, tokens=True),
        f"(layer, head) × pos {LAYERS * HEADS}×{POS}": lambda: views.heatmap(rand(LAYERS * HEADS, POS), None, toks,
                                                                            tokens=True),
        f"head_by_pos_every panels 5×{LAYERS * HEADS}×{POS}": lambda: views.heatmaps(
            rand(5, LAYERS * HEADS, POS), None, toks, tokens=True, shared_scale=True),
        "circuit graph 302 nodes, 100 edges": lambda: views.circuit_graph(nodes, edges),
        "line chart 3 series × 50 points": lambda: views.line_chart(np.arange(1, 51), torch.rand(3, 50, generator=g)),
    }


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    tmp = Path(tempfile.mkdtemp())
    print(f"{'view':<44} {'HTML':>9} {'build':>8} {'render':>8}")
    try:
        for name, build_view in cases().items():
            t0 = time.perf_counter()
            view = build_view()
            html = view.html
            build = time.perf_counter() - t0
            path = view.save(tmp / "v.html")
            best = float("inf")
            for _ in range(REPEATS):
                driver.get(path.as_uri())
                while not driver.execute_script(
                        "return document.querySelectorAll('.msv-root:not([data-msv-rendered])').length === 0"):
                    time.sleep(0.005)
                ms = driver.execute_script("return performance.now()")
                best = min(best, ms / 1000)
            print(f"{name:<44} {len(html.encode()) / 1024:>7.0f}KB {build:>7.3f}s {best:>7.3f}s")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
