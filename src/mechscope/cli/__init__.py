"""``mechscope`` command line. One module per group of commands, all on one typer ``app``:
``core`` (info, run, models, demo), ``microscope`` (heads, dla, attribute), ``lens`` (lens, lens train, lens eval),
``patch`` (patch), ``ablate`` (knockout, path-patch), ``circuit`` (circuit), ``trace`` (trace), ``sae`` (the ``sae`` group; its commands in ``sae_*``)."""

from __future__ import annotations

from . import ablate, circuit, core, lens, microscope, patch, sae, sae_train, trace  # noqa: F401  (registers the commands)
from .common import app, console
from .core import _cache_estimates

__all__ = ["app", "console", "_cache_estimates"]
