"""Offline model management for clients that cannot import the core (the QGIS plugin): the model
folders found in a folder, with what `mgimm-geo model-info` says of each, and a diagnostics report
(device, memory, versions, the model in use). Both read files and the machine only: no weights load.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from mgimm_core import __version__
from mgimm_core.errors import MGIMMError

#: model folders listed at most (a models folder holds a few; a home folder given by mistake, many)
MAX_MODELS = 200


def folder_size(path: Path) -> int:
    """Bytes of the files under `path` (links not followed)."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def model_entry(path: Path) -> dict[str, Any] | None:
    """model-info's facts about `path` as one row of the list, or None when it holds no model."""
    from mgimm_core.model_info import model_info

    try:
        info = model_info(str(path))
    except (MGIMMError, OSError, ValueError, KeyError):
        return None
    return {"path": info["path"], "model": info["model"], "family": info["family"], "kind": info["kind"],
            "licence": info["licence"], "licence_warning": info["licence_warning"], "region_as": info["region_as"],
            "size_bytes": folder_size(path), "parameters": info["parameters"], "input_size": info["input_size"],
            "trained_on": info.get("trained_on")}


def list_models(folder: str) -> list[dict[str, Any]]:
    """The model folders in `folder` (itself, and its sub-folders one level down), by name."""
    base = Path(folder)
    candidates = [base] + sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.name.lower())
    rows = []
    for path in candidates[:MAX_MODELS + 1]:
        if (path / "config.json").is_file():
            row = model_entry(path)
            if row is not None:
                rows.append(row)
    return rows


def machine_report() -> dict[str, Any]:
    """Versions and the compute devices of this machine (torch's view), for a diagnostics dialog."""
    report: dict[str, Any] = {"mgimm_geo": __version__, "python": platform.python_version(),
                              "platform": platform.platform(), "cpu_cores": os.cpu_count()}
    try:
        import rasterio

        report["rasterio"], report["gdal"] = rasterio.__version__, rasterio.__gdal_version__
    except ImportError:
        pass
    try:
        import torch

        report["torch"] = torch.__version__
        report["cuda_available"] = bool(torch.cuda.is_available())
        devices: list[dict[str, Any]] = []
        report["cuda_devices"] = devices
        for index in range(torch.cuda.device_count() if report["cuda_available"] else 0):
            free, total = torch.cuda.mem_get_info(index)
            devices.append({"index": index, "name": torch.cuda.get_device_name(index),
                                           "memory_total_bytes": total, "memory_free_bytes": free})
    except ImportError:
        report["torch"] = None
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        report["memory_total_bytes"] = pages * page
        report["memory_free_bytes"] = os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        pass
    return report
