"""``mechscope`` command line. One module per group of commands, all on one typer ``app``:
``core`` (info, run, models, demo), ``microscope`` (heads, dla, attribute), ``lens`` (lens, lens train, lens eval),
``patch`` (patch), ``ablate`` (knockout, path-patch), ``circuit`` (circuit), ``trace`` (trace), ``sae`` (the ``sae`` group; its commands in ``sae_cache``, ``sae_dashboard``,
``sae_eval``, ``sae_formats``, ``sae_train``)."""

from __future__ import annotations

from . import (ablate, circuit, core, lens, microscope, patch, sae, sae_cache, sae_dashboard,  # noqa: F401
               sae_eval, sae_formats, sae_train, trace)  # (registers the commands)
from .common import app, console
from .core import _cache_estimates

__all__ = ["app", "console", "_cache_estimates"]
