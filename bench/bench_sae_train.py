"""Harvest + train throughput and quality of mechscope's SAE trainer on issue 8's configuration, with SAELens's
own run of the same configuration as the baseline (a subprocess in a separate venv: never a mechscope dependency).

Configuration: TinyStories-656K, ``blocks.1.hook_resid_post``, TopK k = 32, d_sae = 2048, context 128, batches
of 4096 tokens, fp32 on CPU with 2 threads. Text: the stories of ``samples.jsonl`` each tokenised with BOS in
front, concatenated and cut into 128-token rows, exactly as ``bench/saelens_baseline.py`` builds them; the last
320 rows are held out; training reads the first ``--tokens`` tokens of the rest (``--epochs`` passes over them;
the learning rate schedule spans all passes).

Reported: ``tokens_per_s`` = training tokens / wall time of ``train()`` (harvest + train: the model's forward,
stopped after block 1, and the SAE steps; tokenisation and model loading excluded, as in the baseline); on the
held-out rows, over every position (as the baseline): explained variance ``1 - SSE / SST``, L0, and the CE-loss
score ``(CE_zero - CE_sae) / (CE_zero - CE_clean)`` with the SAE's reconstruction spliced in at the hook
(zero-ablation the reference); and a breakdown of one step's time (harvest, the fused SAE forward, backward,
Adam, decoder constraint), each on one thread, as they run under prefetch.

    nice -n 10 python bench/bench_sae_train.py --tokens 2000000 [--epochs 2] \
        [--saelens-python /tmp/saelens-venv/bin/python] [--json out.json]

Timings on a shared machine are rough; compare ratios taken in the same run.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = Path(os.environ.get("MECHSCOPE_SHARED", ROOT.parent / "shared"))
MODEL = SHARED / "models" / "TinyStories-656K"
DATA = SHARED / "data" / "tinystories-656k-samples" / "samples.jsonl"
HOOK = "blocks.1.hook_resid_post"
CONTEXT, HELD_OUT_ROWS = 128, 320
D_SAE, K, BATCH_TOKENS = 2048, 32, 4096
THREADS = 2


def token_rows(tokenizer) -> torch.Tensor:
    """``(n_rows, CONTEXT)``: every story BOS-prefixed, concatenated, cut into rows (the baseline's layout)."""
    ids: list[int] = []
    with open(DATA) as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.append(tokenizer.bos_token_id)
        ids.extend(enc)
    n = len(ids) // CONTEXT
    return torch.tensor(ids[: n * CONTEXT]).view(n, CONTEXT)


def quality(model, sae, rows: torch.Tensor) -> dict:
    """Held-out numbers over every position (BOS included, as the baseline computes them), through
    :func:`mechscope.sae.evaluate`: explained variance, L0, CE clean / spliced / zero-ablated and the CE-loss score."""
    from mechscope.sae import evaluate

    ev = evaluate(sae, model, rows, exclude_bos=False, batch_size=32)
    return {"explained_variance": ev.explained_variance, "l0": ev.l0, "ce_clean": ev.ce_clean,
            "ce_sae": ev.ce_spliced, "ce_zero_ablation": ev.ce_zero_ablated, "ce_loss_score": ev.ce_loss_recovered,
            "kl": ev.kl_spliced, "dead_fraction": ev.dead_fraction}


def breakdown(model, rows: torch.Tensor, sae, n: int = 5) -> dict:
    """Milliseconds per 4096-token step of each phase, on one thread each as they run under prefetch: the harvest
    of 4096 tokens (32 rows, forward stopped after block 1), and the SAE step: the fused forward and backward,
    Adam, the decoder constraint."""
    from mechscope.sae import Harvester, LossConfig
    from mechscope.sae.training import make_optimizer

    def timed(fn):
        fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        harvest = Harvester(model, [HOOK])
        chunk = rows[: BATCH_TOKENS // CONTEXT]
        t_harvest = timed(lambda: harvest(chunk))
        x = harvest(chunk)[HOOK]
        sae = type(sae)(sae.cfg)
        opt = make_optimizer(sae, 1e-4, (0.9, 0.999))
        dead = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
        both = timed(lambda: sae.training_forward(x, loss=LossConfig(), dead=dead).loss.backward())
        adam = timed(opt.step)
        constrain = timed(lambda: (sae.prepare_grads_(), sae.constrain_()))
    finally:
        torch.set_num_threads(threads)
    ms = {"harvest": t_harvest, "sae_forward_backward (fused)": both, "adam": adam,
          "decoder_constraint": constrain}
    return {k: round(v * 1000, 1) for k, v in ms.items()}


def saelens(python: str, script: str, tokens: int) -> dict:
    res = subprocess.run([python, script, "--tokens", str(tokens), "--json"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
    if res.returncode:
        raise SystemExit(f"the SAELens baseline failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=2_000_000, help="distinct training tokens")
    ap.add_argument("--epochs", type=int, default=1, help="passes over them")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--saelens-python", default=None, help="a Python with sae-lens installed: run the baseline too")
    ap.add_argument("--saelens-script", default=str(ROOT / "bench" / "saelens_baseline.py"),
                    help="the baseline script (bench/saelens_baseline.py)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--out", default=None, help="save the trained SAE here")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)

    import mechscope
    from mechscope.sae import train

    model = mechscope.load(MODEL)
    rows = token_rows(model.tokenizer)
    held, train_rows = rows[-HELD_OUT_ROWS:], rows[:-HELD_OUT_ROWS]
    need = -(-args.tokens // CONTEXT)
    if need > len(train_rows):
        raise SystemExit(f"only {len(train_rows) * CONTEXT} training tokens; ask for fewer.")
    train_rows = train_rows[:need]
    n_tokens = args.tokens * args.epochs // BATCH_TOKENS * BATCH_TOKENS
    t = time.perf_counter()
    # every position trains (BOS included), as in the baseline, whose held-out numbers also cover every position
    sae = train(model, data=train_rows, hook=HOOK, architecture="topk", k=K, d_sae=D_SAE, n_tokens=n_tokens,
                batch_size=BATCH_TOKENS, context_size=CONTEXT, lr=args.lr, exclude_bos=False, out=args.out,
                log_every=10)
    wall = time.perf_counter() - t
    result = {"config": {"tokens": args.tokens, "epochs": args.epochs, "trained_tokens": n_tokens, "d_sae": D_SAE,
                         "k": K, "batch": BATCH_TOKENS, "threads": THREADS, "lr": sae.cfg.metadata["trainer"]["lr"],
                         "torch": torch.__version__},
              "tokens_per_s": n_tokens / wall, "wall_s": wall, "final_train_stats": sae.cfg.metadata["final_stats"]}
    result.update(quality(model, sae, held))
    result["step_ms"] = breakdown(model, train_rows, sae)
    report(result, args.json)  # before the baseline, so a failing baseline loses nothing
    if args.saelens_python:
        base = saelens(args.saelens_python, args.saelens_script, args.tokens)
        result["saelens"] = base
        result["throughput_ratio"] = result["tokens_per_s"] / base["tokens_per_s"]
        report(result, args.json)


def report(result: dict, path: str | None) -> None:
    print(json.dumps(result, indent=1), flush=True)
    if path:
        Path(path).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
