"""Causal tracing (Meng et al. 2022, §2.1): where along layers × tokens does a model recall a fact?

Three runs of one prompt ("The Space Needle is located in the city of" → " Seattle"):

- **clean**: the model as it is; ``high`` = p(answer).
- **corrupted**: Gaussian noise of standard deviation σ added to the subject tokens' embeddings (``hook_embed``),
  ``samples`` independent draws, the same draws in every run (seeded); ``low`` = p(answer) averaged over draws.
  σ is by default 3 × the standard deviation of the subject embeddings over a dataset, as in ROME.
- **corrupted-with-restoration**: the corrupted run with one clean state put back at one token: the residual
  stream leaving block ``layer`` (``resid``), or the attention (``attn``) / MLP (``mlp``) outputs of a window of
  ``window`` layers around ``layer`` (ROME's ``trace_important_window``: layers ``layer − window//2`` to
  ``layer + ceil(window/2) − 1``, clipped to the model).

The *indirect effect* of a state is p(restored) − ``low``. ROME's finding on GPT-2-XL: an early site (MLPs at
the last subject token, middle layers) and a late site (attention at the last token).

Two ways to run a restoration, which agree (tested): ``method="noise"`` is Meng's literal recipe (noise hook on
the embeddings plus restore hooks, the whole model per run); ``method="replay"`` caches the corrupted run once and
starts each restoration from its residual stream at the first restored layer, so every earlier block is a plain
replay that the batched engine can skip (prefix reuse). ``"auto"`` (default) uses replay after checking, on the
model at hand, that replaying the corrupted residual reproduces the corrupted run; models whose blocks read
more than the residual stream fail the check and get ``"noise"``.

Every restoration is one *variant* for :func:`mechscope.patching.run_variants`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name
from ..tokens import token_strings
from .engine import run_variants
from .result import PatchResult

KINDS = ("resid", "mlp", "attn")
POINT = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}
CATEGORIES = ("first subject token", "middle subject tokens", "last subject token", "first subsequent token",
              "further tokens", "last token")
"""Meng et al.'s token categories (Figure 2), in their order."""
METHODS = ("auto", "replay", "noise")


# ------------------------------------------------------------------------------------------------ the corruption
def subject_embedding_std(model, subjects: Sequence[str | Tensor]) -> float:
    """Standard deviation of the token embeddings (``hook_embed``: the embedding module's output, Gemma's scale
    included) over every token of every subject, as ROME's ``collect_embedding_std``: subjects are tokenised alone,
    without BOS; token tensors are used as given."""
    ids = []
    for s in subjects:
        if isinstance(s, Tensor):
            ids.append(s.reshape(-1).long())
        elif isinstance(s, str):
            if model.tokenizer is None:
                raise InputError("text subjects need a model with a tokenizer; pass token ids instead.")
            ids.append(torch.tensor(model.tokenizer(s, add_special_tokens=False)["input_ids"], dtype=torch.long))
        else:
            raise InputTypeError(f"a subject must be a string or token ids, got {type_name(s)}.")
    if not ids or sum(len(i) for i in ids) < 2:
        raise InputError("subject_embedding_std needs at least two subject tokens to take a standard deviation.")
    embed = model.hf_model.get_input_embeddings()
    with torch.no_grad():
        e = embed(torch.cat(ids).to(embed.weight.device)[None])
    return float(e.float().std())


def resolve_noise(model, noise: float | str, subjects: Sequence[str | Tensor]) -> float:
    """σ from ``noise``: a number is σ itself; ``"3x"`` is 3 × :func:`subject_embedding_std` over ``subjects``."""
    if isinstance(noise, bool):
        raise InputTypeError(f"noise must be a number (σ) or a string like '3x', got {noise!r}.")
    if isinstance(noise, (int, float)):
        if not noise > 0 or not math.isfinite(noise):
            raise InputError(f"noise (σ) must be a positive number, got {noise!r}.")
        return float(noise)
    if isinstance(noise, str) and noise.endswith("x"):
        try:
            factor = float(noise[:-1])
        except ValueError:
            factor = -1.0
        if factor > 0:
            return factor * subject_embedding_std(model, subjects)
    raise InputError(f"noise must be σ (a positive number) or 'Nx' (N × the std of the subject embeddings, ROME "
                     f"uses '3x'), got {noise!r}.")


