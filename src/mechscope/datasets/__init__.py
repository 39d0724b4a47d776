"""Task datasets for causal interventions: IOI prompts with ABC corruptions (Wang et al. 2022) and the known_1000
factual-recall facts (Meng et al. 2022)."""

from .ioi import IOIDataset, IOIPrompt, ioi_dataset, ioi_reference, single_token_names

__all__ = ["IOIDataset", "IOIPrompt", "ioi_dataset", "ioi_reference", "single_token_names"]
