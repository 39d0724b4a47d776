"""``mechscope trace``: causal tracing of one fact (Meng et al. 2022)."""

from __future__ import annotations

import typer
from rich.table import Table

from .common import HTML_HELP, JSON_HELP, MODEL_ARG, app, console, fail, load as _load, write_html, write_json


@app.command("trace")
def trace_cmd(model: str = MODEL_ARG,
              fact: str = typer.Option(..., help="The prompt ('The Space Needle is located in the city of', with "
                                       "--subject), or known:ID for a known_1000 record (its prompt and subject)."),
              subject: str = typer.Option(None, help="The subject, exactly as written in the prompt: the tokens "
                                          "that are corrupted with noise."),
              answer: str = typer.Option(None, help="Token whose probability is traced (' Seattle'; its first "
                                         "token); default: the model's own top prediction."),
              kind: str = typer.Option("all", help="resid, mlp, attn or all."),
              window: int = typer.Option(10, help="MLP/attention layers restored together, centred on each layer."),
              noise: str = typer.Option("3x", help="σ of the Gaussian noise: a number, or Nx = N × the std of the "
                                        "subject embeddings over known_1000 (ROME: 3x)."),
              samples: int = typer.Option(10, help="Noise draws averaged per run (Meng et al.: 10)."),
              seed: int = typer.Option(1, help="Seed of the noise (the same draws in every run)."),
              json_path: str = typer.Option(None, "--json", help=JSON_HELP + " Every (layer, token) probability."),
              html_path: str = typer.Option(None, "--html", help=HTML_HELP + " One heatmap per kind.")):
    """Causal tracing: corrupt the subject's embeddings with noise, then restore one clean state at a time (the
    residual stream, or a window of MLP or attention outputs, at one layer and token) and report how much of
    the answer's probability comes back: where along layers × tokens the model recalls the fact."""
    from ..errors import MechscopeError
    from ..patching.tracing import KINDS, trace

    kinds = KINDS if kind == "all" else (kind,)
    if kind != "all" and kind not in KINDS:
        console.print(f"[red]error:[/red] unknown --kind {kind!r}; use resid, mlp, attn or all.")
        raise typer.Exit(2)
    try:
        sigma = float(noise)
    except ValueError:
        sigma = noise
    try:
        prompt, subject, answer = _fact(fact, subject, answer)
    except MechscopeError as e:
        raise fail(e) from None
    m = _load(model)
    try:
        result = trace(m, prompt, subject, answer, kinds=kinds, window=window, noise=sigma, samples=samples,
                       seed=seed)
    except MechscopeError as e:
        raise fail(e) from None
    console.print(f"{prompt!r} → {result.answer_str!r}: p = {result.high:.4f} clean, {result.low:.4f} with the subject "
                  f"({''.join(result.tokens[result.subject[0]:result.subject[1]]).replace('*', '')!r}, tokens "
                  f"{result.subject[0]}–{result.subject[1] - 1}) corrupted (σ = {result.sigma:.4g}, {samples} draws)")
    t = Table(title="where restoring one state brings the answer back most")
    for col in ("restored", "layer", "token", "p(answer)", "indirect effect", "of total effect"):
        t.add_column(col, justify="left" if col in ("restored", "token") else "right")
    total = result.high - result.low
    names = {"resid": "residual stream", "mlp": f"MLPs (window {window})", "attn": f"attention (window {window})"}
    for p in result.peaks():
        share = f"{p['indirect_effect'] / total:.0%}" if abs(total) > 1e-9 else "–"
        t.add_row(names[p["kind"]], str(p["layer"]), f"{p['pos']} {p['token']!r}", f"{p['p']:.4f}",
                  f"{p['indirect_effect']:+.4f}", share)
    console.print(t)
    console.print("[dim]indirect effect: p with that state restored − p corrupted; total effect: p clean − p "
                  "corrupted. Subject tokens are marked * in the views.[/dim]")
    write_json(json_path, {"model": model, "prompt": prompt, "subject": subject, **result.to_dict()})
    write_html(html_path, lambda: result.view(f"{model}: {prompt!r} → {result.answer_str!r}"))


def _fact(fact: str, subject: str | None, answer: str | None) -> tuple[str, str, str | None]:
    """(prompt, subject, answer) from ``--fact`` text + ``--subject``, or ``known:ID``."""
    from ..datasets.facts import fact as known_fact
    from ..errors import InputError

    if fact.startswith("known:"):
        try:
            known_id = int(fact.split(":", 1)[1])
        except ValueError:
            raise InputError(f"--fact {fact!r}: after 'known:' give a known_1000 id (0 to 1208), e.g. known:0.") from None
        f = known_fact(known_id)
        return f.prompt, subject or f.subject, answer
    if subject is None:
        raise InputError("--subject is needed with a prompt: the words to corrupt, as written in the prompt "
                         "(or use --fact known:ID).")
    return fact, subject, answer
