"""The first commands: ``info``, ``run``, ``models`` and ``demo``."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from .common import MODEL_ARG, MODEL_HELP, app, console, load as _load, nbytes as _bytes, write_html, write_json


@app.command()
def info(model: str = MODEL_ARG, pos: int = typer.Option(128, help="Sequence length for the memory estimates."),
         dtype: str = typer.Option(None, help="Load in this dtype (float32, bfloat16, ...).")):
    """Architecture, hook points with shapes, and what caching everything would cost."""
    from ..memory import point_bytes

    m = _load(model, dtype)
    cfg = m.cfg
    t = Table(title=f"{model}: {cfg.family}", show_header=False)
    for k, v in cfg.to_dict().items():
        t.add_row(k, str(v))
    console.print(t)
    if m.source is not None:
        console.print(m.source.describe())
    if m.family.notes:
        console.print(f"[bold]{cfg.family}:[/bold] {m.family.notes}")
    points = Table(title=f"hook points (memory for batch 1 × {pos} tokens)")
    points.add_column("name", no_wrap=True)
    points.add_column("shape", no_wrap=True)
    points.add_column("bytes", justify="right", no_wrap=True)
    points.add_column("meaning")
    names_by_layer: dict[int, list[str]] = {}
    for name, pt in m.hook_dict.items():
        if pt.layer_idx is not None and name.startswith("blocks."):
            names_by_layer.setdefault(pt.layer_idx, []).append(name.split(".", 2)[2])
    first = {}  # a block's point names → the first block with them (hybrids mix several kinds of block)
    for layer, names in names_by_layer.items():
        first.setdefault(tuple(names), layer)
    shown_layers = {*first.values(), cfg.n_layers - 1}
    for name, pt in m.hook_dict.items():
        if pt.layer_idx is None or pt.layer_idx in shown_layers:
            points.add_row(name, "[" + ", ".join(map(str, pt.shape)) + "]",
                           _bytes(point_bytes(pt, 1, pos, cfg.dtype) or 0), pt.doc)
    console.print(points)
    if len(first) > 1:
        console.print(f"(blocks not shown have the same points as the shown block of their kind: blocks "
                      f"{sorted(first.values())}; attention blocks: {list(cfg.attn_layers)})")
    elif cfg.n_layers > 2:
        console.print(f"(blocks 1–{cfg.n_layers - 2} have the same points as block 0)")
    console.print(_cache_estimates(m, pos))


def _cache_estimates(m, pos: int, batches: tuple[int, ...] = (1, 8, 32)) -> str:
    """The same estimate ``run_with_cache`` checks before it runs: a full cache, per batch size, at ``pos`` tokens."""
    names = list(m.hook_dict)
    lines = [f"{len(names)} hook points; a full cache at {pos} tokens takes"]
    for b in batches:
        per_device = m.cache_bytes(names, b, pos)
        where = ", ".join(f"{_bytes(n)} on {d}" for d, n in per_device.items())
        fwd_bwd = sum(m.cache_bytes(names, b, pos, incl_bwd=True).values())
        lines.append(f"  batch {b:>3}: {where} ({_bytes(fwd_bwd)} with gradients, incl_bwd=True)")
    return "\n".join(lines)


@app.command()
def run(model: str = MODEL_ARG, prompt: str = typer.Argument(..., help="Text to continue."),
        top_k: int = typer.Option(10, help="How many predictions to show.")):
    """Top next-token predictions for a prompt."""
    import torch

    m = _load(model)
    try:
        with torch.inference_mode():
            logits = m(prompt)
    except Exception as e:  # noqa: BLE001 - show the sentence, not a traceback
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    probs = logits[0, -1].float().softmax(-1)
    top = probs.topk(min(top_k, probs.numel()))
    t = Table(title=f"next token after {prompt!r}")
    t.add_column("rank")
    t.add_column("token")
    t.add_column("id")
    t.add_column("prob", justify="right")
    for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
        t.add_row(str(rank), repr(m.to_string([i])), str(i), f"{p:.3f}")
    console.print(t)


@app.command()
def models():
    """Named real models that `mechscope.load(name)` finds in installed packages, and how to install them."""
    from ..zoo import MODELS

    t = Table(title="named models: pretrained GGUF files shipped in packages (dequantised once, then cached)")
    t.add_column("name", no_wrap=True)
    t.add_column("model")
    for m in MODELS.values():
        state = f"[red]not installed[/red]: install with {m.pip}"
        if m.installed():
            cached = "; dequantised and cached" if m.cached_folder() is not None else ""
            state = f"[green]installed[/green] ({m.pip}){cached}"
        t.add_row(m.name, f"{m.title}: {m.summary}; {m.quantization}; licence: {m.licence}\n{state}")
    console.print(t)
    console.print("Also: 'default' (mechscope's embedded model, trained on first use), any .gguf file that "
                  "transformers can dequantise, a local HuggingFace folder, or a hub id.")


@app.command()
def demo(model: str = typer.Option("default", help=MODEL_HELP),
         seg_len: int = typer.Option(20, help="Length of the repeated random segment."),
         real: bool = typer.Option(True, help="Also look inside SmolLM2-135M when its package is installed."),
         html_path: str = typer.Option("mechscope-demo.html", "--html",
                                       help="Save the interactive report here (one offline HTML file); '' for none."),
         json_path: str = typer.Option(None, "--json", help="Also write the report's numbers to this JSON file.")):
    """Look inside a model: predictions, in-context learning on repeated text, its attention heads, what each layer
    predicts (logit lens), which tokens a prediction depends on (integrated gradients) and which heads write it."""
    from .. import views
    from ..demo import numbers, real_model_report, report
    from ..zoo import MODELS

    start = time.perf_counter()
    m = _load(model)
    reports = {model: report(m, console, name=model, seg_len=seg_len)}
    smollm2 = MODELS["smollm2-135m"]
    if real and model == "default":
        if smollm2.installed():
            reports[smollm2.name] = real_model_report(_load(smollm2.name), console, name=smollm2.name, seg_len=seg_len)
        else:
            console.print(f"[dim]a real pretrained model is one command away: {smollm2.pip}[/dim]")
    write_json(json_path, {name: numbers(r) for name, r in reports.items()})
    write_html(html_path, lambda: views.report([v for r in reports.values() for v in r["views"]],
                                               title="mechscope demo"))
    console.print(f"[dim]done in {time.perf_counter() - start:.1f} s[/dim]")
