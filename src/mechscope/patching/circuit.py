"""Circuits: chosen edges of a ``Graph``, the exact forward with every other edge ablated, faithfulness and its curve.

Edge ablation (Hanna et al. 2024's ``evaluate_graph``): each receiver reads its input in this run minus, for every
ablated edge into it, the difference between what the sender writes in this run and what it wrote on the corrupted
input. Only the receiver sees the change; the residual stream itself and every other receiver are untouched. Heads
get it per q/k/v through the model's own norm and projection, MLPs through their input norm, the logits at the final
residual (``graph.EdgeRun``). Ablating nothing is the plain forward, bit for bit; ablating every edge into the logits
gives the corrupted logits; ablating every edge out of one node is activation patching of that node.

Faithfulness (Wang et al. 2022's "faithfulness", Hanna et al.'s normalised form): with everything outside the circuit
ablated, ``(m(circuit) − m(corrupted)) / (m(clean) − m(corrupted))``: 1 when the circuit alone carries the clean
behaviour, 0 when it carries none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name
from .engine import run_variants
from .eap import EdgeScores, as_pair, check_metric, record
from .graph import EdgeRun, Graph


def ablate_edges(model, clean, corrupted, edges, *, graph: Graph | None = None,
                 metric: Callable[[Tensor], Tensor] | None = None, corrupted_acts: Tensor | None = None):
    """The clean forward with ``edges`` ablated (their receivers see the sender's corrupted output): logits
    ``[batch, pos, vocab]``, or ``metric(logits)``.

    ``edges``: a ``[n_senders, n_receivers]`` mask (bool; or float: a weight per edge, 1 = fully ablated), or a list
    of ``"sender->receiver"`` names. ``corrupted_acts``: reuse ``eap.record``'s sender outputs on ``corrupted``."""
    clean, corrupted = as_pair(model, clean, corrupted)
    graph = graph if graph is not None else Graph(model)
    coef = _coef(graph, edges)
    if corrupted_acts is None:
        corrupted_acts = record(model, graph, corrupted)[1]
    run = EdgeRun(graph, coef=coef, corrupted=corrupted_acts)
    with torch.no_grad():
        logits = model.run_with_hooks(clean, fwd_hooks=run.hooks())
    return logits if metric is None else metric(logits)


def _coef(graph: Graph, edges) -> Tensor:
    if isinstance(edges, Tensor):
        if tuple(edges.shape) != (graph.n_senders, graph.n_receivers):
            raise InputError(f"an edge mask is [n_senders, n_receivers] = [{graph.n_senders}, {graph.n_receivers}] "
                             f"for this graph, got {tuple(edges.shape)}.")
        if (edges.bool() & ~graph.valid).any():
            raise InputError("the edge mask marks pairs that are not edges (a receiver upstream of its sender); "
                             "mask it with graph.valid.")
        return edges.double() if edges.dtype == torch.bool else edges
    if isinstance(edges, (list, tuple)):
        return graph.edge_mask(edges).double()
    raise InputTypeError(f"edges must be a [n_senders, n_receivers] mask or a list of 'sender->receiver' names, "
                         f"got {type_name(edges)}.")


@dataclass
class Circuit:
    """A set of edges of ``graph`` (``edges [n_senders, n_receivers]`` bool), with their ``scores`` when extracted
    from ``EdgeScores`` and the ``faithfulness`` once measured."""

    graph: Graph
    edges: Tensor
    scores: Tensor | None = None
    faithfulness: float | None = None

    @property
    def n_edges(self) -> int:
        return int(self.edges.sum())

    @property
    def nodes(self) -> list[str]:
        """Nodes in the circuit, in forward order: the senders of its edges and the nodes its receivers feed (of a
        GQA key/value receiver's group, the heads that are in the circuit; the first head if none is)."""
        g = self.graph
        senders = {n.name for n, u in zip(g.senders, self.edges.any(1)) if u}
        names = set(senders)
        for r in self.edges.any(0).nonzero()[:, 0].tolist():
            feeds = g.receivers[r].feeds
            names.update([f for f in feeds if f in senders or f == "logits"] or [feeds[0]])
        return [n.name for n in g.nodes if n.name in names]

    def edge_list(self) -> list[tuple[str, str, float | None]]:
        """``(sender, receiver, score)`` of every edge, strongest first when scored."""
        idx = self.edges.nonzero().tolist()
        if self.scores is not None:
            idx.sort(key=lambda sr: -abs(float(self.scores[sr[0], sr[1]])))
        g = self.graph
        return [(g.senders[s].name, g.receivers[r].name, None if self.scores is None else float(self.scores[s, r]))
                for s, r in idx]

    def to_dict(self) -> dict:
        """``{"nodes": [{"name", "layer", "kind"}], "edges": [{"source", "target", "port", "receiver", "score"}],
        "faithfulness"}``; an edge into a key/value head shared by a GQA group is listed once per query head of the
        group that is in the circuit."""
        g = self.graph
        names = set(self.nodes)
        nodes = [{"name": n.name, "layer": n.layer, "kind": n.kind} for n in g.nodes if n.name in names]
        edges = []
        for s, r, score in self.edge_list():
            rec = g.receivers[g.receiver_index(r)]
            targets = [t for t in rec.feeds if t in names] or [rec.feeds[0]]
            for t in targets:
                edges.append({"source": s, "target": t, "port": rec.port, "receiver": r, "score": score})
        return {"nodes": nodes, "edges": edges, "n_edges": self.n_edges, "faithfulness": self.faithfulness}

    def view(self, title: str | None = None):
        """The circuit as a layered graph (``views.circuit_graph``): nodes by layer, edges entering heads at their
        q/k/v ports, coloured by sign, width by |score|. Where several receivers feed one node (the per-head inputs of
        a whole-layer attention node) their edges are drawn as one, with the summed score."""
        from .. import views

        if not hasattr(views, "circuit_graph"):
            raise InputError("this mechscope has no views.circuit_graph yet; use circuit.to_dict() for the data.")
        d = self.to_dict()
        nodes = [{k: v for k, v in n.items() if not (k == "layer" and n["kind"] in ("input", "logits"))}
                 for n in d["nodes"]]
        merged: dict[tuple, float] = {}
        for e in d["edges"]:
            key = (e["source"], e["target"], e["port"] if e["port"] in ("q", "k", "v") else None)
            merged[key] = merged.get(key, 0.0) + (e["score"] if e["score"] is not None else 1.0)
        edges = [{"source": s, "target": t, "port": p, "score": v} for (s, t, p), v in merged.items()]
        faith = f", faithfulness {self.faithfulness:.3f}" if self.faithfulness is not None else ""
        return views.circuit_graph(nodes=nodes, edges=edges, title=title or f"circuit: {self.n_edges} edges{faith}")

    def __repr__(self) -> str:
        faith = f", faithfulness {self.faithfulness:.3f}" if self.faithfulness is not None else ""
        return f"Circuit({self.n_edges} edges, {len(self.nodes)} nodes{faith})"


def prune(graph: Graph, edges: Tensor) -> Tensor:
    """The edges of ``edges`` that lie on some path input → logits (the others cannot affect the logits through
    the circuit, or carry nothing from the input into it)."""
    edges = edges.clone()
    n_s = graph.n_senders
    feeds = [graph.receivers_of(n.name) for n in graph.senders]
    reach = torch.zeros(n_s, dtype=torch.bool)
    reach[0] = True
    for v in range(1, n_s):
        rs = feeds[v]
        reach[v] = bool(rs) and bool((edges[:, rs] & reach[:, None]).any())
    edges &= reach[:, None]
    useful = torch.zeros(graph.n_receivers, dtype=torch.bool)
    useful[-1] = True                                   # logits<in>
    alive = torch.zeros(n_s, dtype=torch.bool)
    for v in range(n_s - 1, -1, -1):
        alive[v] = bool((edges[v] & useful).any())
        if alive[v]:
            useful[feeds[v]] = True
    return edges & alive[:, None] & useful[None, :]


def extract(scores: EdgeScores, n_edges: int | None = None, threshold: float | None = None, *,
            absolute: bool = True, prune_paths: bool = True) -> Circuit:
    """The circuit of the ``n_edges`` top-scoring edges (or those scoring at least ``threshold``), by absolute score
    unless ``absolute=False``, pruned to the edges on a path input → logits (so it may hold fewer)."""
    if (n_edges is None) == (threshold is None):
        raise InputError("give exactly one of n_edges= (how many top edges) or threshold= (the smallest score kept).")
    g = scores.graph
    v = scores.scores.double()
    key = (v.abs() if absolute else v).where(g.valid, float("-inf"))
    if n_edges is not None:
        if isinstance(n_edges, bool) or not isinstance(n_edges, int) or n_edges < 0:
            raise InputError(f"n_edges must be an int >= 0, got {n_edges!r}.")
        chosen = torch.zeros_like(g.valid)
        order = key.flatten().argsort(descending=True)[:min(n_edges, g.n_edges)]
        chosen.view(-1)[order] = True
    else:
        chosen = (key >= threshold) & g.valid
    if prune_paths:
        chosen = prune(g, chosen)
    return Circuit(g, chosen, scores.scores)


def _faith(value: float, clean: float, corrupted: float) -> float:
    return (value - corrupted) / (clean - corrupted)


def _endpoints(model, g, clean: Tensor, corrupted: Tensor, metric) -> tuple[float, float, Tensor]:
    """``(m(clean), m(corrupted), the corrupted run's node outputs)``: what every faithfulness is measured against.
    Faithfulness divides by m(clean) − m(corrupted), so equal metrics are refused before any ablation runs."""
    clean_logits, _ = record(model, g, clean)
    corrupted_logits, corrupted_acts = record(model, g, corrupted)
    with torch.no_grad():
        m_clean = float(check_metric(metric(clean_logits), metric))
        m_corr = float(check_metric(metric(corrupted_logits), metric))
    if m_clean == m_corr:
        raise InputError(f"the clean and corrupted metric are equal ({m_clean:.4g}), so faithfulness (the circuit's "
                         "share of the difference) is undefined; pick a corruption that changes the behaviour.")
    return m_clean, m_corr, corrupted_acts


def faithfulness(model, circuit: Circuit, clean, corrupted, metric: Callable[[Tensor], Tensor]) -> float:
    """``(m(circuit) − m(corrupted)) / (m(clean) − m(corrupted))`` with every edge outside ``circuit`` ablated; also
    stored on ``circuit.faithfulness``."""
    clean, corrupted = as_pair(model, clean, corrupted)
    g = circuit.graph
    m_clean, m_corr, corrupted_acts = _endpoints(model, g, clean, corrupted, metric)
    m = float(ablate_edges(model, clean, corrupted, g.valid & ~circuit.edges, graph=g, metric=metric,
                           corrupted_acts=corrupted_acts))
    circuit.faithfulness = _faith(m, m_clean, m_corr)
    return circuit.faithfulness


@dataclass
class FaithfulnessCurve:
    """Faithfulness of the top-``size`` circuits: ``sizes`` asked, ``n_edges`` kept after pruning, ``values``."""

    sizes: list[int]
    n_edges: list[int]
    values: list[float]
    metric_values: list[float]
    clean: float
    corrupted: float
    method: str = "eap"

    def to_dict(self) -> dict:
        return {"sizes": self.sizes, "n_edges": self.n_edges, "faithfulness": self.values,
                "metric": self.metric_values, "clean": self.clean, "corrupted": self.corrupted, "method": self.method}

    def view(self, title: str | None = None, *others: FaithfulnessCurve):
        """The curve (``views.line_chart``): faithfulness against the number of edges kept, with ``others`` (e.g.
        EAP-IG's curve beside EAP's) as more lines; they must share the sizes."""
        from .. import views

        if not hasattr(views, "line_chart"):
            raise InputError("this mechscope has no views.line_chart yet; use curve.to_dict() for the data.")
        curves = (self, *others)
        if any(c.sizes != self.sizes for c in others):
            raise InputError("curves drawn together must be measured at the same sizes.")
        return views.line_chart(self.sizes, [c.values for c in curves], [f"{c.method} faithfulness" for c in curves],
                                title or "faithfulness vs circuit size", x_label="top edges (before pruning)",
                                y_label="faithfulness")


def faithfulness_curve(model, scores: EdgeScores, clean, corrupted, metric: Callable[[Tensor], Tensor], *,
                       sizes: Sequence[int] = (10, 20, 50, 100, 200, 500, 1000), absolute: bool = True,
                       **run_options) -> FaithfulnessCurve:
    """Faithfulness of ``extract(scores, n_edges=size)`` for each size, all circuits run as variants of one input
    through ``run_variants`` (batched by the engine); sizes beyond the graph's edge count are clipped."""
    clean, corrupted = as_pair(model, clean, corrupted)
    g = scores.graph
    sizes = sorted({min(int(s), g.n_edges) for s in sizes})
    if not sizes:
        raise InputError("sizes must list at least one circuit size (a number of edges).")
    m_clean, m_corr, corrupted_acts = _endpoints(model, g, clean, corrupted, metric)
    circuits = [extract(scores, n_edges=s, absolute=absolute) for s in sizes]
    variants = [EdgeRun(g, coef=(g.valid & ~c.edges).double(), corrupted=corrupted_acts).hooks() for c in circuits]
    values = [float(v) for v in run_variants(model, clean, variants, metric, **run_options)]
    return FaithfulnessCurve(sizes, [c.n_edges for c in circuits], [_faith(v, m_clean, m_corr) for v in values],
                             values, m_clean, m_corr, scores.method)
