"""Interop fixtures and checks with the real SAELens (and sparsify), run with the Python of a separate venv::

    /tmp/saelens-venv/bin/python bench/saelens_fixtures.py              # write tests/data/sae_fixtures/...
    /tmp/saelens-venv/bin/python bench/saelens_fixtures.py --check DIR  # SAELens loads DIR/*; compare outputs

Writing: one tiny folder per architecture SAELens 6 writes (d_in 8, d_sae 16, random non-zero weights), saved by
SAELens itself (``save_model``, or ``save_inference_model`` for BatchTopK/Matryoshka and a decoder-norm-rescaled
TopK, which is how trained SAEs leave SAELens), plus ``io.safetensors`` beside it: inputs ``x (6, d_in)`` and
SAELens's own ``feature_acts = encode(x)`` and ``sae_out = forward(x)``. Likewise sparsify coders (its
``save_to_disk``), with ``top_acts``/``top_indices``/``sae_out``. ``tests/test_sae_formats.py`` loads each with
mechscope and asserts the same outputs, so the default suite checks SAELens -> mechscope without SAELens installed.

Checking: each subfolder of DIR is a SAELens-format folder written by mechscope with an ``io.safetensors`` of
mechscope's ``x``, ``feature_acts`` and ``sae_out``; SAELens's ``SAE.load_from_disk`` loads it and must reproduce
them. Prints one JSON line ``{"checked": n, "failures": [...]}``; exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "sae_fixtures"
D_IN, D_SAE, D_OUT, K = 8, 16, 6, 4
HOOK, HOOK_OUT = "blocks.0.hook_resid_post", "blocks.0.hook_mlp_out"


def _randomise(module: torch.nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in ("threshold",):
                p.copy_(torch.rand(p.shape, generator=g) * 0.4 + 0.05)
            elif name == "r_mag":
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)


def _saelens_folders(tmp: Path) -> dict[str, Path]:
    """``{fixture name: folder SAELens wrote}``."""
    from sae_lens.saes import (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, GatedSAE, GatedSAEConfig,
                               JumpReLUSAE, JumpReLUSAEConfig, JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig,
                               JumpReLUTranscoder, JumpReLUTranscoderConfig, MatryoshkaBatchTopKTrainingSAE,
                               MatryoshkaBatchTopKTrainingSAEConfig, SkipTranscoder, SkipTranscoderConfig,
                               StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig, TopKTrainingSAE,
                               TopKTrainingSAEConfig, Transcoder, TranscoderConfig)
    from sae_lens.saes.sae import SAEMetadata

    def md(tc: bool = False):
        return SAEMetadata(hook_name=HOOK, model_name="tiny", **({"hook_name_out": HOOK_OUT} if tc else {}))

    ae, tc = dict(d_in=D_IN, d_sae=D_SAE), dict(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False)
    inference = {
        "standard": StandardSAE(StandardSAEConfig(**ae, metadata=md())),
        "standard_no_b_dec_in": StandardSAE(StandardSAEConfig(**ae, apply_b_dec_to_input=False, metadata=md())),
        "topk": TopKSAE(TopKSAEConfig(**ae, k=K, metadata=md())),
        "jumprelu": JumpReLUSAE(JumpReLUSAEConfig(**ae, metadata=md())),
        "gated": GatedSAE(GatedSAEConfig(**ae, metadata=md())),
        "transcoder": Transcoder(TranscoderConfig(**tc, metadata=md(True))),
        "skip_transcoder": SkipTranscoder(SkipTranscoderConfig(**tc, metadata=md(True))),
        "jumprelu_transcoder": JumpReLUTranscoder(JumpReLUTranscoderConfig(**tc, metadata=md(True))),
        "jumprelu_skip_transcoder": JumpReLUSkipTranscoder(JumpReLUSkipTranscoderConfig(**tc, metadata=md(True))),
    }
    training = {
        "topk_rescaled": TopKTrainingSAE(TopKTrainingSAEConfig(**ae, k=K, rescale_acts_by_decoder_norm=True,
                                                               metadata=md())),
        "batchtopk": BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**ae, k=K, metadata=md())),
        "matryoshka": MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
            **ae, k=K, matryoshka_widths=[4, 8, D_SAE], metadata=md())),
    }
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, sae in {**inference, **training}.items():
        _randomise(sae, g)
        if hasattr(sae, "topk_threshold"):
            sae.topk_threshold = torch.tensor(0.3)
        folder = tmp / name
        if name in training:
            sae.save_inference_model(folder)
        else:
            sae.save_model(folder)
        out[name] = folder
    return out


def write_saelens() -> list[str]:
    from sae_lens import SAE

    tmp = OUT / "_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    written = []
    g = torch.Generator().manual_seed(1)
    for name, folder in _saelens_folders(tmp).items():
        sae = SAE.load_from_disk(folder)  # what a SAELens user gets back from the folder
        sae.eval()
        x = torch.randn(6, D_IN, generator=g)
        with torch.no_grad():
            acts, out = sae.encode(x), sae(x)
        assert (acts != 0).any() and (acts == 0).any(), f"{name}: degenerate fixture"
        save_file({"x": x, "feature_acts": acts.contiguous(), "sae_out": out.contiguous()},
                  str(folder / "io.safetensors"))
        dest = OUT / "saelens" / name
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), dest)
        written.append(str(dest.relative_to(ROOT)))
    shutil.rmtree(tmp, ignore_errors=True)
    return written


def write_sparsify() -> list[str]:
    try:
        from sparsify import SparseCoder, SparseCoderConfig
    except ImportError:
        print("sparsify is not installed in this venv; skipping its fixtures", file=sys.stderr)
        return []
    g = torch.Generator().manual_seed(2)
    written = []
    variants = {"sae/layers.1": {}, "skip/layers.1": dict(skip_connection=True),
                "transcoder/layers.0.mlp": dict(transcode=True, skip_connection=True)}
    for name, kw in variants.items():
        coder = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K, **kw))
        with torch.no_grad():
            for p in coder.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)
        dest = OUT / "sparsify" / name
        shutil.rmtree(dest, ignore_errors=True)
        coder.save_to_disk(dest)
        x = torch.randn(6, D_IN, generator=g)
        with torch.no_grad():
            top_acts, top_indices, _ = coder.encode(x)
            fwd = coder(x)
        save_file({"x": x, "top_acts": top_acts.contiguous(), "top_indices": top_indices.contiguous(),
                   "sae_out": fwd.sae_out.contiguous()}, str(dest / "io.safetensors"))
        written.append(str(dest.relative_to(ROOT)))
    return written


def check(root: Path) -> int:
    from sae_lens import SAE

    failures, n = [], 0
    for folder in sorted(p for p in root.iterdir() if (p / "cfg.json").exists()):
        n += 1
        try:
            sae = SAE.load_from_disk(folder)
            sae.eval()
            io = load_file(str(folder / "io.safetensors"))
            with torch.no_grad():
                acts, out = sae.encode(io["x"]), sae(io["x"])
            for key, got in (("feature_acts", acts), ("sae_out", out)):
                torch.testing.assert_close(got, io[key], rtol=1e-5, atol=1e-5)
        except Exception as e:  # report every folder, not just the first failure
            failures.append(f"{folder.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    print(json.dumps({"checked": n, "failures": failures}))
    return 1 if failures or n == 0 else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", default=None, help="folder of mechscope-written SAELens folders to load with SAELens")
    args = ap.parse_args(argv)
    if args.check:
        return check(Path(args.check))
    written = write_saelens() + write_sparsify()
    print(json.dumps({"written": written}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
