"""mechscope: mechanistic interpretability on any HuggingFace causal LM, with the model's own numerics.

    import mechscope
    model = mechscope.load("default")            # or a hub id / local folder
    logits, cache = model.run_with_cache("The cat sat on the mat")
    cache["pattern", 1]                          # [batch, head, q_pos, k_pos]
"""

from .cache import ActivationCache, act_name
from . import residual
from .config import ModelConfig
from .dla import DLAResult, direct_logit_attribution
from .errors import (CacheKeyError, HookError, HookFunctionError, HookNameError, HookReturnError, InputError,
                     InputTypeError, MechscopeError, ModelLoadError, TokenIdError, UnsupportedModelError,
                     WeightLayoutError)
from .hooks import HookPoint
from .loading import load
from .model import Model, lm_loss

__version__ = "0.1.0"

__all__ = [
    "ActivationCache", "CacheKeyError", "DLAResult", "direct_logit_attribution", "residual", "HookError", "HookFunctionError", "HookNameError", "HookPoint",
    "HookReturnError", "InputError", "InputTypeError", "MechscopeError", "Model", "ModelConfig", "ModelLoadError",
    "TokenIdError", "UnsupportedModelError", "WeightLayoutError", "act_name", "lm_loss", "load",
]
