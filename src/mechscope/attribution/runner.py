"""The model as a function of one prompt's token embeddings, ``f(embeds (n, pos, d_model)) -> (n,)``.

Every attribution method perturbs the prompt in embedding space and reads a target off the logits. The model is
never re-implemented: each batch of embeddings replaces the activation at ``hook_embed`` (the embedding module's
output) in the real HF forward of the prompt's tokens, repeated ``n`` times; everything downstream, positions,
masks, norms and attention, is the model's own code. ``hook_embed`` is what the family's embedding module
returns: for Gemma it already includes the ``sqrt(d_model)`` scale, for GPT-2 the learned positions are added
after it (they are not attributed), for Granite-style multipliers it is before ``embedding_multiplier``.
Baselines are built in the same space by running the embedding module on baseline token ids.

Rows are evaluated ``batch_size`` at a time, so memory stays bounded by one batch's activations and, for the
gradient methods, its autograd graph.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError, type_name
from .target import Target


class EmbeddingRunner:
    """``f`` and its gradient for one prompt ``tokens (1, pos)`` and a bound target."""

    def __init__(self, model, tokens: Tensor, target: Target, batch_size: int = 16):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int (rows per forward pass), got {type_name(batch_size)}.")
        self.model = model
        self.tokens = tokens
        self.target = target
        self.batch_size = batch_size
        self.n_pos = tokens.shape[-1]
        # ask only for the logits the target reads (HF's logits_to_keep), when the model's forward takes it
        first = target.first_position
        self._kwargs = {"logits_to_keep": self.n_pos - first} if first and "logits_to_keep" in model._hf_kwargs else {}
        self.offset = first if self._kwargs else 0
        self.embeds = self.embed(tokens)  # (1, pos, d_model): the prompt's own hook_embed

    def embed(self, tokens: Tensor) -> Tensor:
        """``hook_embed`` of ``tokens (n, pos)``: what the model's embedding module returns for them, copied when the
        hook sees it (CTRL scales that tensor in place right after, so a cached reference would hold the scaled one
        and the forward would scale it twice)."""
        out = {}

        def save(act, hook):
            out["embed"] = act.detach().clone()

        with torch.no_grad():
            self.model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", save)], stop_at_layer=0)
        return out["embed"]

    def logits(self, embeds: Tensor) -> Tensor:
        """The model's logits with ``hook_embed`` replaced by ``embeds (n, pos, d_model)``: ``(n, kept_pos, d_vocab)``
        (positions from ``self.offset`` on). Differentiable in ``embeds``."""
        def replace(act, hook):
            return embeds.clone()  # CTRL scales its embeddings in place: never let a model write into our inputs

        tokens = self.tokens.expand(embeds.shape[0], -1)
        return self.model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", replace)], **self._kwargs)

    def values(self, embeds: Tensor) -> Tensor:
        """``f`` on each row of ``embeds (n, pos, d_model)``, without gradients: ``(n,)`` float32."""
        out = []
        with torch.no_grad():
            for chunk in embeds.split(self.batch_size):
                out.append(self._target(chunk))
        return torch.cat(out)

    def value_and_grad(self, embeds: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """Per batch of rows of ``embeds (n, pos, d_model)``: ``f`` ``(b,)`` and its gradient ``(b, pos, d_model)``.
        A generator, so callers reduce each batch's gradients before the next is computed."""
        if torch.is_inference_mode_enabled():
            raise InputError("gradient attributions (saliency, grad_x_input, ig) need autograd, which "
                             "torch.inference_mode() turns off for everything inside it; call them outside "
                             "inference_mode (inside torch.no_grad() is fine: they turn gradients back on).")
        for chunk in embeds.split(self.batch_size):
            x = chunk.detach().requires_grad_(True)
            with torch.enable_grad():
                v = self._target(x)
                (g,) = torch.autograd.grad(v.sum(), x)
            yield v.detach(), g

    def __call__(self, embeds: Tensor) -> Tensor:
        """``f(embeds (n, pos, d_model)) -> (n,)``, differentiable: a ``forward_func`` for any Captum method
        (``captum.attr.NoiseTunnel(Saliency(runner)).attribute(runner.embeds, ...)``)."""
        return self._target(embeds)

    def _target(self, embeds: Tensor) -> Tensor:
        return self.target(self.logits(embeds), self.tokens.expand(embeds.shape[0], -1), self.offset)


def check_input(model, input) -> Tensor:
    """One prompt as token ids ``(1, pos)``: text (tokenised as the model does, BOS prepended) or ids."""
    if isinstance(input, str):
        return model.to_tokens(input)
    if isinstance(input, Tensor):
        tokens = input if input.ndim == 2 else input[None]
        if tokens.ndim != 2 or tokens.shape[0] != 1:
            raise InputError(f"attribution explains one prompt; got token ids of shape {tuple(input.shape)}. Pass a "
                             "single prompt, (pos,) or (1, pos), and loop over a batch yourself.")
        return tokens.to(model.input_device)
    if isinstance(input, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in input) and input:
        return torch.tensor([input], dtype=torch.long, device=model.input_device)
    raise InputTypeError(f"attribution takes one prompt: a string or its token ids ((pos,) or (1, pos)), got "
                         f"{type_name(input)}.")


def prepare(model, input, target=None, position: int = -1, batch_size: int = 16) -> EmbeddingRunner:
    """The runner for one prompt and target (see ``target.as_target`` for what ``target`` may be): the model as a
    function of the prompt's embeddings, ``runner(embeds)``, with ``runner.embeds (1, pos, d_model)``; hand it to
    Captum's methods as their ``forward_func``."""
    from .target import as_target

    tokens = check_input(model, input)
    return EmbeddingRunner(model, tokens, as_target(model, target, tokens, position), batch_size)


def masked_values(runner: EmbeddingRunner, positions: list[int], baseline: Tensor, masks: Tensor) -> Tensor:
    """``f`` with each attributed token kept or replaced by its baseline: ``masks (m, n_positions)`` bool, True =
    the real token. Inputs are built one batch at a time, so memory is one batch's. Returns ``(m,)`` float32."""
    x = runner.embeds
    idx = torch.tensor(positions, device=x.device)
    out = []
    for chunk in masks.to(x.device).split(runner.batch_size):
        keep = torch.ones(chunk.shape[0], x.shape[1], dtype=torch.bool, device=x.device)
        keep[:, idx] = chunk
        out.append(runner.values(torch.where(keep[..., None], x, baseline)))
    return torch.cat(out) if out else torch.zeros(0)