def make_noise(samples: int, n_tokens: int, d_model: int, sigma: float, seed: int) -> Tensor:
    """``(samples, n_tokens, d_model)`` float32 Gaussian noise of std ``sigma``, the same for a given seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((samples, n_tokens, d_model), generator=g) * sigma


def _add_noise(noise: Tensor, span: tuple[int, int]):
    a, b = span

    def hook(act, hook):  # act: (samples, pos, d_model)
        act = act.clone()
        act[:, a:b] += noise.to(device=act.device, dtype=act.dtype)
        return act
    return hook


def _restore(pos: int, clean: Tensor):
    """Put the clean state (``clean``: (1, pos, d)) back at one token in every sample."""
    def hook(act, hook):
        act = act.clone()
        act[:, pos] = clean[0, pos].to(act.dtype)
        return act
    return hook


def _replace(value: Tensor, pos: int | None = None, clean: Tensor | None = None):
    """Replace the whole activation by ``value`` (a cached corrupted state, (samples, pos, d)), with the clean
    state (``clean``: (1, pos, d)) at token ``pos`` when given."""
    def hook(act, hook):
        new = value.to(device=act.device, dtype=act.dtype, copy=True)  # never hand the cache itself to the model
        if pos is not None:
            new[:, pos] = clean[0, pos].to(new.dtype)
        return new
    return hook


def _answer_prob(answer: int):
    """Meng's metric: p(answer) at the last position, averaged over the noise samples (0-d)."""
    def metric(logits: Tensor) -> Tensor:  # (samples, pos, vocab)
        return logits[:, -1].float().softmax(-1)[:, answer].mean()
    return metric


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """The layers restored for a window centred on ``layer`` (ROME: ``max(0, layer − window//2)`` up to
    ``min(n_layers, layer − (−window//2))``, exclusive)."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


# ------------------------------------------------------------------------------------------------ inputs
def _tokens_and_span(model, prompt, subject) -> tuple[Tensor, tuple[int, int]]:
    """``(1, pos)`` ids and the subject's token span ``[start, end)``."""
    from ..datasets.facts import subject_span

    if isinstance(prompt, Tensor):
        tokens = prompt.reshape(1, -1).long() if prompt.dim() == 1 or (prompt.dim() == 2 and prompt.shape[0] == 1) \
            else None
        if tokens is None or prompt.is_floating_point():
            raise InputError(f"trace runs one prompt; got token ids of shape {tuple(prompt.shape)}; pass (pos,) or (1, pos).")
        if isinstance(subject, str):
            raise InputError("with token ids as the prompt, give the subject as a token span (start, end).")
    elif isinstance(prompt, str):
        if model.tokenizer is None:
            raise InputError("this model has no tokenizer: pass the prompt as token ids and the subject as (start, end).")
        if isinstance(subject, str):
            ids, span = subject_span(model.tokenizer, prompt, subject, model.default_prepend_bos)
            return torch.tensor([ids]), span
        tokens = model.to_tokens(prompt).cpu()
    else:
        raise InputTypeError(f"prompt must be text or token ids, got {type_name(prompt)}.")
    if not (isinstance(subject, (tuple, list)) and len(subject) == 2 and all(isinstance(x, int) for x in subject)):
        raise InputTypeError(f"subject must be its text (as written in the prompt) or a token span (start, end), "
                             f"got {type_name(subject)}.")
    a, b = subject
    if not 0 <= a < b <= tokens.shape[1]:
        raise InputError(f"subject span ({a}, {b}) is not inside the prompt's {tokens.shape[1]} tokens; give "
                         f"0 <= start < end <= {tokens.shape[1]}.")
    return tokens, (a, b)


