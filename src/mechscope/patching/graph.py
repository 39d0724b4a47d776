"""The computational graph of a model as circuit discovery sees it (Syed et al. 2023; Hanna et al. 2024).

Nodes write into the residual stream and read from it:

- ``input``: what enters block 0 (``blocks.0.hook_resid_pre``: token + position embeddings, scales included);
- ``a{l}.h{h}``: attention head ``h`` of block ``l``, writing ``z_h @ W_O[h]``, where the block's output is exactly
  the sum of its heads' results plus a bias (checked numerically); otherwise ``a{l}``, the whole attention layer
  (sandwich norms: a post-attention norm of the heads' sum is not a sum of per-head terms);
- ``x{l}``: a hybrid block's non-attention token mixer (Mamba, linear attention, convolution);
- ``m{l}``: the MLP of block ``l`` (``hook_mlp_out``);
- ``logits``: reads the final residual stream.

Edges run from every sender to every *receiver* downstream of it. A receiver is one input of a node: each head
reads the stream through its own ``q``, ``k`` and ``v`` (under GQA/MQA, ``k``/``v`` receivers are per key/value
head, shared by the query heads of its group), an MLP or mixer through its input norm, the logits through the final
residual. Parallel blocks (GPT-NeoX, GPT-J): the MLP of block ``l`` reads the stream *before* block ``l``'s attention,
so there is no edge between them.

Everything runs on the unmodified model. ``EdgeRun`` gives a receiver its own input by recomputing it, from the
stream plus a per-receiver change, through the model's own norm and projection modules (called with ``forward``,
so no hook fires twice) and writing the result at ``hook_q``/``hook_k``/``hook_v`` (one head), at the norm's output
point (MLPs, mixers) or at the last ``hook_resid_post`` (logits). That one mechanism serves edge ablation (the
change is what ablated senders' corrupted outputs differ by) and edge attribution (the change is a zero tensor whose
gradient is the receiver's own gradient). ``Graph(model)`` checks on a short probe forward that these recomputations
reproduce the model's own activations and that the stream is the sum of the nodes' outputs, and refuses a model
where they do not, naming the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import InputError, UnsupportedModelError
from ..families.base import resolve
from ..hooks import Heads, Site
from ..weights import _io, _real


@dataclass(frozen=True)
class Node:
    """A node of the graph: ``name`` (``input``, ``a3.h2``, ``a3``, ``x3``, ``m3``, ``logits``), its block
    (None for ``input``, ``n_layers`` for ``logits``), ``kind`` (``input``/``head``/``attn``/``mixer``/``mlp``/
    ``logits``) and the head index for heads."""

    name: str
    layer: int | None
    kind: str
    head: int | None = None


@dataclass(frozen=True)
class Receiver:
    """One input of one or more nodes: ``a3.h2<q>``, ``a3.kv1<k>`` (a key/value head shared by a GQA group),
    ``m3<in>``, ``logits<in>``. ``feeds``: the nodes whose output depends on it; ``target``: the name shown on edges
    (the head, the kv head, the MLP...)."""

    name: str
    layer: int
    port: str                      # "q" | "k" | "v" | "in"
    index: int | None              # head (q) or kv head (k, v)
    target: str
    feeds: tuple[str, ...]


@dataclass
class _Group:
    """Receivers of one block read at one hook point: the q (or k, or v) heads of an attention block, an MLP's or
    mixer's input norm, or the logits."""

    point: str                     # the hook point replaced
    stream: str                    # the hook point whose value is the residual stream this group reads
    receivers: range               # indices into Graph.receivers
    n_up: int                      # senders 0..n_up-1 are upstream of every receiver in the group
    heads: bool                    # True: per-head projection groups
    norm: nn.Module | None         # the module applied to the stream first (None: the stream is read as is)
    proj: nn.Module | None = None  # then this projection (heads: it holds the heads; OLMo2's MLP: gate or up)
    site: Site | None = None       # how the point sits in the projection's output
    shared_norm: bool = False      # this norm output is also read by the block's q/k/v (GPT-J, Phi, Falcon-H1)


