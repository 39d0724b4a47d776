"""``mechscope sae train``: train a sparse autoencoder or transcoder on a model's activations over a corpus."""

from __future__ import annotations

import typer

from ..errors import MechscopeError
from .common import JSON_HELP, MODEL_HELP, console, fail, load as _load, write_json
from .sae import sae_app


@sae_app.command("train")
def sae_train(model: str = typer.Argument(..., help=MODEL_HELP),
              hook: str = typer.Option(..., help="Hook point read, e.g. blocks.1.hook_resid_post."),
              data: str = typer.Option(..., help="Corpus: a text file or a .jsonl file of {\"text\": ...} records."),
              out: str = typer.Option(..., help="Folder for the SAE (cfg.json + sae_weights.safetensors) and its "
                                                "checkpoint."),
              hook_out: str = typer.Option(None, help="Transcoder: the hook point predicted (e.g. "
                                                      "blocks.1.hook_mlp_out)."),
              skip: bool = typer.Option(False, "--skip", help="Skip-transcoder: add a linear skip (needs --hook-out)."),
              arch: str = typer.Option("topk", "--arch", help="relu, topk, batchtopk, jumprelu, gated or matryoshka."),
              k: int = typer.Option(32, help="Active latents per token (topk, batchtopk, matryoshka)."),
              expansion: int = typer.Option(16, help="Latents per input dimension (unless --d-sae)."),
              d_sae: int = typer.Option(None, help="Latents (overrides --expansion)."),
              tokens: int = typer.Option(2_000_000, "--tokens", help="Tokens to train on."),
              batch_size: int = typer.Option(4096, help="Tokens per step."),
              lr: float = typer.Option(None, help="Adam's learning rate (default: 2e-4 / sqrt(d_sae / 16384))."),
              lr_warmup_steps: int = typer.Option(0, help="Steps of linear learning-rate warm-up."),
              lr_decay: float = typer.Option(0.2, help="Fraction of steps, at the end, of linear decay to 0."),
              l1_coefficient: float = typer.Option(5.0, help="relu/gated: L1 penalty weight."),
              l1_warmup_tokens: int = typer.Option(0, help="Tokens over which the L1 penalty ramps up."),
              auxk_coefficient: float = typer.Option(1 / 32, help="AuxK loss weight (0: off)."),
              dead_tokens: int = typer.Option(None, help="Tokens without firing after which a latent is dead "
                                                         "(default max(batch size, min(10M, tokens/10)))."),
              context_size: int = typer.Option(128, help="Tokens per sequence."),
              holdout_tokens: int = typer.Option(0, help="Tokens at the end of the corpus never trained on (whole rows)."),
              normalize_activations: str = typer.Option("expected_average_only_in",
                                                        help="expected_average_only_in or none."),
              matryoshka_sizes: str = typer.Option(None, help="matryoshka: nested widths, comma-separated "
                                                              "(default d_sae/16, d_sae/4, d_sae)."),
              l0_coefficient: float = typer.Option(1.0, help="jumprelu: L0 penalty weight."),
              auxk_k: int = typer.Option(None, help="Dead latents used per token by AuxK (default d_in/2)."),
              exclude_bos: bool = typer.Option(True, help="Skip the BOS position when harvesting."),
              dtype: str = typer.Option("float32", help="Parameter dtype: float32, bfloat16 or float16."),
              seed: int = typer.Option(0, help="Seed of initialisation and data order."),
              checkpoint_every: int = typer.Option(None, help="Tokens between checkpoints (default 10% of --tokens)."),
              resume: bool = typer.Option(False, "--resume", help="Continue the checkpoint in --out."),
              device: str = typer.Option(None, help="Training device (default: the model's)."),
              wandb_project: str = typer.Option(None, help="Log to this Weights & Biases project."),
              log_every: int = typer.Option(20, help="Steps between progress updates."),
              json_path: str = typer.Option(None, "--json", help=JSON_HELP + " The SAE config, the trainer's config "
                                                                 "and the final statistics.")):
    """Train an SAE (or transcoder) on MODEL's activations at --hook over --data, with a live progress bar and
    checkpoints that a killed run resumes from exactly (--resume)."""
    from ..sae.training import train

    try:
        sizes = [int(v) for v in matryoshka_sizes.split(",")] if matryoshka_sizes else None
    except ValueError:
        raise fail(ValueError(f"--matryoshka-sizes takes comma-separated ints (e.g. 128,512,2048), got "
                              f"{matryoshka_sizes!r}.")) from None
    m = _load(model)
    try:
        sae = train(m, data=data, hook=hook, hook_out=hook_out, skip=skip, architecture=arch, k=k,
                    expansion=expansion, d_sae=d_sae, n_tokens=tokens, batch_size=batch_size, lr=lr,
                    lr_warmup_steps=lr_warmup_steps, lr_decay=lr_decay, l1_coefficient=l1_coefficient,
                    l1_warmup_tokens=l1_warmup_tokens, auxk_coefficient=auxk_coefficient, dead_tokens=dead_tokens,
                    context_size=context_size, holdout_tokens=holdout_tokens,
                    normalize_activations=normalize_activations, seed=seed, l0_coefficient=l0_coefficient,
                    auxk_k=auxk_k, exclude_bos=exclude_bos, dtype=dtype, matryoshka_sizes=sizes,
                    checkpoint_every=checkpoint_every, resume=resume, out=out, device=device,
                    wandb_project=wandb_project, log_every=log_every)
    except (MechscopeError, OSError) as e:
        raise fail(e) from None
    stats = sae.cfg.metadata.get("final_stats", {})
    console.print(f"trained {sae.cfg.architecture} SAE, d_sae={sae.cfg.d_sae}, on {sae.cfg.metadata['tokens']:,} "
                  f"tokens: FVU {stats.get('fvu', float('nan')):.3f}, L0 {stats.get('l0', float('nan')):.1f}, "
                  f"dead {stats.get('dead', float('nan')):.1%}; saved to {out}")
    write_json(json_path, {"sae": {k: v for k, v in sae.cfg.to_dict().items() if k != "metadata"},
                           "trainer": sae.cfg.metadata.get("trainer"), "final": stats, "out": out})
