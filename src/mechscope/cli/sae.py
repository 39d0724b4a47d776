"""``mechscope sae ...``: the command group. Its commands live one module per concern (``sae_train``,
``sae_eval``, ``sae_dashboard``) and register on :data:`sae_app`."""

from __future__ import annotations

import typer

from .common import app

sae_app = typer.Typer(no_args_is_help=True, add_completion=False,
                      help="Sparse autoencoders and transcoders: train, evaluate, browse their latents.")
app.add_typer(sae_app, name="sae")


def load_sae(path: str):
    """The dictionary at ``path`` (any folder format :func:`mechscope.sae.load` reads), in eval mode."""
    from ..sae import load

    return load(path).eval()
