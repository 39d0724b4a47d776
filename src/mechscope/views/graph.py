"""The circuit graph: a layered DAG of components (embeddings, heads, attention and MLP blocks, logits) and the
edges between them, drawn as SVG.

The layout is computed here so it is testable without a browser: the input at the bottom, the logits at the top,
one row per layer that has nodes (a layer's heads, or its attention block, on the left, its MLP on the right,
side by side as in Wang et al.'s and Conmy et al.'s circuit figures; the MLP a little higher than the heads when
both are there, since it reads what they write, so the edge between them is a short rise and not an arc). Within a row, nodes are ordered by the mean
position of their neighbours (a few sweeps of the barycentre heuristic of Sugiyama et al.), which removes most
crossings on circuits of ~100 edges. An edge enters a head at its ``q``, ``k`` or ``v`` port (left, middle,
right of the node's bottom, each labelled); its colour is its sign (red positive, blue negative), its width its
``|score|`` relative to the largest.
"""

from __future__ import annotations

import math
from collections import defaultdict

from ..errors import InputError, InputTypeError, type_name
from .view import Figure, View

KINDS = ("input", "head", "attn", "mixer", "mlp", "logits")
PORTS = ("q", "k", "v")
_LEFT = {"head": 0, "attn": 0, "mixer": 1, "mlp": 2}  # order within a layer's row: attention, mixer, MLP

# layout, in pixels
_ROW = 96        # vertical distance between rows
_GAP = 16        # least horizontal gap between nodes
_WIDE = 860      # narrow graphs get wider gaps, up to this width, so their edges spread out
_RAISE = 0.4     # a layer's MLP sits this fraction of a row above its attention: the attn → MLP edge is visible
_H = 24          # node height
_MARGIN = 40
_GUTTER = 64     # room for the row labels at the left
_SWEEPS = 4


def circuit_graph(nodes, edges, title: str | None = None, *, score_name: str = "score") -> View:
    """A circuit as a layered graph.

    ``nodes``: ``[{"name": "a3.h2", "layer": 3, "kind": "input"|"head"|"attn"|"mixer"|"mlp"|"logits",
    "score": optional number}]``; ``layer`` may be left out for the input and the logits (always the bottom and
    top rows); any other numeric entry of a node is shown on hover. ``edges``: ``[{"source": name, "target":
    name, "score": float, "port": "q"|"k"|"v"|None}]`` (``"in"``, a component's one input, is read as None); any other numeric entry of an edge (``"eap_ig": ...,
    "patching": ...``) is shown with its score on hover. Hover (or click, to pin) an edge for its scores; hover
    or click a node to bring out its edges. ``score_name`` names an edge's ``score`` in the hover. Unknown node
    names in edges, duplicate names or edges, edges into the input or out of the logits, and cycles are errors
    that name the culprit.
    """
    nodes = _check_nodes(nodes)
    index = {n["name"]: i for i, n in enumerate(nodes)}
    edges = _check_edges(edges, index, nodes)
    _check_acyclic(nodes, edges)
    rows = _rows(nodes)
    order = _order(rows, nodes, edges)
    placed, row_labels, width, height = _place(order, nodes)
    scores = [abs(e["score"]) for e in edges]
    node_scores = [abs(n["score"]) for n in nodes if n["score"] is not None]
    data = {
        "kind": "circuit_graph", "title": title, "score_name": score_name, "width": width, "height": height,
        "nodes": placed, "edges": edges, "max_abs": max(scores, default=0.0) or 1.0,
        "node_max_abs": max(node_scores, default=0.0) or 1.0,
        "rows": row_labels,
    }
    return View([Figure("circuit_graph", data, f"circuit_graph {len(nodes)} nodes × {len(edges)} edges")])


def _number(x, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) and not hasattr(x, "__float__"):
        raise InputTypeError(f"{where} must be a number; got {x!r} ({type_name(x)}).")
    v = float(x)
    if not math.isfinite(v):
        raise InputError(f"{where} is {v}; scores must be finite (drop the edge or give it a number).")
    return float(f"{v:.4g}")


