"""Sparse dictionaries: sparse autoencoders, transcoders and skip-transcoders — architectures, training,
evaluation, splicing into a model, analysis and dashboards, and the SAELens/sparsify formats."""

from .architectures import BatchTopKSAE, GatedSAE, JumpReLUSAE, MatryoshkaSAE
from .config import ARCHITECTURES, LossConfig, SAEConfig
from .kernels import fused_topk_encode, sparse_decode, topk_exact


from .analysis import LatentStats, latent_stats, logit_weights
from .dashboard import dashboard, index_page, latent_page
from .sae import SAE, ReLUSAE, TopKSAE, TrainOutput, register
from .formats import FORMATS, attach as _attach_formats, detect_format, load, load_many, save

__all__ = ["ARCHITECTURES", "LossConfig", "SAE", "SAEConfig", "ReLUSAE", "TopKSAE", "TrainOutput", "register",
           "BatchTopKSAE", "GatedSAE", "JumpReLUSAE", "MatryoshkaSAE",
           "fused_topk_encode", "sparse_decode", "topk_exact"]


_attach_formats()  # SAE.save / SAE.load / SAELens's load_from_disk, from_pretrained, save_model

__all__ = ["ARCHITECTURES", "LossConfig", "SAE", "SAEConfig", "ReLUSAE", "TopKSAE", "TrainOutput", "register",
           "FORMATS", "detect_format", "load", "load_many", "save"]


from .activations import (ActivationSource, Harvester, IterableSource, ModelSource, TensorSource,
                          activation_source)
from .data import token_rows
from .sae import SAE, ReLUSAE, TopKSAE, TrainOutput, register
from .store import ActivationStore, StoreSource

__all__ = ["ARCHITECTURES", "LossConfig", "SAE", "SAEConfig", "ReLUSAE", "TopKSAE", "TrainOutput", "register",
           "ActivationSource", "ActivationStore", "Harvester", "IterableSource", "ModelSource", "StoreSource",
           "TensorSource", "activation_source", "token_rows"]


from .evaluate import SAEEval, evaluate, evaluate_activations
from .patching import latent_point, patch_features
from .sae import SAE, ReLUSAE, TopKSAE, TrainOutput, register
from .splice import (SAE_POINTS, HookedSAETransformer, Splice, attach_sae, attach_saes, detach_saes, feature_direction,
                     splice, spliced, steering_hook)

__all__ = ["ARCHITECTURES", "LossConfig", "SAE", "SAEConfig", "ReLUSAE", "TopKSAE", "TrainOutput", "register",
           "SAE_POINTS", "HookedSAETransformer", "Splice", "attach_sae", "attach_saes", "detach_saes",
           "feature_direction", "splice", "spliced", "steering_hook",
           "SAEEval", "evaluate", "evaluate_activations", "latent_point", "patch_features"]


           "LatentStats", "latent_stats", "logit_weights",
           "dashboard", "index_page", "latent_page"]
