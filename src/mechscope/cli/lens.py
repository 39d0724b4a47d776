"""``mechscope lens``: the logit and tuned lens, ``lens train`` and ``lens eval``."""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.table import Table
from typer.core import TyperGroup

from ..errors import MechscopeError
from .common import HTML_HELP, JSON_HELP, MODEL_HELP, app, console, fail, load as _load, write_html, write_json

# `mechscope lens MODEL "prompt"` reads every layer out; `lens train` and `lens eval` are subcommands of the same
# group. A click group cannot take positional arguments before its subcommand, so the group routes any first
# argument that is not a subcommand name to the default command `show` (a model literally named "train" or
# "eval" is reached with `mechscope lens show train "prompt"`).


class _LensGroup(TyperGroup):
    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


lens_app = typer.Typer(cls=_LensGroup, no_args_is_help=True, add_completion=False,
                       help='Logit and tuned lens: `mechscope lens MODEL "prompt"`, `lens train`, `lens eval`.')
app.add_typer(lens_app, name="lens")


@lens_app.command("show")
def lens_show(model: str = typer.Argument(..., help=MODEL_HELP), prompt: str = typer.Argument(..., help="Text to read."),
              tuned: str = typer.Option(None, help="A tuned lens folder (default: the logit lens)."),
              k: int = typer.Option(5, help="Top tokens kept per layer and position."),
              json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Per layer and position: top-k tokens "
                                                                 "and probabilities, KL."),
              html_path: str = typer.Option(None, "--html", help=HTML_HELP + " The lens table, hover for top k.")):
    """Each layer's most likely next token at every position, through the model's own final norm and head."""
    from ..lens import LogitLens, TunedLens

    m = _load(model)
    try:
        lens = TunedLens.load(tuned, m) if tuned else LogitLens.from_model(m)
        res = lens.run(prompt, k=k)
    except (MechscopeError, OSError) as e:  # the sentence, not a traceback
        raise fail(e) from None
    t = Table(title=f"{res.lens} lens: top token and probability per layer (rows) and position (columns)")
    t.add_column("layer", no_wrap=True, min_width=max(map(len, res.layer_labels)))
    for tok in res.tokens[0]:
        t.add_column(repr(tok)[1:-1] or "·", overflow="fold")
    t.add_column("mean KL", justify="right", no_wrap=True, min_width=7)
    for l, label in enumerate(res.layer_labels):
        cells = [f"{repr(s[0])[1:-1]} {float(p):.2f}" for s, p in zip(res.top_strings[l][0], res.top_probs[l, 0, :, 0])]
        t.add_row(label, *cells, f"{float(res.kl[l, 0].mean()):.2f}")
    console.print(t)
    write_json(json_path, res.to_dict())
    write_html(html_path, res.view)


@lens_app.command("train")
def lens_train(model: str = typer.Argument(..., help=MODEL_HELP),
               data: str = typer.Option(..., help="Corpus: a text file or a .jsonl file of {\"text\": ...} records."),
               out: str = typer.Option(..., help="Folder for the lens (cfg.json + params.safetensors) and its "
                                                 "checkpoint."),
               steps: int = typer.Option(100, help="Optimiser steps."),
               seq_len: int = typer.Option(128, help="Tokens per row."),
               batch_size: int = typer.Option(8, help="Rows per step."),
               positions: int = typer.Option(256, help="Positions per step used in the loss (0: all)."),
               optimizer: str = typer.Option("sgd", help="sgd (Nesterov, tuned-lens's default) or adam."),
               lr: float = typer.Option(1.0, help="tuned-lens's lr_scale."),
               holdout_rows: int = typer.Option(320, help="Rows at the end of the corpus never trained on."),
               checkpoint_every: int = typer.Option(10, help="Steps between checkpoints."),
               resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --out."),
               json_path: str = typer.Option(None, "--json", help=JSON_HELP + " The set-up and the mean KL per step.")):
    """Train a tuned lens on a corpus, with a progress bar and resumable checkpoints."""
    from ..lens import TrainConfig, train

    m = _load(model)
    try:
        cfg = TrainConfig(steps=steps, seq_len=seq_len, batch_size=batch_size, positions_per_step=positions or None,
                          optimizer=optimizer, lr=lr, holdout_rows=holdout_rows, checkpoint_every=checkpoint_every)
        lens = train(m, data, out, cfg, resume=resume)
    except (MechscopeError, OSError) as e:  # the sentence, not a traceback
        raise fail(e) from None
    console.print(f"tuned lens saved in {out}")
    write_json(json_path, {"model": model, "data": data, "out": out, "config": asdict(cfg),
                           "history": [{"step": s, "mean_kl": kl} for s, kl in lens.history]})


@lens_app.command("eval")
def lens_eval(model: str = typer.Argument(..., help=MODEL_HELP),
              tuned: str = typer.Option(..., help="The tuned lens folder."),
              data: str = typer.Option(..., help="Corpus; the held-out rows are read from its end."),
              rows: int = typer.Option(32, help="Held-out rows evaluated."),
              seq_len: int = typer.Option(128, help="Tokens per row."),
              json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Per-layer figures.")):
    """Per-layer KL (and perplexity) of the logit and tuned lens on held-out text from the end of the corpus."""
    from ..lens import LogitLens, TunedLens, evaluate
    from ..lens.data import split

    m = _load(model)
    try:
        lens = TunedLens.load(tuned, m)
        ev = evaluate({"logit": LogitLens.from_model(m), "tuned": lens}, split(m, data, seq_len, 0, rows).eval,
                      show_progress=True)
    except (MechscopeError, OSError) as e:  # the sentence, not a traceback
        raise fail(e) from None
    t = Table(title=f"held-out KL(model ‖ lens), nats, over {ev.n_tokens} tokens")
    for col in ("layer", "logit KL", "tuned KL", "logit ppl", "tuned ppl"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for l, label in enumerate(ev.layer_labels):
        t.add_row(label, *(f"{float(ev.kl[n][l]):.3f}" for n in ("logit", "tuned")),
                  *(f"{float(ev.perplexity(n)[l]):.4g}" for n in ("logit", "tuned")))
    console.print(t)
    write_json(json_path, ev.to_dict())

