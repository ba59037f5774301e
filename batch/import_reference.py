"""`mgimm-geo import-reference`: checkpoints of the reference code -> a normal MGIMM model directory."""

from __future__ import annotations

import json

import click

from mgimm_core.errors import MGIMMError

DTYPES = ("bf16", "fp16", "fp32")

_file = click.Path(exists=True, dir_okay=False, path_type=str)
_dir = click.Path(exists=True, file_okay=False, path_type=str)


@click.command("import-reference")
@click.option("--stage1", type=_file, default=None, metavar="FILE",
              help="Stage-1 file of the reference code (mm_prompt_projector.bin): projector, box prompt "
                   "encoder, region transformer.")
@click.option("--adapter", "adapter_dir", type=_dir, default=None, metavar="DIR",
              help="Stage-2 PEFT adapter directory (adapter_config.json, adapter_model.bin|.safetensors); its "
                   "LoRA pairs are merged into the LM and the region transformer.")
@click.option("--non-lora", "non_lora", type=_file, default=None, metavar="FILE",
              help="Stage-2 non_lora_trainables.bin (the parts trained in full; they replace stage 1's).")
@click.option("--vision", required=True, type=_dir, metavar="DIR",
              help="Local CLIP ViT-L/14-336 directory (Hugging Face format) the reference was trained with.")
@click.option("--llm", required=True, type=_dir, metavar="DIR",
              help="Local LLM directory (Hugging Face format, with its tokenizer) the reference was trained on.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=str), metavar="OUT",
              help="Model directory to write (safetensors, config, processor and tokenizer files).")
@click.option("--overwrite", is_flag=True, help="Write into OUT even if it is not empty.")
@click.option("--partial", is_flag=True,
              help="Write the model even when the checkpoints leave region-module or projector tensors "
                   "unprovided (they keep fresh random values; the report lists them).")
@click.option("--dtype", type=click.Choice(DTYPES), default="bf16", show_default=True,
              help="Dtype of the written weights (LoRA is merged in fp32 before the cast).")
def command(stage1, adapter_dir, non_lora, vision, llm, output, overwrite, partial, dtype):
    """Import the reference code's checkpoints (stage 1 and/or stage 2) into OUT, a model directory
    that --model OUT of describe, worker and serve load. The model is built from the local --vision
    and --llm directories with the reference's region settings (docs/model.md); every region-module
    and projector tensor must come from the checkpoints unless --partial.

    \b
    stdout: a JSON report (loaded, merged, skipped, not provided); stderr: a short summary.
    Exit status: 0 written; 1 the import failed (nothing written); 2 usage error.
    """
    if not (stage1 or adapter_dir or non_lora):
        raise click.UsageError("give at least one of --stage1, --adapter, --non-lora")
    import torch

    from mgimm_core.model.convert_reference import import_reference

    click.echo(f"Importing into {output} ...", err=True)
    try:
        report = import_reference(output, vision, llm, stage1=stage1, adapter_dir=adapter_dir,
                                  non_lora_trainables=non_lora, partial=partial, overwrite=overwrite,
                                  dtype={"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype])
    except MGIMMError as exc:
        raise click.ClickException(f"{exc}. Nothing was written.") from exc
    summary = report.summary()
    skipped = ", ".join(f"{reason}: {count}" for reason, count in summary["skipped_reasons"].items())
    click.echo(f"Wrote {output}: {summary['loaded']} tensors loaded, {summary['merged_lora']} LoRA pairs merged, "
               f"{summary['skipped']} checkpoint tensors skipped" + (f" ({skipped})" if skipped else "") + ".",
               err=True)
    if summary["not_provided"]:
        click.echo(f"Warning: {len(summary['not_provided'])} region-module / projector tensor(s) were not in the "
                   f"checkpoints and keep fresh values (--partial): {', '.join(summary['not_provided'])}", err=True)
    click.echo(json.dumps({"output": output, **summary}, indent=2))
