"""The logit lens (nostalgebraist 2020): every layer's residual stream read out through the model's own final
norm and unembedding, as if the layers after it were skipped.

Hidden states, in TransformerLens's ``accumulated_resid`` order and labels: ``blocks.{l}.hook_resid_pre`` for
every block (``"{l}_pre"``; ``0_pre`` is the embedding), then the last block's ``hook_resid_post``
(``"final_post"``). That is ``n_layers + 1`` states, HF's ``hidden_states`` positions; the last one through the
lens is the model's logits, bit for bit (``LensResult.exact_final`` checks it on every run).

A lens is anything with ``forward(h, idx) -> logits`` over those states (``idx`` 0 … ``n_layers``), as in the
tuned-lens package: :class:`LogitLens` here, ``TunedLens`` in ``tuned.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, UnsupportedModelError, type_name
from ..tokens import token_strings
from .unembed import Unembed

DEFAULT_MAX_BYTES = 1 << 29
"""Working memory for one chunk of float32 logits and their log-probabilities (512 MiB): big vocabularies are
read out a few rows at a time instead of materialising ``[layers, batch, pos, d_vocab]``."""


def resid_names(n_layers: int) -> list[str]:
    """The hook points a lens reads, in order: each block's ``hook_resid_pre``, then the last ``hook_resid_post``."""
    return [f"blocks.{l}.hook_resid_pre" for l in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


def layer_labels(n_layers: int) -> list[str]:
    """TransformerLens's ``accumulated_resid`` labels for those points: ``0_pre`` … ``{n-1}_pre``, ``final_post``."""
    return [f"{l}_pre" for l in range(n_layers)] + ["final_post"]


class LogitLens:
    """The residual stream decoded directly: ``logits = head(ln_final(h))`` (tuned-lens's ``LogitLens``)."""

    def __init__(self, unembed: Unembed) -> None:
        self.unembed = unembed

    @classmethod
    def from_model(cls, model) -> LogitLens:
        return cls(Unembed(model))

    @property
    def model(self):
        return self.unembed.model

    name = "logit"

    def transform_hidden(self, h: Tensor, idx: int) -> Tensor:
        """Identity: the logit lens reads the residual stream as it is."""
        return h

    def forward(self, h: Tensor, idx: int) -> Tensor:
        """Logits ``(batch, pos, d_vocab)`` for hidden state ``idx`` ``(batch, pos, d_model)``."""
        return self.unembed(self.transform_hidden(h, idx))

    __call__ = forward

    def run(self, input, *, k: int = 5, targets=None, max_bytes: int = DEFAULT_MAX_BYTES, **kwargs) -> LensResult:
        """Read every layer out for ``input`` (text, texts or token ids ``(batch, pos)``); see :func:`run_lens`."""
        return run_lens(self, input, k=k, targets=targets, max_bytes=max_bytes, **kwargs)


@dataclass
class LensResult:
    """What a lens reads at every layer and position. Axes: ``layer`` runs over :attr:`layer_labels`
    (``n_layers + 1`` hidden states), ``batch`` over prompts, ``pos`` over tokens, ``k`` over the top tokens
    (most likely first), ``target`` over the chosen targets. Probabilities are float32, KL and entropy in nats."""

    lens: str
    """``"logit"`` or ``"tuned"``."""
    layer_labels: list[str]
    """One per hidden state: ``0_pre`` … ``{n-1}_pre``, ``final_post``."""
    tokens: list[list[str]]
    """``[batch][pos]`` the input tokens as strings (``#id`` when the model has no tokenizer)."""
    token_ids: Tensor
    """``(batch, pos)`` input token ids."""
    mask: Tensor
    """``(batch, pos)`` bool: real tokens (False on padding; statistics there are meaningless)."""
    top_indices: Tensor
    """``(layer, batch, pos, k)`` token ids of the k most likely next tokens."""
    top_probs: Tensor
    """``(layer, batch, pos, k)`` their probabilities."""
    top_strings: list[list[list[list[str]]]]
    """``[layer][batch][pos][k]`` those tokens as strings."""
    kl: Tensor
    """``(layer, batch, pos)`` KL(model ‖ lens): from the model's final distribution to the lens's, nats."""
    entropy: Tensor
    """``(layer, batch, pos)`` entropy of the lens's distribution, nats."""
    target_ids: Tensor
    """``(target,)`` the chosen target token ids (empty when none were asked for)."""
    target_probs: Tensor
    """``(layer, batch, pos, target)`` probability of each target."""
    target_ranks: Tensor
    """``(layer, batch, pos, target)`` rank of each target: 1 is the most likely token."""
    exact_final: bool
    """Whether the last hidden state through the lens equals the model's logits exactly (``torch.equal``)."""
    target_strings: list[str] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.layer_labels)

    def top_tokens(self, batch: int = 0) -> list[list[str]]:
        """``[layer][pos]`` the most likely token at each layer and position, for prompt ``batch``."""
        self._check_batch(batch)
        return [[p[0] if p else "" for p in layer[batch]] for layer in self.top_strings]

    def view_args(self, batch: int = 0) -> dict:
        """Keyword arguments for ``views.lens_table`` for prompt ``batch``: tokens, top tokens ``[layer][pos]``,
        top probabilities ``(layer, pos)`` and layer labels."""
        self._check_batch(batch)
        return dict(tokens=self.tokens[batch], top_tokens=self.top_tokens(batch),
                    top_probs=self.top_probs[:, batch, :, 0], layer_labels=self.layer_labels)

    def view(self, batch: int = 0, title: str | None = None):
        """The interactive lens table for prompt ``batch`` (:func:`mechscope.views.lens_table`): layers × positions,
        each cell the top token coloured by its probability; hover lists the top k and the KL to the final layer."""
        from ..views import lens_table

        args = self.view_args(batch)
        extra = {"top_k_tokens": [layer[batch] for layer in self.top_strings],
                 "top_k_probs": self.top_probs[:, batch], "kl": self.kl[:, batch]}
        if len(self.target_strings):
            for t, name in enumerate(self.target_strings):
                extra[f"p({name!r})"] = self.target_probs[:, batch, :, t]
        return lens_table(**args, title=title or f"{self.lens} lens", extra=extra)

    def _repr_html_(self) -> str:
        return self.view()._repr_html_()

    def _check_batch(self, batch: int) -> None:
        n = self.token_ids.shape[0]
        if isinstance(batch, bool) or not isinstance(batch, int) or not -n <= batch < n:
            raise InputError(f"batch must be a prompt index 0 to {n - 1}, got {batch!r}.")

    def to_dict(self) -> dict:
        """Plain data for JSON: per prompt, per layer, per position: the top-k tokens and probabilities, KL to
        the final distribution, entropy, and the targets' probabilities and ranks."""
        prompts = []
        for b in range(self.token_ids.shape[0]):
            n_real = int(self.mask[b].sum())
            positions = [p for p in range(self.token_ids.shape[1]) if self.mask[b, p]]
            layers = []
            for l, label in enumerate(self.layer_labels):
                rows = []
                for p in positions:
                    row = {"pos": p, "token": self.tokens[b][p],
                           "top": [{"token": s, "id": int(i), "prob": round(float(q), 6)} for s, i, q in
                                   zip(self.top_strings[l][b][p], self.top_indices[l, b, p], self.top_probs[l, b, p])],
                           "kl": round(float(self.kl[l, b, p]), 6), "entropy": round(float(self.entropy[l, b, p]), 6)}
                    if len(self.target_ids):
                        row["targets"] = [{"token": s, "id": int(i), "prob": round(float(self.target_probs[l, b, p, t]), 6),
                                           "rank": int(self.target_ranks[l, b, p, t])}
                                          for t, (s, i) in enumerate(zip(self.target_strings, self.target_ids))]
                    rows.append(row)
                layers.append({"layer": label, "positions": rows})
            prompts.append({"tokens": self.tokens[b], "n_tokens": n_real, "layers": layers})
        return {"lens": self.lens, "layer_labels": self.layer_labels, "exact_final": self.exact_final,
                "prompts": prompts}


