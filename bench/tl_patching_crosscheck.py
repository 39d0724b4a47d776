"""mechscope's get_act_patch_* against TransformerLens 3.9's own, on the same weights (run from TL's venv).

    PYTHONPATH=src HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 /tmp/tlvenv/bin/python bench/tl_patching_crosscheck.py

Models as in ``bench/tl_crosscheck.py``: GPT-2 and Pythia-style GPT-NeoX with tiny random weights, and
TinyStories-656K (Llama, GQA; real weights), all fp32 eager, loaded in TransformerLens without folding. The clean
and corrupted prompts differ in one token (cat → dog); the metric is logit(cat) − logit(dog) at the last position. Each function runs with mechscope's cache and model on one side and TL's on the other.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tl_crosscheck import hooked_transformer, specs  # noqa: E402

import mechscope  # noqa: E402
from mechscope import patching as ms_patching  # noqa: E402

FUNCTIONS = ["get_act_patch_resid_pre", "get_act_patch_resid_mid", "get_act_patch_attn_out", "get_act_patch_mlp_out",
             "get_act_patch_attn_head_out_all_pos", "get_act_patch_attn_head_out_by_pos",
             "get_act_patch_attn_head_q_all_pos", "get_act_patch_attn_head_k_all_pos",
             "get_act_patch_attn_head_v_by_pos", "get_act_patch_attn_head_pattern_all_pos",
             "get_act_patch_attn_head_pattern_by_pos", "get_act_patch_block_every",
             "get_act_patch_attn_head_all_pos_every"]


def main() -> None:
    from transformer_lens import patching as tl_patching

    print("## mechscope vs TransformerLens 3.9 patching functions, same weights\n")
    print("`bench/tl_patching_crosscheck.py`: max |Δ| between mechscope's batched `get_act_patch_*` and "
          "TransformerLens's own (one `run_with_hooks` per patch) on the same weights; shapes must match.\n")
    print("| model | function | shape | max abs diff |\n|---|---|---|---|")
    for title, hf, tok in specs():
        model = mechscope.Model.from_hf(hf, tok)
        tl = hooked_transformer(hf, tok)
        clean = tok(["The cat sat on the mat and the cat"], return_tensors="pt")["input_ids"]
        corrupt = tok(["The dog sat on the mat and the cat"], return_tensors="pt")["input_ids"]
        assert clean.shape == corrupt.shape
        p = int((clean[0] != corrupt[0]).nonzero()[0])
        a, w = int(clean[0, p]), int(corrupt[0, p])  # logit(cat) - logit(dog)
        metric = lambda lg: (lg[:, -1, a] - lg[:, -1, w]).mean()  # noqa: E731
        with torch.no_grad():
            _, ms_cache = model.run_with_cache(clean)
            _, tl_cache = tl.run_with_cache(clean)
        for name in FUNCTIONS:
            if name == "get_act_patch_resid_mid" and model.cfg.parallel_attn_mlp:
                continue
            ours = getattr(ms_patching, name)(model, corrupt, ms_cache, metric)
            theirs = getattr(tl_patching, name)(tl, corrupt, tl_cache, metric)
            same = ours.shape == theirs.shape
            diff = float((ours.cpu() - theirs.cpu()).abs().max()) if same else float("nan")
            print(f"| {title} | `{name}` | {tuple(ours.shape)}{'' if same else f' vs TL {tuple(theirs.shape)}'} | "
                  f"{diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
