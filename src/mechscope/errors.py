"""Exceptions. Every message is a sentence that says what was wrong and what to do about it.

Each class also derives from the built-in exception a user (or TransformerLens code) would catch for the same
mistake, so ``except KeyError`` around a cache lookup or ``except TypeError`` around a bad argument keeps working:

    MechscopeError
    ├── UnsupportedModelError (ValueError)   architecture without an adapter entry
    ├── ModelLoadError (OSError)             model or tokenizer not found / not loadable
    ├── InputError (ValueError)              an argument the model cannot run on
    │   ├── InputTypeError (TypeError)       ... of the wrong type (float token ids, names_filter=3)
    │   ├── TokenIdError (IndexError)        ... a token id outside the embedding
    │   └── CacheKeyError (KeyError)         ... a cache key / act_name shorthand that names nothing
    ├── HookNameError (KeyError)             an unknown hook point
    ├── HookFunctionError (TypeError)        a hook function that cannot be called as fn(activation, hook)
    ├── HookReturnError (ValueError)         a hook returned something that cannot replace the activation
    └── HookError (RuntimeError)             a hook raised; the original exception is ``__cause__``
"""

from __future__ import annotations

import difflib


class MechscopeError(Exception):
    """Base class for mechscope's errors."""


class UnsupportedModelError(MechscopeError, ValueError):
    """The model's architecture has no adapter entry."""


class WeightLayoutError(UnsupportedModelError, AttributeError):
    """A weight view (``W_Q``, ``W_in``, ...) has no TransformerLens layout for this architecture."""


class ModelLoadError(MechscopeError, OSError):
    """A model or tokenizer could not be found or loaded."""


class _KeyMessage:
    """KeyError would ``repr()`` the message; show it as the sentence it is."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class HookNameError(_KeyMessage, MechscopeError, KeyError):
    """An unknown hook point was named."""


class HookReturnError(MechscopeError, ValueError):
    """A hook function returned something that cannot replace the activation."""


class HookFunctionError(MechscopeError, TypeError):
    """A hook function that cannot be called as ``fn(activation, hook)``."""


class HookError(MechscopeError, RuntimeError):
    """A hook function raised. The message names the hook point; the original exception is ``__cause__``
    (and ``original``), so ``except HookError as e: e.original`` recovers it.

    mechscope's own errors raised inside a hook (``HookReturnError``, a nested point's ``HookError``) pass through
    unwrapped; ``KeyboardInterrupt`` and other non-``Exception`` signals are never wrapped."""

    def __init__(self, message: str, point: str, original: BaseException):
        super().__init__(message)
        self.point = point
        self.original = original


class InputError(MechscopeError, ValueError):
    """A prompt, token tensor or argument that the model cannot run on."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (float token ids, ``names_filter=3``, ``stop_at_layer=1.5``)."""


class TokenIdError(InputError, IndexError):
    """A token id outside the model's embedding (what torch reports as ``index out of range in self``)."""


class CacheKeyError(_KeyMessage, InputError, KeyError):
    """A cache key or ``act_name`` shorthand that names no point: unknown shorthand, layer out of range."""


def closest(name: str, candidates, n: int = 3) -> list[str]:
    """The candidates most similar to ``name`` (for 'did you mean' hints)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def unknown_hook(name: str, candidates) -> HookNameError:
    hint = closest(name, candidates)
    did_you_mean = f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else (
        "; list them with model.hook_names() or `mechscope info MODEL`."
    )
    return HookNameError(f"unknown hook point {name!r}{did_you_mean}")


def type_name(x) -> str:
    """How an argument is shown in a message: ``Tensor (2, 8) torch.float32``, ``int 3``, ``str 'abc'``."""
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{type(x).__name__} {tuple(shape)} {dtype}"
    text = repr(x)
    return f"{type(x).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
