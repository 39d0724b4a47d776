"""Sparse dictionaries: sparse autoencoders, transcoders and skip-transcoders — architectures, training,
evaluation, splicing into a model, analysis and dashboards, and the SAELens/sparsify formats."""

from .config import ARCHITECTURES, LossConfig, SAEConfig
from .sae import SAE, ReLUSAE, TopKSAE, TrainOutput, register
from .synthetic import SyntheticFeatures, mmcs
from .training import TrainConfig, train, train_many

__all__ = ["ARCHITECTURES", "LossConfig", "SAE", "SAEConfig", "ReLUSAE", "TopKSAE", "TrainOutput", "register",
           "SyntheticFeatures", "mmcs", "TrainConfig", "train", "train_many"]