def target_ids(model, targets) -> tuple[Tensor, list[str]]:
    """Targets as ids ``(target,)`` and strings: a token string (``" Paris"``: exactly one token), an id, or a
    list of either."""
    if targets is None:
        return torch.zeros(0, dtype=torch.long), []
    if isinstance(targets, (str, int)) or (isinstance(targets, Tensor) and targets.ndim == 0):
        targets = [targets]
    if isinstance(targets, Tensor):
        targets = targets.tolist()
    if not isinstance(targets, Sequence):
        raise InputTypeError(f"targets must be a token string, a token id or a list of them, got {type_name(targets)}.")
    ids = []
    for t in targets:
        if isinstance(t, str):
            ids.append(model.to_single_token(t))
        elif isinstance(t, int) and not isinstance(t, bool):
            if not 0 <= t < model.cfg.d_vocab:
                raise InputError(f"target id {t} is outside the model's vocabulary of {model.cfg.d_vocab} ids "
                                 f"(0 to {model.cfg.d_vocab - 1}).")
            ids.append(t)
        else:
            raise InputTypeError(f"each target must be a token string (' Paris') or a token id, got {type_name(t)}.")
    strings = token_strings(model.tokenizer, torch.tensor(ids, dtype=torch.long))
    return torch.tensor(ids, dtype=torch.long), strings


