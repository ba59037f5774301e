"""Fixtures for the QGIS suite (QGIS's own Python, headless; see tests/plugin/test_qgis_plugin.py).

The project's Python also walks tests/ and finds this folder: without QGIS it collects nothing here.
(Checked by importing qgis.core: this folder itself looks like a namespace package `qgis` there.)
"""

from __future__ import annotations

try:
    from qgis.core import Qgis  # noqa: F401
except ImportError:
    collect_ignore_glob = ["*.py"]
else:
    from plugin_fixtures import *  # noqa: F401,F403  (fixtures)
