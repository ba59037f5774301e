"""`mgimm-geo info`: JSON on stdout, clear errors (file named, fix given, no traceback, exit != 0)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from batch.cli import cli


def run(*args):
    return CliRunner().invoke(cli, ["info", *args])


def assert_clean_failure(result, *needles):
    assert result.exit_code != 0
    assert result.stdout == ""                       # no partial JSON
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # click handled it, nothing escaped
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_info_landsat_with_bands(landsat_path):
    result = run(landsat_path, "-b", "3,2,1")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["band_indexes"] == [3, 2, 1]
    assert info["crs"]["epsg"] == 31985 and info["count"] == 6
    assert info["size"] == {"width": 349, "height": 352}
    assert info["stretch"]["source"] == "identity"
    assert result.stderr == ""
    # lon/lat bounds to draw an AOI in: every corner of the UTM bounds, transformed, lies inside them
    import pyproj

    to_lonlat = pyproj.Transformer.from_crs("EPSG:31985", "EPSG:4326", always_xy=True)
    west, south, east, north = info["bounds_lonlat"]
    x0, y0, x1, y1 = info["bounds"]
    for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1)):
        lon, lat = to_lonlat.transform(x, y)
        assert west - 1e-6 <= lon <= east + 1e-6 and south - 1e-6 <= lat <= north + 1e-6
    assert -35.0 < west < east < -34.7 and -8.1 < south < north < -7.9      # Olinda / Recife


def test_lonlat_bounds_across_the_antimeridian_and_without_a_route_to_lonlat(make_raster):
    """Found in review: a UTM zone 60 scene over 180 degrees gives east past 180 (a bbox: AOI reads
    it); a local engineering CRS has no lon/lat bounds, and info still answers."""
    from mgimm_core.regions import read_aoi

    east_of_180 = make_raster("utm60.tif", width=20, height=20, crs="EPSG:32660", res=10_000.0,
                              origin=(700_000.0, 5_100_000.0))
    result = run(east_of_180)
    assert result.exit_code == 0, result.output
    west, south, east, north = json.loads(result.stdout)["bounds_lonlat"]
    assert 179 < west < 180 < east < 183 and south < north
    [feature] = read_aoi(f"bbox:{west},{south},{east},{north}")
    assert feature.geometry.bounds == (west, south, east, north)
    local = make_raster("local.tif", crs='LOCAL_CS["arbitrary",UNIT["metre",1]]', origin=(0.0, 1000.0))
    result = run(local)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bounds_lonlat"] is None


def test_info_uint16_with_value_range_and_nodata(make_raster):
    path = make_raster(count=1, dtype="uint16")
    result = run(path, "--value-range", "0,5000", "--nodata", "0", "--indent", "0")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["stretch"]["low"] == [0.0] and info["stretch"]["high"] == [5000.0]
    assert info["nodata"] == 0 and info["mask"] == "nodata"


def test_info_percentiles_option(make_raster):
    path = make_raster(count=1, dtype="uint16")
    wide = json.loads(run(path, "--percentiles", "0,100").stdout)["stretch"]
    narrow = json.loads(run(path, "--percentiles", "10,90").stdout)["stretch"]
    assert wide["low"][0] < narrow["low"][0] and wide["high"][0] > narrow["high"][0]


def test_missing_file(tmp_path):
    path = str(tmp_path / "missing.tif")
    assert_clean_failure(run(path), path, "no such file")


def test_not_a_raster(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a raster at all")
    assert_clean_failure(run(str(path)), str(path), "not a raster")


def test_corrupt_file(make_raster, tmp_path):
    source = make_raster(width=256, height=256, tiled=True, blocksize=64, compress="deflate",
                         data=np.random.default_rng(1).integers(0, 255, (3, 256, 256)))
    content = open(source, "rb").read()
    path = tmp_path / "truncated.tif"
    path.write_bytes(content[: len(content) // 2])
    assert_clean_failure(run(str(path)), str(path), "corrupt")


def test_band_out_of_range(landsat_path):
    assert_clean_failure(run(landsat_path, "-b", "3,2,9"), landsat_path, "band 9", "--bands")


def test_many_bands_without_b_report_everything_and_the_choice_needed(landsat_path):
    result = run(landsat_path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["count"] == 6 and report["size"]["width"] > 0 and report["crs"] is not None
    assert report["band_indexes"] is None and report["band_choice"]["needed"] is True
    assert "-b 3,2,1" in report["band_choice"]["example"] and "ambiguous" in result.stderr
    assert "bands=(" not in result.output                  # the CLI's words, not Python's


def test_rotated_raster_is_refused(make_raster):
    from affine import Affine

    path = make_raster(transform=Affine(10, 1, 500000, 1, -10, 4_500_000))
    assert_clean_failure(run(path), path, "rotation", "gdalwarp")


@pytest.mark.parametrize("args, needle", [
    (["-b", "3,x,1"], "band numbers"), (["-b", "1,2"], "three"),
    (["--percentiles", "98,2"], "smaller"), (["--value-range", "5"], "two numbers"),
])
def test_bad_option_values_are_usage_errors(landsat_path, args, needle):
    result = run(landsat_path, *args)
    assert result.exit_code == 2
    assert needle in result.stderr and result.stdout == ""


def test_raster_without_crs_is_reported_with_a_warning(make_raster):
    from affine import Affine

    path = make_raster(crs=None, transform=Affine(1, 0, 0, 0, -1, 48))
    result = run(path)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["crs"] is None and info["gsd_m"] is None
    assert "no CRS" in result.stderr and "gdal_edit.py -a_srs" in result.stderr