def _check_k(k, d_vocab: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_vocab:
        raise InputError(f"k (how many top tokens to keep) must be an int from 1 to d_vocab={d_vocab}, got {k!r}.")
    return k


def hidden_states(model, input, **kwargs) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
    """(logits, states, tokens, mask): one forward recording the ``n_layers + 1`` residual streams a lens reads,
    each ``(batch, pos, d_model)``, with the model's logits ``(batch, pos, d_vocab)``, token ids and mask."""
    names = resid_names(model.cfg.n_layers)
    batch = model._batch(input, kwargs.pop("prepend_bos", None), kwargs.pop("padding_side", None))
    mask = kwargs.pop("attention_mask", None)
    if mask is None:
        mask = batch.attention_mask
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch.tokens, names_filter=names, attention_mask=mask, **kwargs)
    mask = mask.bool() if mask is not None else torch.ones_like(batch.tokens, dtype=torch.bool)
    states = [cache[n] for n in names]
    shape = tuple(states[-1].shape)
    if len(shape) != 3:  # Qwen4-exp's concatenated streams pass: its final-norm module is the mixer that combines them
        raise UnsupportedModelError(
            f"this {model.cfg.family} model's residual stream is {shape}, not (batch, pos, d_model): it carries "
            "several streams (hyper-connections) that the model combines before its final norm, so no "
            "single stream can be read through the norm and unembedding; a lens is not defined for it.")
    return logits, states, batch.tokens, mask


