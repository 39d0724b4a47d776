"""Sparse dictionaries: sparse autoencoders, transcoders and skip-transcoders — architectures, training,
evaluation, splicing into a model, analysis and dashboards, and the SAELens/sparsify formats."""

from .config import ARCHITECTURES, LossConfig, SAEConfig
from .analysis import LatentStats, latent_stats, logit_weights
from .dashboard import dashboard, index_page, latent_page
from .sae import SAE, ReLUSAE, TopKSAE, TrainOutput, register

__all__ = ["ARCHITECTURES", "LossConfig", "SAE", "SAEConfig", "ReLUSAE", "TopKSAE", "TrainOutput", "register",
           "LatentStats", "latent_stats", "logit_weights",
           "dashboard", "index_page", "latent_page"]
