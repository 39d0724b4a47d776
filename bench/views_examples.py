"""The patching views on a real model: induction on the embedded default model (TinyStories-656K), patched with a
plain loop of ``run_with_hooks`` (``patching.run_variants``), drawn with ``PatchResult.view`` and saved with
screenshots for a person to look at.

    PYTHONPATH=src python bench/views_examples.py [--out /tmp/views-shots]

The clean prompt is a story sentence said twice; the corrupted one replaces the first copy with other words, so an
induction circuit has nothing to copy from. The metric is the mean log-probability of the second copy's tokens.
Patching a head's output (``hook_z``, all positions) from the clean run into the corrupted one shows which heads
carry the induction; patching the residual stream (``hook_resid_pre``) by layer and position shows where.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import mechscope
from mechscope import views
from mechscope.patching import PatchResult, run_variants

SENTENCE = " the girl saw a big red ball in the park and she ran to get it ."
OTHER = " one day a boy had a small blue kite by the lake but he lost it ."


def main(out: Path) -> None:
    model = mechscope.load("default")
    first, other = model.to_tokens(SENTENCE, prepend_bos=False), model.to_tokens(OTHER, prepend_bos=False)
    n = min(first.shape[1], other.shape[1])
    first, other = first[:, :n], other[:, :n]
    bos = model.to_tokens("")[:, :1]
    clean = torch.cat([bos, first, first], 1)
    corrupted = torch.cat([bos, other, first], 1)
    second = torch.arange(n + 1, 2 * n + 1)  # positions of the second copy

    def metric(logits):  # mean log-prob of each second-copy token given what precedes it
        logp = logits[0, second[:-1]].float().log_softmax(-1)
        return logp.gather(-1, clean[0, second[1:], None]).mean()

    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    names += [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(clean, names_filter=names)

    def patch_head(layer, head):
        def hook(z, hook):
            z = z.clone()
            z[:, :, head] = cache[hook.name][:, :, head]
            return z
        return [(f"blocks.{layer}.attn.hook_z", hook)]

    def patch_resid(layer, pos):
        def hook(x, hook):
            x = x.clone()
            x[:, pos] = cache[hook.name][:, pos]
            return x
        return [(f"blocks.{layer}.hook_resid_pre", hook)]

    L, H, P = model.cfg.n_layers, model.cfg.n_heads, clean.shape[1]
    with torch.no_grad():
        lo, hi = float(metric(model(corrupted))), float(metric(model(clean)))
    print(f"metric: corrupted {lo:.3f}, clean {hi:.3f}")
    norm = lambda xs: (torch.stack(xs).float() - lo) / (hi - lo)  # noqa: E731  0 = corrupted, 1 = clean
    heads = norm(run_variants(model, corrupted, [patch_head(l, h) for l in range(L) for h in range(H)], metric,
                              method="loop"))
    resid = norm(run_variants(model, corrupted, [patch_resid(l, p) for l in range(L) for p in range(P)], metric,
                              method="loop"))
    tokens = model.to_str_tokens(clean[0])
    by_head = PatchResult(heads.reshape(L, H), ("layer", "head"), metric="normalised log-prob",
                          title="TinyStories-656K: head outputs (z) patched, clean → corrupted")
    by_pos = PatchResult(resid.reshape(L, P), ("layer", "pos"), {"pos": tokens}, metric="normalised log-prob",
                         title="TinyStories-656K: residual stream patched by layer and position")
    for name, value in by_head.top(4):
        print(f"  {name}: {value:+.3f}")
    out.mkdir(parents=True, exist_ok=True)
    page = views.report([by_head.view(), by_pos.view(highlight_cols=list(range(1, n + 1)))],
                        "Induction on the default model: activation patching")
    path = page.save(out / "real_default_induction.html")
    print(f"wrote {path}")
    sys.path.insert(0, str(Path(__file__).parent))
    from screenshot import screenshot

    screenshot(path, out / "real_default_induction.png", 1280, 900)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/views-shots"))
    main(ap.parse_args().out)
