"""Messages in QGIS's language: the core's messages name CLI options (`--overwrite`, `-b/--bands`);
in the panel and the message bar they name the QGIS setting or parameter instead."""

from __future__ import annotations

#: the core's messages name CLI options; the panel speaks of QGIS's settings and parameters instead
QGIS_WORDS = (("--overwrite", "\"If the output exists: overwrite\""), ("--append", "\"If the output exists: append\""),
              ("--resume", "\"If the output exists: resume\""),
              ("on the command line -b 3,2,1", "in the MGIMM panel's Bands row"),
              ("(-b 1)", "(the same band three times)"), ("-b/--bands", "the Bands row of the MGIMM panel"),
              ("--bands", "the Bands row of the MGIMM panel"), ("-b 3,2,1", "3,2,1"), ("-b 1", "1"),
              ("--nodata", "the raster's nodata value (Layer Properties)"),
              ("--aoi-crs", "the layer's CRS (Layer Properties > Source)"), ("--layer", "the layer choice"),
              ("--max-request-mb", "the server's request limit"), ("--model", "the model folder in MGIMM settings"),
              ("--device", "the device in MGIMM settings"), ("--max-new-tokens", "Max new tokens in MGIMM settings"),
              ("--batch-size", "the batch size"), ("--root", "the server's allowed folders"),
              ("--value-range", "a uint8 copy of the raster (Raster > Conversion > Translate, scale)"))


def qgis_words(message: str) -> str:
    """A message with the CLI's option names replaced by what they are in QGIS."""
    for flag, words in QGIS_WORDS:
        message = message.replace(f"`{flag}`", words).replace(flag, words)
    return message
