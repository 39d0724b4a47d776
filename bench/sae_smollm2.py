"""A TopK SAE on SmolLM2-135M's middle residual stream, trained on the English text in ../shared/data.

Stages (each resumable; outputs under --work, default /tmp/sae-smollm2):
  harvest   rows of 128 tokens ([BOS] + 127 text tokens) from WikiText-2 test paragraphs and TinyStories samples,
            shuffled together (seed 0), run through SmolLM2 with the forward stopped after block LAYER; the
            hook's activations at positions 1..127 (BOS excluded: its norm is ~50x the others') are appended to a
            float16 memmap. Safe to kill: a progress file records the rows done, written after each chunk.
  train     mechscope.sae.train on the harvested activations (a memory-mapped tensor).
  eval      held-out L0 / EV / CE loss recovered with mechscope.sae.evaluate (the first 64 rows, never trained on).
  dashboard top activations (mechscope.sae.latent_stats) over the first 512 rows and the HTML dashboard.

Run: python bench/sae_smollm2.py harvest --tokens 1500000; then train, eval, dashboard. (On 2 shared CPU cores
the harvest ran at ~250-950 tokens/s; it was stopped at 8,320 rows = 1,056,640 tokens.)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
LAYER = 15
HOOK = f"blocks.{LAYER}.hook_resid_post"
CONTEXT = 128
HOLDOUT_ROWS = 128
MODEL_BATCH = 16
SEP = 0  # SmolLM2's document separator, <|endoftext|>


def documents() -> tuple[list[str], list[str]]:
    """WikiText-2 test paragraphs (headings dropped) and the TinyStories-656K samples."""
    wiki = [ln.strip() for ln in (SHARED / "data/wikitext-2-raw-test/wiki.test.raw").read_text().splitlines()]
    wiki = [ln for ln in wiki if ln and not ln.startswith("=")]
    stories = [json.loads(ln)["text"] for ln in (SHARED / "data/tinystories-656k-samples/samples.jsonl").open()]
    return wiki, stories


def build_rows(model) -> torch.Tensor:
    """(n_rows, CONTEXT) token rows: each corpus packed separately (documents joined by <|endoftext|>), rows of
    both shuffled together with seed 0."""
    tok = model.tokenizer
    sep = tok.convert_tokens_to_ids("<|endoftext|>")
    assert sep == SEP
    rows = []
    for part in documents():
        ids: list[int] = []
        enc = tok(part, add_special_tokens=False)["input_ids"]
        for e in enc:
            ids.extend(e)
            ids.append(sep)
        w = CONTEXT - 1
        n = len(ids) // w
        body = torch.tensor(ids[: n * w]).view(n, w)
        bos = torch.full((n, 1), tok.bos_token_id)
        rows.append(torch.cat([bos, body], 1))
    allrows = torch.cat(rows)
    g = torch.Generator().manual_seed(0)
    return allrows[torch.randperm(len(allrows), generator=g)]


def harvest(args) -> None:
    import mechscope
    from safetensors.torch import load_file, save_file

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = mechscope.load("smollm2-135m")
    rows_file = work / "rows.safetensors"
    if not rows_file.exists():
        save_file({"rows": build_rows(model).contiguous()}, str(rows_file))
    rows = load_file(str(rows_file))["rows"]
    train_rows = rows[HOLDOUT_ROWS:]
    n_rows = min(len(train_rows), -(-args.tokens // (CONTEXT - 1)))
    n_tok = n_rows * (CONTEXT - 1)
    print(f"{len(rows)} rows in the corpus ({len(rows) * (CONTEXT - 1):,} tokens); harvesting {n_rows} rows = "
          f"{n_tok:,} tokens of {HOOK}", flush=True)
    acts_file = work / "acts.npy"
    done_file = work / "harvest.json"
    done = json.loads(done_file.read_text())["rows"] if done_file.exists() else 0
    if acts_file.exists():
        acts = np.load(acts_file, mmap_mode="r+")
        assert acts.shape == (n_tok, model.cfg.d_model), "acts.npy was made for another --tokens; delete --work"
    else:
        acts = np.lib.format.open_memmap(acts_file, mode="w+", dtype=np.float16, shape=(n_tok, model.cfg.d_model))
    t0, start = time.perf_counter(), done
    with torch.no_grad():
        while done < n_rows:
            batch = train_rows[done: min(done + MODEL_BATCH, n_rows)]
            _, cache = model.run_with_cache(batch, names_filter=HOOK, stop_at_layer=LAYER + 1, prepend_bos=False)
            a = cache[HOOK][:, 1:].reshape(-1, model.cfg.d_model)
            acts[done * (CONTEXT - 1): done * (CONTEXT - 1) + len(a)] = a.to(torch.float16).numpy()
            done += len(batch)
            if done % (MODEL_BATCH * 8) == 0 or done == n_rows:
                acts.flush()
                tmp = done_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"rows": done}))
                os.replace(tmp, done_file)
                el = time.perf_counter() - t0
                print(f"{done}/{n_rows} rows, {(done - start) * (CONTEXT - 1) / el:,.0f} tokens/s", flush=True)


def _rows(work: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(work / "rows.safetensors"))["rows"]


def train_stage(args) -> None:
    from mechscope.sae import train

    work = Path(args.work)
    done = json.loads((work / "harvest.json").read_text())["rows"]
    acts = np.load(work / "acts.npy", mmap_mode="r")[: done * (CONTEXT - 1)]
    x = torch.from_numpy(np.ascontiguousarray(acts))  # float16 (n, 576); batches are cast to float32
    # SmolLM2's massive activations: the <|endoftext|> separator (99.9% of its positions) and ~0.2% of other
    # tokens (a third of them the first token after BOS) have residual norms of 10^4 (one dimension, 507) against
    # a median of ~170; in a squared-error loss they would outweigh every other token. Left out, as SAELens
    # leaves out special tokens.
    toks = _rows(work)[HOLDOUT_ROWS:HOLDOUT_ROWS + done, 1:].reshape(-1)
    norms = x.float().norm(dim=1)
    keep = (toks != SEP) & (norms < 10 * norms.median())
    x = x[keep]
    print(f"training on {x.shape[0]:,} harvested tokens ({(~keep).sum():,} massive-activation tokens left out) "
          f"x {args.epochs} epochs", flush=True)
    t = time.perf_counter()
    sae = train(x, hook=HOOK, architecture="topk", k=args.k, expansion=args.expansion,
                n_tokens=x.shape[0] * args.epochs // 4096 * 4096, batch_size=4096, lr=args.lr, seed=0,
                out=str(work / "sae"), resume=(work / "sae" / "checkpoint.safetensors").exists(), log_every=10)
    sae.cfg.model_name = "smollm2-135m"
    sae.save(work / "sae")
    print(json.dumps({"train_s": time.perf_counter() - t, **sae.cfg.metadata["final_stats"]}), flush=True)


def eval_stage(args) -> None:
    import mechscope
    from mechscope.sae import evaluate, evaluate_activations, load

    work = Path(args.work)
    model = mechscope.load("smollm2-135m")
    sae = load(work / "sae")
    held = _rows(work)[: args.eval_rows]
    ev = evaluate(sae, model, held, batch_size=16)
    print(ev, flush=True)
    # the same held-out tokens without the massive-activation ones (as training left them out): their variance
    # would otherwise dominate the explained-variance sums
    with torch.no_grad():
        _, cache = model.run_with_cache(held, names_filter=HOOK, stop_at_layer=LAYER + 1, prepend_bos=False)
    x = cache[HOOK][:, 1:].reshape(-1, model.cfg.d_model)
    norms = x.norm(dim=1)
    keep = (held[:, 1:].reshape(-1) != SEP) & (norms < 10 * norms.median())
    typical = evaluate_activations(sae, x[keep])
    typical = {k: v for k, v in typical.items() if isinstance(v, (int, float))} | {"n_tokens": int(keep.sum())}
    print("without massive-activation tokens:", json.dumps(typical), flush=True)
    (work / "eval.json").write_text(json.dumps({**ev.to_dict(), "typical_tokens": typical}, indent=1, default=str))


def dashboard_stage(args) -> None:
    import mechscope
    from mechscope.sae import dashboard, latent_stats, load

    work = Path(args.work)
    model = mechscope.load("smollm2-135m")
    sae = load(work / "sae")
    rows = _rows(work)[: args.dashboard_rows]  # held-out rows first, then training rows
    t = time.perf_counter()
    stats = latent_stats(sae, model, rows, k=20, context=(12, 4), show_progress=True)
    print(f"latent_stats over {stats.n_tokens:,} tokens in {time.perf_counter() - t:.0f} s", flush=True)
    stats.save(work / "stats")
    dashboard(stats, work / "dashboard", title="SmolLM2-135M blocks.15.hook_resid_post, TopK k=32")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["harvest", "train", "eval", "dashboard"])
    p.add_argument("--tokens", type=int, default=1_500_000, help="harvest: training tokens to harvest")
    p.add_argument("--work", default="/tmp/sae-smollm2")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--expansion", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-rows", type=int, default=64, help="held-out rows (128 tokens) to evaluate on")
    p.add_argument("--dashboard-rows", type=int, default=512, help="rows to find top activations in")
    args = p.parse_args()
    {"harvest": harvest, "train": train_stage, "eval": eval_stage, "dashboard": dashboard_stage}[args.stage](args)


if __name__ == "__main__":
    main()
