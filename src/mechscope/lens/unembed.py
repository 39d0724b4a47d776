"""The model's own way from the residual stream to logits, for any hidden state.

A lens decodes an intermediate residual stream as if it were the last one: through the model's final norm
module and then whatever its ``*ForCausalLM`` does after the decoder stack. That tail differs by family and is
code, not data: Gemma 2/3 soft-cap the logits (``tanh(z / c) * c``), Granite divides by ``logits_scaling``,
Cohere multiplies by ``logit_scale``, Mamba-style heads cast to float32. Rather than re-implement each,
:class:`Unembed` runs the model's own head code: it calls the HF causal-LM ``forward`` with its decoder stack
replaced, for that one call, by a stand-in that returns ``ln_final(h)`` as the last hidden state. Everything the
model does after the stack (``lm_head``, scaling, soft-capping, casts) then runs unchanged, so the lens of the
final residual stream is the model's logits, ``torch.equal`` (tested per family).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from ..errors import InputError


class _StackOutput(BaseModelOutputWithPastAndCrossAttentions):
    """The stand-in decoder's output: the last hidden state, and None for any other field a head reads from it
    (caches, attentions, a multimodal wrapper's image states)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return None


class Unembed:
    """``ln_final`` + the causal-LM head of a mechscope ``Model``: ``(…, pos, d_model) -> (…, pos, d_vocab)``.

    Not an ``nn.Module`` on purpose: a lens that holds it does not save the model's weights in its state dict.
    Gradients flow through it (the tuned lens trains through it), never into the model: it only reads weights.
    """

    def __init__(self, model) -> None:
        self.model = model
        fam = model.family
        hf = model.hf_model
        self.norm: nn.Module | None = hf.get_submodule(fam.ln_final) if fam.ln_final else None
        parts = fam.layers.split(".")[:-1]  # the modules holding the block list: one of them is what the head calls
        self.stacks: list[nn.Module] = [hf.get_submodule(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
        self.head: nn.Module = hf.get_submodule(fam.unembed)
        self.replays_head = bool(self.stacks)
        """Whether the causal LM's own head code runs (True for every ``*ForCausalLM``); False: only ``lm_head``."""

    @property
    def d_model(self) -> int:
        return self.model.cfg.d_model

    def normalize(self, h: Tensor) -> Tensor:
        """The final norm's output for residual stream ``h`` ``(batch, pos, d_model)``."""
        return self.norm(h) if self.norm is not None else h

    def __call__(self, h: Tensor) -> Tensor:
        """Logits ``(batch, pos, d_vocab)`` for residual stream ``h`` ``(batch, pos, d_model)``, in the model's
        own numerics (its dtype; float32 where its head upcasts)."""
        if h.ndim != 3:
            raise InputError(f"a residual stream to unembed must be (batch, pos, d_model), got shape {tuple(h.shape)}.")
        normed = self.normalize(h)
        if not self.replays_head:
            return self.head(normed)
        return self._replay(normed)

    def _replay(self, normed: Tensor) -> Tensor:
        hf = self.model.hf_model
        saved = [st.__dict__.get("forward") for st in self.stacks]  # accelerate keeps its device wrapper there
        called = []

        def stand_in(*args, **kwargs):
            called.append(True)
            return _StackOutput(last_hidden_state=normed)

        # every module on the path to the blocks is replaced: whichever the head calls (OPT's head calls
        # model.decoder, most call model, multimodal wrappers call the outer model) returns the lens's state
        for st in self.stacks:
            st.forward = stand_in
        ids = torch.zeros(normed.shape[:2], dtype=torch.long, device=self.model.input_device)
        try:
            out = hf(input_ids=ids, use_cache=False)
            if not called:
                raise RuntimeError("the head never called the decoder stack")
        except Exception as e:  # noqa: BLE001 - a head that needs more of the stack's output than its last state
            warnings.warn(f"{type(hf).__name__}'s head could not run on a replaced decoder output ({e}); the lens "
                          "uses ln_final and lm_head only, without any logit scaling or soft-capping after them.",
                          stacklevel=3)
            self.replays_head = False
            return self.head(normed)
        finally:
            for st, fwd in zip(self.stacks, saved):
                if fwd is None:
                    st.__dict__.pop("forward", None)
                else:
                    st.forward = fwd
        return out.logits
