"""The package installs, exposes its version and its console entry point."""

from click.testing import CliRunner

import mgimm_core
from batch.cli import cli
from mgimm_core import errors


def test_version_option_matches_package():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert mgimm_core.__version__ in result.output


def test_errors_also_inherit_builtins():
    assert issubclass(errors.SceneError, OSError)
    assert issubclass(errors.BandError, ValueError)
    assert issubclass(errors.RegionError, errors.MGIMMError)
