"""Task datasets for causal interventions: IOI prompts with ABC corruptions (Wang et al. 2022) and the known_1000
factual-recall facts (Meng et al. 2022)."""

from .facts import Fact, KnownFact, fact, known_by, load_facts, subject_span
from .ioi import IOIDataset, IOIPrompt, ioi_dataset, ioi_reference, single_token_names

__all__ = ["Fact", "IOIDataset", "IOIPrompt", "KnownFact", "fact", "ioi_dataset", "ioi_reference", "known_by",
           "load_facts", "single_token_names", "subject_span"]
