"""Sparse dictionaries: sparse autoencoders, transcoders and skip-transcoders — architectures, training,
evaluation, splicing into a model, analysis and dashboards, and the SAELens/sparsify formats."""

from .architectures import BatchTopKSAE, GatedSAE, JumpReLUSAE, MatryoshkaSAE
from .config import ARCHITECTURES, LossConfig, SAEConfig
from .kernels import fused_topk_encode, sparse_decode, topk_exact
from .sae import SAE, ReLUSAE, TopKSAE, TrainOutput, register

__all__ = ["ARCHITECTURES", "LossConfig", "SAE", "SAEConfig", "ReLUSAE", "TopKSAE", "TrainOutput", "register",
           "BatchTopKSAE", "GatedSAE", "JumpReLUSAE", "MatryoshkaSAE",
           "fused_topk_encode", "sparse_decode", "topk_exact"]
