"""mechscope: mechanistic interpretability on any HuggingFace causal LM, with the model's own numerics.

    import mechscope
    model = mechscope.load("default")            # or a hub id / local folder
    logits, cache = model.run_with_cache("The cat sat on the mat")
    cache["pattern", 1]                          # [batch, head, q_pos, k_pos]
"""

from .cache import ActivationCache, act_name
from .config import ModelConfig
from .errors import (CacheKeyError, HookError, HookFunctionError, HookNameError, HookReturnError, InputError,
                     InputTypeError, MechscopeError, ModelLoadError, TokenIdError, UnsupportedModelError,
                     WeightLayoutError)
from .hooks import HookPoint
from .loading import load
from .model import Model, lm_loss
from . import residual  # residual-stream algebra and direct logit attribution (issue 6)
from .dla import DLAResult, direct_logit_attribution

__version__ = "0.1.0"

# The microscope's subpackages load on first use (``mechscope.lens.logit_lens(...)`` works after ``import mechscope``)
# so that importing mechscope stays as cheap as the core.
_SUBMODULES = ("attention_analysis", "attribution", "detectors", "lens", "patching", "probes", "views")


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mechscope' has no attribute {name!r}")

__all__ = [
    "ActivationCache", "CacheKeyError", "HookError", "HookFunctionError", "HookNameError", "HookPoint",
    "HookReturnError", "InputError", "InputTypeError", "MechscopeError", "Model", "ModelConfig", "ModelLoadError",
    "TokenIdError", "UnsupportedModelError", "WeightLayoutError", "act_name", "lm_loss", "load",
]
__all__ += ["DLAResult", "direct_logit_attribution", "residual"]
