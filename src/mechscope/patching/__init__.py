"""Causal interventions: activation patching (TransformerLens's ``patching`` names), ablations, path patching,
attribution patching, edge attribution patching and circuits.

Everything here runs on one primitive, ``engine.run_variants``: the same input run once per *variant* (a list
of hooks), many variants stacked along the batch in one forward.
"""

from . import metrics
from .activation import activation_patch
from .engine import Variant, prefix_reuse, run_variants
from .result import PatchResult
from .tl import *  # noqa: F403  (TransformerLens's get_act_patch_* names)
from .tl import __all__ as _tl_all

__all__ = ["PatchResult", "Variant", "activation_patch", "metrics", "prefix_reuse", "run_variants", *_tl_all]
