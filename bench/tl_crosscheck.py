"""One-off cross-check: mechscope's hook points vs TransformerLens 3.x's ``HookedTransformer`` on the same weights.

Not a test dependency. TransformerLens 3.9 works with transformers 5.x, so it can share the project's packages from
a throwaway venv that only adds its own (wandb, datasets, ...)::

    python3 -m venv /tmp/tlvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/tlvenv/lib/python3.11/site-packages/zz_main.pth
    /tmp/tlvenv/bin/pip install -c constraints.txt "transformer-lens==3.9.0"
    PYTHONPATH=src HF_HUB_OFFLINE=1 /tmp/tlvenv/bin/python bench/tl_crosscheck.py > bench/TL_CROSSCHECK.md

Models, all fp32 with eager attention: GPT-2 and Pythia-style GPT-NeoX (parallel residual, partial rotary) with tiny
random weights and the gpt2/pythia tokenizers from ``../shared/models``, and TinyStories-656K (Llama, GQA, RMSNorm,
real weights). TransformerLens loads each with ``from_pretrained_no_processing(hf_model=...)`` (no folding or
centring, so activations are comparable point by point). For every point both libraries have, it reports shape,
dtype and the largest absolute difference; "exact" means ``torch.equal``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import mechscope

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models"
PROMPTS = ["Once upon a time, there was a little cat who", "The dog ran to the park and saw"]
CLOSE = 1e-4  # absolute, for fp32 activations of unit scale


def tiny(model_type: str, **kw):
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(model_type, **kw)
    cfg._attn_implementation = "eager"
    hf = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # random init leaves biases at 0 and norm weights at 1: perturb so every term counts
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return hf


def specs():
    gpt2_tok = AutoTokenizer.from_pretrained(SHARED / "gpt2-tokenizer")
    neox_tok = AutoTokenizer.from_pretrained(SHARED / "pythia-tokenizer")
    yield "GPT-2 (tiny random)", tiny("gpt2", vocab_size=len(gpt2_tok), n_embd=64, n_layer=2, n_head=4,
                                      n_positions=64, n_ctx=64, n_inner=256), gpt2_tok
    yield "Pythia-style GPT-NeoX (tiny random)", tiny(
        "gpt_neox", vocab_size=len(neox_tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True), neox_tok
    path = SHARED / "TinyStories-656K"
    yield "TinyStories-656K (real weights)", AutoModelForCausalLM.from_pretrained(
        path, attn_implementation="eager").eval(), AutoTokenizer.from_pretrained(path)


def hooked_transformer(hf, tok):
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer

    folder = Path(tempfile.mkdtemp(prefix="tlx-"))
    hf.config.architectures = hf.config.architectures or [type(hf).__name__]
    hf.config.save_pretrained(folder)  # TransformerLens reads a local folder's config.json
    loading.get_official_model_name = lambda name: name  # accept the folder as a model name
    return HookedTransformer.from_pretrained_no_processing(
        str(folder), hf_model=hf, tokenizer=tok, device="cpu", dtype=torch.float32, default_prepend_bos=False)


def compare(title, hf, tok) -> list[tuple]:
    model = mechscope.Model.from_hf(hf, tok)
    model.set_use_attn_result(True)
    tl = hooked_transformer(hf, tok)
    tl.set_use_attn_result(True)
    toks = tok(PROMPTS[:1], return_tensors="pt")["input_ids"]
    toks = toks.expand(2, -1).clone()  # batch 2: shows a [1, pos] vs [batch, pos] difference
    with torch.no_grad():
        tl_logits, tl_cache = tl.run_with_cache(toks)
        ms_logits, ms_cache = model.run_with_cache(toks)
    rows = []
    for name in model.hook_names():
        if name not in tl_cache:
            continue
        a, b = ms_cache[name], tl_cache[name]
        if a.shape != b.shape:
            rows.append((name, str(tuple(a.shape)), str(tuple(b.shape)), str(a.dtype), str(b.dtype), "shape differs"))
            continue
        finite = torch.isfinite(b) & torch.isfinite(a)
        same_inf = torch.equal(torch.isinf(a), torch.isinf(b))
        diff = (a.double() - b.double())[finite].abs().max().item() if finite.any() else 0.0
        verdict = ("exact" if torch.equal(a, b) else f"close ({diff:.1e})" if diff <= CLOSE and same_inf
                   else f"differs ({diff:.1e}{'' if same_inf else ', masks differ'})")
        if a.dtype != b.dtype:
            verdict += ", dtype differs"
        rows.append((name, str(tuple(a.shape)), "", str(a.dtype), str(b.dtype), verdict))
    only_tl = sorted(n for n in tl_cache if n not in model.hook_dict)
    only_ms = sorted(n for n in model.hook_dict if n not in tl_cache)
    logit_diff = (ms_logits - tl_logits).abs().max().item()
    print(f"## {title}\n")
    agree = sum(r[-1].startswith(("exact", "close")) and "dtype" not in r[-1] for r in rows)
    print(f"{agree} of {len(rows)} shared points agree; max |Δlogit| mechscope (= HF) vs TransformerLens: "
          f"{logit_diff:.1e}.\n")
    print("| point | shape | TL shape (if different) | dtype | TL dtype | verdict |\n|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(f"`{r[0]}`" if i == 0 else r[i] for i in range(6)) + " |")
    print(f"\nOnly in TransformerLens: {', '.join(f'`{n}`' for n in only_tl) or 'none'}.\n")
    print(f"Only in mechscope: {', '.join(f'`{n}`' for n in only_ms) or 'none'}.\n")
    return rows


def main() -> None:
    print("# mechscope vs TransformerLens 3.9 `HookedTransformer`, point by point\n")
    print("Generated by `bench/tl_crosscheck.py` (see its docstring for the set-up). fp32, eager attention, "
          f"batch 2, prompt {PROMPTS[0]!r}. \"close\" = max |Δ| ≤ {CLOSE:g} with -inf in the same places.\n")
    total = agree = 0
    for title, hf, tok in specs():
        rows = compare(title, hf, tok)
        total += len(rows)
        agree += sum(r[-1].startswith(("exact", "close")) and "dtype" not in r[-1] for r in rows)
    print(f"**Overall: {agree} of {total} shared points agree.**")


if __name__ == "__main__":
    sys.exit(main())