class Graph:
    """The nodes, receivers and edges of ``model``; ``valid[s, r]``: sender ``s`` is upstream of receiver ``r``.

    ``senders`` are the nodes that write (all but ``logits``), in forward order; ``receivers`` the inputs, in forward
    order. Scores and circuits are ``[n_senders, n_receivers]`` matrices over this indexing. ``check=False`` skips the
    numerical probe (for a graph built again on a model already checked)."""

    def __init__(self, model, *, check: bool = True):
        self.model = model
        cfg, pts = model.cfg, model.hook_dict
        self.n_layers = L = cfg.n_layers
        resid = pts.get("blocks.0.hook_resid_pre")
        if resid is None or tuple(resid.shape[2:]) != (cfg.d_model,):
            raise UnsupportedModelError(
                f"this {cfg.family} model carries its residual stream as {None if resid is None else resid.shape}, not "
                "one [batch, pos, d_model] stream (hyper-connections, AltUp), so it has no graph of nodes writing into "
                "one stream; circuit discovery needs a single residual stream.")
        if model.family.ln_final is None:
            raise UnsupportedModelError(
                f"{cfg.family} is post-LN (each block ends in a norm), so the residual stream is not the sum of the "
                "nodes' outputs and edges cannot be separated; circuit discovery needs a pre-norm model.")
        text_config = model.hf_model.config.get_text_config()
        self._fams = [model.family.at_layer(text_config, l).for_block(b) for l, b in enumerate(model.blocks)]
        self.parallel = cfg.parallel_attn_mlp
        self.senders: list[Node] = [Node("input", None, "input")]
        self.receivers: list[Receiver] = []
        self.groups: list[_Group] = []
        self._w_o: dict[int, Tensor] = {}      # per-head blocks: W_O [head, d_head_v, d_model]
        self._sender_points: list[tuple[str, int, str]] = [("blocks.0.hook_resid_pre", 0, "input")]
        for l in range(L):
            self._add_block(l)
        final = f"blocks.{L - 1}.hook_resid_post"
        self.receivers.append(Receiver("logits<in>", L, "in", None, "logits", ("logits",)))
        self.groups.append(_Group(final, final, range(len(self.receivers) - 1, len(self.receivers)),
                                  len(self.senders), False, None))
        self.nodes: list[Node] = self.senders + [Node("logits", L, "logits")]
        self._node_index = {n.name: i for i, n in enumerate(self.nodes)}
        self._receiver_index = {r.name: i for i, r in enumerate(self.receivers)}
        self.valid = torch.zeros(len(self.senders), len(self.receivers), dtype=torch.bool)
        for g in self.groups:
            self.valid[:g.n_up, g.receivers.start:g.receivers.stop] = True
        if check:
            self._check()

    @classmethod
    def from_model(cls, model) -> Graph:
        """``Graph(model)``, under the name Hanna et al.'s EAP-IG library uses (``Graph.from_model``)."""
        return cls(model)

    # ------------------------------------------------------------------------------------------ building
    def _add_block(self, l: int) -> None:
        pts = self.model.hook_dict
        b = f"blocks.{l}"
        n_before = len(self.senders)
        has_attn = f"{b}.attn.hook_z" in pts
        has_mixer = f"{b}.hook_mixer_out" in pts
        has_mlp = f"{b}.hook_mlp_out" in pts
        ln1 = pts.get(f"{b}.ln1.hook_out")
        ln1_mod = ln1.site.anchor[1] if ln1 is not None else None
        if has_attn:
            if f"{b}.hook_attn_out" not in pts:
                raise UnsupportedModelError(
                    f"block {l}'s attention does not write into the residual stream (no hook_attn_out: Zamba's shared "
                    "block feeds the Mamba block's input), so it is no node of a residual graph.")
            n_heads = pts[f"{b}.attn.hook_z"].shape[2]
            per_head = self._per_head(l)
            heads = ([Node(f"a{l}.h{h}", l, "head", h) for h in range(n_heads)] if per_head
                     else [Node(f"a{l}", l, "attn")])
            feeds = [n.name for n in heads]
            for port in "qkv":
                name = f"{b}.attn.hook_{port}"
                pt = pts.get(name)
                if pt is None or not isinstance(pt.site, Heads) or pt.site.anchor[0] != "out" or pt.shape[1] != "pos":
                    raise UnsupportedModelError(
                        f"block {l}'s attention has no per-head {port} projection of the residual stream ({name}: "
                        "multi-head latent attention expands keys and values from a latent), so its heads have no "
                        f"separate {port} inputs to receive edges.")
                n = pt.shape[2]
                start = len(self.receivers)
                for i in range(n):
                    if port == "q" or n == n_heads:
                        target, fed = f"a{l}.h{i}", ([f"a{l}.h{i}"] if per_head else feeds)
                    else:  # a key/value head read by a group of query heads
                        rep = n_heads // n
                        target = f"a{l}.kv{i}"
                        fed = [f"a{l}.h{h}" for h in range(i * rep, (i + 1) * rep)] if per_head else feeds
                    self.receivers.append(Receiver(f"{target}<{port}>", l, port, i, target, tuple(fed)))
                self.groups.append(_Group(name, f"{b}.hook_resid_pre", range(start, len(self.receivers)), n_before,
                                          True, ln1_mod, pt.site.anchor[1], pt.site))
            for node in heads:
                self._sender(node)
            if per_head:
                self._sender_points.append((f"{b}.attn.hook_z", len(self.senders) - n_heads, "heads"))
                self._w_o[l] = self._head_weights(l, n_heads)
            else:
                self._sender_points.append((f"{b}.hook_attn_out", len(self.senders) - 1, "whole"))
        if has_mixer:
            if ln1 is None:
                raise UnsupportedModelError(
                    f"block {l}'s token mixer reads the residual stream without an input norm point (ln1), so it "
                    "cannot be given an input of its own; circuit discovery does not support this hybrid.")
            self._stream_group(f"{b}.ln1.hook_out", f"{b}.hook_resid_pre", f"x{l}", l, n_before, ln1_mod, has_attn)
            self._sender(Node(f"x{l}", l, "mixer"))
            self._sender_points.append((f"{b}.hook_mixer_out", len(self.senders) - 1, "whole"))
        if has_mlp:
            reads_pre = self.parallel or f"{b}.hook_resid_mid" not in pts
            stream = f"{b}.hook_resid_pre" if reads_pre else f"{b}.hook_resid_mid"
            n_up = n_before if reads_pre else len(self.senders)
            point = f"{b}.ln2.hook_out" if f"{b}.ln2.hook_out" in pts else f"{b}.ln1.hook_out" if reads_pre else None
            if point in pts:
                shared = point == f"{b}.ln1.hook_out" and has_attn
                self._stream_group(point, stream, f"m{l}", l, n_up, pts[point].site.anchor[1], shared)
            else:  # no input norm (OLMo2): the MLP's own input projections are recomputed from the receiver's input
                projs = [f"{b}.mlp.hook_{k}" for k in ("pre", "pre_linear") if f"{b}.mlp.hook_{k}" in pts]
                if not projs or any(pts[q].site.anchor[0] != "out" for q in projs):
                    raise UnsupportedModelError(
                        f"block {l}'s MLP reads the residual stream without an input norm point and has no input "
                        f"projection points (a mixture of experts), so mechscope cannot give it an input of its own "
                        "without changing the stream; circuit discovery does not support this block.")
                self.receivers.append(Receiver(f"m{l}<in>", l, "in", None, f"m{l}", (f"m{l}",)))
                rs = range(len(self.receivers) - 1, len(self.receivers))
                for q in projs:  # both projections read the same input: one receiver, one group per projection
                    self.groups.append(_Group(q, stream, rs, n_up, False, None, pts[q].site.anchor[1], pts[q].site))
            self._sender(Node(f"m{l}", l, "mlp"))
            self._sender_points.append((f"{b}.hook_mlp_out", len(self.senders) - 1, "whole"))

    def _sender(self, node: Node) -> None:
        self.senders.append(node)

    def _stream_group(self, point, stream, node, l, n_up, norm, shared) -> None:
        self.receivers.append(Receiver(f"{node}<in>", l, "in", None, node, (node,)))
        self.groups.append(_Group(point, stream, range(len(self.receivers) - 1, len(self.receivers)), n_up, False,
                                  norm, shared_norm=shared))

    def _per_head(self, l: int) -> bool:
        """Heads are nodes where the block's attention output is the plain sum of per-head results (no norm between
        ``hook_z`` and the output projection, no post-attention norm); confirmed numerically by ``_check``."""
        pts = self.model.hook_dict
        return self._fams[l].z is None and f"blocks.{l}.ln1_post.hook_out" not in pts

    def _head_weights(self, l: int, n_heads: int) -> Tensor:
        o = resolve(self.model.blocks[l], self._fams[l].o)
        w = _io(o).detach()
        return w.reshape(n_heads, w.shape[0] // n_heads, w.shape[1])

    def _head_bias(self, l: int) -> Tensor | None:
        b = _real(resolve(self.model.blocks[l], self._fams[l].o), "bias")
        return None if b is None else b.detach()

    # -------------------------------------------------------------------------------------------- lookup
    @property
    def n_senders(self) -> int:
        return len(self.senders)

    @property
    def n_receivers(self) -> int:
        return len(self.receivers)

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def sender_index(self, name: str) -> int:
        i = self._node_index.get(name)
        if i is None or i >= len(self.senders):
            from ..errors import closest

            hint = closest(name, [n.name for n in self.senders], n=3)
            raise InputError(f"{name!r} is not a sender of this graph (nodes are input, a{{l}}.h{{h}} or a{{l}}, "
                             f"x{{l}}, m{{l}})"
                             f"{'; did you mean ' + ' or '.join(map(repr, hint)) + '?' if hint else '.'}")
        return i

    def receiver_index(self, name: str) -> int:
        i = self._receiver_index.get(name)
        if i is None:
            from ..errors import closest

            hint = closest(name, list(self._receiver_index), n=3)
            raise InputError(f"{name!r} is not a receiver of this graph (receivers are a{{l}}.h{{h}}<q>, "
                             f"a{{l}}.h{{h}}<k> or a{{l}}.kv{{g}}<k>, ...<v>, m{{l}}<in>, logits<in>)"
                             f"{'; did you mean ' + ' or '.join(map(repr, hint)) + '?' if hint else '.'}")
        return i

    def receivers_of(self, node: str) -> list[int]:
        """Indices of the receivers whose value ``node``'s output depends on."""
        return [i for i, r in enumerate(self.receivers) if node in r.feeds]

    def edge_name(self, s: int, r: int) -> str:
        return f"{self.senders[s].name}->{self.receivers[r].name}"

    def edge_mask(self, edges) -> Tensor:
        """``[n_senders, n_receivers]`` bool from a list of ``(sender, receiver)`` names (``("a0.h3", "a1.h5<k>")``)
        or ``"a0.h3->a1.h5<k>"`` strings; refuses edges that do not exist (a receiver upstream of its sender)."""
        mask = torch.zeros_like(self.valid)
        for e in edges:
            if isinstance(e, str):
                if "->" not in e:
                    raise InputError(f"an edge is written 'sender->receiver' (e.g. 'a0.h3->a1.h5<k>'), got {e!r}.")
                e = e.split("->", 1)
            s, r = self.sender_index(e[0]), self.receiver_index(e[1])
            if not self.valid[s, r]:
                raise InputError(f"there is no edge {e[0]} -> {e[1]}: the receiver reads the stream before "
                                 f"{e[0]} writes into it.")
            mask[s, r] = True
        return mask

    def __repr__(self) -> str:
        return (f"Graph({len(self.nodes)} nodes, {self.n_receivers} receivers, {self.n_edges} edges, "
                f"{'per-head' if self._w_o else 'per-layer'} attention)")

    # --------------------------------------------------------------------------------------- the probe
    def _check(self) -> None:
        """On a short random forward: every block's output is its input plus its nodes' outputs, per-head results sum
        to the attention output, and each recomputed receiver input equals the model's own activation."""
        model = self.model
        n = min(6, model.cfg.n_ctx or 6)
        tokens = torch.randint(0, model._n_ids(), (1, n), generator=torch.Generator().manual_seed(0))
        tokens = tokens.to(model.input_device)
        names = {g.point for g in self.groups} | {g.stream for g in self.groups}
        names |= {p for p, _, _ in self._sender_points}
        names |= {f"blocks.{l}.hook_{k}" for l in range(self.n_layers) for k in ("resid_pre", "resid_post")}
        names |= {f"blocks.{l}.hook_attn_out" for l in self._w_o}
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=sorted(names))

        def close(a: Tensor, b: Tensor) -> tuple[bool, float]:
            a, b = a.detach().double(), b.detach().double().to(a.device)
            diff = float((a - b).abs().max()) if a.numel() else 0.0
            eps = torch.finfo(model.cfg.dtype).eps
            return diff <= max(1e-4, 64 * eps) * (float(b.abs().max()) + 1e-30), diff

        outs = {}
        for point, start, how in self._sender_points:
            x = cache[point]
            if how == "heads":
                l = int(point.split(".")[1])
                res = self._heads_out(l, x)
                bias = self._head_bias(l)
                total = res.sum(-2) + (0 if bias is None else bias.to(res))
                ok, diff = close(total, cache[f"blocks.{l}.hook_attn_out"])
                if not ok:
                    raise UnsupportedModelError(
                        f"block {l}'s attention output is not the sum of its heads' results z_h @ W_O[h] plus the "
                        f"output bias (they differ by up to {diff:.3g}), so its heads cannot be separate nodes.")
                outs[point] = cache[f"blocks.{l}.hook_attn_out"]
            else:
                outs[point] = x
        for l in range(self.n_layers):
            b = f"blocks.{l}"
            total = cache[f"{b}.hook_resid_pre"]
            for p, _, how in self._sender_points:
                if p.startswith(f"{b}.") and how != "input":
                    total = total + outs[p]
            ok, diff = close(total, cache[f"{b}.hook_resid_post"])
            if not ok:
                raise UnsupportedModelError(
                    f"in this {model.cfg.family} model block {l}'s output is not its input plus what its attention, "
                    f"mixer and MLP write (they differ by up to {diff:.3g}): the family scales, gates or normalises "
                    "the residual stream (see model.family.notes), so edges between nodes cannot be separated.")
        for g in self.groups:
            stream = cache[g.stream][:, :, None]
            if g.heads:
                got = self.project(g, stream.expand(-1, -1, len(g.receivers), -1))
                want = cache[g.point]
            elif g.norm is not None or g.proj is not None:
                x = g.norm.forward(stream[:, :, 0]) if g.norm is not None else stream[:, :, 0]
                got = g.site.read(g.proj.forward(x), None) if g.proj is not None else x
                want = cache[g.point]
            else:
                continue
            ok, diff = close(got, want)
            if not ok:
                raise UnsupportedModelError(
                    f"recomputing {g.point} from {g.stream} through the model's own norm and projection does not "
                    f"reproduce it (differs by up to {diff:.3g}): this block does not read its input the way the "
                    "graph assumes, so its receivers cannot be given separate inputs.")

    # -------------------------------------------------------------------------------- receiver algebra
    def project(self, g: _Group, x: Tensor) -> Tensor:
        """Each receiver's own heads from its own stream: ``x [batch, pos, R, d_model]`` (one stream per receiver of
        the group) → ``[batch, pos, R, d_head]``, receiver ``r``'s head ``r`` of the projection of stream ``r``."""
        pre = g.norm.forward(x) if g.norm is not None else x
        heads = g.site.read(g.proj.forward(pre), None)                  # [batch, pos, R, n, d_head]
        return torch.diagonal(heads, dim1=-3, dim2=-2).movedim(-1, -2)  # [batch, pos, R, d_head]

    def _heads_out(self, l: int, z: Tensor) -> Tensor:
        """``z [batch, pos, head, d_head_v]`` → per-head results ``[batch, pos, head, d_model]``."""
        w = self._w_o[l].to(z.device, z.dtype)
        return torch.einsum("bphd,hdm->bphm", z, w)

    def sender_outputs(self, point: str, how: str, act: Tensor) -> Tensor:
        """What the senders at ``point`` write: ``[n, batch, pos, d_model]``."""
        if how == "heads":
            return self._heads_out(int(point.split(".")[1]), act).movedim(2, 0)
        return act[None]


