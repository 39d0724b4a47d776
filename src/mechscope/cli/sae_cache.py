"""``mechscope sae cache``: harvest activations once into an on-disk store that a sweep of SAEs trains on."""

from __future__ import annotations

import typer

from ..errors import MechscopeError
from .common import JSON_HELP, MODEL_HELP, console, fail, load as _load, write_json
from .sae import sae_app


@sae_app.command("cache")
def sae_cache(model: str = typer.Argument(..., help=MODEL_HELP),
              hook: list[str] = typer.Option(..., "--hook", help="Hook point to store (repeat for several, e.g. a "
                                                                 "transcoder's input and output)."),
              data: str = typer.Option(..., "--data", help="Text (.txt/.jsonl), token ids (.npy/.safetensors) or an "
                                                           "HF datasets folder."),
              tokens: int = typer.Option(None, "--tokens", help="Tokens to harvest (default: all of the data)."),
              context: int = typer.Option(128, "--context", help="Tokens per row (BOS included)."),
              out: str = typer.Option(..., "--out", help="Store folder; re-running on it resumes a killed build."),
              dtype: str = typer.Option("float32", "--dtype", help="Storage dtype: float32, float16 or bfloat16 "
                                                                   "(reads are float32)."),
              holdout_tokens: int = typer.Option(0, "--holdout-tokens", help="Tokens kept back at the end of the "
                                                                             "data (never stored) for evaluation."),
              shard_tokens: int = typer.Option(2 ** 18, "--shard-tokens", help="Tokens per shard file."),
              batch: int = typer.Option(32, "--batch", help="Token rows per forward pass."),
              text_column: str = typer.Option("text", "--text-column", help="The text field of .jsonl records or "
                                                                           "datasets rows."),
              model_dtype: str = typer.Option(None, "--model-dtype", help="Load the model in this dtype."),
              json_path: str = typer.Option(None, "--json", help=JSON_HELP + " The store's path, hooks, widths, "
                                                                 "tokens, shards, bytes.")):
    """Harvest the activations at one or more hook points into a memory-mapped, resumable store."""
    from ..sae.store import ActivationStore

    m = _load(model, model_dtype)
    try:
        store = ActivationStore.build(m, data, hook, tokens, out, context_size=context, dtype=dtype,
                                      shard_tokens=shard_tokens, model_batch_size=batch, text_column=text_column,
                                      holdout_tokens=holdout_tokens)
    except (MechscopeError, OSError) as e:
        raise fail(e) from None
    n_bytes = sum(f["bytes"] for s in store.manifest["shards"] for f in s["files"].values())
    console.print(f"stored {store.n_tokens} tokens of {', '.join(f'{h} (d={store.d[h]})' for h in store.hooks)} in "
                  f"{len(store.counts)} shards, {n_bytes / 2 ** 20:.1f} MiB of {store.dtype}, at {store.path}")
    write_json(json_path, {"path": str(store.path), "hooks": store.hooks, "d": store.d, "dtype": store.dtype,
                           "n_tokens": store.n_tokens, "n_shards": len(store.counts), "bytes": n_bytes,
                           "context_size": store.manifest["context_size"]})
