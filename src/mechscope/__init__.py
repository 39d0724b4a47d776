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

__all__ = [
    "ActivationCache", "CacheKeyError", "HookError", "HookFunctionError", "HookNameError", "HookPoint",
    "HookReturnError", "InputError", "InputTypeError", "MechscopeError", "Model", "ModelConfig", "ModelLoadError",
    "TokenIdError", "UnsupportedModelError", "WeightLayoutError", "act_name", "lm_loss", "load",
]
__all__ += ["DLAResult", "direct_logit_attribution", "residual"]
