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
from .families.base import has_module
from .hooks import AttnInternal, Chunk, HeadResult, Heads, HookPoint, NormScale, ResidMid, Site, Stream, TokenRows, Whole

B, P, K = "batch", "pos", "k_pos"

DOCS = {
    "hook_embed": "token embedding (Gemma: already scaled by sqrt(d_model))",
    "hook_pos_embed": "learned positional embedding",
    "hook_resid_pre": "residual stream entering the block",
    "hook_resid_mid": "residual stream after attention, before the MLP (absent in parallel blocks)",
    "hook_resid_post": "residual stream leaving the block",
    "hook_scale": "the norm's divisor sqrt(var + eps), float32",
    "hook_normalized": "the norm's output (after its weight and bias)",
    "attn.hook_q": "query projection, per head, before rotary",
    "attn.hook_k": "key projection, per key/value head, before rotary",
    "attn.hook_v": "value projection, per key/value head",
    "attn.hook_rot_q": "query after rotary (and q-norm); what the scores use",
    "attn.hook_rot_k": "key after rotary (and k-norm), including cached positions",
    "attn.hook_attn_scores": "scaled, soft-capped, masked scores before softmax",
    "attn.hook_pattern": "attention probabilities after softmax, before dropout",
    "attn.hook_z": "per-head weighted sum of values (input of the output projection)",
    "attn.hook_result": "per-head output z_h @ W_O[h] (opt-in, read-only, no bias)",
    "hook_attn_out": "what attention adds to the residual",
    "mlp.hook_pre": "MLP pre-activation (gated MLPs: the gate projection)",
    "mlp.hook_pre_linear": "gated MLPs: the linear (up) projection",
    "mlp.hook_post": "MLP hidden activation (input of the output projection)",
    "hook_mlp_out": "what the MLP adds to the residual",
    "hook_mixer_out": "hybrids: what the block's non-attention token mixer (Mamba, linear attention, convolution) "
    "outputs",
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
    text_config = hf_model.config.get_text_config()
    h, kv, dh, d = cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model

    def add(name: str, site: Site, layer: int | None, shape: tuple) -> None:
        pts[name] = HookPoint(name, site, layer, shape, _doc(name))

    dr = d * getattr(text_config, fam.hyper_streams) if fam.hyper_streams else d  # residual width

    def add_norm(prefix: str, module: nn.Module, layer: int | None, scale: bool = True) -> None:
        if scale:
            add(f"{prefix}.hook_scale", NormScale(module, centred=fam.norm_type == "LN"), layer, (B, P, 1))
        add(f"{prefix}.hook_normalized", Whole("out", module), layer, (B, P, d))

    add("hook_embed", Whole("out", hf_model.get_submodule(fam.embed)), None, (B, P, d))
    if fam.pos_embed:
        add("hook_pos_embed", Whole("out", hf_model.get_submodule(fam.pos_embed)), None, (B, P, d))

    def add_attention(b: str, block: nn.Module, l: int) -> None:
        sub = block.get_submodule
        attn_mod = sub(fam.attn)
        # sizes read per block: Gemma 4's full-attention blocks have wider heads and fewer kv heads, dots3's
        # sliding blocks fewer heads; MLA values (hook_z) are narrower than queries and keys
        h = getattr(attn_mod, "num_heads", None) or cfg.n_heads
        dh = getattr(attn_mod, "head_dim", None) or getattr(attn_mod, "qk_head_dim", None) or cfg.d_head
        groups = getattr(attn_mod, "num_key_value_groups", None)
        kv = cfg.n_kv_heads if cfg.n_kv_heads == 1 or not groups else h // groups
        attention.register_module(attn_mod, softmax_native=fam.softmax == "native", n_rep=h // kv)
        if fam.qkv_layout == "separate":
            q, k, v = (Heads("out", block.get_submodule(p) if has_module(block, p) else None, n, dh)
                       for p, n in ((fam.q, h), (fam.k, kv), (fam.v, kv)))
            if fam.q_gated:
                q = Heads("out", sub(fam.q), h, dh, part=0, parts=2)
        elif fam.qkv_layout == "split":
            fused = sub(fam.qkv)
            q = Heads("out", fused, h, dh, 0, h * dh)
            k = Heads("out", fused, kv, dh, h * dh, (h + kv) * dh)
            v = Heads("out", fused, kv, dh, (h + kv) * dh, (h + 2 * kv) * dh)
        else:
            fused = sub(fam.qkv)
            q, k, v = (Heads("out", fused, h, dh, part=i) for i in range(3))
        for name, site, n in (("q", q, h), ("k", k, kv), ("v", v, kv)):
            if fam.qkv_layout != "separate" or has_module(block, getattr(fam, name)):  # KV-sharing layers have no k/v
                add(f"{b}.attn.hook_{name}", site, l, (B, P, n, dh))
        if fam.rotary:
            add(f"{b}.attn.hook_rot_q", AttnInternal(attn_mod, "rot_q"), l, (B, P, h, dh))
            add(f"{b}.attn.hook_rot_k", AttnInternal(attn_mod, "rot_k"), l, (B, K, kv, dh))
        add(f"{b}.attn.hook_attn_scores", AttnInternal(attn_mod, "attn_scores"), l, (B, h, P, K))
        add(f"{b}.attn.hook_pattern", AttnInternal(attn_mod, "pattern"), l, (B, h, P, K))
        o_proj = sub(fam.o)
        dz = linear_in_out(o_proj)[0] // h
        add(f"{b}.attn.hook_z", Heads("in", o_proj, h, dz), l, (B, P, h, dz))
        if use_attn_result:
            add(f"{b}.attn.hook_result", HeadResult(o_proj, h, dz), l, (B, P, h, d))
        if "ln1_post" in fam.norms:
            add_norm(f"{b}.ln1_post", sub(fam.norms["ln1_post"]), l)
        add(f"{b}.hook_attn_out", Whole("out", sub(fam.attn_out)), l, (B, P, d))

    for l, block in enumerate(blocks):
        b = f"blocks.{l}"
        sub = block.get_submodule
        has = partial(has_module, block)
        resid = partial(Stream, index=fam.resid_stream) if fam.resid_stream is not None else Whole
        add(f"{b}.hook_resid_pre", resid("in", block), l, (B, P, dr))
        if has(fam.norms.get("ln1")):
            add_norm(f"{b}.ln1", sub(fam.norms["ln1"]), l)
        if fam.has_group(text_config, block, l, "attn"):
            add_attention(b, block, l)
        if fam.has_group(text_config, block, l, "mixer"):
            add(f"{b}.hook_mixer_out", Whole("out", sub(fam.mixer)), l, (B, P, d))
        if has(fam.resid_mid):
            mid = ResidMid(sub(fam.resid_mid), block) if fam.resid_mid_reused else Whole("in", sub(fam.resid_mid))
            add(f"{b}.hook_resid_mid", mid, l, (B, P, dr))
        if has(fam.norms.get("ln2")):
            add_norm(f"{b}.ln2", sub(fam.norms["ln2"]), l)
        if fam.has_group(text_config, block, l, "mlp"):
            m = linear_in_out(sub(fam.mlp_down))[0] if has(fam.mlp_down) else cfg.d_mlp  # widths may vary by block
            if has(fam.mlp_gate_up):
                gate_up = sub(fam.mlp_gate_up)
                add(f"{b}.mlp.hook_pre", Chunk("out", gate_up, 0, m), l, (B, P, m))
                add(f"{b}.mlp.hook_pre_linear", Chunk("out", gate_up, m, 2 * m), l, (B, P, m))
            elif has(fam.mlp_gate):
                add(f"{b}.mlp.hook_pre", Whole("out", sub(fam.mlp_gate)), l, (B, P, m))
                add(f"{b}.mlp.hook_pre_linear", Whole("out", sub(fam.mlp_in)), l, (B, P, m))
            elif has(fam.mlp_in):
                add(f"{b}.mlp.hook_pre", Whole("out", sub(fam.mlp_in)), l, (B, P, m))
            if has(fam.mlp_down):
                add(f"{b}.mlp.hook_post", Whole("in", sub(fam.mlp_down)), l, (B, P, m))
            if has(fam.norms.get("ln2_post")):
                add_norm(f"{b}.ln2_post", sub(fam.norms["ln2_post"]), l)
            mlp_out = (TokenRows if fam.mlp_out_flat else Whole)("out", sub(fam.mlp_out))
            add(f"{b}.hook_mlp_out", mlp_out, l, (B, P, d))
        add(f"{b}.hook_resid_post", resid("out", block), l, (B, P, dr))

    add_norm("ln_final", hf_model.get_submodule(fam.ln_final), None, scale=fam.ln_final_scale)
    return pts


def numel(shape: tuple, batch: int, pos: int) -> int:
    """Elements in an activation of ``shape`` for ``batch`` sequences of ``pos`` tokens."""
    n = 1
    for s in shape:
        n *= batch if s == B else pos if s in (P, K) else s
    return n
