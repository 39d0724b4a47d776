"""Microscope commands: ``heads``, ``dla`` and ``attribute``."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import HTML_HELP, JSON_HELP, MODEL_ARG, app, console, fail, load as _load, write_html, write_json


HEAD_DETECTORS = ("induction", "previous_token", "duplicate_token", "all")


@app.command()
def heads(model: str = MODEL_ARG,
          detector: str = typer.Option("all", help="induction, previous_token, duplicate_token or all."),
          top: int = typer.Option(10, help="How many heads to list per detector."),
          seg_len: int = typer.Option(50, help="Length of the random segment shown twice."),
          n_seqs: int = typer.Option(8, help="How many repeated random sequences to score on."),
          seed: int = typer.Option(0, help="Seed of the random tokens."),
          json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Every head's scores and the top heads."),
          html_path: str = typer.Option(None, "--html", help=HTML_HELP + " Layer × head heatmaps.")):
    """Find attention heads by what they attend to: induction, previous-token and duplicate-token heads on
    repeated random tokens (BOS + segment + segment), with attention to BOS and attention entropy per head."""
    from ..detectors import find_heads
    from ..errors import MechscopeError

    if detector not in HEAD_DETECTORS:
        console.print(f"[red]error:[/red] unknown detector {detector!r}; use one of {', '.join(HEAD_DETECTORS)}.")
        raise typer.Exit(2)
    chosen = ("induction", "previous_token", "duplicate_token") if detector == "all" else (detector,)
    m = _load(model)
    try:
        found = find_heads(m, detectors=chosen, n_seqs=n_seqs, seg_len=seg_len, seed=seed)
    except MechscopeError as e:
        raise fail(e) from None
    cfg = m.cfg
    console.print(f"{model}: {cfg.n_layers} layers × {cfg.n_heads} heads, scored on {n_seqs} sequences of BOS + "
                  f"{seg_len} random tokens shown twice (seed {seed}).")
    explain = {"induction": "attention to the token after the previous occurrence of the current token",
               "previous_token": "attention to the previous token",
               "duplicate_token": "attention to earlier copies of the current token",
               "bos_attention": "mean attention to the first token (an attention sink: often an idle head)",
               "entropy": "mean attention entropy in nats, highest first (low: sharp, high: spread out)"}
    names = (*chosen, "bos_attention", "entropy")
    t = Table(title=f"top {top} heads per measure (head: score)")
    t.add_column("#", justify="right", min_width=2)
    columns = [found.top(name, top) for name in names]
    short = {"previous_token": "prev_token", "duplicate_token": "dup_token", "bos_attention": "bos"}
    for name in names:
        t.add_column(short.get(name, name), no_wrap=True)
    for rank in range(max(len(c) for c in columns)):
        t.add_row(str(rank + 1), *(f"L{c[rank][0]}H{c[rank][1]} {c[rank][2]:.2f}" if rank < len(c) else ""
                                   for c in columns))
    console.print(t)
    for name in names:
        console.print(f"[dim]{short.get(name, name)}: {explain[name]}[/dim]")
    write_json(json_path, {"model": model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "n_seqs": n_seqs,
                           "seg_len": seg_len, "seed": seed, **found.to_dict(top=top)})
    write_html(html_path, lambda: found.view(title=f"{model}: attention heads"))


# ------------------------------------------------------------------------- direct logit attribution (dla.py)
@app.command()
def dla(model: str = MODEL_ARG, prompt: str = typer.Argument(..., help="The prompt."),
        target: str = typer.Option(..., help="Token whose logit is attributed (mind the leading space: ' Mary')."),
        minus: str = typer.Option(None, help="Attribute target's logit minus this token's (' John')."),
        by: str = typer.Option("head", help="layer, head, neuron, full or position."),
        position: int = typer.Option(-1, help="Position attributed (negative counts from the end)."),
        top: int = typer.Option(10, help="How many components to show."),
        json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Every label and value."),
        html_path: str = typer.Option(None, "--html", help=HTML_HELP)):
    """Direct logit attribution: what each head, layer, neuron or source position writes into a logit."""
    import mechscope

    m = _load(model)
    try:
        res = mechscope.direct_logit_attribution(m, prompt, target=target, minus=minus, by=by, position=position)
        shown = res.top(top)
    except mechscope.MechscopeError as e:
        raise fail(e) from None
    console.print(f"{res.target} = {float(res.logit):.3f}; direct attribution by {by}:")
    t = Table()
    t.add_column(by)
    t.add_column("attribution", justify="right")
    for label, value in shown:
        t.add_row(label, f"{value:+.3f}")
    console.print(t)
    if by in ("layer", "full"):
        console.print(f"[dim]components sum to {float(res.values.sum()):.3f}; the final norm's bias and b_U add "
                      f"{float(res.constant):.3f}[/dim]")
    write_json(json_path, res.to_dict())
    write_html(html_path, res.view)


@app.command()
def attribute(model: str = MODEL_ARG, prompt: str = typer.Argument(..., help="The prompt to explain."),
              target: str = typer.Option(None, help="Target token, e.g. ' Paris' (its logit at --position); "
                                         "default: the token the model predicts."),
              minus: str = typer.Option(None, help="Subtract this token's logit: a logit difference, e.g. ' John'."),
              loss: bool = typer.Option(False, help="Explain the prompt's LM loss instead of a token."),
              log_prob: bool = typer.Option(False, help="Explain the target token's log-probability, not its logit."),
              method: str = typer.Option("ig", help="saliency, grad_x_input, ig, occlusion, shapley, kernel_shap, lime or rollout."),
              baseline_token: str = typer.Option(None, help="Baseline: replace tokens by this token (' the'); "
                                                 "default: auto (an ordinary token such as the, see docs)."),
              steps: int = typer.Option(None, help="ig: integration steps; shapley, kernel_shap, lime: samples."),
              position: int = typer.Option(-1, help="Position whose prediction is explained (-1: the last)."),
              window: int = typer.Option(1, help="occlusion: tokens replaced at once."),
              batch_size: int = typer.Option(16, help="Forward rows per batch (memory)."),
              include_bos: bool = typer.Option(False, help="Also attribute the leading BOS token."),
              json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Scores keyed by position:token."),
              html_path: str = typer.Option(None, "--html", help=HTML_HELP + " The tokens coloured by score.")):
    """Which tokens of a prompt a prediction depends on: a table of token, score and colour."""
    from ..attribution import Loss, TokenLogit, attribute as run_attribution
    from ..errors import MechscopeError

    if minus is not None and target is None:
        console.print("[red]error:[/red] --minus needs --target: the logit difference is target minus this token.")
        raise typer.Exit(2)
    m = _load(model)
    kwargs: dict = {"position": position, "include_bos": include_bos}
    if method in ("ig", "occlusion", "shapley", "kernel_shap", "lime"):  # the batched methods with a baseline
        kwargs["batch_size"] = batch_size
        kwargs["baseline"] = baseline_token if baseline_token is not None else "auto"
    if steps is not None:
        if method not in ("ig", "shapley", "kernel_shap", "lime"):
            console.print(f"[red]error:[/red] --steps sets integration steps (ig) or samples (shapley, kernel_shap, "
                          f"lime); {method} has neither, so drop --steps.")
            raise typer.Exit(2)
        kwargs["n_steps" if method == "ig" else "n_samples"] = steps
    if method == "occlusion":
        kwargs["window"] = window
    goal = Loss() if loss else (target, minus) if minus is not None else target
    if log_prob and not loss and minus is None:
        goal = TokenLogit(target, position=position, log_prob=True) if target is not None else None
        if goal is None:
            console.print("[red]error:[/red] --log-prob needs --target (the token whose log-probability to explain).")
            raise typer.Exit(2)
    try:
        result = run_attribution(m, prompt, None if method == "rollout" else goal, method=method, **kwargs)
    except MechscopeError as e:
        raise fail(e) from None
    console.print(_attribution_table(result))
    write_json(json_path, result.to_dict())
    write_html(html_path, result.view)


def _attribution_table(result) -> Table:
    """Token, score and a bar coloured by sign (green raises the target, red lowers it)."""
    t = Table(title=f"{result.method}: {result.target}")
    t.add_column("pos", justify="right")
    t.add_column("token")
    t.add_column("score", justify="right")
    t.add_column("", no_wrap=True)
    top = float(result.scores.abs().max()) if len(result.scores) else 0.0
    for p, tok, s in zip(result.positions, result.tokens, result.scores.tolist()):
        width = round(20 * abs(s) / top) if top > 0 else 0
        colour = "green" if s >= 0 else "red"
        t.add_row(str(p), repr(tok), f"{s:+.4g}", f"[{colour}]{'█' * width}[/{colour}]")
    notes = [f"f(x) = {result.value:.4g}" if result.value is not None else "",
             f"f(baseline) = {result.baseline_value:.4g}" if result.baseline_value is not None else "",
             f"completeness delta {result.delta:.2%}" if result.delta is not None else ""]
    t.caption = "; ".join(n for n in notes if n) + (f" ({result.params.get('baseline')} baseline)"
                                                    if "baseline" in result.params else "")
    return t


if __name__ == "__main__":
    app()