def _answer_id(model, answer, clean_logits: Tensor) -> int:
    if answer is None:
        return int(clean_logits[0, -1].argmax())
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < model.cfg.d_vocab:
            raise InputError(f"answer id {answer} is outside the vocabulary (0 to {model.cfg.d_vocab - 1}).")
        return answer
    if isinstance(answer, str):
        if model.tokenizer is None:
            raise InputError("a text answer needs a tokenizer; pass the answer's token id.")
        ids = model.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not ids:
            raise InputError(f"the answer {answer!r} is empty after tokenisation; pass its text with its leading "
                             "space (' Paris').")
        return ids[0]  # the first token: what the next-token prediction can be
    raise InputTypeError(f"answer must be None (the model's own top prediction), text or a token id, got "
                         f"{type_name(answer)}.")


# ------------------------------------------------------------------------------------------------ results
@dataclass
class Trace:
    """One fact's causal trace. ``results[kind]``: a :class:`PatchResult` ``(layer, pos)`` of p(answer) with that
    state restored (``pos`` labels are the tokens, the subject's marked with ``*``)."""

    results: dict[str, PatchResult]
    high: float
    """p(answer) on the clean prompt."""
    low: float
    """p(answer) with the subject corrupted, nothing restored (mean over samples)."""
    answer: int
    answer_str: str
    tokens: list[str]
    subject: tuple[int, int]
    """The subject's token positions ``[start, end)``."""
    sigma: float
    samples: int
    window: int
    method: str = "replay"

    def indirect_effect(self, kind: str) -> Tensor:
        """``(layer, pos)``: p(restored) − p(corrupted)."""
        return self.results[kind].values - self.low

    def peaks(self) -> list[dict]:
        """Per kind, where restoring helps most: ``{"kind", "layer", "pos", "token", "p", "indirect_effect"}``."""
        out = []
        for kind, r in self.results.items():
            v = r.values.nan_to_num(float("-inf"))
            layer, pos = (int(i) for i in torch.unravel_index(v.argmax(), v.shape))
            out.append({"kind": kind, "layer": layer, "pos": pos, "token": self.tokens[pos],
                        "p": float(r.values[layer, pos]), "indirect_effect": float(r.values[layer, pos]) - self.low})
        return out

    def to_dict(self) -> dict:
        return {"answer": self.answer_str, "answer_id": self.answer, "high": self.high, "low": self.low,
                "tokens": self.tokens, "subject": list(self.subject), "sigma": self.sigma, "samples": self.samples,
                "window": self.window, "method": self.method, "peaks": self.peaks(),
                "results": {k: r.to_dict() for k, r in self.results.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Trace:
        """The trace that :meth:`to_dict` wrote (e.g. read back from JSON)."""
        results = {k: PatchResult(torch.tensor(r["values"], dtype=torch.float32), tuple(r["dims"]), r["labels"],
                                  r["metric"], r["title"]) for k, r in d["results"].items()}
        return cls(results, d["high"], d["low"], d["answer_id"], d["answer"], d["tokens"], tuple(d["subject"]),
                   d["sigma"], d["samples"], d["window"], d["method"])

    def view(self, title: str | None = None):
        """Meng's picture, one heatmap per kind: tokens down (subject marked ``*``), layers across, p(answer)."""
        from .. import views

        panels = []
        for kind, r in self.results.items():
            what = {"resid": "the residual stream (one layer)",
                    "mlp": f"MLP outputs (window of {self.window} layers centred here)",
                    "attn": f"attention outputs (window of {self.window} layers centred here)"}[kind]
            panels.append(views.heatmap(r.values.T.numpy(), r.labels["pos"], r.labels["layer"],
                                        title=f"p({self.answer_str.strip()}) restoring {what}; clean {self.high:.3f}, "
                                              f"corrupted {self.low:.3f}"))
        return views.report(panels, title or f"causal trace: p({self.answer_str.strip()})")


@dataclass
class AverageTrace:
    """Causal traces averaged over facts by Meng's token categories. ``results[kind]``: a :class:`PatchResult`
    ``(category, layer)`` of the **average indirect effect** (mean p(restored) − mean ``low``), categories in
    :data:`CATEGORIES` order; NaN where no fact has that category (e.g. one-token subjects have no middle)."""

    results: dict[str, PatchResult]
    high: float
    """Mean clean p(answer)."""
    low: float
    """Mean corrupted p(answer)."""
    n: int
    traces: list[Trace] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict:
        return {"n": self.n, "high": self.high, "low": self.low, "average_total_effect": self.high - self.low,
                "results": {k: r.to_dict() for k, r in self.results.items()}}

    def view(self, title: str | None = None):
        from .. import views

        return views.report([r.view() for r in self.results.values()],
                            title or f"average indirect effect over {self.n} facts")


# ------------------------------------------------------------------------------------------------ the trace
def trace_with_patch(model, tokens: Tensor, subject: tuple[int, int], answer: int, states: Sequence[tuple[str, int]],
                     *, sigma: float, samples: int = 10, seed: int = 1) -> float:
    """Meng's ``trace_with_patch``, the eager reference: p(answer) at the last position, averaged over ``samples``
    noise draws on the subject's embeddings, with the clean value of each ``(point name, pos)`` in ``states``
    restored. ``tokens``: ``(1, pos)``. ``states=[]`` gives the corrupted probability."""
    tokens = tokens.reshape(1, -1)
    noise = make_noise(samples, subject[1] - subject[0], model.cfg.d_model, sigma, seed)
    names = sorted({n for n, _ in states})
    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, names_filter=names) if names else (None, {})
        hooks = [("hook_embed", _add_noise(noise, subject))] + [(n, _restore(p, clean[n])) for n, p in states]
        logits = model.run_with_hooks(tokens.expand(samples, -1), fwd_hooks=hooks)
    return float(_answer_prob(answer)(logits))


def trace(model, prompt: str | Tensor, subject: str | tuple[int, int], answer: str | int | None = None, *,
          kinds: Sequence[str] = KINDS, window: int = 10, noise: float | str = "3x", samples: int = 10,
          seed: int = 1, noise_subjects: Sequence[str | Tensor] | None = None, method: str = "auto",
          **engine_options) -> Trace:
    """Causal tracing of one prompt: for each kind, p(answer) with each (layer, token) state restored.

    ``prompt``: text, or ids ``(pos,)``/``(1, pos)``; ``subject``: its text as written in the prompt, or a token span
    ``(start, end)``. ``answer``: None (the model's clean top-1 token), text (its first token; mind the leading
    space) or an id. ``noise``: σ, or ``"Nx"`` = N × the std of the embeddings of ``noise_subjects`` (default: the
    known_1000 subjects when the model has a tokenizer and the file is present, else this prompt's subject).
    ``samples`` noise draws (seeded by ``seed``; the same draws in every run). ``window``: MLP/attention layers
    restored together (ROME: 10). ``engine_options`` go to :func:`run_variants` (``method`` there is the engine's)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise InputError(f"kinds must be some of {', '.join(KINDS)}, got {list(kinds)!r}.")
    if not isinstance(window, int) or window < 1:
        raise InputError(f"window must be a positive number of layers, got {window!r}.")
    if not isinstance(samples, int) or samples < 1:
        raise InputError(f"samples must be a positive number of noise draws, got {samples!r}.")
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    tokens, span = _tokens_and_span(model, prompt, subject)
    tokens = tokens.to(model.hf_model.get_input_embeddings().weight.device)
    if noise_subjects is None and isinstance(noise, str):
        noise_subjects = _default_noise_subjects(model, tokens, span)
    sigma = resolve_noise(model, noise, noise_subjects or [])
    n_layers, n_pos = model.cfg.n_layers, tokens.shape[1]
    names = set(model.hook_names())
    wanted = [f"blocks.{l}.{POINT[k]}" for k in kinds for l in range(n_layers)] + \
             [f"blocks.{l}.hook_resid_pre" for l in range(n_layers)] + [f"blocks.{l}.hook_resid_post" for l in range(n_layers)]
    wanted = [n for n in dict.fromkeys(wanted) if n in names]
    noise_t = make_noise(samples, span[1] - span[0], model.cfg.d_model, sigma, seed)
    batch = tokens.expand(samples, -1)
    with torch.no_grad():
        clean_logits, clean = model.run_with_cache(tokens, names_filter=wanted)
        answer_id = _answer_id(model, answer, clean_logits)
        metric = _answer_prob(answer_id)
        high = float(metric(clean_logits))
        with model.hooks(fwd_hooks=[("hook_embed", _add_noise(noise_t, span))]):
            corrupt_logits, corrupt = model.run_with_cache(batch, names_filter=wanted)
        low = float(metric(corrupt_logits))
    noisy = ("hook_embed", _add_noise(noise_t, span))
    if method == "auto":
        method = "replay" if _replay_reproduces(model, batch, corrupt, metric, low, n_layers) else "noise"

    labels = token_strings(model.tokenizer, tokens[0])
    labels = [f"{t}*" if span[0] <= i < span[1] else t for i, t in enumerate(labels)]
    results = {}
    for kind in kinds:
        cells, variants = _restorations(kind, method, window, n_layers, n_pos, names, clean, corrupt, noisy)
        values = torch.full((n_layers, n_pos), float("nan"))
        if variants:
            ps = run_variants(model, batch, variants, metric, **engine_options)
            for (layer, pos), p in zip(cells, ps):
                values[layer, pos] = float(p)
        what = {"resid": "residual stream", "mlp": f"MLP (window {window})", "attn": f"attention (window {window})"}
        results[kind] = PatchResult(values, ("layer", "pos"), {"layer": [str(l) for l in range(n_layers)], "pos": labels},
                                    metric=f"p(answer) restoring {what[kind]}",
                                    title=f"causal trace, {what[kind]}")
    answer_str = token_strings(model.tokenizer, torch.tensor([answer_id]))[0]
    return Trace(results, high, low, answer_id, answer_str, labels, span, sigma, samples, window, method)


def _restorations(kind: str, method: str, window: int, n_layers: int, n_pos: int, names: set, clean, corrupt,
                  noisy) -> tuple[list[tuple[int, int]], list]:
    """The (layer, pos) cells of one kind and their variants, in the same order. Replay variants build their
    replacement inside the hook, so memory holds one cached corrupted run, not one copy per cell."""
    cells, variants = [], []
    for layer in range(n_layers):
        if kind == "resid":
            group = [layer]
        else:
            group = [l for l in window_layers(layer, window, n_layers) if f"blocks.{l}.{POINT[kind]}" in names]
        if not group:
            continue  # no such point near this layer (hybrid blocks without attention or MLP): NaN
        for pos in range(n_pos):
            restore = [(f"blocks.{l}.{POINT[kind]}", _restore(pos, clean[f"blocks.{l}.{POINT[kind]}"])) for l in group]
            if method == "noise":
                variants.append([noisy, *restore])
            elif kind == "resid":  # the whole corrupted residual, one token clean
                name = f"blocks.{layer}.hook_resid_post"
                variants.append([(name, _replace(corrupt[name], pos, clean[name]))])
            else:  # the corrupted residual entering the window, then the window's clean outputs at one token
                name = f"blocks.{group[0]}.hook_resid_pre"
                variants.append([(name, _replace(corrupt[name])), *restore])
            cells.append((layer, pos))
    return cells, variants


def _replay_reproduces(model, batch: Tensor, corrupt, metric, low: float, n_layers: int) -> bool:
    """Whether starting from the cached corrupted residual at a middle block reproduces the corrupted run (it does
    wherever blocks read nothing but the residual stream)."""
    name = f"blocks.{n_layers // 2}.hook_resid_pre"
    with torch.no_grad():
        logits = model.run_with_hooks(batch, fwd_hooks=[(name, _replace(corrupt[name]))])
    return math.isclose(float(metric(logits)), low, rel_tol=1e-4, abs_tol=1e-6)


def _default_noise_subjects(model, tokens: Tensor, span: tuple[int, int]) -> list:
    if model.tokenizer is not None:
        from ..datasets.facts import KNOWN_1000_PATH, load_facts

        if KNOWN_1000_PATH.is_file():
            return [f.subject for f in load_facts()]
    return [tokens[0, span[0]:span[1]].cpu()]


# ------------------------------------------------------------------------------------------------ averages
def categories(span: tuple[int, int], n_pos: int) -> dict[str, list[int]]:
    """Meng's token categories for a prompt of ``n_pos`` tokens whose subject is ``[start, end)``: the positions in
    each (ROME's ``read_knowledge``; tokens before the subject, e.g. BOS, are in none)."""
    a, b = span
    last = n_pos - 1
    cats = {"first subject token": [a], "middle subject tokens": list(range(a + 1, b - 1)),
            "last subject token": [b - 1], "first subsequent token": [b] if b <= last else [],
            "further tokens": list(range(b + 1, last)), "last token": [last]}
    return cats


def average_traces(model, facts, *, kinds: Sequence[str] = KINDS, window: int = 10, noise: float | str = "3x",
                   samples: int = 10, seed: int = 1, progress=None, **options) -> AverageTrace:
    """Trace many facts and average by token category (Meng et al. Figure 2).

    ``facts``: :class:`~mechscope.datasets.facts.Fact` / ``KnownFact`` records, or ``(prompt, subject, answer)``
    tuples (answer None for the model's own prediction). With ``noise="3x"`` σ is 3 × the std of the embeddings of
    these facts' subjects. Positions are pooled within a category across facts (middle subject tokens and further
    tokens count each token, as ROME does); the result is the average indirect effect per category × layer.
    ``progress``: called as ``progress(i, n)`` after each fact."""
    items = [_as_item(f) for f in facts]
    if not items:
        raise InputError("average_traces needs at least one fact.")
    sigma = resolve_noise(model, noise, [s for _, s, _ in items])
    traces = []
    for i, (prompt, subject, answer) in enumerate(items):
        traces.append(trace(model, prompt, subject, answer, kinds=kinds, window=window, noise=sigma,
                            samples=samples, seed=seed, **options))
        if progress is not None:
            progress(i + 1, len(items))
    return average(traces)


def average(traces: Sequence[Trace]) -> AverageTrace:
    """Average finished traces (of one model, same kinds) by Meng's token categories; see :func:`average_traces`."""
    if not traces:
        raise InputError("average needs at least one trace.")
    high = sum(t.high for t in traces) / len(traces)
    low = sum(t.low for t in traces) / len(traces)
    results = {}
    for kind in traces[0].results:
        n_layers = traces[0].results[kind].values.shape[0]
        rows = {c: [] for c in CATEGORIES}
        for t in traces:
            v = t.results[kind].values                         # (layer, pos)
            for c, positions in categories(t.subject, v.shape[1]).items():
                rows[c].extend(v[:, p] for p in positions)
        table = torch.stack([torch.stack(rows[c]).mean(0) if rows[c] else torch.full((n_layers,), float("nan"))
                             for c in CATEGORIES]) - low
        results[kind] = PatchResult(table, ("category", "layer"),
                                    {"category": list(CATEGORIES), "layer": [str(l) for l in range(n_layers)]},
                                    metric="average indirect effect on p(answer)",
                                    title=f"{kind}: average indirect effect over {len(traces)} facts")
    return AverageTrace(results, high, low, len(traces), list(traces))


def _as_item(f) -> tuple:
    from ..datasets.facts import Fact, KnownFact

    if isinstance(f, KnownFact):
        return f.fact.prompt, f.fact.subject, f.answer
    if isinstance(f, Fact):
        return f.prompt, f.subject, " " + f.attribute.strip()
    if isinstance(f, (tuple, list)) and len(f) == 3:
        return tuple(f)
    raise InputTypeError(f"a fact must be a Fact, a KnownFact or a (prompt, subject, answer) tuple, got {type_name(f)}.")
