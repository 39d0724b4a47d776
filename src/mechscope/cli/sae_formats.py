"""``mechscope sae info`` (what an SAE folder or hub id holds) and ``mechscope sae convert`` (between mechscope's,
SAELens's and sparsify's folder formats)."""

from __future__ import annotations

import typer
from rich.table import Table

from ..errors import MechscopeError
from .common import JSON_HELP, console, fail, write_json
from .sae import sae_app

SAE_HELP = "An SAE folder (mechscope, SAELens or sparsify format) or a hub id 'org/repo[/folder]'."


def _load(path: str, sae_id: str | None):
    from ..sae import detect_format, load
    from ..sae.hub import resolve

    try:
        folder = resolve(path, sae_id)
        return load(folder), detect_format(folder)
    except (MechscopeError, OSError) as e:
        raise fail(e) from None


def _summary(sae, fmt: str) -> dict:
    c = sae.cfg
    kind = "skip-transcoder" if c.skip else "transcoder" if c.is_transcoder else "autoencoder"
    return {"format": fmt, "architecture": c.architecture, "kind": kind, "d_in": c.d_in, "d_sae": c.d_sae,
            "d_out": c.width_out, "k": c.k, "hook_name": c.hook_name, "hook_name_out": c.hook_name_out,
            "dtype": c.dtype, "model_name": c.model_name, "apply_b_dec_to_input": c.apply_b_dec_to_input,
            "parameters": sum(p.numel() for p in sae.parameters())}


@sae_app.command("info")
def sae_info(path: str = typer.Argument(..., help=SAE_HELP),
             sae_id: str = typer.Option(None, "--sae-id", help="The SAE's folder inside a run folder or hub repo."),
             json_path: str = typer.Option(None, "--json", help=JSON_HELP)):
    """What an SAE folder holds: its format, architecture, widths and hook points."""
    sae, fmt = _load(path, sae_id)
    info = _summary(sae, fmt)
    t = Table(show_header=False, title=f"SAE {path}{'/' + sae_id if sae_id else ''}")
    for k, v in info.items():
        t.add_row(k, "" if v is None else str(v))
    console.print(t)
    write_json(json_path, info)


@sae_app.command("convert")
def sae_convert(path: str = typer.Argument(..., help=SAE_HELP),
                out: str = typer.Argument(..., help="The folder to write (replaced if it is an SAE folder)."),
                to: str = typer.Option("saelens", "--to", help="Format to write: mechscope, saelens or sparsify."),
                sae_id: str = typer.Option(None, "--sae-id", help="The SAE's folder inside a run folder or hub repo."),
                json_path: str = typer.Option(None, "--json", help=JSON_HELP)):
    """Rewrite an SAE in another folder format (e.g. a sparsify coder as a SAELens folder)."""
    sae, fmt = _load(path, sae_id)
    try:
        sae.save(out, format=to)
    except (MechscopeError, OSError) as e:
        raise fail(e) from None
    console.print(f"wrote {out} ({fmt} -> {to}, {sae.cfg.architecture}, d_sae={sae.cfg.d_sae})")
    write_json(json_path, {**_summary(sae, fmt), "out": out, "out_format": to})
