"""``mechscope circuit``: edge attribution (EAP, EAP-IG or exact) on a task, the top edges as a circuit, its
faithfulness and the faithfulness-vs-size curve, on a task of ``mechscope.patching.tasks``."""

from __future__ import annotations

import typer
from rich.table import Table

from ..patching.tasks import custom_task, induction_task, ioi_task
from .common import HTML_HELP, JSON_HELP, MODEL_ARG, app, console, fail, load as _load, write_html, write_json

TASKS = ("ioi", "induction", "custom")


@app.command()
def circuit(model: str = MODEL_ARG,
            task: str = typer.Option("induction", help="ioi, induction, or custom (with --clean/--corrupt/--answer)."),
            clean: str = typer.Option(None, help="Clean prompt (sets --task custom)."),
            corrupt: str = typer.Option(None, help="Corrupted prompt, as many tokens as the clean one."),
            answer: str = typer.Option(None, help="Token whose logit the metric reads (' Mary')."),
            wrong: str = typer.Option(None, help="Metric = logit(answer) − logit(wrong) (' John')."),
            method: str = typer.Option("eap", help="eap, eap-ig or exact (one forward per edge: small models)."),
            ig_steps: int = typer.Option(5, help="EAP-IG interpolation steps."),
            edges: int = typer.Option(50, help="How many top edges make the circuit (before pruning)."),
            sizes: str = typer.Option("5,10,20,50,100,200,500,1000", help="Circuit sizes of the faithfulness curve."),
            n_prompts: int = typer.Option(8, help="Prompts (ioi) or sequences (induction)."),
            seg_len: int = typer.Option(20, help="induction: length of the repeated segment."),
            seed: int = typer.Option(0, help="Seed of the prompts."),
            top: int = typer.Option(15, help="How many edges to print."),
            json_path: str = typer.Option(None, "--json",
                                          help=JSON_HELP + " Nodes, edges, scores, faithfulness, curve."),
            html_path: str = typer.Option(None, "--html", help=HTML_HELP + " The circuit graph and the curve.")):
    """Find a circuit: score every edge (input, heads, MLPs, logits) by edge attribution patching, keep the top ones,
    and measure how much of the task the circuit alone carries (faithfulness, with every other edge ablated)."""
    from ..errors import MechscopeError
    from ..patching import eap, faithfulness, faithfulness_curve

    if clean is not None or corrupt is not None:
        task = "custom"
    if task not in TASKS:
        raise fail(ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}."))
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise fail(ValueError(f"--sizes takes comma-separated edge counts like 10,50,200, got {sizes!r}.")) from None
    m = _load(model)
    try:
        if task == "custom":
            if clean is None or corrupt is None or answer is None:
                raise fail(ValueError("a custom task needs --clean, --corrupt and --answer (and optionally --wrong)."))
            t = custom_task(m, clean, corrupt, answer, wrong)
        elif task == "ioi":
            t = ioi_task(m, n_prompts, seed)
        else:
            t = induction_task(m, n_prompts, seg_len, seed)
        scores = eap(m, t.clean, t.corrupted, t.metric, method=method, ig_steps=ig_steps)
        circ = scores.extract(n_edges=edges)
        faith = faithfulness(m, circ, t.clean, t.corrupted, t.metric)
        curve = faithfulness_curve(m, scores, t.clean, t.corrupted, t.metric, sizes=size_list)
    except MechscopeError as e:
        raise fail(e) from None
    console.print(f"{model}: {t.description}")
    console.print(f"metric: clean {scores.clean:.4g}, corrupted {scores.corrupted:.4g}; {scores.graph}")
    what = "change of the metric with the edge ablated" if method == "exact" else \
        "first-order estimate of the metric's change with the edge ablated"
    tab = Table(title=f"top {top} edges by |{method} score| ({what})")
    for col in ("#", "edge", "score"):
        tab.add_column(col, justify="right" if col != "edge" else "left")
    for i, (e, v) in enumerate(scores.top(top)):
        tab.add_row(str(i + 1), e, f"{v:+.4g}")
    console.print(tab)
    console.print(f"circuit: top {edges} edges → {circ.n_edges} on paths input → logits, {len(circ.nodes)} nodes; "
                  f"faithfulness {faith:.3f}")
    console.print("curve: " + ", ".join(f"{n} edges {v:.3f}" for n, v in zip(curve.n_edges, curve.values)))
    write_json(json_path, {"model": model, "task": task, "description": t.description, "method": method,
                           "ig_steps": ig_steps if method == "eap-ig" else None, "clean": scores.clean,
                           "corrupted": scores.corrupted, "circuit": circ.to_dict(), "curve": curve.to_dict(),
                           "top_edges": [{"edge": e, "score": v} for e, v in scores.top(top)]})

    def view():
        from .. import views

        parts = [circ.view(title=f"{model}: {task} circuit ({method}), faithfulness {faith:.3f}")]
        if hasattr(views, "line_chart"):
            parts.append(curve.view(title=f"{model}: faithfulness vs circuit size"))
        return views.report(parts, title=f"{model}: {task} circuit") if len(parts) > 1 else parts[0]

    write_html(html_path, view)
