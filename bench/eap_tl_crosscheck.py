"""Cross-check of mechscope's EAP against an independent implementation on TransformerLens 3.9, written the way
Hanna et al.'s EAP-IG library does it: ``use_split_qkv_input`` (each head's q/k/v input is its own copy of the
residual stream, ``blocks.{l}.hook_{q,k,v}_input``, ``[batch, pos, head or kv head, d_model]``, normed and
projected per head by TransformerLens), ``use_hook_mlp_in`` (``blocks.{l}.hook_mlp_in``), the logits' input at the
last ``hook_resid_post``; senders at ``blocks.0.hook_resid_pre``, ``hook_result`` and ``hook_mlp_out``. Scores are
``Σ (a(corrupted) − a(clean)) · grad`` with gradients from TransformerLens's backward hooks: nothing is shared
with mechscope's graph code.

    PYTHONPATH=src HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 /tmp/tlvenv/bin/python bench/eap_tl_crosscheck.py \
        | grep -v "^Loaded pretrained" > bench/EAP_TL_CROSSCHECK.md

Not a test dependency (TransformerLens is never a dependency of mechscope)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import mechscope  # noqa: E402
from mechscope.patching.tasks import induction_task  # noqa: E402
from mechscope.patching import Graph, eap  # noqa: E402
from tl_crosscheck import hooked_transformer, specs  # noqa: E402


def tl_eap(tl, graph: Graph, clean, corrupted, metric) -> torch.Tensor:
    """EAP scores in mechscope's ``[n_senders, n_receivers]`` layout, computed on TransformerLens alone."""
    tl.set_use_attn_result(True)
    tl.set_use_split_qkv_input(True)
    tl.set_use_hook_mlp_in(True)
    L = tl.cfg.n_layers
    send = ["blocks.0.hook_resid_pre"] + [n for l in range(L) for n in (f"blocks.{l}.attn.hook_result",
                                                                         f"blocks.{l}.hook_mlp_out")]
    recv = [f"blocks.{l}.hook_{k}" for l in range(L) for k in ("q_input", "k_input", "v_input", "mlp_in")]
    recv.append(f"blocks.{L - 1}.hook_resid_post")
    with torch.no_grad():
        _, c = tl.run_with_cache(clean, names_filter=send)
        _, r = tl.run_with_cache(corrupted, names_filter=send)
    grads = {}

    def keep(g, hook):
        grads[hook.name] = g.detach()

    tl.zero_grad()
    with tl.hooks(bwd_hooks=[(n, keep) for n in recv]):
        metric(tl(clean)).backward()
    # senders in mechscope's order: input, then per block its heads, then its MLP; each [n, batch, pos, d_model]
    diffs = []
    for n in send:
        d = r[n] - c[n]
        diffs.append(d.movedim(2, 0) if "hook_result" in n else d[None])
    diff = torch.cat(diffs).double()
    cols = []
    for n in recv:
        g = grads[n].double()
        cols.append(g.movedim(2, 0) if g.dim() == 4 else g[None])      # [R, batch, pos, d_model]
    grad = torch.cat(cols)
    scores = torch.einsum("sbpd,rbpd->sr", diff, grad)
    return scores.where(graph.valid, torch.zeros((), dtype=scores.dtype))


def main() -> None:
    print("# mechscope EAP vs an independent EAP on TransformerLens 3.9 (split q/k/v inputs)\n")
    print("Same weights in both (fp32, eager attention); scores over every edge of mechscope's graph.\n")
    print("| model | task | edges | max abs diff | largest score | Pearson r | same top-20 |")
    print("|---|---|---|---|---|---|---|")
    for title, hf, tok in specs():
        model = mechscope.Model.from_hf(hf, tok)
        tl = hooked_transformer(hf, tok)
        if "TinyStories" in title:
            t = induction_task(model, n_seqs=4, seg_len=12)
            clean, corrupted, metric, task = t.clean, t.corrupted, t.metric, "induction"
        else:
            gen = torch.Generator().manual_seed(0)
            clean = torch.randint(10, 1000, (2, 8), generator=gen)
            corrupted = torch.randint(10, 1000, (2, 8), generator=gen)
            metric = lambda lg: lg[:, -1, 11].mean() - lg[:, -1, 12].mean()  # noqa: E731
            task = "random tokens, logit difference"
        g = Graph(model)
        ours = eap(model, clean, corrupted, metric, graph=g).scores.double()
        theirs = tl_eap(tl, g, clean, corrupted, metric)
        v = g.valid
        r = float(torch.corrcoef(torch.stack([ours[v], theirs[v]]))[0, 1])
        top = lambda s: set((s.abs().where(v, -1.0)).flatten().argsort(descending=True)[:20].tolist())  # noqa: E731
        print(f"| {title} | {task} | {g.n_edges} | {float((ours - theirs).abs().max()):.2e} | "
              f"{float(ours.abs().max()):.3f} | {r:.6f} | {len(top(ours) & top(theirs))}/20 |")


if __name__ == "__main__":
    main()