def _check_nodes(nodes) -> list[dict]:
    if isinstance(nodes, (str, dict)) or not isinstance(nodes, (list, tuple)):
        raise InputTypeError(f"nodes must be a list of dicts with name, layer and kind; got {type_name(nodes)}.")
    if not nodes:
        raise InputError("nodes is empty; there is no circuit to draw.")
    out, seen = [], set()
    for i, n in enumerate(nodes):
        if not isinstance(n, dict):
            raise InputTypeError(f"nodes[{i}] must be a dict like {{'name': 'a3.h2', 'layer': 3, 'kind': 'head'}}; "
                                 f"got {type_name(n)}.")
        name, kind = n.get("name"), n.get("kind")
        if not isinstance(name, str) or not name:
            raise InputTypeError(f"nodes[{i}] needs a non-empty string 'name'; got {name!r}.")
        if name in seen:
            raise InputError(f"two nodes are named {name!r}; node names must be unique.")
        seen.add(name)
        if kind not in KINDS:
            raise InputError(f"node {name!r} has kind {kind!r}; use one of {', '.join(KINDS)}.")
        layer = n.get("layer")
        if layer is None and kind not in ("input", "logits"):
            raise InputError(f"node {name!r} ({kind}) needs a 'layer' (an integer); only the input and the logits "
                             "may leave it out.")
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
            raise InputTypeError(f"node {name!r} has layer {layer!r}; a layer is an integer.")
        score = n.get("score")
        extra = {str(k): _number(v, f"node {name!r}'s {k!r}") for k, v in n.items()
                 if k not in ("name", "kind", "layer", "score") and v is not None}
        out.append({"name": name, "kind": kind, "layer": layer, "extra": extra,
                    "score": None if score is None else _number(score, f"the score of node {name!r}")})
    return out


def _check_edges(edges, index: dict[str, int], nodes: list[dict]) -> list[dict]:
    if isinstance(edges, (str, dict)) or not isinstance(edges, (list, tuple)):
        raise InputTypeError(f"edges must be a list of dicts with source, target and score; got {type_name(edges)}.")
    out, seen = [], set()
    for i, e in enumerate(edges):
        if not isinstance(e, dict):
            raise InputTypeError(f"edges[{i}] must be a dict like {{'source': 'a0.h1', 'target': 'a1.h3', "
                                 f"'score': 0.5}}; got {type_name(e)}.")
        ends = []
        for end in ("source", "target"):
            name = e.get(end)
            if name not in index:
                known = ", ".join(list(index)[:8]) + (", ..." if len(index) > 8 else "")
                raise InputError(f"edges[{i}] has {end} {name!r}, which is not a node; the nodes are {known}. "
                                 "Add the node or fix the name.")
            ends.append(index[name])
        s, t = ends
        if nodes[s]["kind"] == "logits":
            raise InputError(f"edges[{i}] leaves the logits {nodes[s]['name']!r}; the logits are the end of the "
                             "graph (reverse the edge?).")
        if nodes[t]["kind"] == "input":
            raise InputError(f"edges[{i}] enters the input {nodes[t]['name']!r}; the input is the start of the "
                             "graph (reverse the edge?).")
        port = e.get("port")
        if port == "in":  # a receiver's one input (an MLP's, the logits'), as patching.graph names it: no port
            port = None
        if port is not None and port not in PORTS:
            raise InputError(f"edges[{i}] has port {port!r}; a head's input port is 'q', 'k', 'v', or None (or "
                             "'in') for a component with one input.")
        if port is not None and nodes[t]["kind"] in ("mlp", "logits"):
            raise InputError(f"edges[{i}] enters {nodes[t]['name']!r} ({nodes[t]['kind']}) at port {port!r}; only "
                             "heads and attention blocks have q, k and v inputs: give this edge port None.")
        key = (s, t, port)
        if key in seen:
            raise InputError(f"the edge {nodes[s]['name']} → {nodes[t]['name']}"
                             f"{f' ({port})' if port else ''} is given twice; give each edge once.")
        seen.add(key)
        if "score" not in e:
            raise InputError(f"edges[{i}] has no 'score'; give each edge its score (a number).")
        extra = {str(k): _number(v, f"edges[{i}][{k!r}]") for k, v in e.items()
                 if k not in ("source", "target", "score", "port") and v is not None}
        out.append({"source": s, "target": t, "score": _number(e["score"], f"the score of edges[{i}]"),
                    "port": port, "extra": extra})
    return out


