"""Weight views in TransformerLens's layouts, read from the HF parameters (stacked over layers).

Shapes: ``W_E [d_vocab, d_model]``, ``W_pos [n_ctx, d_model]``, ``W_U [d_model, d_vocab]``, ``b_U [d_vocab]``,
``W_Q [layer, head, d_model, d_head]``, ``W_K``/``W_V [layer, kv_head, d_model, d_head]`` (under GQA query head h
reads kv head ``h // (n_heads // n_kv_heads)``), ``b_Q [layer, head, d_head]``, ``W_O [layer, head, d_head, d_model]``,
``b_O [layer, d_model]``, ``W_in``/``W_gate [layer, d_model, d_mlp]``, ``W_out [layer, d_mlp, d_model]``.
Missing biases are zeros. Tensors are computed from the parameters (gradients flow to them).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .devices import execution_device, parameter
from .errors import WeightLayoutError
from .families.base import has_module, resolve


def _real(module: nn.Module, name: str) -> Tensor | None:
    """``module.<name>`` itself, or, where accelerate offloaded it (a ``meta`` tensor outside the forward), the real
    tensor from the offload map on the module's execution device."""
    t = getattr(module, name, None)
    if not isinstance(t, Tensor) or t.device.type != "meta":
        return t
    return parameter(module, name, execution_device(module) or torch.device("cpu"))


def _io(module: nn.Module) -> Tensor:
    """Weight as ``[in, out]`` for ``nn.Linear`` (stored ``[out, in]``) and GPT-2's ``Conv1D`` (stored ``[in, out]``)."""
    w = _real(module, "weight")
    return w if type(module).__name__ == "Conv1D" else w.T


def _bias(module: nn.Module, n_out: int, like: Tensor) -> Tensor:
    b = _real(module, "bias")
    return b if b is not None else torch.zeros(n_out, dtype=like.dtype, device=like.device)


def _attn_blocks(model, what: str) -> list[nn.Module]:
    """Every block, when every block has attention; a stacked ``[layer, ...]`` view would misnumber layers otherwise."""
    cfg = model.cfg
    if len(cfg.attn_layers) != cfg.n_layers:
        raise WeightLayoutError(
            f"{what} is stacked over all {cfg.n_layers} layers, but this {cfg.family} model has attention only in "
            f"blocks {list(cfg.attn_layers)}; read one layer's weights from model.blocks[l] "
            f"(model.family.q/k/v/o name the projections)."
        )
    fam = model.family
    proj = dict(zip(("W_Q", "W_K", "W_V"), (fam.q, fam.k, fam.v))).get(what, fam.o)
    for l, block in enumerate(model.blocks):
        attn = resolve(block, fam.attn)
        h = getattr(attn, "num_heads", None) or cfg.n_heads
        groups = getattr(attn, "num_key_value_groups", None)
        sizes = (h, cfg.n_kv_heads if cfg.n_kv_heads == 1 or not groups else h // groups,
                 getattr(attn, "qk_head_dim", None) or getattr(attn, "head_dim", None) or cfg.d_head,
                 _io(resolve(block, fam.o)).shape[0] // h)
        summary = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_head_v)
        relevant = {"W_Q": (0, 2), "W_K": (1, 2), "W_V": (1, 3)}.get(what, (0, 3))  # heads, kv heads, widths
        if any(sizes[i] != summary[i] for i in relevant):
            raise WeightLayoutError(
                f"{what} is stacked over layers as [layer, head, d_model, d_head], but block {l} of this {cfg.family} "
                f"model has {sizes[0]} heads, {sizes[1]} kv heads, query/key width {sizes[2]} and value width "
                f"{sizes[3]} (the model's summary: {cfg.n_heads}, {cfg.n_kv_heads}, {cfg.d_head}, {cfg.d_head_v}); read "
                f"the weights per layer, from model.blocks[{l}] (model.family.q/k/v/o name the projections)."
            )
        if fam.qkv_layout == "separate" and not has_module(block, proj):
            raise WeightLayoutError(
                f"{what} does not exist for block {l} of this {cfg.family} model: it has no {what[-1]} projection of "
                "its own (it reuses another layer's keys and values, its values are its keys, or keys and values come "
                "from a shared latent); read the projections from model.blocks."
            )
        if fam.qkv_layout == "separate" and what != "W_O" and _io(resolve(block, proj)).shape[0] != cfg.d_model:
            raise WeightLayoutError(
                f"{what} does not exist for block {l} of this {cfg.family} model: its {proj} reads a latent, not the "
                "residual stream (multi-head latent attention); read the projections from model.blocks."
            )
    return list(model.blocks)


