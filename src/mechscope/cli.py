"""``mechscope`` command line: ``info``, ``run``, ``models``, ``demo`` and ``dla``."""

from __future__ import annotations

import os
import time

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Mechanistic interpretability on any HuggingFace causal LM.")
console = Console()

MODEL_HELP = ("'default' (the embedded model), a named real model (see `mechscope models`), a .gguf file, a local "
              "folder, or a hub id.")
MODEL_ARG = typer.Argument("default", help=MODEL_HELP)


def _quiet_transformers() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _load(name: str, dtype: str | None = None):
    import mechscope

    _quiet_transformers()
    try:
        return mechscope.load(name, dtype=dtype)
    except mechscope.MechscopeError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return ""


@app.command()
def info(model: str = MODEL_ARG, pos: int = typer.Option(128, help="Sequence length for the memory estimates."),
         dtype: str = typer.Option(None, help="Load in this dtype (float32, bfloat16, ...).")):
    """Architecture, hook points with shapes, and what caching everything would cost."""
    from .memory import point_bytes

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
    from .zoo import MODELS

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
         real: bool = typer.Option(True, help="Also look inside SmolLM2-135M when its package is installed.")):
    """Look inside a model: predictions, in-context learning on repeated text, and its attention heads."""
    from .demo import real_model_report, report
    from .zoo import MODELS

    start = time.perf_counter()
    m = _load(model)
    report(m, console, name=model, seg_len=seg_len)
    smollm2 = MODELS["smollm2-135m"]
    if real and model == "default":
        if smollm2.installed():
            real_model_report(_load(smollm2.name), console, name=smollm2.name, seg_len=seg_len)
        else:
            console.print(f"[dim]a real pretrained model is one command away: {smollm2.pip}[/dim]")
    console.print(f"[dim]done in {time.perf_counter() - start:.1f} s[/dim]")


# ------------------------------------------------------------------------------------------ heads (issue #6, item 4)
HEAD_DETECTORS = ("induction", "previous_token", "duplicate_token", "all")


@app.command()
def heads(model: str = MODEL_ARG,
          detector: str = typer.Option("all", help="induction, previous_token, duplicate_token or all."),
          top: int = typer.Option(10, help="How many heads to list per detector."),
          seg_len: int = typer.Option(50, help="Length of the random segment shown twice."),
          n_seqs: int = typer.Option(8, help="How many repeated random sequences to score on."),
          seed: int = typer.Option(0, help="Seed of the random tokens."),
          json_path: str = typer.Option(None, "--json", help="Write every head's scores and the top heads here.")):
    """Find attention heads by what they attend to: induction, previous-token and duplicate-token heads on
    repeated random tokens (BOS + segment + segment), with attention to BOS and attention entropy per head."""
    import json

    from .detectors import find_heads
    from .errors import MechscopeError

    if detector not in HEAD_DETECTORS:
        console.print(f"[red]error:[/red] unknown detector {detector!r}; use one of {', '.join(HEAD_DETECTORS)}.")
        raise typer.Exit(2)
    chosen = ("induction", "previous_token", "duplicate_token") if detector == "all" else (detector,)
    m = _load(model)
    try:
        found = find_heads(m, detectors=chosen, n_seqs=n_seqs, seg_len=seg_len, seed=seed)
    except MechscopeError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
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
    if json_path:
        out = {"model": model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "n_seqs": n_seqs,
               "seg_len": seg_len, "seed": seed, **found.to_dict(top=top)}
        with open(json_path, "w") as f:
            json.dump(out, f, indent=1)
        console.print(f"[dim]scores written to {json_path}[/dim]")


# ------------------------------------------------------------------------- direct logit attribution (dla.py)
@app.command()
def dla(model: str = MODEL_ARG, prompt: str = typer.Argument(..., help="The prompt."),
        target: str = typer.Option(..., help="Token whose logit is attributed (mind the leading space: ' Mary')."),
        baseline: str = typer.Option(None, help="Attribute target's logit minus this token's."),
        by: str = typer.Option("head", help="layer, head, neuron, full or position."),
        pos: int = typer.Option(-1, help="Position attributed (negative counts from the end)."),
        top: int = typer.Option(10, help="How many components to show."),
        json_path: str = typer.Option(None, "--json", help="Also write every label and value to this JSON file.")):
    """Direct logit attribution: what each head, layer, neuron or source position writes into a logit."""
    import json

    import mechscope

    m = _load(model)
    try:
        res = mechscope.direct_logit_attribution(m, prompt, target=target, baseline=baseline, by=by, pos=pos)
        shown = res.top(top)
    except mechscope.MechscopeError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
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
    if json_path:
        with open(json_path, "w") as f:
            json.dump(res.to_dict(), f, indent=1)


# ------------------------------------------------------------------------------------------------------- lens
# `mechscope lens MODEL "prompt"` reads every layer out; `lens train` and `lens eval` are subcommands of the same
# group. A click group cannot take positional arguments before its subcommand, so the group routes any first
# argument that is not a subcommand name to the default command `show` (a model literally named "train" or
# "eval" is reached with `mechscope lens show train "prompt"`).
from typer.core import TyperGroup  # noqa: E402


class _LensGroup(TyperGroup):
    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


lens_app = typer.Typer(cls=_LensGroup, no_args_is_help=True, add_completion=False,
                       help='Logit and tuned lens: `mechscope lens MODEL "prompt"`, `lens train`, `lens eval`.')
app.add_typer(lens_app, name="lens")


def _write_json(path, data) -> None:
    import json
    from pathlib import Path

    Path(path).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    console.print(f"[dim]wrote {path}[/dim]")