def _check_acyclic(nodes: list[dict], edges: list[dict]) -> None:
    """Raise naming one cycle when the edges have any (Kahn's algorithm, then a walk round the remainder)."""
    out = defaultdict(list)
    indeg = [0] * len(nodes)
    for e in edges:
        out[e["source"]].append(e["target"])
        indeg[e["target"]] += 1
    ready = [i for i, d in enumerate(indeg) if d == 0]
    while ready:
        i = ready.pop()
        for j in out[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(j)
    left = {i for i, d in enumerate(indeg) if d > 0}
    if not left:
        return
    # every node left has a predecessor left, so walking backwards from any of them must repeat a node
    into = defaultdict(list)
    for e in edges:
        if e["source"] in left and e["target"] in left:
            into[e["target"]].append(e["source"])
    path, at = [], min(left)
    while at not in path:
        path.append(at)
        at = into[at][0]
    cycle = path[path.index(at):][::-1]
    first = cycle.index(min(cycle))  # start from the node given first, so the message is stable
    cycle = cycle[first:] + cycle[:first]
    names = " → ".join(nodes[i]["name"] for i in cycle + cycle[:1])
    raise InputError(f"the edges form a cycle ({names}); a circuit is a DAG: remove one of these edges.")


def _rows(nodes: list[dict]) -> list[list[int]]:
    """Node indices by row, bottom to top: the input, each layer that has nodes, the logits."""
    layers = sorted({n["layer"] for n in nodes if n["kind"] not in ("input", "logits")})
    rows = [[i for i, n in enumerate(nodes) if n["kind"] == "input"]]
    rows += [[i for i, n in enumerate(nodes) if n["kind"] not in ("input", "logits") and n["layer"] == layer]
             for layer in layers]
    rows.append([i for i, n in enumerate(nodes) if n["kind"] == "logits"])
    return [r for r in rows if r]


def _order(rows: list[list[int]], nodes: list[dict], edges: list[dict]) -> list[list[int]]:
    """Rows ordered to reduce crossings: each node moves to the mean rank of its neighbours in the rows already
    placed (sweeping up, then down), within its group (attention left of MLP), ties kept in the given order."""
    neighbours = defaultdict(list)
    for e in edges:
        neighbours[e["source"]].append(e["target"])
        neighbours[e["target"]].append(e["source"])
    rows = [sorted(r, key=lambda i: (_LEFT.get(nodes[i]["kind"], 0), i)) for r in rows]
    pos = {}

    def rank():
        for r in rows:
            for k, i in enumerate(r):
                pos[i] = (k + 0.5) / len(r)  # relative position in its row, so wide and narrow rows compare

    rank()
    for sweep in range(_SWEEPS):
        sequence = range(1, len(rows)) if sweep % 2 == 0 else range(len(rows) - 2, -1, -1)
        for ri in sequence:
            def key(i, ri=ri):
                near = [pos[j] for j in neighbours[i]]
                return (_LEFT.get(nodes[i]["kind"], 0), sum(near) / len(near) if near else pos[i], rows[ri].index(i))
            rows[ri] = sorted(rows[ri], key=key)
            rank()
    return rows


def _place(rows: list[list[int]], nodes: list[dict]) -> tuple[list[dict], list[dict], int, int]:
    """Pixel boxes (centre ``x``, ``y``, size ``w``, ``h``) with the rows stacked from the top (logits) down, each
    row centred; and each row's label and ``y`` for the axis at the left."""
    widths = {i: max(44, 7 * len(nodes[i]["name"]) + 16) for r in rows for i in r}
    widest = max(rows, key=lambda r: sum(widths[i] for i in r) + _GAP * (len(r) - 1))
    gap = _GAP if len(widest) < 2 else max(_GAP, min(6 * _GAP, (_WIDE - sum(widths[i] for i in widest))
                                                      / (len(widest) - 1)))
    row_width = [sum(widths[i] for i in r) + gap * (len(r) - 1) for r in rows]
    width = max(row_width) + 2 * _MARGIN + _GUTTER
    height = 2 * _MARGIN + (len(rows) - 1) * _ROW + _H
    placed: list[dict | None] = [None] * len(nodes)
    labels = []
    for ri, r in enumerate(rows):
        y = _MARGIN + (len(rows) - 1 - ri) * _ROW + _H / 2
        x = _GUTTER + _MARGIN + (max(row_width) - row_width[ri]) / 2
        staggered = any(nodes[i]["kind"] == "mlp" for i in r) and any(nodes[i]["kind"] != "mlp" for i in r)
        for i in r:
            n = nodes[i]
            lift = _RAISE * _ROW if staggered and n["kind"] == "mlp" else 0.0
            placed[i] = {**n, "x": round(x + widths[i] / 2, 1), "y": y - lift, "w": widths[i], "h": _H}
            x += widths[i] + gap
        first = nodes[r[0]]
        label = {"input": "input", "logits": "logits"}.get(first["kind"], f"layer {first['layer']}")
        labels.append({"label": label, "y": y})
    return placed, labels, width, height
