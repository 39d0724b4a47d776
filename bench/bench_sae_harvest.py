"""Harvest-only throughput of mechscope.sae.ModelSource: TinyStories-656K, blocks.1.hook_resid_post, context 128,
fp32 on CPU (the issue's SAE benchmark configuration, without the training step).

Baselines in the same run: the plain HF forward of the whole model on the same rows (no hooks), and mechscope's
harvester without the early stop. Prints tokens/s for eager and sdpa attention and a few model batch sizes.
Then harvest + a stand-in training step (the contract's reference TopK SAE, k 32, d_sae 2048, Adam; the real
trainer is bench/bench_sae_train.py) with and without ``prefetch=True``, which harvests the next buffer on a
second thread while this one trains.
Run: OMP_NUM_THREADS=<cores> PYTHONPATH=src python bench/bench_sae_harvest.py"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

import mechscope
from mechscope.sae import ModelSource
from mechscope.sae.data import token_rows

MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "TinyStories-656K"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinystories-656k-samples" / "samples.jsonl"
HOOK = "blocks.1.hook_resid_post"
CONTEXT, BATCH, N_TOKENS = 128, 4096, 2 ** 18  # 256k tokens timed per configuration
MODEL_BATCHES = (16, 32, 64)


def timed(fn, n_tokens: int) -> str:
    """Tokens per wall second and per CPU second of this process (the second is steadier on a shared machine)."""
    fn()  # warm-up
    t, c = time.perf_counter(), time.process_time()
    fn()
    return f"{n_tokens / (time.perf_counter() - t):,.0f} tokens/s ({n_tokens / (time.process_time() - c):,.0f} per CPU-s)"


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    t = time.perf_counter()
    model = mechscope.load(MODEL, attn_implementation="eager")
    rows = token_rows(model, DATA, context_size=CONTEXT, n_tokens=N_TOKENS, holdout_tokens=320 * CONTEXT)
    print(f"tokenised {rows.numel()} tokens (and the held-out tail) in {time.perf_counter() - t:.1f} s")
    n = rows.numel()
    for attn in ("eager", "sdpa"):
        model = mechscope.load(MODEL, attn_implementation=attn)

        @torch.no_grad()
        def plain(mb=32):
            for i in range(0, rows.shape[0], mb):
                model.hf_model(input_ids=rows[i:i + mb])

        print(f"[{attn}] plain HF forward, whole model, batch 32: {timed(plain, n)}")
        for mb in MODEL_BATCHES:
            src = ModelSource(model, rows, [HOOK], BATCH, context_size=CONTEXT, model_batch_size=mb,
                              buffer_tokens=64 * BATCH)

            def epoch(src=src):
                it = iter(src)
                for _ in range(n // BATCH):
                    next(it)

            print(f"[{attn}] ModelSource (stop after block 1, shuffle buffer), model batch {mb}: "
                  f"{timed(epoch, n // BATCH * BATCH)}")
        src.harvest.stop_at_layer = None
        print(f"[{attn}] ModelSource without the early stop, model batch {mb}: "
              f"{timed(epoch, n // BATCH * BATCH)}")


def with_training() -> None:
    from mechscope.sae import SAE, SAEConfig

    model = mechscope.load(MODEL, attn_implementation="sdpa")
    rows = token_rows(model, DATA, context_size=CONTEXT, n_tokens=N_TOKENS, holdout_tokens=320 * CONTEXT)
    for prefetch in (False, True):
        torch.manual_seed(0)
        sae = SAE(SAEConfig(d_in=model.cfg.d_model, d_sae=2048, architecture="topk", k=32, hook_name=HOOK))
        opt = torch.optim.Adam(sae.parameters(), lr=4e-4)
        src = ModelSource(model, rows, [HOOK], BATCH, context_size=CONTEXT, buffer_tokens=16 * BATCH,
                          prefetch=prefetch)

        def run(src=src, sae=sae, opt=opt):
            it = iter(src)
            for _ in range(n // BATCH):
                out = sae.training_forward(next(it)[HOOK])
                opt.zero_grad()
                out.loss.backward()
                opt.step()

        n = rows.numel()
        print(f"[sdpa] harvest + reference TopK step, prefetch={prefetch}: {timed(run, n // BATCH * BATCH)}")


if __name__ == "__main__":
    main()
    with_training()
