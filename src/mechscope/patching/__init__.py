"""Causal interventions: activation patching (TransformerLens's ``patching`` names), ablations, path patching,
attribution patching, edge attribution patching and circuits.

Everything here runs on one primitive, ``engine.run_variants``: the same input run once per *variant* (a list
of hooks), many variants stacked along the batch in one forward.
"""

from .engine import Variant, run_variants
from .result import PatchResult

__all__ = ["PatchResult", "Variant", "run_variants"]