def _qkv_parts(model, block: nn.Module, which: int) -> tuple[Tensor, Tensor]:
    """(W [d_model, n*d_head], b [n*d_head]) of q (0), k (1) or v (2) in one block."""
    fam, cfg = model.family, model.cfg
    h, kv, dh = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
    if fam.qkv_layout == "latent":
        raise WeightLayoutError(
            f"{cfg.family} builds its queries, keys and values inside attention (Multi-head Latent Attention expands "
            "them from a shared latent through low-rank projections; Zaya convolves them), so there is no per-head "
            "d_model → d_head matrix to return as W_Q/W_K/W_V; read the projections from model.hf_model directly "
            "(e.g. q_a_proj/q_b_proj, kv_a_proj_with_mqa/kv_b_proj), or the activations at hook_rot_q/hook_rot_k."
        )
    if fam.qkv_layout == "separate":
        path = (fam.q, fam.k, fam.v)[which]
        if path is None:
            raise AttributeError(
                f"{cfg.family} has no {('W_Q', 'W_K', 'W_V')[which]}: its keys and values are expanded from a shared "
                "latent (multi-head latent attention); read the latent projections from model.blocks[l] directly."
            )
        mod = resolve(block, path)
        w = _io(mod)
        b = _bias(mod, w.shape[1], w)
        if fam.q_gated and which == 0:  # [heads, query | gate, d_head]: keep the query half
            return w.unflatten(1, (h, 2, dh))[:, :, 0].flatten(1), b.unflatten(0, (h, 2, dh))[:, 0].flatten()
        return w, b
    mod = resolve(block, fam.qkv)
    w = _io(mod)
    b = _bias(mod, w.shape[1], w)
    if fam.qkv_layout == "split":
        bounds = (0, h * dh, (h + kv) * dh, (h + 2 * kv) * dh)
        lo, hi = bounds[which], bounds[which + 1]
        return w[:, lo:hi], b[lo:hi]
    g = fam.qkv_groups or h
    part = fam.qkv_order.index("qkv"[which])
    return (w.unflatten(1, (g, 3, h // g * dh))[:, :, part, :].flatten(1),
            b.unflatten(0, (g, 3, h // g * dh))[:, part, :].flatten())


def _stack(model, ts: list[Tensor]) -> Tensor:
    """Stack per-layer weights; layers of different head geometry (Inkling's sliding layers) cannot be stacked."""
    if len({t.shape for t in ts}) > 1:
        raise WeightLayoutError(
            f"{model.cfg.family}'s layers differ in head count or width, so its weights cannot be stacked over "
            "layers; read them per layer from model.blocks[layer] (e.g. model.blocks[0].self_attn.q_proj.weight)."
        )
    return torch.stack(ts)


def qkv_weights(model, which: int) -> tuple[Tensor, Tensor]:
    """``W`` (layer, head, d_model, d_head) and ``b`` (layer, head, d_head) for q (0), k (1) or v (2)."""
    ws, bs = [], []
    dh = model.cfg.d_head_v if which == 2 else model.cfg.d_head
    for block in _attn_blocks(model, ("W_Q", "W_K", "W_V")[which]):
        w, b = _qkv_parts(model, block, which)
        ws.append(w.unflatten(1, (-1, dh)).permute(1, 0, 2))
        bs.append(b.unflatten(0, (-1, dh)))
    return _stack(model, ws), _stack(model, bs)


def o_weights(model) -> tuple[Tensor, Tensor]:
    """``W_O`` (layer, head, d_head, d_model) and ``b_O`` (layer, d_model)."""
    ws, bs = [], []
    for block in _attn_blocks(model, "W_O"):
        mod = resolve(block, model.family.o)
        w = _io(mod)
        ws.append(w.unflatten(0, (model.cfg.n_heads, model.cfg.d_head_v)))
        bs.append(_bias(mod, w.shape[1], w))
    return _stack(model, ws), _stack(model, bs)


def _mlp_blocks(model) -> list[nn.Module]:
    """Every block, when every block has a dense MLP (hybrids mix dense, MoE and MLP-less blocks)."""
    missing = [l for l, b in enumerate(model.blocks) if not has_module(b, model.family.mlp_down)]
    if missing:
        raise AttributeError(
            f"MLP weights are stacked over all {model.cfg.n_layers} layers, but blocks {missing} of this "
            f"{model.cfg.family} model have no dense MLP"
            + (" (mixture-of-experts blocks have no single W_in/W_gate/W_out)" if model.family.moe else "")
            + "; read one layer's weights (or the experts') from model.blocks[l]."
        )
    widths = {_io(resolve(b, model.family.mlp_down)).shape[0] for b in model.blocks}
    if len(widths) > 1:
        raise WeightLayoutError(
            f"MLP weights are stacked over layers, but the MLP widths of this {model.cfg.family} model differ by block "
            f"({sorted(widths)}); read one layer's weights from model.blocks[l]."
        )
    return list(model.blocks)


def mlp_weight(model, which: str) -> Tensor | None:
    """``in`` (d_model→d_mlp; the up projection of gated MLPs), ``gate``, or ``out`` (d_mlp→d_model), stacked."""
    fam, m = model.family, model.cfg.d_mlp
    if fam.mlp_down is None:
        return None
    out = []
    for block in _mlp_blocks(model):
        if which == "out":
            out.append(_io(resolve(block, fam.mlp_down)))
        elif fam.mlp_gate_up:
            w = _io(resolve(block, fam.mlp_gate_up))
            out.append(w[:, :m] if which == "gate" else w[:, m:])
        else:
            path = fam.mlp_gate if which == "gate" else fam.mlp_in
            if path is None:
                return None
            out.append(_io(resolve(block, path)))
    return torch.stack(out)


def mlp_bias(model, which: str) -> Tensor | None:
    """``b_in`` (layer, d_mlp) or ``b_out`` (layer, d_model); zeros where the model has none."""
    fam = model.family
    path = fam.mlp_down if which == "out" else (fam.mlp_in or fam.mlp_gate_up)
    if path is None or fam.mlp_down is None:
        return None
    bs = []
    for block in _mlp_blocks(model):
        mod = resolve(block, path)
        w = _io(mod)
        b = _bias(mod, w.shape[1], w)
        bs.append(b[model.cfg.d_mlp:] if fam.mlp_gate_up and which == "in" else b)
    return torch.stack(bs)
