"""Sparse dictionaries: sparse autoencoders, transcoders and skip-transcoders — architectures, training,
evaluation, splicing into a model, analysis and dashboards, and the SAELens/sparsify formats."""

from .config import ARCHITECTURES, LossConfig, SAEConfig
from .evaluate import SAEEval, evaluate, evaluate_activations
from .patching import latent_point, patch_features
from .sae import SAE, ReLUSAE, TopKSAE, TrainOutput, register
from .splice import (SAE_POINTS, HookedSAETransformer, Splice, attach_sae, attach_saes, detach_saes, feature_direction,
                     splice, spliced, steering_hook)

__all__ = ["ARCHITECTURES", "LossConfig", "SAE", "SAEConfig", "ReLUSAE", "TopKSAE", "TrainOutput", "register",
           "SAE_POINTS", "HookedSAETransformer", "Splice", "attach_sae", "attach_saes", "detach_saes",
           "feature_direction", "splice", "spliced", "steering_hook",
           "SAEEval", "evaluate", "evaluate_activations", "latent_point", "patch_features"]
