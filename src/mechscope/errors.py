"""Exceptions. Every message is a sentence that says what was wrong and what to do about it."""

from __future__ import annotations

import difflib


class MechscopeError(Exception):
    """Base class for mechscope's errors."""


class UnsupportedModelError(MechscopeError, ValueError):
    """The model's architecture has no adapter entry."""


class ModelLoadError(MechscopeError, OSError):
    """A model or tokenizer could not be found or loaded."""


class HookNameError(MechscopeError, KeyError):
    """An unknown hook point was named."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class HookReturnError(MechscopeError, ValueError):
    """A hook function returned something that cannot replace the activation."""


class InputError(MechscopeError, ValueError):
    """A prompt or token tensor that the model cannot run on."""


def closest(name: str, candidates, n: int = 3) -> list[str]:
    """The candidates most similar to ``name`` (for 'did you mean' hints)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def unknown_hook(name: str, candidates) -> HookNameError:
    hint = closest(name, candidates)
    did_you_mean = f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else (
        "; list them with model.hook_names() or `mechscope info MODEL`."
    )
    return HookNameError(f"unknown hook point {name!r}{did_you_mean}")
