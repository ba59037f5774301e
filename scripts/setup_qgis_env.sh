#!/usr/bin/env bash
# Installs what the QGIS plugin tests need (Debian/Ubuntu, run as root): QGIS 3.22+ with its Python
# bindings (Debian's python3-qgis, on Debian's own /usr/bin/python3 with numpy 1), the GDAL/OGR
# providers, `qgis` for qgis_process, Xvfb for screenshots, and a venv `.venv-qgis` that sees the system's qgis package and
# adds pytest + pytest-qgis.
#
# pytest-qgis: 2.1.0 is the last release that supports QGIS < 3.34 (its README: "versions up until
# pytest-qgis<=2.1.0 should work with QGIS >= 3.16"); 3.x and later require QGIS >= 3.34.
#
# Usage: scripts/setup_qgis_env.sh            (from the repository root or anywhere)
# Afterwards: .venv-qgis/bin/python -m pytest -q tests/qgis   (tests/plugin/test_qgis_plugin.py does this)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! /usr/bin/python3 -c "import qgis.core" >/dev/null 2>&1 || ! command -v qgis_process.bin >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends \
    python3-qgis qgis-providers qgis xvfb xauth python3-venv python3-pip
fi
if ! command -v xdotool >/dev/null || ! command -v import >/dev/null; then   # scripts/qgis_desktop_screenshots.sh
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends xdotool imagemagick
fi

if [ ! -x .venv-qgis/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv-qgis
fi
PIP_DISABLE_PIP_VERSION_CHECK=1 .venv-qgis/bin/python -m pip install -q "pytest>=7.4,<9" "pytest-qgis==2.1.0"
.venv-qgis/bin/python -c "from qgis.core import Qgis; print('QGIS', Qgis.QGIS_VERSION)"
