"""``mechscope sae eval``: how good a trained dictionary is on a model and a corpus (see ``mechscope.sae.evaluate``)."""

from __future__ import annotations


import typer

from .common import HTML_HELP, JSON_HELP, MODEL_HELP, console, fail, load, write_html, write_json
from .sae import load_sae, sae_app


@sae_app.command("eval")
def sae_eval(sae_dir: str = typer.Argument(..., help="The SAE folder (mechscope's, SAELens's or sparsify's format)."),
             model: str = typer.Argument("default", help=MODEL_HELP),
             data: str = typer.Option(..., help="Text to evaluate on: a .txt or .jsonl file (field 'text')."),
             tokens: int = typer.Option(32768, help="Tokens evaluated (whole rows of --context)."),
             holdout: bool = typer.Option(False, "--holdout", help="Read the tokens from the end of the corpus "
                                          "(where training holds out its evaluation rows), not its start."),
             context: int = typer.Option(None, help="Tokens per row; default the SAE's context_size, else 128."),
             batch_size: int = typer.Option(16, help="Rows per forward."),
             ablation: str = typer.Option("zero", help="Baseline of CE loss recovered: zero or mean."),
             include_bos: bool = typer.Option(False, "--include-bos", help="Also evaluate BOS positions (left out "
                                              "and bypassed by default)."),
             dense_threshold: float = typer.Option(0.1, help="A latent firing on more than this fraction is dense."),
             json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Every figure and the density."),
             html: str = typer.Option(None, help=HTML_HELP + " The density histogram.")):
    """L0, MSE, explained variance, CE loss recovered, KL, dead/dense latents of a dictionary spliced into MODEL."""
    from ..errors import MechscopeError
    from ..sae.data import token_rows
    from ..sae.evaluate import evaluate

    m = load(model)
    try:
        sae = load_sae(sae_dir)
        ctx = context or sae.cfg.context_size or 128
        if tokens < ctx:
            raise MechscopeError(f"--tokens {tokens} is less than one row of --context {ctx}; pass more tokens.")
        ids = (token_rows(m, data, context_size=ctx, holdout_tokens=tokens // ctx * ctx, split="holdout") if holdout
               else token_rows(m, data, context_size=ctx, n_tokens=tokens // ctx * ctx))
        ev = evaluate(sae, m, ids, batch_size=batch_size, ablation=ablation, exclude_bos=not include_bos,
                      dense_threshold=dense_threshold, progress=True)
    except (MechscopeError, OSError) as e:
        raise fail(e) from None
    console.print(ev.table())
    write_json(json_path, {"sae": sae_dir, "model": model, "data": data, "holdout": holdout, **ev.to_dict()})
    write_html(html, ev.view)
