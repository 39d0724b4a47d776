"""One-off cross-check: mechscope's residual-stream algebra vs TransformerLens 3.9's ``ActivationCache`` methods.

Same throwaway venv and models as ``tl_crosscheck.py`` (tiny random GPT-2, Pythia-style parallel GPT-NeoX, the real
TinyStories-656K)::

    PYTHONPATH=src HF_HUB_OFFLINE=1 /tmp/tlvenv/bin/python bench/tl_resid_crosscheck.py > bench/TL_RESID_CROSSCHECK.md

TransformerLens loads each model with ``fold_ln=True`` but no centring (``center_writing_weights=False``,
``center_unembed=False``, ``fold_value_biases=False``): the residual stream and every component are then the
unprocessed model's, and its ``W_U`` is the norm's weight folded into the unembedding — which is what mechscope's
``tokens_to_residual_directions`` reads through instead of folding. So every method, ``logit_attrs`` included,
should agree to float rounding, labels exactly. TransformerLens runs its own forward, so its activations differ
from HF's by rounding; TinyStories-656K's residual stream reaches magnitudes of several hundred, where 1e-4 is
float32 rounding.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import mechscope  # noqa: E402
from tl_crosscheck import PROMPTS, specs  # noqa: E402


def folded_transformer(hf, tok):
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer

    folder = Path(tempfile.mkdtemp(prefix="tlx-"))
    hf.config.architectures = hf.config.architectures or [type(hf).__name__]
    hf.config.save_pretrained(folder)
    loading.get_official_model_name = lambda name: name
    return HookedTransformer.from_pretrained(
        str(folder), hf_model=hf, tokenizer=tok, device="cpu", dtype=torch.float32, default_prepend_bos=False,
        fold_ln=True, center_writing_weights=False, center_unembed=False, fold_value_biases=False)


def calls(n_layers: int, target: int, wrong: int):
    """(name, fn(cache) -> tensor or (tensor, labels)) for the same call on either library's cache."""
    last = n_layers - 1
    return [
        ("accumulated_resid()", lambda c: c.accumulated_resid(return_labels=True)),
        ("accumulated_resid(layer=1, incl_mid=True, apply_ln=True)",
         lambda c: c.accumulated_resid(layer=1, incl_mid=True, apply_ln=True, return_labels=True)),
        ("accumulated_resid(apply_ln=True, pos_slice=-1) (logit lens)",
         lambda c: c.accumulated_resid(apply_ln=True, pos_slice=-1, return_labels=True)),
        ("decompose_resid()", lambda c: c.decompose_resid(return_labels=True)),
        ("decompose_resid(layer=1, mlp_input=True, apply_ln=True)",
         lambda c: c.decompose_resid(layer=1, mlp_input=True, apply_ln=True, return_labels=True)),
        ("decompose_resid(mode='attn', pos_slice=(1, 4))",
         lambda c: c.decompose_resid(mode="attn", pos_slice=(1, 4), return_labels=True)),
        ("stack_head_results(incl_remainder=True)", lambda c: c.stack_head_results(incl_remainder=True,
                                                                                    return_labels=True)),
        ("stack_head_results(layer=1, apply_ln=True, pos_slice=[0, 2])",
         lambda c: c.stack_head_results(layer=1, apply_ln=True, pos_slice=[0, 2], return_labels=True)),
        (f"stack_neuron_results({n_layers}, neuron_slice=(0, 20), pos_slice=-1)",
         lambda c: c.stack_neuron_results(n_layers, neuron_slice=(0, 20), pos_slice=-1, return_labels=True)),
        (f"get_neuron_results({last}, pos_slice=-1)", lambda c: c.get_neuron_results(last, pos_slice=-1)),
        ("get_full_resid_decomposition(pos_slice=-1)",
         lambda c: c.get_full_resid_decomposition(pos_slice=-1, return_labels=True)),
        ("get_full_resid_decomposition(expand_neurons=False, apply_ln=True)",
         lambda c: c.get_full_resid_decomposition(expand_neurons=False, apply_ln=True, return_labels=True)),
        ("logit_attrs(decompose_resid(pos_slice=-1), t, pos_slice=-1)",
         lambda c: c.logit_attrs(c.decompose_resid(pos_slice=-1), target, pos_slice=-1)),
        ("logit_attrs(full decomposition, t, incorrect_tokens=w)",
         lambda c: c.logit_attrs(c.get_full_resid_decomposition(expand_neurons=False), target,
                                 incorrect_tokens=wrong)),
    ]


def _try(fn, cache):
    try:
        return fn(cache)
    except Exception as e:  # noqa: BLE001 - reported in the table
        return f"{type(e).__name__}: {str(e)[:90]}"


def _show(x) -> str:
    return x if isinstance(x, str) else f"{tuple((x[0] if isinstance(x, tuple) else x).shape)}"


def main() -> None:
    print("# Residual-stream algebra: mechscope vs TransformerLens 3.9\n")
    print(__doc__.split("\n\n", 3)[3].strip().replace("\n", " ") + "\n")
    print("Parallel blocks (GPT-NeoX) differ on purpose where TransformerLens reads points they do not have "
          "(`resid_mid`) or counts the block's own attention into the MLP's input (`mlp_input=True`): their MLP "
          "reads `resid_pre` (docs/residual.md).\n")
    for title, hf, tok in specs():
        model = mechscope.Model.from_hf(hf, tok)
        tl = folded_transformer(hf, tok)
        toks = torch.stack([tok(p, return_tensors="pt")["input_ids"][0, :8] for p in PROMPTS[:2]])  # no padding
        with torch.no_grad():
            _, tl_cache = tl.run_with_cache(toks)
            _, ms_cache = model.run_with_cache(toks)
        print(f"## {title}\n\n| call | shape | labels | max abs difference |\n|---|---|---|---|")
        for name, fn in calls(model.cfg.n_layers, target=5, wrong=7):
            with torch.no_grad():
                a, b = _try(fn, tl_cache), _try(fn, ms_cache)
            if isinstance(a, str) or isinstance(b, str):
                print(f"| `{name}` | TransformerLens: {_show(a)}; mechscope: {_show(b)} | | |")
                continue
            la, lb = (a[1], b[1]) if isinstance(a, tuple) else (None, None)
            a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
            same = "—" if la is None else ("same" if list(la) == list(lb) else f"DIFFER: {la[:4]} vs {lb[:4]}")
            shape = tuple(a.shape) if a.shape == b.shape else f"{tuple(a.shape)} vs {tuple(b.shape)}"
            diff = f"{(a - b).abs().max().item():.2e}" if a.shape == b.shape else "n/a"
            print(f"| `{name}` | {shape} | {same} | {diff} |")
        print()


if __name__ == "__main__":
    main()
