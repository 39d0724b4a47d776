"""The canonical hook-point table of a wrapped model, built from its family's adapter entry.

Names and layouts follow TransformerLens (``blocks.{l}.attn.hook_z``), so users' habits carry over. Each point
records its shape with named axes; ``docs/hook-points.md`` is the user-facing version of ``DOCS`` below.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from . import attention
from .config import ModelConfig, linear_in_out
from .families import Family
from .families.base import has_module, resolve
from .hooks import (AttnInternal, AttnScores, Chunk, Flat, HeadResult, Heads, HeadSlice, HookPoint, Norm,
                    NormNormalized, NormScale, PerBatch, ResidMid, Routed, Site, Stream, TokenRows, Whole)

B, P, K = "batch", "pos", "k_pos"

DOCS = {
    "hook_embed": "token embedding (Gemma: already scaled by sqrt(d_model))",
    "hook_pos_embed": "learned positional embedding, per sequence",
    "hook_resid_pre": "residual stream entering the block",
    "hook_resid_mid": "residual stream after attention, before the MLP (absent in parallel blocks)",
    "hook_resid_post": "residual stream leaving the block",
    "hook_scale": "the norm's divisor sqrt(var + eps) (RMS: sqrt(mean x^2 + eps)), float32",
    "hook_normalized": "x / scale (x centred for LayerNorm), before the norm's weight and bias, float32",
    "hook_out": "the norm's output, after its weight and bias: what the next module reads",
    "attn.hook_q": "query projection, per head, before rotary",
    "attn.hook_k": "key projection, per key/value head, before rotary",
    "attn.hook_v": "value projection, per key/value head",
    "attn.hook_rot_q": "query after rotary (and q-norm); what the scores use",
    "attn.hook_rot_k": "key after rotary (and k-norm), including cached positions",
    "attn.hook_attn_scores": "scaled, soft-capped scores before softmax; masked positions are -inf",
    "attn.hook_pattern": "attention probabilities after softmax, before dropout",
    "attn.hook_z": "per-head weighted sum of values (input of the output projection)",
    "attn.hook_result": "per-head output z_h @ W_O[h] (opt-in, read-only, no bias)",
    "hook_attn_out": "what attention adds to the residual",
    "mlp.hook_pre": "MLP pre-activation (gated MLPs: the gate projection)",
    "mlp.hook_pre_linear": "gated MLPs: the linear (up) projection",
    "mlp.hook_post": "MLP hidden activation (input of the output projection)",
    "hook_mlp_out": "what the MLP adds to the residual",
    "hook_mixer_out": "hybrids: what the block's non-attention token mixer (Mamba, linear attention, convolution) "
    "adds to the residual (up to the family's multipliers)",
    "mlp.hook_router_logits": "MoE router's logits over all routed experts, as the router returns them",
    "mlp.hook_expert_indices": "MoE: the experts chosen for each token (what the experts module receives)",
    "mlp.hook_expert_weights": "MoE: the weight of each chosen expert (what the experts module receives)",
}


def _doc(name: str) -> str:
    key = name.split(".", 2)[-1] if name.startswith("blocks.") else name
    if key.startswith(("ln", "ln_final")):
        key = key.split(".", 1)[1]
    return DOCS.get(key, "")


def build_points(hf_model: nn.Module, fam: Family, cfg: ModelConfig, blocks: nn.ModuleList,
                 use_attn_result: bool) -> dict[str, HookPoint]:
    """All hook points, in forward order. In hybrids each block gets the groups it has (``Family.has_group``):
    attention points, ``hook_mixer_out``, MLP points; norms and ``hook_resid_mid`` exist where their modules do."""
    pts: dict[str, HookPoint] = {}
    d = cfg.d_model
    n_exp, top_k = cfg.n_experts, cfg.experts_per_token
    text_config = hf_model.config.get_text_config()  # multimodal wrappers keep the decoder's settings there

    flat_from: nn.Module | None = None  # set to the block while adding the MLP half of a flattening block (OPT)

    def add(name: str, site: Site, layer: int | None, shape: tuple) -> None:
        if flat_from is not None:
            site = Flat(site, flat_from)
        pts[name] = HookPoint(name, site, layer, shape, _doc(name))

    def add_norm(prefix: str, module: nn.Module, layer: int | None, after: nn.Module | None = None,
                 is_norm: bool = True) -> None:
        if isinstance(module, nn.Identity):  # a block without this norm (ModernBERT's first block)
            return
        if not is_norm:  # a final "norm" that is another kind of module (Qwen4-exp's mixer): only its output
            add(f"{prefix}.hook_out", Whole("out", module), layer, (B, P, d))
            return
        norm = Norm(module, centred=fam.norm_type == "LN", weight_offset=fam.norm_weight_offset)
        sites = NormScale(norm), NormNormalized(norm), Whole("out", module)
        for site in sites:  # a norm called more than once (nanochat's ln_final on the embeddings): see Site.after
            site.after = after
        add(f"{prefix}.hook_scale", sites[0], layer, (B, P, 1))
        add(f"{prefix}.hook_normalized", sites[1], layer, (B, P, d))
        add(f"{prefix}.hook_out", sites[2], layer, (B, P, d))

    # hyper-connections: several residual streams, on an axis of their own (HY-V4) or concatenated (Qwen4-exp)
    streams = getattr(text_config, fam.resid_streams) if fam.resid_streams else None
    concat = getattr(text_config, fam.hyper_streams) if fam.hyper_streams else 1
    resid = (B, P, streams, d) if streams else (B, P, d * concat)
    # one of several stacked residual streams (Gemma 3n's AltUp): the one attention and the MLP read and write
    stream = partial(Stream, index=fam.resid_stream) if fam.resid_stream is not None else Whole
    embed = hf_model.get_submodule(fam.embed)
    add("hook_embed", Whole("out", embed, copy=fam.embed_copied), None, (B, P, d))
    if fam.pos_embed:
        add("hook_pos_embed", PerBatch(hf_model.get_submodule(fam.pos_embed), embed), None, (B, P, d))

    def add_attention(fam: Family, b: str, block: nn.Module, l: int) -> None:
        sub = partial(resolve, block)
        attn_mod = sub(fam.attn)
        # per-layer head geometry where a layer kind differs from the config's (Inkling's sliding layers); multi-head
        # latent attention: query/key heads (qk_head_dim) are wider than value heads (v_head_dim)
        h = getattr(attn_mod, "num_heads", None) or cfg.n_heads
        dq = getattr(attn_mod, "qk_head_dim", None) or getattr(attn_mod, "head_dim", None) or cfg.d_head
        dv = getattr(attn_mod, "v_head_dim", None) or getattr(attn_mod, "head_dim", None) or cfg.d_head_v
        groups = getattr(attn_mod, "num_key_value_groups", None)  # per layer: MiMo's sliding layers have more kv heads
        kv = h // groups if isinstance(groups, int) and groups > 0 else cfg.n_kv_heads
        attention.register_module(attn_mod, softmax_native=fam.softmax == "native", n_rep=h // kv, sinks=fam.sinks,
                                  max_subtract=fam.softmax == "max_native")
        q = k = v = None
        k_axis, dk = P, dq
        if fam.qkv_layout == "latent":  # see QKVLayout
            q = Heads("out", sub(fam.q), h, dq) if fam.q else None
            if fam.qkv and has_module(block, fam.qkv):  # per head [k_nope | v] from the latent's up-projection
                kv_up = sub(fam.qkv)
                dk = kv_up.weight.shape[0] // kv - dv
                k, v = (HeadSlice("out", kv_up, kv, lo, hi, squeeze=1) for lo, hi in ((0, dk), (dk, dk + dv)))
                k_axis = K  # the up-projection runs on the cached latents: every key position
        elif fam.qkv_layout == "separate":  # k, v: absent in multi-head latent attention
            q, k, v = (Heads("out", sub(p), n, w) if has_module(block, p) else None
                       for p, n, w in ((fam.q, h, dq), (fam.k, kv, dq), (fam.v, kv, dv)))
            if fam.q_gated:
                q = Heads("out", sub(fam.q), h, dq, part=0, parts=2)
        elif fam.qkv_layout == "split":
            fused = sub(fam.qkv)
            q = Heads("out", fused, h, dq, 0, h * dq)
            k = Heads("out", fused, kv, dq, h * dq, (h + kv) * dq)
            v = Heads("out", fused, kv, dq, (h + kv) * dq, (h + 2 * kv) * dq)
        else:
            fused = sub(fam.qkv)
            q, k, v = (Heads("out", fused, n, dq, part=fam.qkv_order.index(c), groups=fam.qkv_groups)
                       for c, n in (("q", h), ("k", kv), ("v", kv)))
        for name, site, n, w, axis in (("q", q, h, dq, P), ("k", k, kv, dk, k_axis), ("v", v, kv, dv, k_axis)):
            if site is not None:
                add(f"{b}.attn.hook_{name}", site, l, (B, axis, n, w))
        if fam.rotary:
            add(f"{b}.attn.hook_rot_q", AttnInternal(attn_mod, "rot_q"), l, (B, P, h, dq))
            add(f"{b}.attn.hook_rot_k", AttnInternal(attn_mod, "rot_k"), l, (B, K, kv, dq))
        add(f"{b}.attn.hook_attn_scores", AttnScores(attn_mod), l, (B, h, P, K))
        add(f"{b}.attn.hook_pattern", AttnInternal(attn_mod, "pattern"), l, (B, h, P, K))
        o_proj = sub(fam.o)
        dz = linear_in_out(o_proj)[0] // h  # the width of z per head (MLA: v_head_dim; dots3: gated, narrower)
        add(f"{b}.attn.hook_z", Heads("in", sub(fam.z or fam.o), h, dz), l, (B, P, h, dz))
        if use_attn_result:
            add(f"{b}.attn.hook_result", HeadResult(o_proj, h, dz), l, (B, P, h, d))
        if has_module(block, fam.norms.get("ln1_post")):
            add_norm(f"{b}.ln1_post", sub(fam.norms["ln1_post"]), l)
        if fam.attn_out:
            add(f"{b}.hook_attn_out", Whole("out", sub(fam.attn_out)), l, (B, P, d))

    base = fam
    for l, block in enumerate(blocks):
        fam = base.at_layer(text_config, l).for_block(block)
        b = f"blocks.{l}"
        sub = partial(resolve, block)
        has = partial(has_module, block)
        add(f"{b}.hook_resid_pre", stream("in", block), l, resid)
        if has(fam.norms.get("ln1")):
            add_norm(f"{b}.ln1", sub(fam.norms["ln1"]), l)
        if fam.has_group(text_config, block, l, "attn"):
            add_attention(fam, b, block, l)
        if fam.has_group(text_config, block, l, "mixer"):
            if has(fam.norms.get("ln1_post")) and not fam.has_group(text_config, block, l, "attn"):
                add_norm(f"{b}.ln1_post", sub(fam.norms["ln1_post"]), l)
            add(f"{b}.hook_mixer_out", Whole("out", sub(fam.mixer_out or fam.mixer)), l, (B, P, d))
        flat_from = block if fam.mlp_flat else None
        if has(fam.resid_mid):
            mid = sub(fam.resid_mid)
            if fam.resid_mid_at == "out":  # a module that computes the residual stream itself (Zaya)
                site = Whole("out", mid)
            else:
                site = ResidMid(mid, block) if fam.resid_mid_reused else Whole("in", mid)
            add(f"{b}.hook_resid_mid", site, l, resid)
        if has(fam.norms.get("ln2")):
            add_norm(f"{b}.ln2", sub(fam.norms["ln2"]), l)
        if fam.has_group(text_config, block, l, "mlp"):
            m = linear_in_out(sub(fam.mlp_down))[0] if has(fam.mlp_down) else cfg.d_mlp  # widths may vary by block
            # a mixture-of-experts block has no single hidden activation; dense blocks of MoE models keep theirs
            dense = not fam.moe or all(has(p) for p in (fam.mlp_gate, fam.mlp_in, fam.mlp_gate_up, fam.mlp_down) if p)
            if not dense:
                pass
            elif has(fam.mlp_gate_up):
                gate_up = sub(fam.mlp_gate_up)
                add(f"{b}.mlp.hook_pre", Chunk("out", gate_up, 0, m), l, (B, P, m))
                add(f"{b}.mlp.hook_pre_linear", Chunk("out", gate_up, m, 2 * m), l, (B, P, m))
            elif has(fam.mlp_gate):
                add(f"{b}.mlp.hook_pre", Whole("out", sub(fam.mlp_gate)), l, (B, P, m))
                add(f"{b}.mlp.hook_pre_linear", Whole("out", sub(fam.mlp_in)), l, (B, P, m))
            elif has(fam.mlp_in):
                add(f"{b}.mlp.hook_pre", Whole("out", sub(fam.mlp_in)), l, (B, P, m))
            if dense and has(fam.mlp_down):
                add(f"{b}.mlp.hook_post", Whole("in", sub(fam.mlp_post or fam.mlp_down)), l, (B, P, m))
            if has(fam.router):
                add(f"{b}.mlp.hook_router_logits", Routed(sub(fam.router), block), l, (B, P, n_exp))
            if has(fam.experts):
                add(f"{b}.mlp.hook_expert_indices", Routed(sub(fam.experts), block, 1), l, (B, P, top_k))
                add(f"{b}.mlp.hook_expert_weights", Routed(sub(fam.experts), block, 2), l, (B, P, top_k))
            if has(fam.norms.get("ln2_post")):
                add_norm(f"{b}.ln2_post", sub(fam.norms["ln2_post"]), l)
            if fam.mlp_out_flat:  # the MLP returns token rows [batch * pos, d_model] (Llama 4's MoE)
                add(f"{b}.hook_mlp_out", TokenRows("out", sub(fam.mlp_out)), l, (B, P, d))
            else:
                add(f"{b}.hook_mlp_out", Whole("out", sub(fam.mlp_out), copy=fam.mlp_out_copied), l, (B, P, d))
        flat_from = None
        add(f"{b}.hook_resid_post", stream("out", block), l, resid)

    fam = base
    if fam.ln_final:
        add_norm("ln_final", hf_model.get_submodule(fam.ln_final), None, blocks[-1] if fam.ln_embed else None,
                 is_norm=fam.ln_final_scale)
    return pts


def numel(shape: tuple, batch: int, pos: int, k_pos: int | None = None) -> int | None:
    """Elements in an activation of ``shape`` for ``batch`` sequences of ``pos`` tokens attending to ``k_pos`` keys
    (default ``pos``; more on a KV-cache step). None when an axis is a name the table cannot size."""
    sizes = {B: batch, P: pos, K: pos if k_pos is None else k_pos}
    n = 1
    for s in shape:
        s = sizes.get(s, s)
        if not isinstance(s, int):
            return None
        n *= s
    return n
