"""Held-out evaluation of lenses: per layer, KL from the model's final distribution, cross-entropy of the next
token, and perplexity, averaged over every position of the evaluation rows (cross-entropy: all but the last)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import progress
from ..errors import InputError
from .logit import hidden_states, layer_labels


@dataclass
class LensEval:
    """Per-layer figures of several lenses on the same held-out tokens. Tensors are ``(layer,)`` over
    :attr:`layer_labels`, in nats."""

    layer_labels: list[str]
    kl: dict[str, Tensor]
    """Lens name → mean KL(model ‖ lens) per layer."""
    ce: dict[str, Tensor]
    """Lens name → mean next-token cross-entropy per layer (the last layer's is the model's own loss)."""
    n_tokens: int
    """Positions averaged over (KL); cross-entropy uses ``n_tokens - rows``."""

    def perplexity(self, name: str) -> Tensor:
        return self.ce[name].exp()

    def to_dict(self) -> dict:
        return {"n_tokens": self.n_tokens, "layers": [
            {"layer": label, **{f"{name}_{what}": round(float(v[l]), 5) for name in self.kl
                                for what, v in (("kl", self.kl[name]), ("ce", self.ce[name]),
                                                ("ppl", self.perplexity(name)))}}
            for l, label in enumerate(self.layer_labels)]}

    def markdown(self) -> str:
        """A per-layer table of KL (and perplexity) for each lens."""
        names = list(self.kl)
        head = "| layer | " + " | ".join(f"{n} KL" for n in names) + " | " + " | ".join(f"{n} ppl" for n in names) + " |"
        lines = [head, "|" + "---|" * (1 + 2 * len(names))]
        for l, label in enumerate(self.layer_labels):
            kl = " | ".join(f"{float(self.kl[n][l]):.3f}" for n in names)
            ppl = " | ".join(_ppl(float(self.perplexity(n)[l])) for n in names)
            lines.append(f"| {label} | {kl} | {ppl} |")
        return "\n".join(lines)


def _ppl(x: float) -> str:
    return f"{x:.3g}" if x < 1e5 else f"{x:.2e}" if math.isfinite(x) else "inf"


def evaluate(lenses: dict, rows: Tensor, *, batch_size: int = 4, show_progress: bool = False) -> LensEval:
    """Evaluate ``lenses`` (name → lens, all on one model) on token rows ``(n_rows, seq_len)``."""
    if not lenses:
        raise InputError("evaluate needs at least one lens, e.g. {'logit': LogitLens.from_model(model)}.")
    models = {id(l.model) for l in lenses.values()}
    if len(models) != 1:
        raise InputError("all lenses passed to evaluate must belong to the same model.")
    model = next(iter(lenses.values())).model
    if not isinstance(rows, Tensor) or rows.ndim != 2 or rows.shape[1] < 2:
        raise InputError("evaluate takes token rows of shape (n_rows, seq_len >= 2), e.g. lens.data.split(...).eval.")
    n_states = model.cfg.n_layers + 1
    kl = {n: torch.zeros(n_states, dtype=torch.float64) for n in lenses}
    ce = {n: torch.zeros(n_states, dtype=torch.float64) for n in lenses}
    n_tok = n_next = 0
    with torch.no_grad(), progress.task("evaluating lenses", total=len(rows), enabled=show_progress) as bar:
        for start in range(0, len(rows), batch_size):
            tokens = rows[start:start + batch_size].to(model.input_device)
            logits, states, _, _ = hidden_states(model, tokens)
            final_logp = logits.float().log_softmax(-1)
            final_p = final_logp.exp()
            nxt = tokens[:, 1:].to(logits.device)
            for idx, h in enumerate(states):
                shared = None  # the final residual stream has no translator: every lens reads it the same way
                for name, lens in lenses.items():
                    if shared is None or idx < n_states - 1:
                        logp = lens.forward(h, idx).float().log_softmax(-1)
                        k_sum = float((final_p * (final_logp - logp)).sum())
                        c_sum = float(-logp[:, :-1].gather(-1, nxt[..., None]).sum())
                        shared = (k_sum, c_sum)
                    kl[name][idx] += shared[0]
                    ce[name][idx] += shared[1]
            n_tok += tokens.numel()
            n_next += nxt.numel()
            bar.update(len(tokens))
    return LensEval(layer_labels(model.cfg.n_layers), {n: v / n_tok for n, v in kl.items()},
                    {n: v / n_next for n, v in ce.items()}, n_tok)
