"""Edge attribution patching: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024), with exact edge patching beside
them as the reference.

The score of an edge ``u → r`` (sender ``u``, receiver ``r`` of a ``Graph``) is the first-order estimate of what
ablating that one edge does to the metric,

    score(u → r) = Σ_batch,pos (a_u(corrupted) − a_u(clean)) · ∂metric/∂(input of r),

where ``a_u`` is what ``u`` writes into the residual stream and the gradient is taken per receiver: per head and per
q/k/v input, through the model's own input norm and projection (exact autograd on the receiver's own copy of the
stream, ``graph.EdgeRun``), per MLP through its input norm, for the logits at the final residual. EAP takes the
gradient on the clean run, in one backward. EAP-IG averages it over ``ig_steps`` runs whose input embeddings
(``blocks.0.hook_resid_pre``) are interpolated, ``corrupted + k/ig_steps · (clean − corrupted)`` for
``k = 0 .. ig_steps − 1``, exactly as Hanna et al.'s ``get_scores_eap_ig``. ``method="exact"`` ablates each edge on
its own (one forward per edge, batched by ``run_variants``): score = metric(edge ablated) − metric(clean), the
quantity EAP estimates, so the two are directly comparable.

Where we differ from Hanna et al.'s code: scores are summed over batch and positions with the metric reducing the
batch as it likes (their code sums then divides by the number of prompts; with a batch-mean metric the two agree),
and a score has the sign of the metric's change (ablating an edge the task needs scores negative for a logit
difference). Circuits pick edges by absolute score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name
from ..memory import HEADROOM, CacheMemoryError, format_bytes, free_bytes
from .engine import run_variants
from .graph import EdgeRun, Graph

METHODS = ("eap", "eap-ig", "exact")
EXACT_LIMIT = 5000
"""Edges ``method="exact"`` scores without an explicit ``edges`` mask (one forward each)."""


@dataclass
class EdgeScores:
    """Scores of every edge of ``graph``: ``scores [n_senders, n_receivers]`` (0 where there is no edge;
    ``graph.valid`` says which exist). ``clean``/``corrupted``: the metric on the two runs."""

    graph: Graph
    scores: Tensor
    method: str
    clean: float
    corrupted: float
    ig_steps: int | None = None
    meta: dict = field(default_factory=dict)

    def __getitem__(self, edge: str) -> float:
        """``scores["a0.h3->a1.h5<k>"]``."""
        mask = self.graph.edge_mask([edge])
        return float(self.scores[mask][0])

    def top(self, k: int = 10, *, absolute: bool = True) -> list[tuple[str, float]]:
        """The ``k`` edges with the largest (absolute) scores, as ``("sender->receiver", score)``."""
        v = self.scores.double().where(self.graph.valid, torch.nan)
        key = (v.abs() if absolute else v).nan_to_num(float("-inf")).flatten()
        order = key.argsort(descending=True)[:k]
        n = self.graph.n_receivers
        return [(self.graph.edge_name(int(i) // n, int(i) % n), float(v.flatten()[i])) for i in order]

    def node_scores(self) -> dict[str, float]:
        """Per sender, the sum of its outgoing edges' scores: a node-level attribution."""
        s = self.scores.double().where(self.graph.valid, 0).sum(1)
        return {n.name: float(v) for n, v in zip(self.graph.senders, s)}

    def to_dict(self) -> dict:
        g = self.graph
        idx = g.valid.nonzero().tolist()
        return {"method": self.method, "ig_steps": self.ig_steps, "clean": self.clean, "corrupted": self.corrupted,
                "edges": [{"source": g.senders[s].name, "receiver": g.receivers[r].name,
                           "score": float(self.scores[s, r])} for s, r in idx]}

    def extract(self, n_edges: int | None = None, threshold: float | None = None, *, absolute: bool = True):
        """``circuit.extract(self, ...)``."""
        from .circuit import extract

        return extract(self, n_edges=n_edges, threshold=threshold, absolute=absolute)

    def __repr__(self) -> str:
        top = ", ".join(f"{e} {v:+.3g}" for e, v in self.top(3))
        return f"EdgeScores({self.method}, {self.graph.n_edges} edges; top: {top})"


