"""The fused / sparse TopK path: encode to ``(top_acts, top_indices)`` and decode from them without a dense
``(batch, d_sae)`` latent tensor in the decoder or in either backward (after sparsify's ``fused_encoder.py`` and
``utils.decoder_impl``).

Why: with ``k << d_sae`` the dense path spends most of a step on ``(batch, d_sae)`` tensors that are almost all
zeros — the scatter into dense latents, the decoder matmul over them, and in the backward two more dense matmuls
(``grad_out @ W_dec.T`` and ``x.T @ grad_pre``). Here

- :func:`fused_topk_encode` computes ``pre = x @ W_enc + b_enc`` (the one dense matmul, needed to choose the
  top ``k``), keeps only ``top_acts, top_indices (batch, k)``, and its backward sends gradients to ``W_enc`` and
  ``b_enc`` only through the ``k`` chosen latents per row (a CSR sparse-dense product) and to ``x`` by an
  embedding-bag over ``W_enc``'s chosen columns;
- :func:`sparse_decode` is ``sum_j top_acts[:, j] * W_dec[top_indices[:, j]]`` (``embedding_bag``), whose
  backward touches only the used rows of ``W_dec`` (CSR sparse-dense product) and gathers the gradient of each
  chosen activation.

The reference is the dense ``linear -> topk -> linear`` path of :class:`~mechscope.sae.sae.TopKSAE`
(``sae.fused = False``); ``tests/test_sae_kernels.py`` checks outputs and every gradient agree.
:func:`topk_exact` is an exact, tie-safe alternative to ``torch.topk`` that first bounds the ``k``-th value by
block maxima (see its docstring); it is checked against ``torch.topk``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fused_topk_encode", "sparse_decode", "topk_exact", "csr_transpose_mm"]


# ------------------------------------------------------------------------------------------ top-k
def topk_exact(pre: Tensor, k: int, block: int = 32) -> tuple[Tensor, Tensor]:
    """The ``k`` largest entries per row of ``pre (batch, n)``: ``(values, indices)``, each ``(batch, k)``, in no
    particular order — the same *set* as ``pre.topk(k, sorted=False)`` (exactly; not an approximation).

    How: the row's ``n / block`` block maxima are ``n / block`` distinct entries, so the ``k``-th largest block
    maximum ``t`` is a lower bound for the row's ``k``-th largest entry. Only entries ``>= t`` can be in the top
    ``k`` (on Gaussian-like rows about ``1.4 k`` of them); they are compacted into a ``(batch, C)`` tensor and a
    plain ``topk`` runs over that. Falls back to ``torch.topk`` when ``n`` is not a multiple of ``block`` or
    ``k > n / block``. Rows with ties at the k-th value may pick a different (equally valid) member of the tie."""
    B, n = pre.shape
    if n % block or k > n // block or B == 0 or not pre.is_floating_point():
        return pre.topk(k, dim=-1, sorted=False)
    t = pre.view(B, n // block, block).amax(-1).topk(k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
    mask = pre >= t
    counts = mask.sum(1)
    nz = mask.nonzero()
    r, c = nz[:, 0], nz[:, 1]
    start = counts.cumsum(0) - counts
    pos = torch.arange(nz.shape[0], device=pre.device) - start[r]
    C = int(counts.max())
    vals = torch.full((B, C), -torch.inf, dtype=pre.dtype, device=pre.device)
    vals[r, pos] = pre[r, c]
    cols = torch.zeros((B, C), dtype=torch.long, device=pre.device)
    cols[r, pos] = c
    top_v, top_j = vals.topk(k, dim=-1, sorted=False)
    return top_v, cols.gather(1, top_j)


# ------------------------------------------------------------------------------------------ sparse products
def csr_transpose_mm(indices: Tensor, values: Tensor, dense: Tensor, n_cols: int) -> Tensor:
    """``G.T @ dense`` for the sparse ``G (batch, n_cols)`` with ``G[i, indices[i, j]] = values[i, j]``:
    ``(n_cols, dense.shape[1])``. Built as a CSR matrix of ``G.T`` (rows = latents), so the cost is
    ``nnz * dense.shape[1]`` multiply-adds, not ``batch * n_cols * dense.shape[1]``. Duplicate indices in a row add.
    Runs on one CPU thread (see :class:`_one_thread`)."""
    with _one_thread(indices):
        return _csr_transpose_mm(indices, values, dense, n_cols)


def _csr_transpose_mm(indices: Tensor, values: Tensor, dense: Tensor, n_cols: int) -> Tensor:
    B, k = indices.shape
    flat = indices.reshape(-1)
    # an unstable int32 sort is ~10x faster than a stable int64 argsort on CPU; the order of equal latents
    # only changes the order of a row's summands
    small = n_cols < 2**31 and B * k < 2**31
    order = (flat.to(torch.int32) if small else flat).sort().indices
    itype = torch.int32 if small else torch.int64
    counts = torch.bincount(flat, minlength=n_cols)
    crow = torch.zeros(n_cols + 1, dtype=itype, device=indices.device)
    crow[1:] = counts.cumsum(0)
    rows = torch.div(order, k, rounding_mode="floor").to(itype)
    vals = values.reshape(-1)[order].to(dense.dtype)
    if dense.device.type == "cpu" and dense.dtype in (torch.bfloat16, torch.float16):
        # CPU CSR products do not take half types; accumulate in fp32 (as autocast would)
        return _csr_mm(crow, rows, vals.float(), dense.float(), n_cols, B).to(dense.dtype)
    return _csr_mm(crow, rows, vals, dense, n_cols, B)


class _one_thread:
    """Run a CPU block on one intra-op thread: torch's parallel 1-D sort of ~10^5 ints takes ~1 ms on one
    thread and, measured on the shared 2-core machine, 100x longer on two; the whole sparse product of the
    benchmark shape takes ~14 ms on one thread against ~95 ms on two."""

    def __init__(self, t: Tensor) -> None:
        self.cpu = t.device.type == "cpu"

    def __enter__(self):
        if self.cpu:
            self.n = torch.get_num_threads()
            if self.n != 1:
                torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.cpu and self.n != 1:
            torch.set_num_threads(self.n)


def _csr_mm(crow: Tensor, rows: Tensor, vals: Tensor, dense: Tensor, n_cols: int, B: int) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        M = torch.sparse_csr_tensor(crow, rows, vals, size=(n_cols, B), check_invariants=False)
        return M @ dense


def _bag(indices: Tensor, values: Tensor, table: Tensor) -> Tensor:
    """``sum_j values[:, j] * table[indices[:, j]]`` -> ``(batch, table.shape[1])``."""
    if indices.shape[1] == 0:
        return table.new_zeros(indices.shape[0], table.shape[1])
    if table.device.type == "cpu" and table.dtype in (torch.bfloat16, torch.float16):
        return F.embedding_bag(indices, table.float(), per_sample_weights=values.float(), mode="sum").to(table.dtype)
    return F.embedding_bag(indices, table, per_sample_weights=values.to(table.dtype), mode="sum")


# ------------------------------------------------------------------------------------------ decoder
_GATHER_ROWS = 256
"""Rows per chunk of :func:`_gathered_dots_bmm`: the gathered ``(rows, k, d_out)`` block stays in cache (256 rows
of the benchmark shape: 4 MiB; measured ~2.5x faster than one gather over the whole batch)."""


def _gathered_dots(indices: Tensor, table: Tensor, vec: Tensor) -> Tensor:
    """``out[i, j] = table[indices[i, j]] . vec[i]`` -> ``(batch, k)``: a sampled dense-dense product (SDDMM) of
    ``vec @ table.T`` at the pattern ``indices`` (``torch.sparse.sampled_addmm`` on a CSR pattern; measured 1.4 ms
    against 17 ms for gather-then-bmm on the benchmark shape, 2 CPU threads). Half types on CPU, which the sparse
    kernel does not take, go through :func:`_gathered_dots_bmm`."""
    B, k = indices.shape
    if B == 0 or k == 0 or (table.device.type == "cpu" and table.dtype not in (torch.float32, torch.float64)):
        return _gathered_dots_bmm(indices, table, vec)
    crow = torch.arange(0, B * k + 1, k, device=indices.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(crow, indices.reshape(-1), torch.zeros(B * k, dtype=table.dtype,
                                          device=table.device), size=(B, table.shape[0]), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, vec.to(table.dtype), table.t(), beta=0).values().view(B, k)


def _gathered_dots_bmm(indices: Tensor, table: Tensor, vec: Tensor) -> Tensor:
    """:func:`_gathered_dots` as gather then batched matrix-vector products, in row chunks."""
    B, k = indices.shape
    out = torch.empty(B, k, 1, dtype=table.dtype, device=table.device)
    for s in range(0, B, _GATHER_ROWS):
        idx = indices[s:s + _GATHER_ROWS]
        rows = torch.index_select(table, 0, idx.reshape(-1)).view(idx.shape[0], k, -1)
        torch.bmm(rows, vec[s:s + _GATHER_ROWS].unsqueeze(-1), out=out[s:s + _GATHER_ROWS])
    return out.squeeze(-1)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, top_indices: Tensor, top_acts: Tensor, W_dec: Tensor) -> Tensor:
        ctx.save_for_backward(top_indices, top_acts, W_dec)
        return _bag(top_indices, top_acts, W_dec)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        top_indices, top_acts, W_dec = ctx.saved_tensors
        grad_acts = grad_W = None
        if ctx.needs_input_grad[1]:
            # d out_i / d acts_ij = W_dec[idx_ij]: a gathered dot product, (batch, k)
            grad_acts = _gathered_dots(top_indices, W_dec, grad_out.to(W_dec.dtype)).to(top_acts.dtype)
        if ctx.needs_input_grad[2]:
            grad_W = csr_transpose_mm(top_indices, top_acts, grad_out.to(W_dec.dtype), W_dec.shape[0])
        return None, grad_acts, grad_W


def sparse_decode(top_indices: Tensor, top_acts: Tensor, W_dec: Tensor) -> Tensor:
    """``(batch, d_out)``: ``sum_j top_acts[:, j] * W_dec[top_indices[:, j]]`` (no ``b_dec``), for
    ``top_indices, top_acts (batch, k)`` and ``W_dec (d_sae, d_out)``. Backward: ``W_dec``'s gradient only on
    used rows; each activation's gradient a gathered dot product."""
    return _SparseDecode.apply(top_indices, top_acts, W_dec)


