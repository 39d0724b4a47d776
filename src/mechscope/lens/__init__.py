"""Lenses: the logit lens and the tuned lens, their training on a corpus and their evaluation.

    from mechscope.lens import logit_lens, TunedLens
    res = logit_lens(model, "The capital of France is", targets=" Paris")
    res.top_tokens()         # [layer][pos] most likely token
    res.kl                   # (layer, batch, pos) KL(model ‖ lens)
    tuned = TunedLens.load("lenses/smollm2", model)
    tuned.run("The capital of France is")
"""

from .evaluation import LensEval, evaluate
from .logit import LensResult, LogitLens, layer_labels, logit_lens, resid_names, run_lens
from .tuned import TunedLens, TunedLensConfig
from .training import TrainConfig, train
from .unembed import Unembed

__all__ = ["LensEval", "LensResult", "LogitLens", "TrainConfig", "TunedLens", "TunedLensConfig", "Unembed", "evaluate",
           "layer_labels", "logit_lens", "resid_names", "run_lens", "train"]