def as_pair(model, clean, corrupted) -> tuple[Tensor, Tensor]:
    """Clean and corrupted inputs as token ids of the same shape ``[batch, pos]`` (text is tokenised)."""
    out, masks = [], []
    for what, x in (("clean", clean), ("corrupted", corrupted)):
        mask = None
        if isinstance(x, (str, list)) and not (isinstance(x, list) and x and isinstance(x[0], int)):
            if isinstance(x, list) and len(x) > 1:
                mask = model._batch(x, None, None).attention_mask   # texts of different lengths are padded
            x = model.to_tokens(x)
        elif isinstance(x, list):
            x = torch.tensor([x])
        if not isinstance(x, Tensor):
            raise InputTypeError(f"{what} must be text or token ids [batch, pos], got {type_name(x)}.")
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.dtype not in (torch.long, torch.int32):
            raise InputError(f"{what} must be integer token ids of shape [batch, pos], got {type_name(x)}.")
        out.append(x.to(model.input_device))
        masks.append(mask)
    if out[0].shape != out[1].shape:
        raise InputError(f"clean and corrupted inputs must have the same shape, token for token (edge patching swaps "
                         f"activations position by position), got {tuple(out[0].shape)} and {tuple(out[1].shape)}; "
                         "pick corruptions with the same number of tokens (e.g. ABC names of one token each).")
    if masks[0] is not None or masks[1] is not None:
        a, b = (torch.ones(out[0].shape, dtype=torch.long) if m is None else m.cpu().long() for m in masks)
        if not torch.equal(a, b):
            raise InputError("clean and corrupted texts are padded differently (prompt i has one length clean and "
                             "another corrupted), so positions do not line up; give each pair the same number of "
                             "tokens.")
    return out[0], out[1]


def check_metric(value, metric) -> Tensor:
    if not isinstance(value, Tensor) or value.ndim != 0:
        raise InputError(f"metric must return a 0-d tensor (metric(logits [batch, pos, vocab]) -> scalar), got "
                         f"{type_name(value)}; reduce over the batch, e.g. with .mean().")
    return value


def record(model, graph: Graph, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """One forward with no hooks changing anything: ``(logits, acts [n_senders, batch, pos, d_model])``."""
    run = EdgeRun(graph, record=True)
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=run.hooks())
    return logits, run.acts


def _check_memory(graph: Graph, tokens: Tensor, copies: int, device) -> None:
    b, p = tokens.shape
    d = graph.model.cfg.d_model
    need = 4 * b * p * d * (3 * graph.n_senders + copies * (graph.n_receivers + 4 * len(graph.model.blocks)))
    free = free_bytes(torch.device(device))
    if free is not None and need > HEADROOM * free:
        raise CacheMemoryError(
            f"edge attribution over {graph.n_senders} senders and {graph.n_receivers} receivers for {b} × {p} tokens "
            f"needs about {format_bytes(need)}, but only {format_bytes(free)} is free; use fewer or shorter prompts"
            f"{' or a smaller ig_batch' if copies > 1 else ''}.")


def _gradients(model, graph: Graph, tokens: Tensor, metric, input: Tensor | None, copies: int) -> dict[int, Tensor]:
    """Per receiver group, ∂metric/∂(receiver input) ``[batch, pos, R, d_model]``, summed over ``copies`` stacked
    runs
    (EAP-IG's steps: the metric is applied to each copy's rows and the results summed)."""
    run = EdgeRun(graph, grad=True, input=input)
    toks = tokens.repeat(copies, 1)
    with torch.enable_grad():
        logits = model.run_with_hooks(toks, fwd_hooks=run.hooks())
        total = sum(check_metric(metric(chunk), metric) for chunk in logits.chunk(copies))
        if not total.requires_grad:
            raise InputError("metric's result does not depend on the logits (it has no gradient); compute it from "
                             "the logits passed to it, without .detach() or .item().")
        keys = sorted(run.eps)
        grads = torch.autograd.grad(total, [run.eps[k] for k in keys], allow_unused=True)
    b = tokens.shape[0]
    out = {}
    for k, g in zip(keys, grads):
        if g is None:
            g = torch.zeros_like(run.eps[k])
        out[k] = g.unflatten(0, (copies, b)).sum(0)
    return out


