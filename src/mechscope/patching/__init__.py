"""Causal interventions: activation patching (TransformerLens's ``patching`` names), ablations, path patching,
attribution patching, edge attribution patching and circuits.

Everything here runs on one primitive, ``engine.run_variants``: the same input run once per *variant* (a list
of hooks), many variants stacked along the batch in one forward.
"""

from .circuit import Circuit, FaithfulnessCurve, ablate_edges, extract, faithfulness, faithfulness_curve
from .eap import EdgeScores, eap
from .engine import Variant, run_variants
from .graph import Graph
from .result import PatchResult

__all__ = ["Circuit", "EdgeScores", "FaithfulnessCurve", "Graph", "PatchResult", "Variant", "ablate_edges", "eap",
           "extract", "faithfulness", "faithfulness_curve", "run_variants"]
