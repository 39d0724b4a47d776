"""mechscope: mechanistic interpretability on any HuggingFace causal LM, with the model's own numerics.

    import mechscope
    model = mechscope.load("default")            # or a hub id / local folder
    logits, cache = model.run_with_cache("The cat sat on the mat")
    cache["pattern", 1]                          # [batch, head, q_pos, k_pos]
"""

from .cache import ActivationCache, act_name
from .config import ModelConfig
from .errors import (HookNameError, HookReturnError, InputError, MechscopeError, ModelLoadError,
                     UnsupportedModelError)
from .hooks import HookPoint
from .loading import load
from .model import Model, lm_loss

__version__ = "0.1.0"

__all__ = [
    "ActivationCache", "HookNameError", "HookPoint", "HookReturnError", "InputError", "MechscopeError", "Model",
    "ModelConfig", "ModelLoadError", "UnsupportedModelError", "act_name", "lm_loss", "load",
]
