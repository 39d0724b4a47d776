"""Hook points mean what they mean in TransformerLens: each point compared with an independent reading of it.

TransformerLens (``components/layer_norm.py``, ``rms_norm.py``, ``abstract_attention.py``, ``pos_embed.py``):
``hook_scale`` = sqrt(mean(x²) + eps) of the (centred, for LayerNorm) input in float32; ``hook_normalized`` =
x / scale, float32, *before* the weight and bias; ``hook_pos_embed`` is ``[batch, pos, d_model]``; masked scores
are ``-inf``; ``hook_k``/``hook_v``/``hook_rot_k`` have the key/value head count under GQA. The independent
readings here are raw torch hooks on the HF modules and HF's own outputs, never mechscope's points.
"""

from __future__ import annotations

import pytest
import torch

import mechscope
from families import CONFIGS, make_pair

IDS = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(3))
CASES = [(k, d) for k in CONFIGS for d in ("fp32", "bf16")]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _norm_points(model: mechscope.Model) -> dict[str, torch.nn.Module]:
    """prefix (``blocks.0.ln1``) → the HF norm module, found from the point table's own anchors."""
    return {name.rsplit(".", 1)[0]: pt.site.anchor[1] for name, pt in model.hook_dict.items()
            if name.endswith(".hook_out") and name.replace(".hook_out", ".hook_scale") in model.hook_dict}


@pytest.fixture(scope="module", params=CASES, ids=[f"{k}-{d}" for k, d in CASES])
def case(request):
    key, dt = request.param
    eager, _ = make_pair(key, DTYPES[dt])
    return mechscope.Model.from_hf(eager)


def test_norm_points_follow_transformerlens(case):
    """scale and normalized by TransformerLens's formulas on the norm's real input; hook_out is the norm's output;
    and normalized * gain + bias reproduces that output, which checks LN-vs-RMS, eps and Gemma's (1 + w)."""
    model = case
    norms = _norm_points(model)
    if not norms:
        pytest.skip("no norm modules (Qwen4-exp: hyper-connection mixers only)")
    seen: dict[str, tuple] = {}
    handles = [mod.register_forward_hook(lambda m, a, o, p=p: seen.__setitem__(p, (a[0], o))) for p, mod in norms.items()]
    try:
        _, cache = model.run_with_cache(IDS, names_filter=lambda n: n.rsplit(".", 1)[0] in norms)
    finally:
        for h in handles:
            h.remove()
    for prefix, (x_in, out) in seen.items():
        norm = norms[prefix]
        lead = cache[f"{prefix}.hook_out"].shape[:-1]  # OPT's MLP half runs on flattened positions: shown unflattened
        x_in, out = x_in.reshape(*lead, x_in.shape[-1]), out.reshape(*lead, out.shape[-1])
        x = x_in.float()
        if model.cfg.normalization == "LN":
            x = x - x.mean(-1, keepdim=True)
        scale = (x.pow(2).mean(-1, keepdim=True) + model.hook_dict[f"{prefix}.hook_scale"].site.norm.eps).sqrt()
        assert cache[f"{prefix}.hook_scale"].dtype == torch.float32
        assert cache[f"{prefix}.hook_normalized"].dtype == torch.float32
        assert torch.equal(cache[f"{prefix}.hook_scale"], scale), prefix
        assert torch.equal(cache[f"{prefix}.hook_normalized"], x / scale), prefix
        assert torch.equal(cache[f"{prefix}.hook_out"], out), prefix
        # the module's own affine map: out = normalized * (offset + weight) + bias
        w = getattr(norm, "weight", None)
        b = getattr(norm, "bias", None)
        gain = 1.0 if w is None else w.float() + model.family.norm_weight_offset
        rebuilt = cache[f"{prefix}.hook_normalized"] * gain + (b.float() if isinstance(b, torch.Tensor) else 0)
        tol = dict(atol=1e-4, rtol=1e-4) if out.dtype == torch.float32 else dict(atol=0.1, rtol=0.02)
        torch.testing.assert_close(rebuilt, out.float(), **tol, msg=f"{prefix}: normalized * gain + bias != output")


def test_normalized_patch_from_another_run_reproduces_its_norm_output(case):
    """Patching hook_normalized from run B into run A must give B's norm output (the write is independent of A)."""
    model = case
    other = torch.randint(3, 128, IDS.shape, generator=torch.Generator().manual_seed(9))
    norms = _norm_points(model)
    if not norms:
        pytest.skip("no norm modules (Qwen4-exp: hyper-connection mixers only)")
    prefix = next(iter(norms))
    _, cache_b = model.run_with_cache(other, names_filter=[f"{prefix}.hook_normalized", f"{prefix}.hook_out"])
    with model.hooks([(f"{prefix}.hook_normalized", lambda n, h: cache_b[h.name])]):
        _, cache_a = model.run_with_cache(IDS, names_filter=f"{prefix}.hook_out")
    out_b, out_a = cache_b[f"{prefix}.hook_out"], cache_a[f"{prefix}.hook_out"]
    tol = dict(atol=1e-5, rtol=1e-4) if out_b.dtype == torch.float32 else dict(atol=0.05, rtol=0.02)
    torch.testing.assert_close(out_a, out_b, **tol)