# ------------------------------------------------------------------------------------------ encoder
_ENCODE_ROWS = 512
"""Rows per chunk of the fused encoder's forward (matmul then top-k while the chunk's ``(rows, d_sae)``
pre-activations are in cache; ~10% faster than whole-batch on the benchmark shape, measured on one thread)."""


class _FusedTopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, aux_mask: Tensor | None, k_aux: int,
                fast_topk: bool, b_dec: Tensor | None):
        if b_dec is not None:
            x = x - b_dec
        B = x.shape[0]
        use_aux = aux_mask is not None and k_aux > 0
        top_v = torch.empty(B, k, dtype=W_enc.dtype, device=x.device)
        top_i = torch.empty(B, k, dtype=torch.long, device=x.device)
        aux_v = torch.empty(B, k_aux if use_aux else 0, dtype=W_enc.dtype, device=x.device)
        aux_i = torch.empty(B, k_aux if use_aux else 0, dtype=torch.long, device=x.device)
        for s in range(0, B, _ENCODE_ROWS):  # row chunks: each chunk's pre-activations stay in cache
            xs = x[s:s + _ENCODE_ROWS]
            # fp32: addmm; half types: round as the reference's `x @ W_enc + b_enc` does, so near-ties pick alike
            pre = torch.addmm(b_enc, xs, W_enc) if x.dtype == torch.float32 else xs @ W_enc + b_enc
            if pre.dtype != top_v.dtype:  # autocast (the trainer's bf16 on CUDA) ran the matmul in half precision
                pre = pre.to(top_v.dtype)
            if fast_topk:
                top_v[s:s + _ENCODE_ROWS], top_i[s:s + _ENCODE_ROWS] = topk_exact(pre, k)
            else:
                torch.topk(pre, k, dim=-1, sorted=False, out=(top_v[s:s + _ENCODE_ROWS], top_i[s:s + _ENCODE_ROWS]))
            if use_aux:
                masked = pre.masked_fill_(~aux_mask, -torch.inf)  # pre is not needed after this point
                torch.topk(masked, k_aux, dim=-1, sorted=False,
                           out=(aux_v[s:s + _ENCODE_ROWS], aux_i[s:s + _ENCODE_ROWS]))
        top_acts = torch.relu_(top_v)
        aux_acts = torch.relu_(aux_v)
        ctx.save_for_backward(x, W_enc, top_i, top_acts, aux_i, aux_acts)
        ctx.has_b_dec = b_dec is not None
        ctx.mark_non_differentiable(top_i, aux_i)
        return top_acts, top_i, aux_acts, aux_i

    @staticmethod
    def backward(ctx, g_top: Tensor, _gi, g_aux: Tensor, _ga):
        x, W_enc, top_i, top_acts, aux_i, aux_acts = ctx.saved_tensors
        # ReLU: no gradient where the chosen activation is 0
        g = [torch.where(top_acts > 0, g_top, 0)] if g_top is not None else [torch.zeros_like(top_acts)]
        idx = [top_i]
        if aux_i.shape[1] and g_aux is not None:
            g.append(torch.where(aux_acts > 0, g_aux, 0))
            idx.append(aux_i)
        g = torch.cat(g, 1) if len(g) > 1 else g[0]
        idx = torch.cat(idx, 1) if len(idx) > 1 else idx[0]
        grad_x = grad_W = grad_b = grad_b_dec = None
        if ctx.needs_input_grad[0]:
            grad_x = _bag(idx, g, W_enc.t().contiguous()).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_W = csr_transpose_mm(idx, g, x.to(W_enc.dtype), W_enc.shape[1]).t().contiguous()
        if ctx.needs_input_grad[2] or (ctx.has_b_dec and ctx.needs_input_grad[7]):
            grad_b = torch.zeros(W_enc.shape[1], dtype=torch.float32, device=g.device)
            grad_b.index_add_(0, idx.reshape(-1), g.reshape(-1).float())
            if ctx.has_b_dec and ctx.needs_input_grad[7]:
                # b_dec enters every row as -b_dec: its gradient is -(sum of rows' grad_pre) @ W_enc.T
                grad_b_dec = -(W_enc.float() @ grad_b).to(W_enc.dtype)
            grad_b = grad_b.to(W_enc.dtype) if ctx.needs_input_grad[2] else None
        return grad_x, grad_W, grad_b, None, None, None, None, grad_b_dec


def fused_topk_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, *, aux_mask: Tensor | None = None,
                      k_aux: int = 0, fast_topk: bool = False,
                      b_dec: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """TopK encoder without a dense latent tensor in the backward.

    ``x (batch, d_in)``, ``W_enc (d_in, d_sae)``, ``b_enc (d_sae,)`` -> ``top_acts, top_indices (batch, k)``
    (``relu`` of the ``k`` largest pre-activations) and, when ``aux_mask (d_sae,)`` bool and ``k_aux > 0`` are
    given (AuxK's dead latents), ``aux_acts, aux_indices (batch, k_aux)``: the ``k_aux`` largest
    pre-activations among the masked latents, ReLU'd (empty ``(batch, 0)`` otherwise). Gradients reach ``x``,
    ``W_enc`` and ``b_enc`` only through the chosen latents. ``fast_topk`` selects with :func:`topk_exact`.
    ``b_dec (d_in,)``, when given, is subtracted from ``x`` first (an autoencoder's ``apply_b_dec_to_input``);
    its gradient then costs one ``(d_in, d_sae)`` matrix-vector product instead of a per-row input gradient."""
    return _FusedTopKEncode.apply(x, W_enc, b_enc, k, aux_mask, k_aux, fast_topk, b_dec)
