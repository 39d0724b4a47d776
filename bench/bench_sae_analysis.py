"""Latent statistics and dashboards on TinyStories-656K: speed of `latent_stats` over 1M tokens, the dashboards'
size for all 2048 latents, and a screenshot for the README.

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src python bench/bench_sae_analysis.py [--tokens 1000000]

A TopK SAE (d_sae 2048, k 32, blocks.1.hook_resid_post) is first trained briefly with a plain Adam loop on the
contract's reference TopK path (or loaded from SAE_DIR when it exists), so the dashboards show real features.
Baseline in the same run: the bare harvest (forward stopped after block 1 + ``sae.encode``) over the same tokens,
so the ratio is the cost of the statistics themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import mechscope  # noqa: E402
from mechscope.sae import SAE, SAEConfig, dashboard, latent_stats  # noqa: E402
from mechscope.lens.data import split  # noqa: E402

SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "TinyStories-656K"
DATA = SHARED / "data" / "tinystories-656k-samples" / "samples.jsonl"
HOOK, D_SAE, K, SEQ = "blocks.1.hook_resid_post", 2048, 32, 128
SAE_DIR = Path("/tmp/ms-sae-analysis/sae")
TRAIN_TOKENS, TRAIN_BATCH, LR = 1_000_000, 4096, 1e-3


def harvest(model, rows: torch.Tensor, batch: int = 64) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, len(rows), batch):
            _, c = model.run_with_cache(rows[i:i + batch], names_filter=HOOK, stop_at_layer=2, prepend_bos=False)
            out.append(c[HOOK][:, 1:].reshape(-1, model.cfg.d_model))  # no BOS position
    return torch.cat(out)


def train_sae(model, rows: torch.Tensor) -> SAE:
    torch.manual_seed(0)
    x = harvest(model, rows)
    x = x[torch.randperm(len(x))]
    sae = SAE(SAEConfig(d_in=model.cfg.d_model, d_sae=D_SAE, architecture="topk", k=K, hook_name=HOOK,
                        model_name="TinyStories-656K", context_size=SEQ), seed=0)
    sae.init_from_data_(x[:20000])
    opt = torch.optim.Adam(sae.parameters(), lr=LR)
    last_fired = torch.zeros(D_SAE, dtype=torch.long)
    steps = len(x) // TRAIN_BATCH
    t0 = time.perf_counter()
    for step in range(steps):
        xb = x[step * TRAIN_BATCH:(step + 1) * TRAIN_BATCH]
        dead = (step * TRAIN_BATCH - last_fired) > 200_000
        out = sae.training_forward(xb, dead=dead)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.prepare_grads_()
        opt.step()
        sae.constrain_()
        last_fired[out.fired] = step * TRAIN_BATCH
        for g in opt.param_groups:  # linear decay over the last 20%
            g["lr"] = LR * min(1.0, (steps - step) / (0.2 * steps))
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step}/{steps}: fvu {out.fvu:.3f} l0 {out.l0:.1f} dead {float(dead.float().mean()):.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    SAE_DIR.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    (SAE_DIR / "cfg.json").write_text(json.dumps(sae.cfg.to_dict()))
    save_file({n: p.detach().contiguous() for n, p in sae.state_dict().items()}, SAE_DIR / "sae_weights.safetensors")
    return sae


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--out", default="/tmp/ms-sae-analysis")
    ap.add_argument("--png", default=str(ROOT / "docs" / "images" / "sae-dashboard.png"))
    ap.add_argument("--latent", type=int, default=None, help="the latent to screenshot (default: picked)")
    a = ap.parse_args()
    out = Path(a.out)
    model = mechscope.load(MODEL)
    n_rows = -(-a.tokens // SEQ)
    sp = split(model, DATA, SEQ, n_rows + TRAIN_TOKENS // SEQ, 0).train
    stat_rows, train_rows = sp[:n_rows], sp[n_rows:]
    if (SAE_DIR / "cfg.json").is_file():
        from mechscope.cli.sae_dashboard import load_sae

        sae = load_sae(str(SAE_DIR))
    else:
        sae = train_sae(model, train_rows)
    sae.eval()
    print(f"corpus: {stat_rows.numel()} tokens in {len(stat_rows)} rows of {SEQ}; threads {torch.get_num_threads()}")

    # baseline: harvest + encode only
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(stat_rows), 32):
            _, c = model.run_with_cache(stat_rows[i:i + 32], names_filter=HOOK, stop_at_layer=2, prepend_bos=False)
            sae.encode(c[HOOK])
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    st = latent_stats(sae, model, stat_rows, k=20, context=(10, 4), n_quantiles=5, samples_per_quantile=5,
                      batch_size=32)
    t_stats = time.perf_counter() - t0
    st.save(out / "stats")
    t0 = time.perf_counter()
    index = dashboard(st, out / "dash", title="TinyStories-656K · blocks.1.hook_resid_post · TopK 2048, k=32")
    t_dash = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in (out / "dash").rglob("*.html"))
    alive = float((st.density > 0).float().mean())
    res = {"tokens": stat_rows.numel(), "harvest_encode_s": t_base, "latent_stats_s": t_stats,
           "tokens_per_s": stat_rows.numel() / t_stats, "harvest_tokens_per_s": stat_rows.numel() / t_base,
           "overhead_ratio": t_stats / t_base, "dashboard_s": t_dash, "dashboard_bytes": size,
           "bytes_per_latent": size / D_SAE, "alive_fraction": alive,
           "stats_bytes": sum(p.stat().st_size for p in (out / "stats").iterdir())}
    print(json.dumps(res, indent=1))
    if a.png:
        from screenshot import screenshot

        lat = a.latent
        if lat is None:  # a mid-density latent whose top examples share one token: usually nameable
            centre = st.top_tokens[:, :, st.context[0]]
            share = (centre == centre.mode(dim=1).values[:, None]).float().mean(1)
            score = share * ((st.density > 5e-3) & (st.density < 2e-2)) + st.max_act / st.max_act.max() * 1e-3
            lat = int(st.latents[score.argmax()])  # the README's picture is latent 1962 ("dre" of "dress")
        screenshot(out / "dash" / "latents" / f"{lat}.html", a.png, width=1100, height=900)
        print(f"screenshot of latent {lat}: {a.png}; index: {index}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