def test_attention_point_shapes_and_masking(case):
    model = case
    c = model.cfg
    out = model.hf_model(IDS, output_attentions=True)
    _, cache = model.run_with_cache(IDS, names_filter=lambda n: n.startswith("blocks.0.attn."))
    b, p = IDS.shape
    dqk = model.hook_dict["blocks.0.attn.hook_q"].shape[-1] if "blocks.0.attn.hook_q" in model.hook_dict else c.d_head
    dv = getattr(c, "d_head_v", None) or c.d_head
    if "blocks.0.attn.hook_q" in cache:
        assert cache["q", 0].shape == (b, p, c.n_heads, dqk)
    if "blocks.0.attn.hook_k" in cache:  # latent attention builds k and v inside attention: no hook_k/hook_v
        assert cache["k", 0].shape == (b, p, c.n_kv_heads, model.hook_dict["blocks.0.attn.hook_k"].shape[-1])
        assert cache["v", 0].shape == (b, p, c.n_kv_heads, dv)  # MLA: k holds only the non-rotary part
    assert cache["z", 0].shape == (b, p, c.n_heads, dv)
    if "blocks.0.attn.hook_rot_k" in cache:
        assert cache["rot_q", 0].shape == (b, p, c.n_heads, dqk)
        assert cache["rot_k", 0].shape == (b, p, c.n_kv_heads, dqk)
    scores, pattern = cache["attn_scores", 0], cache["pattern", 0]
    assert scores.shape == pattern.shape == (b, c.n_heads, p, p)
    future = torch.ones(p, p, dtype=torch.bool).triu(1)
    assert torch.isneginf(scores[..., future]).all()  # TransformerLens's IGNORE
    assert torch.isfinite(scores[..., ~future]).any()
    assert torch.equal(pattern.to(out.attentions[0].dtype), out.attentions[0])  # HF may return a cast copy
    tol = 2e-2 if c.dtype == torch.bfloat16 else 1e-5
    rows = pattern.float().sum(-1)
    if torch.allclose(rows, torch.ones_like(rows), atol=tol):  # attention sinks take part of each row's mass
        torch.testing.assert_close(scores.float().softmax(-1), pattern.float(), atol=tol, rtol=0)


def test_identity_writes_of_masked_scores_are_exact():
    eager, _ = make_pair("llama", torch.float32)
    model = mechscope.Model.from_hf(eager)
    ref = eager(IDS).logits
    assert torch.equal(model.run_with_hooks(IDS, fwd_hooks=[("blocks.0.attn.hook_attn_scores", lambda s, h: s.clone())]), ref)

    def unmask_first(s, hook):  # a finite value written at a masked position is used, as in TransformerLens
        s = s.clone()
        s[..., 0, 1] = 0.0
        return s

    _, c = model.run_with_cache(IDS, names_filter="blocks.0.attn.hook_pattern")
    with model.hooks([("blocks.0.attn.hook_attn_scores", unmask_first)]):
        _, c2 = model.run_with_cache(IDS, names_filter="blocks.0.attn.hook_pattern")
    assert (c["pattern", 0][..., 0, 1] == 0).all() and (c2["pattern", 0][..., 0, 1] > 0).all()


def test_pos_embed_is_per_sequence():
    eager, _ = make_pair("gpt2", torch.float32)
    model = mechscope.Model.from_hf(eager)
    _, cache = model.run_with_cache(IDS, names_filter=["hook_pos_embed", "hook_embed", "blocks.0.hook_resid_pre"])
    pos = cache["pos_embed"]
    assert pos.shape == (*IDS.shape, model.cfg.d_model)
    assert torch.equal(pos, model.W_pos[: IDS.shape[1]].expand_as(pos))
    assert torch.equal(cache["embed"] + pos, cache["resid_pre", 0])
    # a per-sequence replacement reaches each sequence
    shift = torch.zeros_like(pos)
    shift[1] = 1.0
    with model.hooks([("hook_pos_embed", lambda p, h: p + shift)]):
        _, patched = model.run_with_cache(IDS, names_filter="blocks.0.hook_resid_pre")
    torch.testing.assert_close(patched["resid_pre", 0], cache["resid_pre", 0] + shift)
    assert torch.equal(model.run_with_hooks(IDS, fwd_hooks=[("hook_pos_embed", lambda p, h: p.clone())]), eager(IDS).logits)


def test_normalized_gradient_is_the_output_gradient_times_gain():
    eager, _ = make_pair("gemma", torch.float32)  # (1 + weight) norms
    model = mechscope.Model.from_hf(eager)
    names = ["blocks.0.ln1.hook_normalized", "blocks.0.ln1.hook_out"]
    _, cache = model.run_with_cache(IDS, names_filter=names, incl_bwd=True)
    gain = 1 + model.blocks[0].input_layernorm.weight.detach()
    torch.testing.assert_close(cache["blocks.0.ln1.hook_normalized_grad"], cache["blocks.0.ln1.hook_out_grad"] * gain)
    with pytest.raises(mechscope.HookReturnError, match="cannot be replaced"):
        model.run_with_hooks(IDS, bwd_hooks=[("blocks.0.ln1.hook_normalized", lambda g, h: g * 0)],
                             return_type="loss").backward()


def test_replacement_of_another_dtype_is_refused():
    eager, _ = make_pair("llama", torch.float32)
    model = mechscope.Model.from_hf(eager)
    with pytest.raises(mechscope.HookReturnError, match="same shape and dtype"):
        model.run_with_hooks(IDS, fwd_hooks=[("blocks.0.hook_resid_post", lambda a, h: a.double())])
