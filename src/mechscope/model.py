"""``Model``: an unmodified HuggingFace causal LM with TransformerLens's hook vocabulary on top.

The HF model runs its own code and numerics. mechscope only adds torch hooks on the modules that hold the
points asked for, for the duration of a call, and switches attention to its eager-equivalent implementation
only while an attention internal (rot_q/rot_k/scores/pattern) is hooked.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from . import attention, devices, memory, tokens as tok_utils, weights
from .cache import ActivationCache
from .config import ModelConfig, build_config
from .errors import (HookFunctionError, HookNameError, InputError, InputTypeError, closest, type_name,
                     unknown_hook)
from .families import Family, family_for
from .hooks import Attachment, Entry, HookFn, HookPoint, Virtual, check_hook_fn, fn_name
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
        self._hf_kwargs = _forward_kwargs(hf_model)
        self._embed = hf_model.get_submodule(self.family.embed)  # resize_token_embeddings resizes it in place
        self._attn_users = 0
        self._attn_saved: str | None = None
        self._persistent: list[Attachment] = []
        self._use_attn_result = use_attn_result
        self._added: dict[str, HookPoint] = {}
        self._footprints: dict[tuple, list] = {}  # (names, device) -> summed footprint terms, see cache_bytes
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
        self._footprints.clear()  # devices and dtype may have changed
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
        if not isinstance(use, bool):
            raise InputTypeError(f"set_use_attn_result takes True or False, got {type_name(use)}.")
        if use != self._use_attn_result:
            self._use_attn_result = use
            self.hook_dict = build_points(self.hf_model, self.family, self.cfg, self.blocks, use) | self._added
            self._footprints.clear()

    def add_point(self, name: str, shape: tuple, doc: str = "", layer: int | None = None) -> HookPoint:
        """Add a named point that your own code fires (``point.fire(x)``) from inside the forward, so hooks, caches
        and filters treat it like the model's own: e.g. an SAE spliced in at ``blocks.3.hook_resid_post`` adds
        ``blocks.3.hook_resid_post.sae.hook_sae_acts_post``. ``shape`` names axes as in ``hook_dict``."""
        shape = self._check_new_point(name, shape, layer)
        self._added[name] = HookPoint(name, Virtual(), layer, shape, doc)
        self.hook_dict[name] = self._added[name]
        self._footprints.clear()
        return self._added[name]

    def _check_new_point(self, name, shape, layer) -> tuple:
        """``add_point``'s arguments: a new non-empty name, a shape of axis names or sizes, a layer in range."""
        if not isinstance(name, str) or not name:
            raise InputTypeError(f"a hook point's name must be a non-empty str, got {type_name(name)}.")
        if name in self.hook_dict:
            raise InputError(f"hook point {name!r} already exists; remove_point it first or pick another name.")
        axes = ("batch", "pos", "k_pos")
        if not isinstance(shape, (tuple, list)) or not all(
                s in axes if isinstance(s, str) else isinstance(s, int) and not isinstance(s, bool) and s > 0
                for s in shape):
            raise InputError(
                f"shape must be a tuple of axis names {axes} or positive sizes, one per axis of the activation "
                f"(e.g. ('batch', 'pos', 512)), got {shape!r}."
            )
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)
                                  or not 0 <= layer < self.cfg.n_layers):
            raise InputError(f"layer must be None or a block index 0 to {self.cfg.n_layers - 1}, got {layer!r}.")
        return tuple(shape)

    def remove_point(self, name: str) -> None:
        """Remove a point added with ``add_point``."""
        if name not in self._added:
            raise InputError(f"{name!r} was not added with add_point, so it cannot be removed.")
        del self._added[name], self.hook_dict[name]
        self._footprints.clear()

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
        layer = name.split(".")[1] if name.startswith("blocks.") else ""
        attn_point = ".attn." in name or name.endswith("hook_attn_out")
        if layer.isdigit() and int(layer) < self.cfg.n_layers and attn_point and int(layer) not in self.cfg.attn_layers:
            where = f"only blocks {list(self.cfg.attn_layers)} have" if self.cfg.attn_layers else "no block exposes"
            raise HookNameError(
                f"{name!r} does not exist: block {layer} of this {self.cfg.family} model has no softmax attention "
                f"({where} attention points); its token mixer's output is blocks.{layer}.hook_mixer_out where exposed."
            )
        if name.endswith(("hook_rot_q", "hook_rot_k")) and not self.family.rotary:
            raise HookNameError(f"{name!r} does not exist: {self.cfg.family} has no rotary embedding; use hook_q/hook_k.")
        raise unknown_hook(name, self.hook_dict)

    def _names(self, spec: NameFilter) -> list[str]:
        """The hook points a name, list of names or filter selects. A filter that selects nothing is an error
        (TransformerLens silently caches or hooks nothing); an explicit empty list selects nothing on purpose."""
        if spec is None:
            return list(self.hook_dict)
        if isinstance(spec, str):
            self._point(spec)
            return [spec]
        if callable(spec):
            return self._filter(spec)
        if not isinstance(spec, (list, tuple, set, frozenset)):
            raise InputTypeError(
                f"a hook-point selector must be a name, a list of names or a function name -> bool, got "
                f"{type_name(spec)}."
            )
        names = list(spec)
        for n in names:
            if not isinstance(n, str):
                raise InputTypeError(f"a list of hook points must hold names (str), but holds {type_name(n)}.")
            self._point(n)
        return names

    def _filter(self, fn: Callable[[str], bool]) -> list[str]:
        try:
            names = [n for n in self.hook_dict if fn(n)]
        except Exception as e:
            raise InputError(
                f"the name filter {fn_name(fn)} raised {type(e).__name__}: {e}; a filter is called with each hook "
                "name (a str) and returns True to select it."
            ) from e
        if not names:
            raise InputError(
                f"the name filter {fn_name(fn)} matches none of the model's {len(self.hook_dict)} hook points, so "
                "nothing would be hooked or cached; check it against model.hook_names() (e.g. "
                f"{self.hook_names()[-1]!r}), or pass names_filter=[] to cache nothing on purpose."
            )
        return names

    def _entries(self, hooks: Iterable[HookSpec], backward: bool) -> list[Entry]:
        out = []
        checked: set[int] = set()
        for spec, fn in _hook_pairs(hooks, "bwd_hooks" if backward else "fwd_hooks"):
            if id(fn) not in checked:
                check_hook_fn(fn, repr(spec) if isinstance(spec, str) else f"the filter {fn_name(spec)}")
                checked.add(id(fn))
            n_before = len(out)
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
            if len(out) == n_before and callable(spec):
                raise InputError(
                    f"the backward-hook filter {fn_name(spec)} matches only points computed beside the model "
                    "(hook_scale, hook_result), which have no gradient; select points in the autograd graph."
                )
        return out

    def _switch_attention(self, delta: int) -> None:
        """Reference-counted switch to mechscope's eager-equivalent attention while internals are hooked."""
        if delta > 0 and self._attn_users == 0:
            if self.family.attention not in ("registry", "eager"):
                method, fn = attention.METHODS[self.family.attention]
                for l in self.cfg.attn_layers:
                    mod = self.blocks[l].get_submodule(self.family.attn)
                    setattr(mod, method, partial(fn, mod))
            else:
                config = self.hf_model.config
                if getattr(config, "reorder_and_upcast_attn", False):
                    raise InputError(
                        "this GPT-2 has reorder_and_upcast_attn=True, whose upcast attention mechscope does not "
                        "reproduce bit-exactly; set hf_model.config.reorder_and_upcast_attn = False to hook "
                        "attention scores or patterns."
                    )
                if self.family.attention == "eager":
                    attention.stand_in_for_eager(self._attn_modules(), True)
                self._attn_saved = config._attn_implementation
                config._attn_implementation = "eager" if self.family.attention == "eager" else attention.ATTN_IMPLEMENTATION
        self._attn_users += delta
        if delta < 0 and self._attn_users == 0:
            if self.family.attention not in ("registry", "eager"):
                method = attention.METHODS[self.family.attention][0]
                for l in self.cfg.attn_layers:
                    self.blocks[l].get_submodule(self.family.attn).__dict__.pop(method, None)
            else:
                if self.family.attention == "eager":
                    attention.stand_in_for_eager(self._attn_modules(), False)
                self.hf_model.config._attn_implementation = self._attn_saved

    def _attn_modules(self) -> list[nn.Module]:
        return [self.blocks[l].get_submodule(self.family.attn) for l in self.cfg.attn_layers]

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
        if dir not in ("fwd", "bwd"):
            raise InputError(f"dir must be 'fwd' (forward hook) or 'bwd' (backward hook on the gradient), got {dir!r}.")
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
        if prepend_bos is not None and not isinstance(prepend_bos, bool):
            raise InputTypeError(f"prepend_bos must be True, False or None (the default), got {type_name(prepend_bos)}.")
        return tok_utils.to_batch(
            self.tokenizer, input,
            prepend_bos=self.default_prepend_bos if prepend_bos is None else prepend_bos,
            padding_side=padding_side or self.default_padding_side,
            n_ctx=self.cfg.n_ctx, device=self.input_device, d_vocab=self._n_ids(),
        )

    @property
    def input_device(self) -> torch.device:
        """Where token ids go: the token embedding's execution device (with ``device_map``, not necessarily where
        the rest of the model is; ``cfg.device`` is the unembedding's)."""
        return devices.input_device(self.hf_model, self._embed)

    def point_device(self, name: str) -> torch.device:
        """The device a point's activation lives on: its module's execution device (models split across devices
        or offloaded by accelerate have several)."""
        anchor = self._point(name).site.anchor[1]
        dev = devices.execution_device(anchor) if isinstance(anchor, nn.Module) else None
        return dev or self.input_device

    def cache_bytes(self, names: Iterable[str], batch: int, pos: int, *, k_pos: int | None = None,
                    incl_bwd: bool = False, device: str | torch.device | None = None) -> dict[torch.device, int]:
        """Estimated bytes a cache of ``names`` takes for ``batch`` × ``pos`` tokens (``k_pos`` keys), per device:
        ``device`` if the cache is moved there, else where each activation lives."""
        target = torch.device(device) if device is not None else None
        key = (tuple(names), target)
        terms = self._footprints.get(key)
        if terms is None:  # points of equal axes on one device summed once: the check then costs microseconds
            summed: dict[tuple, int] = {}
            for name in key[0]:
                size = memory.footprint(self._point(name), self.cfg.dtype)
                if size is not None:
                    k = (target or self.point_device(name), *size[1:])
                    summed[k] = summed.get(k, 0) + size.bytes_per
            if len(self._footprints) > 256:
                self._footprints.clear()
            terms = self._footprints[key] = [(k[0], memory.Footprint(n, *k[1:])) for k, n in summed.items()]
        k_pos = pos if k_pos is None else k_pos
        out: dict[torch.device, int] = {}
        for dev, size in terms:
            out[dev] = out.get(dev, 0) + size.nbytes(batch, pos, k_pos, incl_bwd)
        return out

    def _n_ids(self) -> int:
        """Rows of the token embedding: the ids the model can read (read each call: embeddings can be resized)."""
        return self._embed.weight.shape[0]

    def _tokenizer(self, what: str):
        if self.tokenizer is None:
            raise InputError(f"this model has no tokenizer, so {what} cannot work; wrap it with "
                             "Model.from_hf(hf_model, tokenizer), or work with token ids.")
        return self.tokenizer

    def _ids(self, tokens, what: str) -> Tensor:
        """User-given token ids for decoding, as a checked 1-D or 2-D integer tensor."""
        if isinstance(tokens, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            tokens = torch.tensor(tokens, dtype=torch.long)
        if not isinstance(tokens, Tensor):
            raise InputTypeError(f"{what} takes token ids (a tensor or a list of ints), got {type_name(tokens)}.")
        if tokens.ndim > 2 or (tokens.dtype not in (torch.long, torch.int32) and tokens.numel()):
            raise InputError(f"{what} takes integer token ids of shape (pos,) or (batch, pos), got {type_name(tokens)}.")
        n_ids = max(len(self._tokenizer(what)), self._n_ids())
        tok_utils.check_token_ids(tokens, n_ids, f"the ids passed to {what}")
        return tokens

    def to_tokens(self, input: str | list[str], *, prepend_bos: bool | None = None,
                  padding_side: Literal["left", "right"] | None = None) -> Tensor:
        """Token ids, ``(batch, pos)``; several prompts are padded (``padding_side``, right by default)."""
        return self._batch(input, prepend_bos, padding_side).tokens

    def to_str_tokens(self, input: str | list[str] | Tensor, *, prepend_bos: bool | None = None):
        """Each token as a string: a list for one prompt, a 1-D tensor or a list of ids; a list of lists for a
        batch (a list of prompts or a ``(batch, pos)`` tensor)."""
        tok = self._tokenizer("to_str_tokens")
        if isinstance(input, list) and input and all(isinstance(t, str) for t in input):
            return [self.to_str_tokens(t, prepend_bos=prepend_bos) for t in input]
        if isinstance(input, str):
            input = self.to_tokens(input, prepend_bos=prepend_bos)[0]
        input = self._ids(input, "to_str_tokens")
        if input.ndim == 2:
            return [self.to_str_tokens(row) for row in input]
        return [tok.decode([int(t)]) for t in input.reshape(-1)]

    def to_string(self, tokens: Tensor | list[int]) -> str | list[str]:
        """Decode token ids; a ``(batch, pos)`` tensor gives one string per row."""
        tok = self._tokenizer("to_string")
        tokens = self._ids(tokens, "to_string")
        if tokens.ndim == 2:
            return [self.to_string(row) for row in tokens]
        return tok.decode([int(t) for t in tokens.reshape(-1)])

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (``" Paris"``); error otherwise."""
        tok = self._tokenizer("to_single_token")
        if not isinstance(string, str):
            raise InputTypeError(f"to_single_token takes a string, got {type_name(string)}.")
        ids = tok(string, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [tok.decode([i]) for i in ids]
            raise InputError(
                f"{string!r} is {len(ids)} tokens {pieces}, not one; pass a string the tokenizer keeps whole "
                "(mind the leading space: ' Paris' and 'Paris' differ), or use model.to_tokens for longer text."
            )
        unk = tok.unk_token_id
        if unk is not None and ids[0] == unk and string.strip() != tok.unk_token:
            raise InputError(f"{string!r} is not in this tokenizer's vocabulary (it becomes the unknown token "
                             f"{tok.unk_token!r}); pick a word the model knows, e.g. from model.to_str_tokens(text).")
        return ids[0]

    # ---------------------------------------------------------------------------------------- forward
    def _stop_hook(self, stop_at_layer: int):
        n = self.cfg.n_layers
        layer = _stop_layer(stop_at_layer, n)
        # no final norm (post-LN OpenAI GPT), or one that also runs before block 0 (nanochat): stop after the last block
        if layer == n and (self.family.ln_final is None or self.family.ln_embed):

            def stop_after(mod, args, output):
                raise _Stop(output[0] if isinstance(output, (tuple, list)) else output)

            return self.blocks[-1].register_forward_hook(stop_after)

        def stop(mod, args, kwargs):
            raise _Stop(args[0] if args else kwargs["hidden_states"])

        module = self.blocks[layer] if layer < n else self.hf_model.get_submodule(self.family.ln_final)
        return module.register_forward_pre_hook(stop, with_kwargs=True)

    def _run(self, input, *, attention_mask: Tensor | None = None, prepend_bos: bool | None = None,
             padding_side: str | None = None, stop_at_layer: int | None = None, **hf_kwargs):
        """(output, tokens, mask): output is logits, or the residual stream when stopped early."""
        if hf_kwargs and not self._hf_kwargs.issuperset(hf_kwargs):
            raise self._unknown_kwargs(hf_kwargs)
        if stop_at_layer is not None:
            _stop_layer(stop_at_layer, self.cfg.n_layers)
        batch = input if isinstance(input, tok_utils.Batch) else self._batch(input, prepend_bos, padding_side)
        if attention_mask is not None:
            attention_mask = tok_utils.check_attention_mask(attention_mask, batch.tokens)
        if hf_kwargs.get("position_ids") is not None:
            tok_utils.check_position_ids(hf_kwargs["position_ids"], batch.tokens)
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

    def _unknown_kwargs(self, kwargs: dict) -> InputError:
        own = ("attention_mask", "prepend_bos", "padding_side", "stop_at_layer", "return_type")
        bad = sorted(set(kwargs) - self._hf_kwargs)
        if "input_ids" in bad or "inputs_embeds" in bad:
            return InputError("pass token ids or text as the first argument, not input_ids=/inputs_embeds=; to "
                              "replace the embeddings, hook hook_embed.")
        hints = [h for b in bad for h in closest(b, [*own, *self._hf_kwargs], n=1)]
        did_you_mean = f"; did you mean {' or '.join(map(repr, hints))}?" if hints else (
            f"; it takes {', '.join(own)} and the HF forward's arguments.")
        return InputTypeError(f"unexpected keyword argument{'s' * (len(bad) > 1)} {', '.join(map(repr, bad))} for "
                              f"the model's forward{did_you_mean}")

    def forward(self, input: str | list[str] | Tensor, *,
                return_type: Literal["logits", "loss", "both"] | None = "logits", **kwargs):
        """Run the model. ``input``: text, a list of texts (padded, with correct masks and positions) or token ids
        ``(batch, pos)``. Returns logits ``(batch, pos, d_vocab)``, the mean next-token loss, or both.

        Keyword arguments: ``attention_mask``, ``prepend_bos``, ``padding_side``, ``stop_at_layer`` (returns the
        residual stream ``(batch, pos, d_model)`` entering that block), and any HF forward argument."""
        _check_return_type(return_type)
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
                       check_memory: bool = True, **kwargs) -> tuple[Tensor | None, ActivationCache]:
        """Run and record activations: ``(output, ActivationCache)``.

        ``names_filter``: None (every point), a name, a list of names, or ``lambda name: bool``. Only the requested
        points are hooked. ``device``: where to put cached tensors (default: where they are, no copy).
        ``incl_bwd``: also backpropagate ``metric(logits)`` (default: the mean next-token loss) and cache gradients
        as ``<name>_grad``. ``stop_at_layer``: stop before that block; the output is the residual stream.
        ``check_memory``: first estimate the cache's size from the point shapes and refuse (``CacheMemoryError``,
        with the fixes) if it does not fit in what is free on its device(s)."""
        store: dict[str, Tensor] = {}

        def save(act, hook, suffix=""):
            act = act.detach()
            store[hook.name + suffix] = act if device is None else act.to(device)

        _check_return_type(return_type)
        _check_backward_args(incl_bwd, metric, kwargs.get("stop_at_layer"))
        _check_device(device)
        names = self._names(names_filter)
        if kwargs.get("stop_at_layer") is not None:
            _stop_layer(kwargs["stop_at_layer"], self.cfg.n_layers)
        batch = self._batch(input, kwargs.pop("prepend_bos", None), kwargs.pop("padding_side", None))
        if check_memory:
            self._check_cache_memory(names, batch.tokens, kwargs, incl_bwd, device)
        input = batch
        fwd = [(n, save) for n in names]
        in_graph = [n for n in names if self.hook_dict[n].site.in_graph]
        bwd = [(n, partial(save, suffix="_grad")) for n in in_graph] if incl_bwd else []
        with self.hooks(fwd, bwd), torch.set_grad_enabled(True) if incl_bwd else nullcontext():
            out, tokens, mask = self._run(input, **kwargs)
            if incl_bwd:
                _backward(metric, out, tokens, mask)
        cache = ActivationCache(store, self.cfg.n_layers, model=self)
        if remove_batch_dim:
            cache = cache.remove_batch_dim()
        return _output(out, tokens, mask, return_type, kwargs.get("stop_at_layer") is not None), cache

    def _check_cache_memory(self, names: list[str], tokens: Tensor, kwargs: dict, incl_bwd: bool, device) -> None:
        stop = kwargs.get("stop_at_layer")
        if stop is not None:  # later blocks never run
            stop = stop + self.cfg.n_layers if stop < 0 else stop
            names = [n for n in names if (layer := self.hook_dict[n].layer_idx) is None or layer < stop]
        b, p = tokens.shape
        past = kwargs.get("past_key_values")
        k_pos = p + past.get_seq_length() if hasattr(past, "get_seq_length") else None
        needed = self.cache_bytes(names, b, p, k_pos=k_pos, incl_bwd=incl_bwd, device=device)
        memory.check(needed, n_points=len(names), batch=b, pos=p, moved=device is not None)

    @torch.no_grad()
    def generate(self, input: str | list[str] | Tensor, max_new_tokens: int = 20, *,
                 do_sample: bool = False, fwd_hooks: Iterable[HookSpec] = (), prepend_bos: bool | None = None,
                 return_type: Literal["input", "str", "tokens"] = "input", **hf_kwargs):
        """HF ``generate`` (KV cache on) with hooks active on every step; prompts are left-padded.

        Returns the prompt plus continuation: a string for string input (``return_type="input"``), else token ids
        ``(batch, pos)``. Extra keyword arguments go to HF's ``generate`` (``temperature``, ``top_p``, ...)."""
        self._check_generate_args(max_new_tokens, do_sample, return_type, hf_kwargs)
        batch = self._batch(input, prepend_bos, "left")
        n_ctx = self.cfg.n_ctx
        if n_ctx is not None and batch.tokens.shape[1] + max_new_tokens > n_ctx:
            raise InputError(
                f"the prompt is {batch.tokens.shape[1]} tokens and max_new_tokens={max_new_tokens}, which passes the "
                f"model's context of {n_ctx} tokens; lower max_new_tokens to {max(n_ctx - batch.tokens.shape[1], 0)} "
                "or shorten the prompt."
            )
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
        texts = self._tokenizer('generate(return_type="str")').batch_decode(out, skip_special_tokens=True)
        return texts[0] if isinstance(input, str) else texts

    def _check_generate_args(self, max_new_tokens, do_sample, return_type, hf_kwargs: dict) -> None:
        """What HF's ``generate`` would reject late (or not at all: ``top_p=2``), refused before it runs."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise (InputError if isinstance(max_new_tokens, int) else InputTypeError)(
                f"max_new_tokens must be a positive int, got {type_name(max_new_tokens)}; pass e.g. max_new_tokens=20.")
        if not isinstance(do_sample, bool):
            raise InputTypeError(f"do_sample must be True or False, got {type_name(do_sample)}.")
        if return_type not in ("input", "str", "tokens"):
            raise InputError(f"generate's return_type must be 'input', 'str' or 'tokens', got {return_type!r}.")
        if return_type == "str":
            self._tokenizer('generate(return_type="str")')
        limits = {"temperature": (0, None, "a float > 0 (1.0 leaves the distribution as is)"),
                  "top_p": (0, 1, "a float in (0, 1]"), "top_k": (-1, None, "an int >= 0 (0 turns it off)")}
        for name, (lo, hi, want) in limits.items():
            v = hf_kwargs.get(name)
            if v is None:
                continue
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > lo and (hi is None or v <= hi)
            if name == "top_k":
                ok = ok and isinstance(v, int)
            if not ok:
                raise InputError(f"{name} must be {want}, got {type_name(v)}.")

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
        return weights._real(self.hf_model.get_submodule(self.family.unembed), "weight").T

    @property
    def b_U(self) -> Tensor:
        """Unembedding bias, ``[d_vocab]`` (zeros if none)."""
        head = self.hf_model.get_submodule(self.family.unembed)
        bias = weights._real(head, "bias")
        return bias if bias is not None else torch.zeros(self.cfg.d_vocab, dtype=self.cfg.dtype, device=self.cfg.device)

    def tokens_to_residual_directions(self, tokens) -> Tensor:
        """``gain * W_U[:, t]``: a token's direction in the final-normalised stream (TransformerLens's ``W_U[:, t]`` on a
        ``fold_ln`` model); ``[d_model]``, ``[batch, d_model]`` or ``[batch, pos, d_model]``. See ``mechscope.residual``."""
        from .residual import tokens_to_residual_directions

        return tokens_to_residual_directions(self, tokens)

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


def _forward_kwargs(hf_model: nn.Module) -> frozenset[str]:
    """Keyword arguments the HF forward reads: its named parameters, plus transformers' shared kwargs when it
    takes ``**kwargs`` (anything else would be swallowed silently, so a typo like ``stop_at_layers`` would not fail)."""
    params = inspect.signature(hf_model.forward).parameters
    names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        from transformers.utils.generic import TransformersKwargs

        names |= set(TransformersKwargs.__annotations__)
        base = getattr(hf_model, "base_model", None)  # some heads pass use_cache, cache_position... through **kwargs
        if isinstance(base, nn.Module) and base is not hf_model:
            inner = inspect.signature(base.forward).parameters
            names |= {n for n, p in inner.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return frozenset(names - {"input_ids", "inputs_embeds"})


def _stop_layer(stop_at_layer, n_layers: int) -> int:
    """``stop_at_layer`` as a block index in ``[0, n_layers]`` (``n_layers``: stop before the final norm)."""
    if isinstance(stop_at_layer, bool) or not hasattr(stop_at_layer, "__index__"):
        raise InputTypeError(f"stop_at_layer must be an int (a block index), got {type_name(stop_at_layer)}.")
    stop_at_layer = operator.index(stop_at_layer)
    layer = stop_at_layer + n_layers if stop_at_layer < 0 else stop_at_layer
    if not 0 <= layer <= n_layers:
        raise InputError(
            f"stop_at_layer={stop_at_layer} is out of range for a {n_layers}-layer model; pass 0 to {n_layers} "
            f"(or -{n_layers} to -1): the residual stream entering that block ({n_layers}: before the final norm)."
        )
    return layer


def _check_device(device) -> None:
    """``run_with_cache(device=...)``: refused before the forward, rather than from inside every caching hook."""
    if device is None:
        return
    try:
        torch.empty(0, device=device)
    except (RuntimeError, TypeError, AssertionError, ValueError) as e:
        raise InputError(f"cannot cache on device {device!r}: {str(e).splitlines()[0]}; pass an available device "
                         "such as 'cpu' or 'cuda:0', or None to keep activations where they are.") from e


def _check_return_type(return_type) -> None:
    if return_type not in ("logits", "loss", "both", None):
        raise InputError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}.")


def _check_backward_args(incl_bwd, metric, stop_at_layer) -> None:
    if not isinstance(incl_bwd, bool):
        raise InputTypeError(f"incl_bwd must be True or False, got {type_name(incl_bwd)}.")
    if metric is not None and not callable(metric):
        raise InputTypeError(f"metric must be a function of the output, metric(logits) -> scalar Tensor, "
                             f"got {type_name(metric)}.")
    if incl_bwd and metric is None and stop_at_layer is not None:
        raise InputError("with stop_at_layer the output is the residual stream, not logits, so there is no LM loss to "
                         "backpropagate; pass metric=lambda resid: ... returning a scalar.")


def _backward(metric, out: Tensor, tokens: Tensor, mask: Tensor | None) -> None:
    """Backpropagate ``metric(out)`` (default: the LM loss), refusing what ``Tensor.backward`` cannot use."""
    if metric is None:
        lm_loss(out, tokens, mask).backward()
        return
    try:
        target = metric(out)
    except TypeError as e:
        if e.__traceback__ is not None and e.__traceback__.tb_next is not None:
            raise  # raised inside the metric: the user's own error, with its own traceback
        raise InputTypeError(f"metric {fn_name(metric)} cannot be called as metric(output): {e}; define it with one "
                             "argument, e.g. metric=lambda logits: logits[:, -1, 42].sum().") from e
    if not isinstance(target, Tensor):
        raise InputTypeError(f"metric must return a scalar Tensor computed from its argument, got {type_name(target)}.")
    if target.ndim:
        raise InputError(f"metric must return a scalar to backpropagate, got shape {tuple(target.shape)}; reduce it, "
                         "e.g. with .sum() or .mean().")
    if not target.requires_grad:
        raise InputError("metric's result does not depend on its argument (it has no gradient); compute it from the "
                         "output passed to it, without .detach(), .item() or torch.no_grad().")
    target.backward()


def _hook_pairs(hooks, arg: str) -> list[tuple]:
    """``fwd_hooks``/``bwd_hooks`` as a list of ``(name_or_filter, fn)`` pairs; a lone pair is a common slip."""
    if isinstance(hooks, tuple) and len(hooks) == 2 and (isinstance(hooks[0], str) or callable(hooks[0])) \
            and callable(hooks[1]) and not isinstance(hooks[1], (tuple, list)):
        raise InputTypeError(f"{arg} takes a list of (name, fn) pairs, got a single pair; wrap it: {arg}=[(name, fn)].")
    if isinstance(hooks, (str, Tensor)) or not isinstance(hooks, Iterable):
        raise InputTypeError(f"{arg} takes a list of (name, fn) pairs, got {type_name(hooks)}.")
    pairs = []
    for item in hooks:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise InputTypeError(f"each entry of {arg} must be a (name_or_filter, fn) pair, got {type_name(item)}.")
        if not callable(item[1]):
            raise HookFunctionError(f"the hook for {item[0]!r} is {type_name(item[1])}, not a function; pass "
                                    "fn(activation, hook) -> Tensor | None.")
        pairs.append(tuple(item))
    return pairs


def _output(out: Tensor, tokens: Tensor, mask: Tensor | None, return_type, stopped: bool):
    """What ``forward`` returns for ``return_type``; a stopped run returns the residual stream as is."""
    if return_type is None:
        return None
    if return_type == "logits" or stopped:
        return out
    if tokens.shape[1] < 2:
        raise InputError(f"return_type={return_type!r} needs at least two tokens (the loss predicts each next token), "
                         "but the input has one; pass a longer prompt or return_type='logits'.")
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
