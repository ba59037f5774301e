"""What a `runs` row records about a run: model identity and hash, software versions, parameters."""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
import sys
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from .gpkg import now_iso

_PACKAGES = {"mgimm_geo_version": "mgimm-geo", "torch_version": "torch",
             "transformers_version": "transformers", "rasterio_version": "rasterio"}


def package_versions() -> dict[str, str | None]:
    """Installed versions (from package metadata: torch is not imported) plus rasterio's GDAL."""
    versions: dict[str, str | None] = {}
    for column, dist in _PACKAGES.items():
        try:
            versions[column] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[column] = None
    try:
        import rasterio
        versions["gdal_version"] = rasterio.__gdal_version__
    except ImportError:
        versions["gdal_version"] = None
    versions["python_version"] = platform.python_version()
    return versions


def sha256_path(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file, or of a folder (every file's relative path and bytes, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(chunk_bytes):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class RunInfo:
    """Provenance of one run; `parameters` must be JSON-serialisable (stored as JSON text)."""

    model_id: str | None = None
    model_sha256: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    command_line: str = field(default_factory=lambda: shlex.join(sys.argv))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: str = field(default_factory=now_iso)

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"run_id": self.run_id, "status": "running", "started": self.started, "finished": None,
               "model_id": self.model_id, "model_sha256": self.model_sha256}
        row.update(package_versions())
        row.update({"parameters": json.dumps(dict(self.parameters), default=str, sort_keys=True),
                    "command_line": self.command_line,
                    "regions_written": 0, "regions_failed": 0, "tiles_written": 0, "tiles_failed": 0})
        return row
