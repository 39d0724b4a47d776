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
(zero-ablation the reference); and a breakdown of one step's time (harvest, encoder, topk, decoder, loss +
backward, Adam, decoder constraint), measured op by op on real batches.

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


@torch.inference_mode()
def evaluate(model, sae, rows: torch.Tensor, chunk: int = 32) -> dict:
    """Explained variance, L0 and the CE-loss score on ``rows``, every position."""
    sse = ssq = 0.0
    total = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    n = 0
    l0 = 0.0
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    for i in range(0, len(rows), chunk):
        r = rows[i:i + chunk]
        _, cache = model.run_with_cache(r, names_filter=HOOK, stop_at_layer=2, check_memory=False)
        x = cache[HOOK].reshape(-1, sae.cfg.d_in)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        sse += float((x - x_hat).double().pow(2).sum())
        ssq += float(x.double().pow(2).sum())
        total += x.double().sum(0)
        n += len(x)
        l0 += float((f != 0).sum())
        ce["clean"] += float(model(r, return_type="loss")) * len(r)
        ce["sae"] += float(model.run_with_hooks(r, fwd_hooks=[(HOOK, lambda a, hook: sae(a))],
                                                return_type="loss")) * len(r)
        ce["zero"] += float(model.run_with_hooks(r, fwd_hooks=[(HOOK, lambda a, hook: torch.zeros_like(a))],
                                                 return_type="loss")) * len(r)
    sst = ssq - float((total / n).pow(2).sum()) * n
    ce = {k: v / len(rows) for k, v in ce.items()}
    return {"explained_variance": 1 - sse / sst, "l0": l0 / n, "ce_clean": ce["clean"], "ce_sae": ce["sae"],
            "ce_zero_ablation": ce["zero"],
            "ce_loss_score": (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"])}


def breakdown(model, src, sae, n: int = 5) -> dict:
    """Milliseconds per 4096-token step of each phase, timed op by op (the reference TopK path)."""
    from mechscope.sae import LossConfig
    from mechscope.sae.training import make_optimizer

    it = iter(src)
    t = time.perf_counter()  # one whole chunk: its forward pass is shared by its batches
    batches = [next(it)[HOOK] for _ in range(src.batches_per_chunk)]
    harvest = (time.perf_counter() - t) / src.batches_per_chunk
    sae = type(sae)(sae.cfg)
    opt = make_optimizer(sae, 1e-4, (0.9, 0.999))
    x = batches[0]

    def timed(fn):
        fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n

    pre = x @ sae.W_enc + sae.b_enc
    f = sae.activation(pre)

    def fwd_bwd():
        sae.training_forward(x, loss=LossConfig(), dead=torch.zeros(sae.cfg.d_sae, dtype=torch.bool)).loss.backward()

    with torch.no_grad():
        enc = timed(lambda: x @ sae.W_enc + sae.b_enc)
        topk = timed(lambda: pre.topk(sae.cfg.k, dim=-1, sorted=False))
        dec = timed(lambda: f @ sae.W_dec + sae.b_dec)
        fwd = timed(lambda: sae.training_forward(x, loss=LossConfig()))
    both = timed(fwd_bwd)
    adam = timed(opt.step)
    constrain = timed(lambda: (sae.prepare_grads_(), sae.constrain_()))
    opt.zero_grad()
    ms = {"harvest": harvest, "encoder": enc, "topk": topk, "decoder": dec,
          "forward_rest (scatter, loss, stats)": fwd - enc - topk - dec, "backward": both - fwd, "adam": adam,
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
    from mechscope.sae.harvest import ModelSource
    from mechscope.sae.training import train

    model = mechscope.load(MODEL)
    rows = token_rows(model.tokenizer)
    held, train_rows = rows[-HELD_OUT_ROWS:], rows[:-HELD_OUT_ROWS]
    need = -(-args.tokens // CONTEXT)
    if need > len(train_rows):
        raise SystemExit(f"only {len(train_rows) * CONTEXT} training tokens; ask for fewer.")
    train_rows = train_rows[:need]
    n_tokens = args.tokens * args.epochs // BATCH_TOKENS * BATCH_TOKENS
    src = ModelSource(model, [HOOK], train_rows, batch_size=BATCH_TOKENS, context_size=CONTEXT)
    t = time.perf_counter()
    sae = train(src, hook=HOOK, architecture="topk", k=K, d_sae=D_SAE, n_tokens=n_tokens, batch_size=BATCH_TOKENS,
                lr=args.lr, out=args.out, log_every=10)
    wall = time.perf_counter() - t
    result = {"config": {"tokens": args.tokens, "epochs": args.epochs, "trained_tokens": n_tokens, "d_sae": D_SAE,
                         "k": K, "batch": BATCH_TOKENS, "threads": THREADS, "lr": sae.cfg.metadata["trainer"]["lr"]},
              "tokens_per_s": n_tokens / wall, "wall_s": wall, "final_train_stats": sae.cfg.metadata["final_stats"]}
    result.update(evaluate(model, sae, held))
    src2 = ModelSource(model, [HOOK], train_rows, batch_size=BATCH_TOKENS, context_size=CONTEXT)
    result["step_ms"] = breakdown(model, src2, sae)
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
