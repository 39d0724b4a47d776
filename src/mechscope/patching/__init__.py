"""Causal interventions: activation patching (TransformerLens's ``patching`` names), ablations, path patching,
attribution patching, edge attribution patching and circuits.

Everything here runs on one primitive, ``engine.run_variants``: the same input run once per *variant* (a list
of hooks), many variants stacked along the batch in one forward.
"""

from .ablation import Ablation, KnockoutResult, ablate, ablation_hooks, knockout
from .attribution import AttributionResult, attribution_patch, attribution_patch_all, correlation
from .engine import Variant, run_variants
from .path import PathPatchResult, path_patch
from .result import PatchResult

__all__ = ["PatchResult", "Variant", "run_variants",
           "Ablation", "KnockoutResult", "ablate", "ablation_hooks", "knockout",
           "PathPatchResult", "path_patch",
           "AttributionResult", "attribution_patch", "attribution_patch_all", "correlation"]
