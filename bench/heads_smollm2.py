"""The induction heads of SmolLM2-135M, found by attention and checked by ablation.

1. Scores all 30 × 9 heads with ``mechscope.detectors.find_heads`` on ``N_SEQS`` sequences of BOS + a random
   ``SEG_LEN``-token segment shown twice (Olsson et al. 2022): induction, previous-token and duplicate-token mass,
   attention to BOS and attention entropy.
2. Causal check: zero-ablates the ``TOP_K`` strongest induction heads (``blocks.{l}.attn.hook_z`` set to 0 for
   those heads, via ``run_with_hooks``) and, for comparison, ``N_RANDOM`` draws of ``TOP_K`` random heads from the
   rest; reports the mean loss on the second copy (tokens ``SEG_LEN + 2 .. 2 * SEG_LEN``, each predictable only by
   copying) for each.

Run: ``.venv/bin/python bench/heads_smollm2.py [--json PATH]`` (about 1 minute on 2 CPU cores). Prints markdown.
"""

from __future__ import annotations

import json
import sys
import time

import torch

import mechscope
from mechscope.detectors import find_heads, repeated_tokens

MODEL = "smollm2-135m"
N_SEQS, SEG_LEN, SEED = 16, 50, 0
TOP_K, N_RANDOM, SHOW = 10, 5, 15


def second_copy_loss(model, tokens: torch.Tensor, heads: list[tuple[int, int]]) -> float:
    """Mean next-token loss on the second copy with ``heads`` zero-ablated (their ``hook_z`` set to 0)."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def ablate(hs):
        def hook(z, hook):  # z: (batch, pos, head, d_head)
            z = z.clone()
            z[:, :, hs] = 0
            return z

        return hook

    hooks = [(f"blocks.{layer}.attn.hook_z", ablate(hs)) for layer, hs in by_layer.items()]
    with torch.inference_mode():
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks).float()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]  # logp[:, p - 1]: token p
    return -logp[:, SEG_LEN + 1:].mean().item()  # tokens SEG_LEN + 2 .. 2 * SEG_LEN


def main() -> None:
    model = mechscope.load(MODEL)
    cfg = model.cfg
    tokens = repeated_tokens(model, N_SEQS, SEG_LEN, seed=SEED)
    start = time.perf_counter()
    found = find_heads(model, tokens)
    seconds = time.perf_counter() - start
    top = found.top("induction", SHOW)
    print(f"## Induction heads of {MODEL} ({cfg.n_layers} layers × {cfg.n_heads} heads)\n")
    print(f"{N_SEQS} sequences of BOS + {SEG_LEN} random tokens × 2, seed {SEED}; scored in {seconds:.1f} s.\n")
    print("| rank | head | induction | previous-token | duplicate-token | BOS attention | entropy (nats) |")
    print("|---|---|---|---|---|---|---|")
    for rank, (layer, head, s) in enumerate(top, 1):
        print(f"| {rank} | L{layer}H{head} | {s:.3f} | {found.scores['previous_token'][layer, head]:.3f} | "
              f"{found.scores['duplicate_token'][layer, head]:.3f} | {found.bos_attention[layer, head]:.3f} | "
              f"{found.entropy[layer, head]:.2f} |")
    prev = ", ".join(f"L{l}H{h} ({s:.2f})" for l, h, s in found.top("previous_token", 5))
    print(f"\nStrongest previous-token heads: {prev}.")

    ablated = [(l, h) for l, h, _ in top[:TOP_K]]
    rest = [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads) if (l, h) not in ablated]
    gen = torch.Generator().manual_seed(SEED)
    clean = second_copy_loss(model, tokens, [])
    top_loss = second_copy_loss(model, tokens, ablated)
    draws = [[rest[int(i)] for i in torch.randperm(len(rest), generator=gen)[:TOP_K]] for _ in range(N_RANDOM)]
    random_losses = [second_copy_loss(model, tokens, heads) for heads in draws]
    mean_random = sum(random_losses) / len(random_losses)
    print(f"\n### Ablation: loss on the second copy (nats), {TOP_K} heads' hook_z zeroed\n")
    print("| ablated | loss | rise over clean |")
    print("|---|---|---|")
    print(f"| nothing | {clean:.3f} | |")
    print(f"| top {TOP_K} induction heads | {top_loss:.3f} | +{top_loss - clean:.3f} |")
    print(f"| {TOP_K} random other heads, mean of {N_RANDOM} draws | {mean_random:.3f} | +{mean_random - clean:.3f} "
          f"(draws {min(random_losses) - clean:+.3f} to {max(random_losses) - clean:+.3f}) |")
    if "--json" in sys.argv:
        out = found.to_dict(top=SHOW)
        out["ablation"] = {"clean": clean, "top": top_loss, "random": random_losses, "heads": ablated}
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
