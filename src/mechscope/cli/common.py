"""What every command shares: the typer app, the console, loading a model, writing JSON and HTML, errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Mechanistic interpretability on any HuggingFace causal LM.")
console = Console()

MODEL_HELP = ("'default' (the embedded model), a named real model (see `mechscope models`), a .gguf file, a local "
              "folder, or a hub id.")
MODEL_ARG = typer.Argument("default", help=MODEL_HELP)
JSON_HELP = "Also write the results to this JSON file (for scripts)."
HTML_HELP = "Also save an interactive view to this standalone HTML file (works offline)."


def quiet_transformers() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load(name: str, dtype: str | None = None):
    import mechscope

    quiet_transformers()
    try:
        return mechscope.load(name, dtype=dtype)
    except mechscope.MechscopeError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def nbytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return ""



def fail(e: Exception) -> typer.Exit:
    """Print an error's sentence (not a traceback) and return the exit to raise: ``raise fail(e) from None``."""
    console.print(f"[red]error:[/red] {e}")
    return typer.Exit(2)


def _strict(data):
    """``data`` with every NaN or infinite float as None: strict JSON (``JSON.parse``, ``jq``) has no NaN."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _strict(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_strict(v) for v in data]
    return data


def write_json(path: str | None, data) -> None:
    """Write ``data`` to ``path`` as strict JSON (NaN and infinities as null; nothing when ``path`` is None)."""
    if not path:
        return
    try:
        Path(path).write_text(json.dumps(_strict(data), indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    except OSError as e:
        raise fail(OSError(f"cannot write {path!r}: {e.strerror or e}; pass a --json path in a writable folder."))
    console.print(f"[dim]wrote {path}[/dim]")


def write_html(path: str | None, make_view) -> None:
    """Save ``make_view()`` (a :class:`mechscope.views.View`) to ``path`` (nothing when ``path`` is None)."""
    if not path:
        return
    from ..errors import MechscopeError

    try:
        make_view().save(path)
    except MechscopeError as e:
        raise fail(e) from None
    console.print(f"[dim]wrote {path}[/dim]")