class EdgeRun:
    """The hooks of one forward over a ``Graph``: record what senders write, and give receivers their own input.

    ``record``: keep every sender's output, ``acts [n_senders, batch, pos, d_model]`` (detached).
    ``coef [n_senders, n_receivers]`` with ``corrupted`` (a recorded ``acts``): edge ablation; receiver ``r`` reads
    ``stream + Σ_s coef[s, r] · (corrupted[s] − current[s])``, where ``current`` is what sender ``s`` writes in this
    very run (Hanna et al.'s convention: an ablated edge carries the sender's corrupted output, a kept edge its
    output in the intervened run). Receivers whose column of ``coef`` is zero are left untouched, so a zero ``coef``
    is bit-identical to the plain forward.
    ``grad=True``: every receiver reads ``stream + eps`` with ``eps`` a zero leaf per group (``self.eps``), whose
    gradient after ``backward`` is ∂metric/∂(that receiver's input).
    ``input``: a replacement for ``blocks.0.hook_resid_pre`` (EAP-IG's interpolated embeddings)."""

    def __init__(self, graph: Graph, *, record: bool = False, coef: Tensor | None = None,
                 corrupted: Tensor | None = None, grad: bool = False, input: Tensor | None = None):
        self.graph, self.record, self.grad, self.input = graph, record, grad, input
        self.coef = coef
        self.corrupted = corrupted
        self.acts: Tensor | None = None
        self.diff: Tensor | None = None
        self.eps: dict[int, Tensor] = {}
        self._streams: dict[str, Tensor] = {}
        groups = graph.groups
        # which groups rewrite their point, and which of those recompute every receiver rather than the changed ones
        self._live = ([bool(coef[:, g.receivers.start:g.receivers.stop].any()) for g in groups]
                      if coef is not None else [grad] * len(groups))
        self._all = set(range(len(groups))) if grad else set()
        for i, grp in enumerate(groups):
            # a norm output shared with q/k/v (GPT-J, Phi): once an MLP (or mixer) is given its own input there, the
            # projections read that input too, so every head of the block is recomputed from the stream
            if grp.shared_norm and self._live[i]:
                for j, other in enumerate(groups):
                    if other.heads and other.stream == grp.stream:
                        self._live[j] = True
                        self._all.add(j)

    def hooks(self) -> list[tuple[str, object]]:
        """``fwd_hooks`` for ``run_with_hooks`` / ``run_variants``: one function per point, in forward order."""
        g = self.graph
        fns: dict[str, list] = {}
        if self.input is not None:
            fns.setdefault("blocks.0.hook_resid_pre", []).append(self._replace_input)
        for point, start, how in g._sender_points:
            if self.record or self.coef is not None:
                fns.setdefault(point, []).append(lambda act, hook, s=start, h=how, p=point: self._sender(act, p, s, h))
        for i, grp in enumerate(g.groups):
            if self._live[i]:
                fns.setdefault(grp.stream, []).append(lambda act, hook, p=grp.stream: self._keep(p, act))
                fns.setdefault(grp.point, []).append(lambda act, hook, i=i: self._receive(i, act))
        return [(name, _chain(fs)) for name, fs in fns.items()]

    def _replace_input(self, act, hook):
        return self.input.to(act.device, act.dtype)

    def _keep(self, point: str, act: Tensor) -> None:
        self._streams[point] = act

    def _sender(self, act: Tensor, point: str, start: int, how: str) -> None:
        out = self.graph.sender_outputs(point, how, act)
        n = out.shape[0]
        if self.record:
            if self.acts is None:
                self.acts = act.new_zeros((self.graph.n_senders, *out.shape[1:]), dtype=_acc(act.dtype))
            self.acts[start:start + n] = out.detach()
        if self.coef is not None:
            if self.diff is None:
                self.diff = act.new_zeros((self.graph.n_senders, *out.shape[1:]), dtype=_acc(act.dtype))
            self.diff[start:start + n] = self.corrupted[start:start + n].to(act.device) - out.detach()

    def _receive(self, i: int, act: Tensor) -> Tensor | None:
        grp = self.graph.groups[i]
        stream = self._streams[grp.stream]
        rs = grp.receivers
        if self.grad:
            eps = torch.zeros((*stream.shape[:2], len(rs), stream.shape[-1]), dtype=stream.dtype, device=stream.device,
                              requires_grad=True)
            self.eps[i] = eps
            x = stream[:, :, None] + eps
            idx = None
        else:
            c = self.coef[:grp.n_up, rs.start:rs.stop].to(self.diff.device, self.diff.dtype)
            live = torch.arange(len(rs)) if i in self._all else c.any(0).nonzero()[:, 0]
            delta = torch.einsum("sr,sbpd->bprd", c[:, live], self.diff[:grp.n_up])
            x = stream[:, :, None] + delta.to(stream.dtype)
            idx = live.to(act.device)
        if grp.heads:
            new = self.graph.project(grp, x) if idx is None else _project_some(self.graph, grp, x, idx)
            if idx is None:
                return new.to(act.dtype)
            out = act.clone()
            out[:, :, idx] = new.to(act.dtype)
            return out
        x = x[:, :, 0]
        x = grp.norm.forward(x) if grp.norm is not None else x
        return (grp.site.read(grp.proj.forward(x), None) if grp.proj is not None else x).to(act.dtype)


def _project_some(graph: Graph, grp: _Group, x: Tensor, idx: Tensor) -> Tensor:
    """``Graph.project`` for the receivers ``idx`` of a group only: ``x [batch, pos, len(idx), d_model]``."""
    pre = grp.norm.forward(x) if grp.norm is not None else x
    heads = grp.site.read(grp.proj.forward(pre), None)                 # [batch, pos, len(idx), n, d_head]
    return heads[:, :, torch.arange(len(idx), device=heads.device), idx.to(heads.device)]


def _acc(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype for sender outputs and their differences: float32 at least."""
    return torch.promote_types(dtype, torch.float32)


def _chain(fns: list):
    if len(fns) == 1:
        return fns[0]

    def run(act, hook):
        for f in fns:
            new = f(act, hook)
            if new is not None:
                act = new
        return act

    return run
