"""Causal interventions: activation patching (TransformerLens's ``patching`` names), ablations, path patching,
attribution patching, edge attribution patching, circuits and causal tracing.

Everything here runs on one primitive, ``engine.run_variants``: the same input run once per *variant* (a list
of hooks), many variants stacked along the batch in one forward.
"""

from . import metrics
from .ablation import Ablation, KnockoutResult, ablate, ablation_hooks, knockout
from .activation import activation_patch
from .attribution import AttributionResult, attribution_patch, attribution_patch_all, correlation
from .circuit import Circuit, FaithfulnessCurve, ablate_edges, extract, faithfulness, faithfulness_curve
from .eap import EdgeScores, eap
from .engine import Variant, prefix_reuse, run_variants
from .graph import Graph
from .path import PathPatchResult, path_patch
from .result import PatchResult
from .tasks import Task, custom_task, induction_task, ioi_task
from .tl import *  # noqa: F403  (TransformerLens's get_act_patch_* names)
from .tl import __all__ as _tl_all
from .tracing import Trace, average, average_traces, trace, trace_with_patch

__all__ = ["PatchResult", "Variant", "activation_patch", "metrics", "prefix_reuse", "run_variants",
           "Ablation", "KnockoutResult", "ablate", "ablation_hooks", "knockout",
           "PathPatchResult", "path_patch",
           "AttributionResult", "attribution_patch", "attribution_patch_all", "correlation",
           "Circuit", "EdgeScores", "FaithfulnessCurve", "Graph", "ablate_edges", "eap", "extract", "faithfulness",
           "faithfulness_curve",
           "Task", "custom_task", "induction_task", "ioi_task",
           "Trace", "average", "average_traces", "trace", "trace_with_patch", *_tl_all]
