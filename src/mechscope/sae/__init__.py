"""Sparse dictionaries: sparse autoencoders, transcoders and skip-transcoders — architectures, training,
evaluation, splicing into a model, analysis and dashboards, and the SAELens/sparsify formats.

Modules, lower to higher: ``config``, ``sae`` (the interface, ReLU, TopK), ``kernels`` (fused sparse TopK),
``architectures``; ``data``, ``activations``, ``store`` (where activations come from); ``formats``/``hub``;
``training``/``checkpoint``, ``synthetic``; ``splice``, ``evaluate``, ``patching``; ``analysis``, ``dashboard``."""

from .activations import (ActivationSource, Harvester, IterableSource, ModelSource, TensorSource,
                          activation_source)
from .analysis import LatentStats, latent_stats, logit_weights
from .architectures import BatchTopKSAE, GatedSAE, JumpReLUSAE, MatryoshkaSAE
from .config import ARCHITECTURES, LossConfig, SAEConfig
from .dashboard import dashboard, index_page, latent_page
from .data import token_rows
from .evaluate import SAEEval, evaluate, evaluate_activations
from .formats import FORMATS, detect_format, load, load_many, save
from .formats import attach as _attach_formats
from .kernels import fused_topk_encode, sparse_decode, topk_exact
from .patching import latent_point, patch_features
from .sae import SAE, ReLUSAE, TopKSAE, TrainOutput, register
from .splice import (SAE_POINTS, HookedSAETransformer, Splice, attach_sae, attach_saes, detach_saes, feature_direction,
                     splice, spliced, steering_hook)
from .store import ActivationStore, StoreSource
from .synthetic import SyntheticFeatures, mmcs
from .training import TrainConfig, train, train_many

_attach_formats()  # SAE.save / SAE.load and SAELens's load_from_disk, from_pretrained, save_model

__all__ = [
    "ARCHITECTURES", "LossConfig", "SAE", "SAEConfig", "ReLUSAE", "TopKSAE", "TrainOutput", "register",
    "BatchTopKSAE", "GatedSAE", "JumpReLUSAE", "MatryoshkaSAE", "fused_topk_encode", "sparse_decode", "topk_exact",
    "FORMATS", "detect_format", "load", "load_many", "save",
    "ActivationSource", "ActivationStore", "Harvester", "IterableSource", "ModelSource", "StoreSource",
    "TensorSource", "activation_source", "token_rows",
    "SAE_POINTS", "HookedSAETransformer", "Splice", "attach_sae", "attach_saes", "detach_saes",
    "feature_direction", "splice", "spliced", "steering_hook",
    "SAEEval", "evaluate", "evaluate_activations", "latent_point", "patch_features",
    "LatentStats", "latent_stats", "logit_weights", "dashboard", "index_page", "latent_page",
    "SyntheticFeatures", "mmcs", "TrainConfig", "train", "train_many",
]
