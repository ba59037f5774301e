"""The `mgimm-geo` command group.

Only the group lives here (logging, verbosity); each command is a module of its own that registers
itself below. Machine output (JSON) goes to stdout, messages and progress to stderr.
"""

import importlib
import logging

import click

from mgimm_core import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (repeat for more).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
@click.version_option(__version__, prog_name="mgimm-geo")
@click.pass_context
def cli(ctx, verbose, quiet):
    """Region-guided descriptions of remote-sensing imagery, as GIS layers."""
    level = logging.WARNING - 10 * (verbose - quiet)
    logging.basicConfig(level=max(logging.DEBUG, min(level, logging.CRITICAL)),
                        format="%(levelname)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = verbose - quiet


# Each module defines `command`, a click command, and must not import this module.
# Append new commands here.
COMMAND_MODULES: list[str] = ["info", "regions", "describe", "demo", "worker", "serve"]

for _name in COMMAND_MODULES:
    cli.add_command(importlib.import_module(f"batch.{_name}").command)


def main():
    cli(prog_name="mgimm-geo")


if __name__ == "__main__":
    main()