def run_lens(lens, input, *, k: int = 5, targets=None, max_bytes: int = DEFAULT_MAX_BYTES, **kwargs) -> LensResult:
    """Run the model once on ``input`` and read every hidden state out through ``lens``.

    ``k``: top tokens kept per layer and position. ``targets``: token strings or ids whose probability and rank
    are reported. ``max_bytes``: working memory for float32 logits; rows of the batch are processed in chunks
    that fit (for a batch that fits in one chunk, the final row is computed exactly as the model's forward does).
    Other keyword arguments go to the model's forward (``prepend_bos``, ``padding_side``, ``attention_mask``...).
    """
    model = lens.model
    n_vocab = model.cfg.d_vocab
    k = _check_k(k, n_vocab)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise InputError(f"max_bytes (working memory for the lens's logits) must be a positive int, got {max_bytes!r}.")
    tids, tstrings = target_ids(model, targets)
    logits, states, tokens, mask = hidden_states(model, input, **kwargs)
    b, p = tokens.shape
    per_row = max(1, p * n_vocab * 4 * 4)  # float32 logits, log-probs and temporaries of one prompt
    rows = max(1, min(b, int(max_bytes // per_row)))
    n_states = len(states)
    out = {name: [] for name in ("top_probs", "top_indices", "kl", "entropy", "target_probs", "target_ranks")}
    exact = True
    with torch.no_grad():
        for start in range(0, b, rows):
            sl = slice(start, start + rows)
            final = logits[sl]
            final_logp = final.float().log_softmax(-1)
            final_p = final_logp.exp()
            chunk = {name: [] for name in out}
            for idx, z in _lens_logits(lens, [h[sl] for h in states], max_bytes // per_row):
                if idx == n_states - 1:
                    exact = exact and torch.equal(z, final)
                logp = z.float().log_softmax(-1)
                top = logp.topk(k, dim=-1)
                chunk["top_probs"].append(top.values.exp())
                chunk["top_indices"].append(top.indices)
                chunk["kl"].append((final_p * (final_logp - logp)).sum(-1))
                chunk["entropy"].append(-(logp.exp() * logp).sum(-1))
                t_logp = logp[..., tids.to(logp.device)]
                chunk["target_probs"].append(t_logp.exp())
                chunk["target_ranks"].append((logp[..., None, :] > t_logp[..., None]).sum(-1) + 1 if len(tids)
                                             else t_logp.long())
                del z, logp
            for name in out:
                out[name].append(torch.stack(chunk[name]))
    res = {name: torch.cat(v, dim=1).cpu() for name, v in out.items()}
    str_tokens = token_strings(model.tokenizer, tokens)
    vocab_str = _vocab_strings(model, res["top_indices"])
    return LensResult(
        lens=getattr(lens, "name", type(lens).__name__), layer_labels=layer_labels(model.cfg.n_layers),
        tokens=str_tokens, token_ids=tokens.cpu(), mask=mask.cpu(), top_indices=res["top_indices"],
        top_probs=res["top_probs"], top_strings=vocab_str, kl=res["kl"], entropy=res["entropy"],
        target_ids=tids, target_probs=res["target_probs"], target_ranks=res["target_ranks"], exact_final=bool(exact),
        target_strings=tstrings,
    )


def _lens_logits(lens, states: list[Tensor], rows_budget: int):
    """``(idx, logits)`` for each hidden state. Where the lens exposes ``transform_hidden`` and ``unembed`` (as
    tuned-lens's lenses and mechscope's do), several intermediate states go through the head in one call, so a
    big unembedding (Gemma 3: 671 MB in float32) is read from memory once per group rather than once per layer;
    the final state always goes alone, in the model's own batch shape, so it reproduces the model's logits."""
    n = len(states)
    rows = states[0].shape[0]
    group = max(1, rows_budget // max(1, rows)) if hasattr(lens, "transform_hidden") and hasattr(lens, "unembed") else 1
    for start in range(0, n - 1, group):
        idxs = range(start, min(start + group, n - 1))
        if group == 1:
            yield start, lens.forward(states[start], start)
            continue
        dev = states[n - 1].device  # one device for the group: a multi-device model's layers sit on several
        z = lens.unembed(torch.cat([lens.transform_hidden(states[i], i).to(dev) for i in idxs]))
        for j, i in enumerate(idxs):
            yield i, z[j * rows:(j + 1) * rows]
        del z
    yield n - 1, lens.forward(states[n - 1], n - 1)


def _vocab_strings(model, indices: Tensor) -> list:
    """``[layer][batch][pos][k]`` strings for ``indices`` ``(layer, batch, pos, k)``, decoding each id once."""
    ids = sorted(set(indices.reshape(-1).tolist()))
    table = dict(zip(ids, token_strings(model.tokenizer, torch.tensor(ids, dtype=torch.long))))
    return [[[[table[i] for i in kk] for kk in pos] for pos in b] for b in indices.tolist()]


def logit_lens(model, input, *, k: int = 5, targets=None, max_bytes: int = DEFAULT_MAX_BYTES, **kwargs) -> LensResult:
    """The logit lens of ``model`` on ``input``: ``LogitLens.from_model(model).run(input, ...)``."""
    return LogitLens.from_model(model).run(input, k=k, targets=targets, max_bytes=max_bytes, **kwargs)
