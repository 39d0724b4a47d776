"""Sparse dictionaries: sparse autoencoders, transcoders and skip-transcoders — architectures, training,
evaluation, splicing into a model, analysis and dashboards, and the SAELens/sparsify formats."""

from .config import ARCHITECTURES, LossConfig, SAEConfig
from .activations import (ActivationSource, Harvester, IterableSource, ModelSource, TensorSource,
                          activation_source)
from .data import token_rows
from .sae import SAE, ReLUSAE, TopKSAE, TrainOutput, register
from .store import ActivationStore, StoreSource

__all__ = ["ARCHITECTURES", "LossConfig", "SAE", "SAEConfig", "ReLUSAE", "TopKSAE", "TrainOutput", "register",
           "ActivationSource", "ActivationStore", "Harvester", "IterableSource", "ModelSource", "StoreSource",
           "TensorSource", "activation_source", "token_rows"]
