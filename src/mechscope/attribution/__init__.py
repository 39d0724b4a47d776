"""Input attribution: which tokens of a prompt a target (a token's logit, a logit difference, the loss, any metric
of the logits) depends on, by saliency, gradient×input, integrated gradients, occlusion, Shapley values (sampling or KernelSHAP),
LIME or attention rollout. Every method runs the real HF model (perturbations replace ``hook_embed``) and returns one
``Attribution`` keyed by token and position. See ``docs/attribution.md``.

    from mechscope.attribution import attribute
    attr = attribute(model, "The capital of France is", " Paris", method="ig")
    attr.top(3), attr.delta, attr.to_dict()
"""

from __future__ import annotations

from typing import Literal

from ..errors import InputError
from .baseline import BaselineSpec
from .gradient import IG_STEPS, grad_x_input, integrated_gradients, quadrature, saliency
from .perturbation import kernel_shap, lime, occlusion, shapley_values
from .result import Attribution, TokenScore
from .rollout import attention_rollout, rollout_matrix
from .runner import EmbeddingRunner, prepare
from .target import LogitDiff, Loss, Metric, Target, TargetSpec, TokenLogit, as_target

Method = Literal["saliency", "grad_x_input", "ig", "occlusion", "shapley", "kernel_shap", "lime", "rollout"]
METHODS = {
    "saliency": saliency, "grad_x_input": grad_x_input, "ig": integrated_gradients, "occlusion": occlusion,
    "shapley": shapley_values, "kernel_shap": kernel_shap, "lime": lime, "rollout": attention_rollout,
}


def attribute(model, input, target: TargetSpec = None, *, method: Method = "ig", **kwargs) -> Attribution:
    """Attribute ``target`` to the tokens of ``input`` (one prompt: text or token ids) with ``method``.

    ``target``: a token (``" Paris"`` or an id) at ``position`` (default the last), a pair of tokens (their logit
    difference), ``Loss()``, ``Metric(fn)`` or a function of the logits, or None (the predicted token). The other
    keyword arguments are the method's (``baseline``, ``n_steps``, ``window``, ``n_samples``, ``batch_size``,
    ``include_bos``, ...; see each function). Rollout takes no target, only ``position``."""
    fn = METHODS.get(method)
    if fn is None:
        raise InputError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}.")
    if method == "rollout" and target is not None:
        raise InputError("attention rollout does not read any logits, so it takes no target; pass position= "
                         "(the query position, default the last) instead.")
    try:
        return fn(model, input, **kwargs) if method == "rollout" else fn(model, input, target, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            import inspect

            allowed = [p for p in inspect.signature(fn).parameters if p not in ("model", "input", "target")]
            raise InputError(f"{e}; method {method!r} takes {', '.join(allowed)}.") from None
        raise


__all__ = [
    "Attribution", "TokenScore", "Target", "TokenLogit", "LogitDiff", "Loss", "Metric", "as_target",
    "attribute", "saliency", "grad_x_input", "integrated_gradients", "occlusion", "shapley_values", "kernel_shap", "lime",
    "attention_rollout", "rollout_matrix", "quadrature", "METHODS", "IG_STEPS", "BaselineSpec", "EmbeddingRunner",
    "prepare",
]
