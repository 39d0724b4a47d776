"""``Model``: an unmodified HuggingFace causal LM with TransformerLens's hook vocabulary on top.

The HF model runs its own code and numerics. mechscope only adds torch hooks on the modules that hold the
points asked for, for the duration of a call, and switches attention to its eager-equivalent implementation
only while an attention internal (rot_q/rot_k/scores/pattern) is hooked.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from . import attention, tokens as tok_utils, weights
from .cache import ActivationCache
from .config import ModelConfig, build_config
from .errors import HookNameError, InputError, unknown_hook
from .families import Family, family_for
from .hooks import Attachment, Entry, HookFn, HookPoint, Virtual
from .points import build_points

NameFilter = str | Sequence[str] | Callable[[str], bool] | None
HookSpec = tuple[str | Callable[[str], bool], HookFn]


class _Stop(Exception):
    def __init__(self, resid: Tensor):
        self.resid = resid


class Model:
    """A hooked HF causal LM. Build with ``mechscope.load(...)`` or ``Model.from_hf(hf_model, tokenizer)``."""

    source = None
    """Where the weights came from, when not a plain HF checkpoint: a ``mechscope.gguf.GGUFSource`` (file,
    quantisation) for a model dequantised from GGUF by ``mechscope.load``; else None."""

    def __init__(self, hf_model: nn.Module, tokenizer=None, *, use_attn_result: bool = False):
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.family: Family = family_for(hf_model.config)
        self.blocks: nn.ModuleList = hf_model.get_submodule(self.family.layers)
        self.cfg: ModelConfig = build_config(hf_model, self.family, self.blocks)
        self.default_prepend_bos = tokenizer is not None and tokenizer.bos_token_id is not None
        self.default_padding_side: Literal["left", "right"] = "right"
        self._takes_position_ids = "position_ids" in inspect.signature(hf_model.forward).parameters
        self._attn_users = 0
        self._attn_saved: str | None = None
        self._persistent: list[Attachment] = []
        self._use_attn_result = use_attn_result
        self._added: dict[str, HookPoint] = {}
        self.hook_dict: dict[str, HookPoint] = build_points(hf_model, self.family, self.cfg, self.blocks,
                                                            use_attn_result)

    @classmethod
    def from_hf(cls, hf_model: nn.Module, tokenizer=None) -> Model:
        """Wrap a model you already have (``AutoModelForCausalLM``-style). The model is used as is, not copied."""
        if not hasattr(hf_model, "config"):
            raise InputError(f"from_hf expects a HuggingFace PreTrainedModel, got {type(hf_model).__name__}.")
        return cls(hf_model, tokenizer)

    def to(self, device_or_dtype: str | torch.device | torch.dtype) -> Model:
        """Move or cast the HF model in place (``model.to("cuda")``, ``model.to(torch.bfloat16)``); returns self."""
        self.hf_model.to(device_or_dtype)
        self.cfg = build_config(self.hf_model, self.family, self.blocks)
        return self

    def __repr__(self) -> str:
        c = self.cfg
        return (f"Model({c.family}: {c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads"
                f"{f' ({c.n_kv_heads} kv)' if c.n_kv_heads != c.n_heads else ''}, {c.dtype}, {c.device})")

    # ------------------------------------------------------------------------------------ hook points
    def hook_names(self) -> list[str]:
        """Every hook point, in forward order."""
        return list(self.hook_dict)

    def set_use_attn_result(self, use: bool) -> None:
        """Expose ``blocks.{l}.attn.hook_result`` (per-head outputs, ``[batch, pos, head, d_model]``: large)."""
        if use != self._use_attn_result:
            self._use_attn_result = use
            self.hook_dict = build_points(self.hf_model, self.family, self.cfg, self.blocks, use) | self._added

    def add_point(self, name: str, shape: tuple, doc: str = "", layer: int | None = None) -> HookPoint:
        """Add a named point that your own code fires (``point.fire(x)``) from inside the forward, so hooks, caches
        and filters treat it like the model's own: e.g. an SAE spliced in at ``blocks.3.hook_resid_post`` adds
        ``blocks.3.hook_resid_post.sae.hook_sae_acts_post``. ``shape`` names axes as in ``hook_dict``."""
        if name in self.hook_dict:
            raise InputError(f"hook point {name!r} already exists; remove_point it first or pick another name.")
        self._added[name] = HookPoint(name, Virtual(), layer, tuple(shape), doc)
        self.hook_dict[name] = self._added[name]
        return self._added[name]

    def remove_point(self, name: str) -> None:
        """Remove a point added with ``add_point``."""
        if name not in self._added:
            raise InputError(f"{name!r} was not added with add_point, so it cannot be removed.")
        del self._added[name], self.hook_dict[name]

    def _point(self, name: str) -> HookPoint:
        pt = self.hook_dict.get(name)
        if pt is not None:
            return pt
        if name.endswith("attn.hook_result"):
            raise HookNameError(f"{name!r} is opt-in because of its memory; call model.set_use_attn_result(True) first.")
        if name.endswith("hook_resid_mid") and self.cfg.parallel_attn_mlp:
            raise HookNameError(
                f"{name!r} does not exist: {self.cfg.family} runs attention and MLP in parallel on resid_pre, so "
                "there is no residual stream between them; use hook_resid_pre, hook_attn_out or hook_mlp_out."
            )
        if name.endswith(("hook_rot_q", "hook_rot_k")) and not self.family.rotary:
            raise HookNameError(f"{name!r} does not exist: {self.cfg.family} has no rotary embedding; use hook_q/hook_k.")
        raise unknown_hook(name, self.hook_dict)

    def _names(self, spec: NameFilter) -> list[str]:
        if spec is None:
            return list(self.hook_dict)
        if isinstance(spec, str):
            self._point(spec)
            return [spec]
        if callable(spec):
            return [n for n in self.hook_dict if spec(n)]
        names = list(spec)
        for n in names:
            self._point(n)
        return names

    def _entries(self, hooks: Iterable[HookSpec], backward: bool) -> list[Entry]:
        out = []
        for item in hooks:
            if not (isinstance(item, tuple) and len(item) == 2 and callable(item[1])):
                raise InputError(f"each hook must be a (name_or_filter, fn) pair, got {item!r}.")
            spec, fn = item
            for name in self._names(spec):
                pt = self.hook_dict[name]
                if backward and not pt.site.in_graph:
                    if not isinstance(spec, str):
                        continue  # a filter matching computed-for-analysis points: they have no gradient
                    raise HookNameError(
                        f"{name!r} is computed beside the model for analysis and is not part of its autograd graph, "
                        "so it has no gradient; hook the point it is computed from (the norm's input, or hook_z)."
                    )
                out.append(Entry(pt.site, pt, fn, backward))
        return out

    def _switch_attention(self, delta: int) -> None:
        """Reference-counted switch to mechscope's eager-equivalent attention while internals are hooked."""
        if delta > 0 and self._attn_users == 0:
            if self.family.attention == "gptj":
                for block in self.blocks:
                    mod = block.get_submodule(self.family.attn)
                    mod._attn = partial(attention.gptj_attn, mod)
            else:
                config = self.hf_model.config
                if getattr(config, "reorder_and_upcast_attn", False):
                    raise InputError(
                        "this GPT-2 has reorder_and_upcast_attn=True, whose upcast attention mechscope does not "
                        "reproduce bit-exactly; set hf_model.config.reorder_and_upcast_attn = False to hook "
                        "attention scores or patterns."
                    )
                self._attn_saved = config._attn_implementation
                config._attn_implementation = attention.ATTN_IMPLEMENTATION
        self._attn_users += delta
        if delta < 0 and self._attn_users == 0:
            if self.family.attention == "gptj":
                for block in self.blocks:
                    block.get_submodule(self.family.attn).__dict__.pop("_attn", None)
            else:
                self.hf_model.config._attn_implementation = self._attn_saved

    def _attach(self, fwd_hooks: Iterable[HookSpec] = (), bwd_hooks: Iterable[HookSpec] = ()) -> Attachment:
        return Attachment(self._entries(fwd_hooks, False) + self._entries(bwd_hooks, True), self._switch_attention)

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[HookSpec] = (), bwd_hooks: Iterable[HookSpec] = ()):
        """Context in which the hooks are active for every forward (and generate) call; removed on exit, even on error.

        ``fwd_hooks=[("blocks.0.attn.hook_pattern", fn)]``; a name may be a filter ``lambda name: bool``.
        ``fn(activation, hook) -> Tensor | None``: return a tensor to replace the activation."""
        att = self._attach(fwd_hooks, bwd_hooks)
        try:
            yield self
        finally:
            att.remove()

    def add_hook(self, name: str | Callable[[str], bool], fn: HookFn, dir: Literal["fwd", "bwd"] = "fwd") -> None:
        """Attach a hook that stays until ``reset_hooks()`` (TransformerLens's persistent hooks)."""
        pair = [(name, fn)]
        self._persistent.append(self._attach(pair if dir == "fwd" else (), pair if dir == "bwd" else ()))

    def reset_hooks(self) -> None:
        """Remove every hook added with ``add_hook`` and clear each hook point's ``ctx``."""
        while self._persistent:
            self._persistent.pop().remove()
        for pt in self.hook_dict.values():
            pt.ctx.clear()

    # ----------------------------------------------------------------------------------------- tokens
    def _batch(self, input, prepend_bos: bool | None, padding_side: str | None) -> tok_utils.Batch:
        if not isinstance(input, Tensor) and self.tokenizer is None:
            raise InputError("this model has no tokenizer; pass token ids, or Model.from_hf(hf_model, tokenizer).")
        return tok_utils.to_batch(
            self.tokenizer, input,
            prepend_bos=self.default_prepend_bos if prepend_bos is None else prepend_bos,
            padding_side=padding_side or self.default_padding_side,
            n_ctx=self.cfg.n_ctx, device=self.cfg.device,
        )

    def to_tokens(self, input: str | list[str], *, prepend_bos: bool | None = None,
                  padding_side: Literal["left", "right"] | None = None) -> Tensor:
        """Token ids, ``(batch, pos)``; several prompts are padded (``padding_side``, right by default)."""
        return self._batch(input, prepend_bos, padding_side).tokens

    def to_str_tokens(self, input: str | list[str] | Tensor, *, prepend_bos: bool | None = None):
        """Each token as a string: a list for one prompt or a 1-D tensor, a list of lists for a batch."""
        if isinstance(input, list):
            return [self.to_str_tokens(t, prepend_bos=prepend_bos) for t in input]
        if isinstance(input, str):
            input = self.to_tokens(input, prepend_bos=prepend_bos)[0]
        if input.ndim == 2:
            return [self.to_str_tokens(row) for row in input]
        return [self.tokenizer.decode([int(t)]) for t in input]

    def to_string(self, tokens: Tensor | list[int]) -> str | list[str]:
        """Decode token ids; a ``(batch, pos)`` tensor gives one string per row."""
        if isinstance(tokens, Tensor) and tokens.ndim == 2:
            return [self.to_string(row) for row in tokens]
        return self.tokenizer.decode([int(t) for t in tokens])

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (``" Paris"``); error otherwise."""
        ids = self.tokenizer(string, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise InputError(f"{string!r} is {len(ids)} tokens ({self.to_str_tokens(torch.tensor(ids))}), not one.")
        return ids[0]

    # ---------------------------------------------------------------------------------------- forward
    def _stop_hook(self, stop_at_layer: int):
        n = self.cfg.n_layers
        layer = stop_at_layer + n if stop_at_layer < 0 else stop_at_layer
        if not 0 <= layer <= n:
            raise InputError(f"stop_at_layer={stop_at_layer} is out of range for a {n}-layer model.")
        module = self.blocks[layer] if layer < n else self.hf_model.get_submodule(self.family.ln_final)

        def stop(mod, args, kwargs):
            raise _Stop(args[0] if args else kwargs["hidden_states"])

        return module.register_forward_pre_hook(stop, with_kwargs=True)

    def _run(self, input, *, attention_mask: Tensor | None = None, prepend_bos: bool | None = None,
             padding_side: str | None = None, stop_at_layer: int | None = None, **hf_kwargs):
        """(output, tokens, mask): output is logits, or the residual stream when stopped early."""
        batch = self._batch(input, prepend_bos, padding_side)
        mask = attention_mask if attention_mask is not None else batch.attention_mask
        kwargs = dict(hf_kwargs)
        if mask is not None:
            kwargs["attention_mask"] = mask
            if self._takes_position_ids and "position_ids" not in kwargs:
                kwargs["position_ids"] = tok_utils.position_ids(mask)
        if stop_at_layer is None:
            return self.hf_model(input_ids=batch.tokens, **kwargs).logits, batch.tokens, mask
        handle = self._stop_hook(stop_at_layer)
        try:
            self.hf_model(input_ids=batch.tokens, **kwargs)
        except _Stop as s:
            return s.resid, batch.tokens, mask
        finally:
            handle.remove()
        raise AssertionError("the forward pass finished without reaching stop_at_layer")

    def forward(self, input: str | list[str] | Tensor, *,
                return_type: Literal["logits", "loss", "both"] | None = "logits", **kwargs):
        """Run the model. ``input``: text, a list of texts (padded, with correct masks and positions) or token ids
        ``(batch, pos)``. Returns logits ``(batch, pos, d_vocab)``, the mean next-token loss, or both.

        Keyword arguments: ``attention_mask``, ``prepend_bos``, ``padding_side``, ``stop_at_layer`` (returns the
        residual stream ``(batch, pos, d_model)`` entering that block), and any HF forward argument."""
        out, tokens, mask = self._run(input, **kwargs)
        return _output(out, tokens, mask, return_type, kwargs.get("stop_at_layer") is not None)

    __call__ = forward

    def run_with_hooks(self, input, *, fwd_hooks: Iterable[HookSpec] = (), bwd_hooks: Iterable[HookSpec] = (),
                       **kwargs):
        """``forward`` with hooks attached for this call only (removed afterwards, even on error)."""
        with self.hooks(fwd_hooks, bwd_hooks):
            return self.forward(input, **kwargs)

    def run_with_cache(self, input, *, names_filter: NameFilter = None, device: str | torch.device | None = None,
                       incl_bwd: bool = False, metric: Callable[[Tensor], Tensor] | None = None,
                       remove_batch_dim: bool = False, return_type: Literal["logits", "loss", "both"] | None = "logits",
                       **kwargs) -> tuple[Tensor | None, ActivationCache]:
        """Run and record activations: ``(output, ActivationCache)``.

        ``names_filter``: None (every point), a name, a list of names, or ``lambda name: bool``. Only the requested
        points are hooked. ``device``: where to put cached tensors (default: where they are, no copy).
        ``incl_bwd``: also backpropagate ``metric(logits)`` (default: the mean next-token loss) and cache gradients
        as ``<name>_grad``. ``stop_at_layer``: stop before that block; the output is the residual stream."""
        store: dict[str, Tensor] = {}

        def save(act, hook, suffix=""):
            act = act.detach()
            store[hook.name + suffix] = act if device is None else act.to(device)

        names = self._names(names_filter)
        fwd = [(n, save) for n in names]
        in_graph = [n for n in names if self.hook_dict[n].site.in_graph]
        bwd = [(n, partial(save, suffix="_grad")) for n in in_graph] if incl_bwd else []
        with self.hooks(fwd, bwd), torch.set_grad_enabled(True) if incl_bwd else nullcontext():
            out, tokens, mask = self._run(input, **kwargs)
            if incl_bwd:
                target = metric(out) if metric is not None else lm_loss(out, tokens, mask)
                if target.ndim:
                    raise InputError(f"metric must return a scalar to backpropagate, got shape {tuple(target.shape)}.")
                target.backward()
        cache = ActivationCache(store, self.cfg.n_layers)
        if remove_batch_dim:
            cache = cache.remove_batch_dim()
        return _output(out, tokens, mask, return_type, kwargs.get("stop_at_layer") is not None), cache

    @torch.no_grad()
    def generate(self, input: str | list[str] | Tensor, max_new_tokens: int = 20, *,
                 do_sample: bool = False, fwd_hooks: Iterable[HookSpec] = (), prepend_bos: bool | None = None,
                 return_type: Literal["input", "str", "tokens"] = "input", **hf_kwargs):
        """HF ``generate`` (KV cache on) with hooks active on every step; prompts are left-padded.

        Returns the prompt plus continuation: a string for string input (``return_type="input"``), else token ids
        ``(batch, pos)``. Extra keyword arguments go to HF's ``generate`` (``temperature``, ``top_p``, ...)."""
        batch = self._batch(input, prepend_bos, "left")
        mask = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.tokens)
        pad = self.tokenizer.pad_token_id if self.tokenizer is not None else None
        if pad is None:
            pad = self.hf_model.generation_config.eos_token_id or self.hf_model.config.eos_token_id
        hf_kwargs.setdefault("pad_token_id", pad[0] if isinstance(pad, list) else pad)
        with self.hooks(fwd_hooks):
            out = self.hf_model.generate(input_ids=batch.tokens, attention_mask=mask, max_new_tokens=max_new_tokens,
                                         do_sample=do_sample, **hf_kwargs)
        if return_type == "tokens" or (return_type == "input" and isinstance(input, Tensor)):
            return out
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return texts[0] if isinstance(input, str) else texts

    # ---------------------------------------------------------------------------------------- weights
    @property
    def W_E(self) -> Tensor:
        """Token embedding, ``[d_vocab, d_model]`` (Gemma scales it by sqrt(d_model) in the forward)."""
        return self.hf_model.get_submodule(self.family.embed).weight

    @property
    def W_pos(self) -> Tensor:
        """Learned positional embedding, ``[n_ctx, d_model]``."""
        if not self.family.pos_embed:
            raise AttributeError(f"{self.cfg.family} uses rotary positions and has no W_pos.")
        return self.hf_model.get_submodule(self.family.pos_embed).weight

    @property
    def W_U(self) -> Tensor:
        """Unembedding, ``[d_model, d_vocab]``."""
        return self.hf_model.get_submodule(self.family.unembed).weight.T

    @property
    def b_U(self) -> Tensor:
        """Unembedding bias, ``[d_vocab]`` (zeros if none)."""
        head = self.hf_model.get_submodule(self.family.unembed)
        return head.bias if head.bias is not None else torch.zeros(self.cfg.d_vocab, dtype=self.cfg.dtype, device=self.cfg.device)

    W_Q = property(lambda self: weights.qkv_weights(self, 0)[0], doc="``[layer, head, d_model, d_head]``")
    W_K = property(lambda self: weights.qkv_weights(self, 1)[0], doc="``[layer, kv_head, d_model, d_head]``")
    W_V = property(lambda self: weights.qkv_weights(self, 2)[0], doc="``[layer, kv_head, d_model, d_head]``")
    b_Q = property(lambda self: weights.qkv_weights(self, 0)[1], doc="``[layer, head, d_head]``")
    b_K = property(lambda self: weights.qkv_weights(self, 1)[1], doc="``[layer, kv_head, d_head]``")
    b_V = property(lambda self: weights.qkv_weights(self, 2)[1], doc="``[layer, kv_head, d_head]``")
    W_O = property(lambda self: weights.o_weights(self)[0], doc="``[layer, head, d_head, d_model]``")
    b_O = property(lambda self: weights.o_weights(self)[1], doc="``[layer, d_model]``")
    W_in = property(lambda self: weights.mlp_weight(self, "in"), doc="``[layer, d_model, d_mlp]`` (gated: up)")
    W_gate = property(lambda self: weights.mlp_weight(self, "gate"), doc="``[layer, d_model, d_mlp]``")
    W_out = property(lambda self: weights.mlp_weight(self, "out"), doc="``[layer, d_mlp, d_model]``")
    b_in = property(lambda self: weights.mlp_bias(self, "in"), doc="``[layer, d_mlp]``")
    b_out = property(lambda self: weights.mlp_bias(self, "out"), doc="``[layer, d_model]``")


def _output(out: Tensor, tokens: Tensor, mask: Tensor | None, return_type, stopped: bool):
    """What ``forward`` returns for ``return_type``; a stopped run returns the residual stream as is."""
    if return_type is None:
        return None
    if return_type == "logits" or stopped:
        return out
    loss = lm_loss(out, tokens, mask)
    return loss if return_type == "loss" else (out, loss)


def lm_loss(logits: Tensor, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy. ``logits (batch, pos, d_vocab)``, ``tokens``/``mask (batch, pos)``."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, tokens[:, 1:, None].to(logits.device))[..., 0]
    if mask is None:
        return nll.mean()
    m = mask[:, 1:].to(nll.dtype) * mask[:, :-1].to(nll.dtype)
    return (nll * m).sum() / m.sum()