@lens_app.command("show")
def lens_show(model: str = typer.Argument(..., help=MODEL_HELP), prompt: str = typer.Argument(..., help="Text to read."),
              tuned: str = typer.Option(None, help="A tuned lens folder (default: the logit lens)."),
              k: int = typer.Option(5, help="Top tokens kept per layer and position."),
              json_path: str = typer.Option(None, "--json", help="Also write the results (per layer and position: "
                                                                 "top-k tokens and probabilities, KL) to this file.")):
    """Each layer's most likely next token at every position, through the model's own final norm and head."""
    from .lens import LogitLens, TunedLens

    m = _load(model)
    try:
        lens = TunedLens.load(tuned, m) if tuned else LogitLens.from_model(m)
        res = lens.run(prompt, k=k)
    except Exception as e:  # noqa: BLE001 - show the sentence, not a traceback
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    t = Table(title=f"{res.lens} lens: top token and probability per layer (rows) and position (columns)")
    t.add_column("layer", no_wrap=True, min_width=max(map(len, res.layer_labels)))
    for tok in res.tokens[0]:
        t.add_column(repr(tok)[1:-1] or "·", overflow="fold")
    t.add_column("mean KL", justify="right", no_wrap=True, min_width=7)
    for l, label in enumerate(res.layer_labels):
        cells = [f"{repr(s[0])[1:-1]} {float(p):.2f}" for s, p in zip(res.top_strings[l][0], res.top_probs[l, 0, :, 0])]
        t.add_row(label, *cells, f"{float(res.kl[l, 0].mean()):.2f}")
    console.print(t)
    if json_path:
        _write_json(json_path, res.to_dict())


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
               resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --out.")):
    """Train a tuned lens on a corpus, with a progress bar and resumable checkpoints."""
    from .lens import TrainConfig, train

    m = _load(model)
    try:
        cfg = TrainConfig(steps=steps, seq_len=seq_len, batch_size=batch_size, positions_per_step=positions or None,
                          optimizer=optimizer, lr=lr, holdout_rows=holdout_rows, checkpoint_every=checkpoint_every)
        train(m, data, out, cfg, resume=resume)
    except Exception as e:  # noqa: BLE001
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    console.print(f"tuned lens saved in {out}")


@lens_app.command("eval")
def lens_eval(model: str = typer.Argument(..., help=MODEL_HELP),
              tuned: str = typer.Option(..., help="The tuned lens folder."),
              data: str = typer.Option(..., help="Corpus; the held-out rows are read from its end."),
              rows: int = typer.Option(32, help="Held-out rows evaluated."),
              seq_len: int = typer.Option(128, help="Tokens per row."),
              json_path: str = typer.Option(None, "--json", help="Also write the per-layer figures to this file.")):
    """Per-layer KL (and perplexity) of the logit and tuned lens on held-out text from the end of the corpus."""
    from .lens import LogitLens, TunedLens, evaluate
    from .lens.data import split

    m = _load(model)
    try:
        lens = TunedLens.load(tuned, m)
        ev = evaluate({"logit": LogitLens.from_model(m), "tuned": lens}, split(m, data, seq_len, 0, rows).eval,
                      show_progress=True)
    except Exception as e:  # noqa: BLE001
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    t = Table(title=f"held-out KL(model ‖ lens), nats, over {ev.n_tokens} tokens")
    for col in ("layer", "logit KL", "tuned KL", "logit ppl", "tuned ppl"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for l, label in enumerate(ev.layer_labels):
        t.add_row(label, *(f"{float(ev.kl[n][l]):.3f}" for n in ("logit", "tuned")),
                  *(f"{float(ev.perplexity(n)[l]):.4g}" for n in ("logit", "tuned")))
    console.print(t)
    if json_path:
        _write_json(json_path, ev.to_dict())


# ---------------------------------------------------------------------------------------------- attribute
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
              json_path: str = typer.Option(None, "--json", help="Write the scores (keyed by position:token) here.")):
    """Which tokens of a prompt a prediction depends on: a table of token, score and colour."""
    import json

    from .attribution import Loss, TokenLogit, attribute as run_attribution
    from .errors import MechscopeError

    if minus is not None and target is None:
        console.print("[red]error:[/red] --minus needs --target: the logit difference is target minus this token.")
        raise typer.Exit(2)
    m = _load(model)
    kwargs: dict = {"position": position, "include_bos": include_bos}
    if method != "rollout":
        kwargs["batch_size"] = batch_size
    if method in ("ig", "occlusion", "shapley", "kernel_shap", "lime"):
        kwargs["baseline"] = baseline_token if baseline_token is not None else "auto"
    if steps is not None:
        kwargs["n_steps" if method == "ig" else "n_samples"] = steps
    if method == "occlusion":
        kwargs["window"] = window
    if method in ("saliency", "grad_x_input", "rollout"):
        kwargs.pop("batch_size", None)
    goal = Loss() if loss else (target, minus) if minus is not None else target
    if log_prob and not loss and minus is None:
        goal = TokenLogit(target, position=position, log_prob=True) if target is not None else None
        if goal is None:
            console.print("[red]error:[/red] --log-prob needs --target (the token whose log-probability to explain).")
            raise typer.Exit(2)
    try:
        result = run_attribution(m, prompt, None if method == "rollout" else goal, method=method, **kwargs)
    except MechscopeError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    console.print(_attribution_table(result))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result.to_dict(), f, indent=1)
        console.print(f"[dim]wrote {json_path}[/dim]")


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
