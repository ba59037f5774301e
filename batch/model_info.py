"""`mgimm-geo model-info [DIR]`: what a model directory is, before describing anything with it."""

from __future__ import annotations

import json

import click

from mgimm_core.errors import MGIMMError


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**28 else f"{count / 2**20:.1f} MiB"


@click.command("model-info")
@click.argument("model_dir", required=False, metavar="[DIR]")
@click.option("--vision", "vision_dir", default=None, metavar="DIR",
              help="Local vision-tower folder of an original-format LLaVA/GeoChat model.")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option("--words", is_flag=True, help="List the words the model's vocabulary knows (word-level "
                                            "tokenizers such as the demo model's; prompts should use them).")
def command(model_dir, vision_dir, as_json, words):
    """Say what the model in DIR is (default: the demo model): its family (docs/models.md lists
    them), parameters, how it takes a region and in which convention, its prompt format and chip
    size, its licence (with a warning for non-commercial weights), what its card says it was trained
    on, and the memory its weights need. Reads the directory's files; loads no weights."""
    from mgimm_core.model_info import known_words, model_info

    if words:
        try:
            vocabulary = known_words(model_dir)
        except MGIMMError as exc:
            raise click.ClickException(str(exc)) from exc
        if vocabulary is None:
            click.echo("This model's tokenizer encodes any text (not a word list): every word can be used.")
        else:
            click.echo(json.dumps(vocabulary) if as_json else "\n".join(vocabulary))
        return
    try:
        info = model_info(model_dir, vision_dir)
    except MGIMMError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    trained = info["trained_on"] or {}
    span = trained.get("gsd_m")
    span = span if isinstance(span, list) else [span] if span is not None else []
    gsd = "-".join(f"{v:g}" for v in sorted(set(span))) or "?"
    lines = [
        f"{info['path']}",
        f"  family          {info['kind']} [{info['family']}]"
        + (f" ({info['source']})" if info["source"] != info["family"] else ""),
        f"  parameters      {info['parameters']:,} (stored as {', '.join(sorted(info['stored_dtypes']))})",
        f"  weights need    {_gib(info['memory_bytes']['bf16'])} in bf16, {_gib(info['memory_bytes']['fp32'])} in fp32",
        f"  region          {info['region_method']}" + (f": {', '.join(info['region_tokens'])}"
                                                       if info["region_tokens"] else ""),
        f"  input           {info['input_size']} px chips (context {info['chip_context']:g}, smallest window "
        f"{info['chip_min_window']} px)",
        f"  prompt format   {info['prompt_template']!r}",
        "  trained on      " + (f"{trained.get('imagery', '?')}, {gsd} m GSD" if trained else
                                 "not stated (no model_card.json)"),
        f"  licence         {info['licence'] or 'not stated (see the model card)'}",
    ]
    if len(info["region_ways"]) > 1:
        lines.insert(5, f"  --region-as     {', '.join(info['region_ways'])} (default {info['region_as']})")
    if info["vision_dir"]:
        lines.insert(2, f"  vision tower    {info['vision_dir']}")
    click.echo("\n".join(lines))
    if info["licence_warning"]:
        click.echo(f"Warning: {info['licence_warning']}", err=True)
