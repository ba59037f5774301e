"""Runs the QGIS plugin suite (tests/qgis) in QGIS's own Python and asserts it passed.

QGIS's Python (Debian's /usr/bin/python3 with python3-qgis, numpy 1) must never import torch, so the
suite runs there in a subprocess; it reaches the model through a real `mgimm-geo worker` / `serve`
started with this Python (passed as MGIMM_TEST_PYTHON). Install QGIS with scripts/setup_qgis_env.sh.
Without QGIS the test skips, except in CI (the CI variable set), where it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QGIS_PYTHON = Path(os.environ.get("MGIMM_QGIS_PYTHON", REPO / ".venv-qgis" / "bin" / "python"))
# Variables that would point QGIS's Python at this interpreter's packages or change its Qt platform.
DROPPED = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "QGIS_PREFIX_PATH", "QT_PLUGIN_PATH")


@pytest.mark.slow
def qgis_available() -> str | None:
    """None when QGIS's Python with pytest-qgis is usable, else why not."""
    if not QGIS_PYTHON.exists():
        return f"{QGIS_PYTHON} does not exist; run scripts/setup_qgis_env.sh (as root) to install QGIS"
    probe = subprocess.run([str(QGIS_PYTHON), "-c", "import qgis.core, pytest_qgis"], capture_output=True,
                           text=True, timeout=120, env=_environment())
    if probe.returncode != 0:
        return f"{QGIS_PYTHON} cannot import qgis.core / pytest_qgis: {probe.stderr.strip()[-300:]}"
    return None


def _environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["MGIMM_TEST_PYTHON"] = sys.executable
    return env


def test_qgis_plugin_suite_passes_in_qgis_python():
    reason = qgis_available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the QGIS tests: {reason}")
        pytest.skip(reason)
    result = subprocess.run([str(QGIS_PYTHON), "-m", "pytest", "-q", "-c", "tests/qgis/pytest.ini",
                             "--rootdir", "tests/qgis", "tests/qgis"],
                            cwd=REPO, env=_environment(), capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"QGIS suite failed (exit {result.returncode}):\n{output[-6000:]}"
    assert " passed" in output and "skipped" not in output.split("\n")[-2], output[-2000:]