def eap(model, clean, corrupted, metric: Callable[[Tensor], Tensor], *, method: str = "eap", ig_steps: int = 5,
        ig_batch: int | None = None, graph: Graph | None = None, edges: Tensor | None = None) -> EdgeScores:
    """Score every edge of the model's graph for the task ``clean`` vs ``corrupted`` (token ids ``[batch, pos]`` or
    text of equal token counts) under ``metric(logits [batch, pos, vocab]) -> 0-d tensor``.

    ``method``: ``"eap"`` (one forward and one backward), ``"eap-ig"`` (``ig_steps`` interpolated runs, ``ig_batch`` of
    them stacked per forward, all by default) or ``"exact"`` (one ablation per edge; ``edges``, a bool
    ``[n_senders, n_receivers]`` mask, restricts which are run). ``graph``: reuse a ``Graph(model)``."""
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}.")
    if not callable(metric):
        raise InputTypeError(f"metric must be a function metric(logits) -> 0-d tensor, got {type_name(metric)}.")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
        raise InputError(f"ig_steps must be a positive int, got {ig_steps!r}.")
    if edges is not None and method != "exact":
        raise InputError(f"edges= chooses which edges method='exact' ablates one by one; {method} scores every edge "
                         "in one pass, so leave edges out (or filter its scores afterwards).")
    clean, corrupted = as_pair(model, clean, corrupted)
    graph = graph if graph is not None else Graph(model)
    _check_memory(graph, clean, 1 if method != "eap-ig" else min(ig_batch or ig_steps, ig_steps), model.input_device)
    clean_logits, clean_acts = record(model, graph, clean)
    corrupted_logits, corrupted_acts = record(model, graph, corrupted)
    with torch.no_grad():
        m_clean = float(check_metric(metric(clean_logits), metric))
        m_corrupted = float(check_metric(metric(corrupted_logits), metric))
    if method == "exact":
        n = int((graph.valid if edges is None else edges.bool() & graph.valid).sum())
        if n > EXACT_LIMIT and edges is None:
            raise InputError(f"exact edge patching runs one forward per edge, {n} here; pass edges= (a bool "
                             f"[n_senders, n_receivers] mask, e.g. of the top edges by EAP-IG) to score up to "
                             f"{EXACT_LIMIT} at a time, or use method='eap-ig'.")
        scores = exact_scores(model, graph, clean, corrupted_acts, metric, m_clean, edges)
        return EdgeScores(graph, scores, method, m_clean, m_corrupted)
    diff = corrupted_acts - clean_acts                               # [n_senders, batch, pos, d_model]
    if method == "eap":
        grads = _gradients(model, graph, clean, metric, None, 1)
        steps = 1
    else:
        steps, per = ig_steps, min(ig_batch or ig_steps, ig_steps)
        if isinstance(per, bool) or not isinstance(per, int) or per < 1:
            raise InputError(f"ig_batch must be a positive int (interpolation steps per forward), got {ig_batch!r}.")
        x_clean, x_corrupted = clean_acts[0], corrupted_acts[0]      # the input node: blocks.0.hook_resid_pre
        grads = {}
        for k0 in range(0, steps, per):
            ks = range(k0, min(k0 + per, steps))
            x = torch.cat([x_corrupted + (k / steps) * (x_clean - x_corrupted) for k in ks])
            for i, g in _gradients(model, graph, clean, metric, x, len(ks)).items():
                grads[i] = grads[i] + g if i in grads else g
    scores = torch.zeros(graph.n_senders, graph.n_receivers, dtype=diff.dtype)
    for i, grp in enumerate(graph.groups):
        g = grads[i].to(diff.device, diff.dtype) / steps
        rs = grp.receivers
        # += : a receiver read through two projections (OLMo2's MLP: gate and up) has two groups
        scores[:grp.n_up, rs.start:rs.stop] += torch.einsum("sbpd,bprd->sr", diff[:grp.n_up], g).cpu()
    return EdgeScores(graph, scores, method, m_clean, m_corrupted, ig_steps if method == "eap-ig" else None)


def exact_scores(model, graph: Graph, clean: Tensor, corrupted_acts: Tensor, metric, m_clean: float,
                 edges: Tensor | None = None) -> Tensor:
    """metric(only edge s → r ablated) − metric(clean), for every edge (or those in ``edges``)."""
    todo = graph.valid if edges is None else (edges.bool() & graph.valid)
    idx = todo.nonzero().tolist()
    variants = []
    for s, r in idx:
        coef = torch.zeros(graph.n_senders, graph.n_receivers)
        coef[s, r] = 1.0
        variants.append(EdgeRun(graph, coef=coef, corrupted=corrupted_acts).hooks())
    values = run_variants(model, clean, variants, metric)
    scores = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.float64)
    for (s, r), v in zip(idx, values):
        scores[s, r] = float(v) - m_clean
    return scores
