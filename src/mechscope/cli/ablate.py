"""``mechscope knockout`` (ablation sweeps) and ``mechscope path-patch`` (path patching)."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import HTML_HELP, JSON_HELP, MODEL_ARG, app, console, fail, load, write_html, write_json

ANSWER_HELP = "Answer token (mind the leading space: ' Mary'); the metric is its logit at the last position..."
WRONG_HELP = "... minus this token's logit (' John'): a logit difference."


def _metric(m, answer: str, wrong: str | None):
    a = m.to_single_token(answer)
    w = m.to_single_token(wrong) if wrong else None

    def logit_difference(logits):
        last = logits[:, -1]
        return (last[:, a] - (last[:, w] if w is not None else 0)).mean()
    return logit_difference


def _table(res, top: int, what: str) -> None:
    t = Table()
    t.add_column(what)
    t.add_column("metric", justify="right")
    t.add_column("change", justify="right")
    for label, value in _by_effect(res, top):
        t.add_row(label, f"{value + res.baseline:.3f}", f"{value:+.3f}")
    console.print(t)


def _by_effect(res, top: int):
    import torch

    eff = (res.values - res.baseline).flatten()
    order = eff.abs().argsort(descending=True)[:top]
    return [(res.label(tuple(int(i) for i in torch.unravel_index(j, res.values.shape))), float(eff[j]))
            for j in order]


@app.command()
def knockout(model: str = MODEL_ARG, prompt: str = typer.Argument(..., help="The prompt."),
             answer: str = typer.Option(..., help=ANSWER_HELP), wrong: str = typer.Option(None, help=WRONG_HELP),
             components: str = typer.Option("heads", help="heads, layers, attn, mlps or neurons."),
             method: str = typer.Option("zero", help="zero, mean or resample."),
             reference: list[str] = typer.Option(None, help="Reference text(s) for mean/resample ablation "
                                                 "(repeat the option; default: the prompt itself)."),
             mean: str = typer.Option("pooled", help="mean ablation: pooled (over all positions) or position."),
             top: int = typer.Option(10, help="How many components to list."),
             json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Every component's metric."),
             html_path: str = typer.Option(None, "--html", help=HTML_HELP + " A heatmap of the metric.")):
    """Knock-out sweep: the metric with each component ablated (zero, mean or resample), against the baseline."""
    from ..errors import MechscopeError
    from ..patching import knockout as sweep

    components = {"mlp": "mlps"}.get(components, components)   # patch --granularity says 'mlp'
    m = load(model)
    try:
        res = sweep(m, prompt, _metric(m, answer, wrong), components, method, list(reference) if reference else None,
                    mean=mean)
    except MechscopeError as e:
        raise fail(e) from None
    console.print(f"baseline {res.metric} = {res.baseline:.3f}; largest changes with one component {method}-ablated:")
    _table(res, top, components)
    write_json(json_path, res.to_dict())
    write_html(html_path, res.view)


def _receivers(text: str):
    if text == "logits":
        return "logits"
    out = []
    for part in text.split(","):
        bits = part.strip().split(".")
        if len(bits) != 3 or not bits[0].isdigit() or not bits[1].isdigit():
            raise typer.BadParameter(f"receiver {part!r} must look like LAYER.HEAD.INPUT, e.g. 9.6.q (inputs q, k, v, "
                                     "or several: 9.6.qkv); or pass 'logits'.")
        out.append((int(bits[0]), int(bits[1]), bits[2]))
    return out


@app.command("path-patch")
def path_patch(model: str = MODEL_ARG, clean: str = typer.Option(..., help="The clean prompt."),
               corrupt: str = typer.Option(..., help="The corrupted prompt (as many tokens as the clean one)."),
               answer: str = typer.Option(..., help=ANSWER_HELP), wrong: str = typer.Option(None, help=WRONG_HELP),
               senders: str = typer.Option("heads", help="heads, mlps or layers (a sweep over each)."),
               receivers: str = typer.Option("logits", help="'logits', or heads' inputs LAYER.HEAD.INPUT, comma "
                                             "separated: '9.6.q,9.9.q' (k/v: key/value head under GQA)."),
               direction: str = typer.Option("denoise", help="denoise (clean sender into the corrupted run) or "
                                             "noise (Wang et al.'s form: corrupted sender into the clean run)."),
               freeze_mlps: bool = typer.Option(False, help="Also freeze the MLPs in the sender run."),
               top: int = typer.Option(10, help="How many senders to list."),
               json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Every sender's metric."),
               html_path: str = typer.Option(None, "--html", help=HTML_HELP + " A heatmap of the metric.")):
    """Path patching (Wang et al. 2022): each sender's effect through the receivers only, other heads frozen."""
    from ..errors import MechscopeError
    from ..patching import path_patch as run

    senders = {"mlp": "mlps"}.get(senders, senders)   # patch --granularity says 'mlp'
    recv = _receivers(receivers)
    m = load(model)
    try:
        res = run(m, clean, corrupt, _metric(m, answer, wrong), senders=senders, receivers=recv,
                  direction=direction, freeze_mlps=freeze_mlps)
    except MechscopeError as e:
        raise fail(e) from None
    console.print(f"{res.title}; baseline {res.metric} = {res.baseline:.3f}; largest changes:")
    _table(res, top, senders)
    write_json(json_path, res.to_dict())
    write_html(html_path, res.view)
