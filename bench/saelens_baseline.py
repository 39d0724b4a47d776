"""SAELens 6.54's own training throughput and quality on issue 8's benchmark configuration — the baseline that
mechscope's trainer is measured against (``bench/bench_sae_train.py`` runs this as a subprocess).

Run it with the Python of a separate venv that has SAELens (never a mechscope dependency)::

    python3 -m venv /tmp/saelens-venv
    /tmp/saelens-venv/bin/pip install -c constraints.txt torch==2.13.0
    /tmp/saelens-venv/bin/pip install -c constraints.txt sae-lens==6.54.12
    nice -n 10 /tmp/saelens-venv/bin/python bench/saelens_baseline.py --tokens 2000000 --json

Configuration (issue 8): TinyStories-656K (``../shared/models/TinyStories-656K``) loaded the way SAELens takes a
HuggingFace model without the hub (``AutoModelForCausalLM`` wrapped in SAELens's ``HookedProxyLM``); the residual
stream after block 1 (the output of ``model.layers.1`` = TransformerLens's ``blocks.1.hook_resid_post``); TopK,
k = 32, d_sae = 2048; context 128; batches of 4096 tokens; fp32 on CPU with 2 threads; SAELens's defaults
otherwise (Adam, lr 3e-4, constant schedule, AuxK 1/32, decoder-norm rescaling). Text: the stories of
``../shared/data/tinystories-656k-samples/samples.jsonl``, each tokenised with BOS in front, concatenated and cut
into 128-token rows; the last 320 rows (320 x 128 tokens) are held out, training reads the first ``--tokens``
tokens of the rest.

Printed (one JSON line with ``--json``): ``tokens_per_s`` = training tokens / wall time of ``runner.run()``
(activation harvest + training, SAELens's own loop); on the held-out rows: ``explained_variance`` =
``1 - sum|x - x_hat|^2 / sum|x - mean(x)|^2`` over all tokens, ``l0``, and ``ce_loss_score`` =
``(CE_zero - CE_sae) / (CE_zero - CE_clean)`` with the SAE's reconstruction (zero-ablation as the reference),
next-token cross-entropy over every position.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MECHSCOPE_SHARED", ROOT.parent / "shared"))
MODEL = SHARED / "models" / "TinyStories-656K"
DATA = SHARED / "data" / "tinystories-656k-samples" / "samples.jsonl"
HF_HOOK = "model.layers.1"
CONTEXT, HELD_OUT_ROWS = 128, 320
D_SAE, K, BATCH_TOKENS = 2048, 32, 4096


def token_rows(tokenizer, path: Path, context: int):
    """``(n_rows, context)`` int64 tensor: every story BOS-prefixed, concatenated, cut into rows."""
    import torch

    ids: list[int] = []
    bos = tokenizer.bos_token_id
    with open(path) as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.append(bos)
        ids.extend(enc)
    n = len(ids) // context
    return torch.tensor(ids[: n * context]).view(n, context)


@__import__("torch").no_grad()
def evaluate(hf_model, sae, rows, batch: int = 32) -> dict:
    """Explained variance, L0 and CE-loss score of ``sae`` on ``rows`` (see the module docstring)."""
    import torch

    layer = hf_model.get_submodule(HF_HOOK)
    mode = {"v": "clean"}
    grabbed = []

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        if mode["v"] == "clean":
            return None
        if mode["v"] == "zero":
            new = torch.zeros_like(h)
        else:
            f = sae.encode(h)
            new = sae.decode(f)
            grabbed.append((h.reshape(-1, h.shape[-1]), new.reshape(-1, h.shape[-1]), (f != 0).sum(-1).float()))
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = layer.register_forward_hook(hook)
    ce = {}
    try:
        for m in ("clean", "zero", "sae"):
            mode["v"] = m
            tot, n = 0.0, 0
            for i in range(0, len(rows), batch):
                x = rows[i: i + batch]
                logits = hf_model(x).logits
                loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                         x[:, 1:].reshape(-1), reduction="sum")
                tot, n = tot + loss.item(), n + x[:, 1:].numel()
            ce[m] = tot / n
    finally:
        handle.remove()
    x = torch.cat([g[0] for g in grabbed]).double()
    xh = torch.cat([g[1] for g in grabbed]).double()
    l0 = torch.cat([g[2].reshape(-1) for g in grabbed]).mean().item()
    ev = 1 - (x - xh).pow(2).sum().item() / (x - x.mean(0)).pow(2).sum().item()
    score = (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"])
    return dict(explained_variance=ev, l0=l0, ce_clean=ce["clean"], ce_zero=ce["zero"], ce_sae=ce["sae"],
                ce_loss_score=score)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=2_000_000, help="training tokens (default 2M)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print only one JSON line")
    ap.add_argument("--normalize", choices=["none", "expected_average_only_in"], default="none",
                    help="SAELens's normalize_activations (default: none, SAELens's default); the scale is estimated "
                         "from 25 batches and folded into the weights at the end")
    ap.add_argument("--save", default=None, help="also save the trained SAE (SAELens inference folder) here")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    torch.set_num_threads(args.threads)
    if args.json:
        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, TopKTrainingSAEConfig
    from sae_lens import __version__ as sae_lens_version
    from sae_lens.config import LoggingConfig
    from sae_lens.load_model import HookedProxyLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for p in (MODEL, DATA):
        if not p.exists():
            print(f"error: {p} is missing; this benchmark needs ../shared (set MECHSCOPE_SHARED).", file=sys.stderr)
            return 2
    tok = AutoTokenizer.from_pretrained(MODEL)
    hf_model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    rows = token_rows(tok, DATA, CONTEXT)
    train_rows, held = rows[:-HELD_OUT_ROWS], rows[-HELD_OUT_ROWS:]
    n_train = min(-(-args.tokens // CONTEXT), len(train_rows))
    if n_train * CONTEXT < args.tokens:
        print(f"error: only {len(train_rows) * CONTEXT} training tokens; ask for fewer.", file=sys.stderr)
        return 2
    # all training rows: SAELens fills its mixing buffer beyond the tokens it trains on
    dataset = Dataset.from_dict({"input_ids": train_rows.tolist()})

    out_dir = tempfile.mkdtemp(prefix="saelens-baseline-")
    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=hf_model.config.hidden_size, d_sae=D_SAE, k=K, dtype="float32", device="cpu",
                                  normalize_activations=args.normalize),
        model_name=str(MODEL), model_class_name="AutoModelForCausalLM", hook_name=HF_HOOK,
        dataset_path=str(DATA), is_dataset_tokenized=True, streaming=False, context_size=CONTEXT,
        prepend_bos=False, sequence_separator_token=None,
        training_tokens=args.tokens, train_batch_size_tokens=BATCH_TOKENS, store_batch_size_prompts=32,
        n_batches_in_buffer=256,  # SAELens sizes its mixing buffer as this x context tokens (32768)
        device="cpu", dtype="float32", seed=42,
        logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0, checkpoint_path=out_dir + "/ckpt",
        output_path=out_dir + "/out", verbose=not args.json, n_batches_for_norm_estimate=25,
    )
    proxy = HookedProxyLM(hf_model, tok, hook_names=[HF_HOOK])
    runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=proxy)
    t0 = time.perf_counter()
    sae = runner.run()
    wall = time.perf_counter() - t0
    sae.eval()
    if args.save:
        sae.save_inference_model(args.save)
    result = dict(tool="saelens", sae_lens_version=sae_lens_version, torch=torch.__version__,
                  threads=args.threads, tokens=args.tokens, normalize_activations=args.normalize, wall_s=wall, tokens_per_s=args.tokens / wall,
                  held_out_tokens=HELD_OUT_ROWS * CONTEXT, hook=f"{HF_HOOK} (blocks.1.hook_resid_post)",
                  d_sae=D_SAE, k=K, batch_tokens=BATCH_TOKENS, context=CONTEXT,
                  **evaluate(hf_model, sae, held))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
