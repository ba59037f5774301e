"""Build dist/mgimm_geo_qgis.zip for QGIS's Plugins > Manage and Install Plugins > Install from ZIP.

The ZIP holds one folder, `mgimm_geo` (the plugin's name inside QGIS's profile), with the plugin's
sources, metadata.txt and icon; no tests, caches or bytecode. Standard library only; run it with any
Python 3:  python3 qgis_plugin/build_zip.py [-o dist/mgimm_geo_qgis.zip]
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
FOLDER = "mgimm_geo"
INCLUDED_SUFFIXES = {".py", ".txt", ".svg", ".png", ".qml", ".ui", ".md"}
EXCLUDED_NAMES = {"build_zip.py"}


def plugin_files(root: Path = PLUGIN_DIR) -> list:
    """The files that go into the ZIP, relative to the plugin folder, sorted."""
    return sorted(path.relative_to(root) for path in root.rglob("*")
                  if path.is_file() and path.suffix in INCLUDED_SUFFIXES and path.name not in EXCLUDED_NAMES
                  and "__pycache__" not in path.parts)


def build(output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in plugin_files():
            archive.write(PLUGIN_DIR / relative, f"{FOLDER}/{relative.as_posix()}")
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=PLUGIN_DIR.parent / "dist" / "mgimm_geo_qgis.zip")
    path = build(parser.parse_args().output)
    print(path)


if __name__ == "__main__":
    main()
