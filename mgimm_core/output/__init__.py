"""Description records -> GIS layers (GeoPackage incrementally; GeoJSON, FlatGeobuf, CSV at the end).

Typical use by a command::

    with open_output("out.gpkg", mode="resume", run=RunInfo(model_id=..., parameters=...)) as out:
        done = out.completed_region_keys()
        for batch in batches:
            out.write_regions([r for r in batch if region_key(r.scene, r.region_id) not in done])

See `writer` for the modes, formats and durability guarantees and `schema` for the fields.
"""

from .provenance import RunInfo, package_versions, sha256_path
from .schema import (DEFAULT_ATTRIBUTE_FIELDS, ObjectRecord, RegionRecord, TileRecord, region_key, tile_key)
from .writer import (FORMATS, MODES, GeoPackageWriter, ExportWriter, OutputWriter, completed_region_keys,
                     completed_tile_keys, earlier_tile_grids, open_output, output_format)

__all__ = ["RunInfo", "package_versions", "sha256_path", "DEFAULT_ATTRIBUTE_FIELDS", "ObjectRecord", "RegionRecord",
           "TileRecord", "region_key", "tile_key", "FORMATS", "MODES", "GeoPackageWriter", "ExportWriter",
           "OutputWriter", "completed_region_keys", "completed_tile_keys", "earlier_tile_grids", "open_output",
           "output_format"]
