"""The `mgimm-geo` command group.

Only the group lives here (logging, verbosity); each command is a module of its own that registers
itself below. Machine output (JSON) goes to stdout, messages and progress to stderr.
"""

import importlib
import logging
import signal
import sys
import threading
import warnings

import click

from mgimm_core import __version__


#: Loggers of mgimm-geo itself: -v shows their steps, -vv their details.
OWN_LOGGERS = ("mgimm_core", "batch", "training")


def configure_logging(verbosity: int) -> None:
    """-v: mgimm-geo's own steps (INFO); -vv: its details (DEBUG); -vvv: every library's DEBUG too
    (rasterio, GDAL, transformers); -q: errors only. Libraries stay at WARNING below -vvv."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s",
                        level=logging.DEBUG if verbosity >= 3 else logging.WARNING if verbosity >= 0
                        else logging.ERROR)
    own = {1: logging.INFO, 2: logging.DEBUG}.get(min(verbosity, 2), logging.WARNING if verbosity == 0
                                                  else logging.ERROR)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own)
    # the core's warnings about the user's data (warnings.warn in mgimm_core/scene.py) read as the
    # logged ones do, without Python's file:line and source line; -q hides them too
    logging.captureWarnings(True)
    warnings.formatwarning = _plain_warning


def _plain_warning(message, category, filename, lineno, line=None) -> str:
    return str(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (repeat for more).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
@click.version_option(__version__, prog_name="mgimm-geo")
@click.pass_context
def cli(ctx, verbose, quiet):
    """Region-guided descriptions of remote-sensing imagery, as GIS layers."""
    configure_logging(verbose - quiet)
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = verbose - quiet


# Each module defines `command`, a click command, and must not import this module.
# Append new commands here.
COMMAND_MODULES: list[str] = ["info", "regions", "describe", "demo", "worker", "serve", "model_info",
                             "import_reference"]

for _name in COMMAND_MODULES:
    cli.add_command(importlib.import_module(f"batch.{_name}").command)


def _exit_on_sigterm() -> None:
    """SIGTERM (kill, a scheduler's stop) unwinds like Ctrl-C: outputs close and `runs` records the
    run as interrupted instead of leaving it `running`. Only where no handler was installed."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
            signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main():
    _exit_on_sigterm()
    cli(prog_name="mgimm-geo")


if __name__ == "__main__":
    main()
