"""The server's file boundary (docs/protocol.md, "File boundary"): a `Service` with roots opens no file
outside them, whatever a request's files say, and fetches nothing from the network. Real files
written into the roots (GeoTIFFs, VRT XML under other names, links), the tiny random MGIMM."""

from __future__ import annotations

import json
import os

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine

from mgimm_core.engines import LoadOptions
from mgimm_core.errors import MGIMMError
from mgimm_core.service import Service, ServiceError

UTM = "EPSG:32633"
TRANSFORM = Affine(10, 0, 500000, 0, -10, 4_500_000)
SECRET = 200          # the value of every pixel outside the roots


def lonlat_polygon(x0, y0, x1, y1) -> str:
    to_lonlat = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    ring = [to_lonlat.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
    return "POLYGON ((" + ", ".join(f"{x:.9f} {y:.9f}" for x, y in ring) + "))"


REGION = {"id": "a", "wkt": lonlat_polygon(500050, 4_499_750, 500250, 4_499_950)}


def write_tif(path, value: int, size: int = 32) -> str:
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=UTM,
                       transform=TRANSFORM) as dst:
        dst.write(np.full((3, size, size), value, np.uint8))
    return str(path)


def vrt_xml(source: str, size: int = 32, raw: bool = False) -> str:
    if raw:       # a raw-raster band: the bytes of any file, as pixels
        bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}" subClass="VRTRawRasterBand">'
                        f'<SourceFilename relativetoVRT="0">{source}</SourceFilename><ImageOffset>0'
                        f'</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>{size}</LineOffset>'
                        f'</VRTRasterBand>' for b in (1, 2, 3))
    else:
        bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename '
                        f'relativeToVRT="0">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
                        f'</SimpleSource></VRTRasterBand>' for b in (1, 2, 3))
    return (f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{UTM}</SRS><GeoTransform>500000, 10, '
            f'0, 4500000, 0, -10</GeoTransform>{bands}</VRTDataset>')


@pytest.fixture
def folders(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    secret = write_tif(outside / "secret.tif", SECRET)
    (outside / "passwords.txt").write_text("x" * 4096)
    return root, outside, secret


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


def server(root, model_dir=None) -> Service:
    return Service(model_dir, load=LoadOptions(device="cpu", max_new_tokens=2), roots=[str(root)])


def refused(service: Service, request: str, params: dict) -> MGIMMError:
    with pytest.raises(MGIMMError) as caught:
        service.handle(request, params)
    return caught.value


def test_a_csv_output_holding_vrt_xml_is_never_read_as_a_raster(folders, tiny_model_dir):
    root, outside, secret = folders
    csv = root / "out.csv"                   # what a request's CSV output with a crafted property holds
    csv.write_text(vrt_xml(secret))
    with rasterio.open(csv) as ds:           # GDAL alone would read the secret through it
        assert ds.driver == "VRT" and int(ds.read(1)[0, 0]) == SECRET
    error = refused(server(root, tiny_model_dir), "describe", {"raster": str(csv), "regions": [REGION]})
    assert error.code == "forbidden" and "output" in str(error)


@pytest.mark.parametrize("raw", [False, True], ids=["vrt_source_outside", "raw_raster_band"])
def test_a_tif_holding_vrt_xml_is_refused_by_the_driver_allow_list(folders, tiny_model_dir, raw):
    root, outside, secret = folders
    fake = root / "scene.tif"
    fake.write_text(vrt_xml(str(outside / "passwords.txt") if raw else secret, raw=raw))
    error = refused(server(root, tiny_model_dir), "describe", {"raster": str(fake), "regions": [REGION]})
    assert error.code == "scene_unreadable" and "GTiff" in str(error)


def test_a_sidecar_overview_holding_vrt_xml_is_not_opened(folders, tiny_model_dir):
    root, outside, secret = folders
    scene = write_tif(root / "scene.tif", 10)
    (root / "scene.tif.ovr").write_text(vrt_xml(secret, size=16))
    with rasterio.open(scene) as ds:                   # plain GDAL opens the .ovr, reading outside
        assert secret in ds.files
    service = server(root, tiny_model_dir)
    result = service.handle("describe", {"raster": scene, "regions": [REGION], "thumbnail": False})
    assert result["regions"][0]["error"] is None
    from mgimm_core.service.handlers import SERVER_GDAL_CONFIG

    with rasterio.Env(**SERVER_GDAL_CONFIG):
        opened = service.open_scene(scene)
        try:
            assert opened.files == [os.path.realpath(scene)]
        finally:
            opened.close()


def test_every_file_a_raster_reads_is_checked_against_the_roots(folders, monkeypatch):
    root, outside, secret = folders
    scene = write_tif(root / "scene.tif", 10)
    service = server(root)
    from mgimm_core.scene import Scene

    # A GeoTIFF cannot name another file once sidecars are off (SERVER_GDAL_CONFIG), so the list GDAL
    # reports is stubbed here, the one mock of this file: the check must refuse any file outside.
    monkeypatch.setattr(Scene, "files", property(lambda self: [self.path, secret]))
    with pytest.raises(ServiceError) as caught:
        service.open_scene(scene)
    assert caught.value.code == "forbidden" and "secret.tif" in caught.value.message


def test_a_folder_in_a_root_with_a_link_to_a_raster_outside_is_refused(folders, tiny_model_dir):
    root, outside, secret = folders
    (root / "scenes").mkdir()
    write_tif(root / "scenes" / "a.tif", 10)
    os.symlink(secret, root / "scenes" / "b.tif")
    aoi = root / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                   "geometry": {"type": "Polygon", "coordinates": [[[15.0006, 40.6475], [15.002, 40.6475],
                                                                    [15.002, 40.649], [15.0006, 40.6475]]]}}]}))
    error = refused(server(root, tiny_model_dir), "describe_file",
                    {"scenes": [str(root / "scenes")], "aoi": str(aoi), "output": str(root / "o.gpkg")})
    assert error.code == "forbidden" and "b.tif" in str(error)
    assert not (root / "o.gpkg").exists()


@pytest.mark.parametrize("path", ["/vsicurl/http://127.0.0.1:9/a.tif", "http://127.0.0.1:9/a.tif",
                                  "/vsis3/bucket/a.tif", "/vsizip//etc/a.zip/a.tif"])
def test_network_and_virtual_paths_are_refused(folders, path):
    error = refused(server(folders[0]), "describe", {"raster": path, "regions": [REGION]})
    assert error.code == "forbidden"


def test_a_nul_byte_in_a_path_is_a_bad_request_in_both_modes(folders):
    for service in (server(folders[0]), Service(None)):
        error = refused(service, "describe", {"raster": str(folders[0] / "a\x00.tif"), "regions": [REGION]})
        assert error.code == "bad_request" and "NUL" in str(error)


def test_an_aoi_file_must_carry_its_formats_signature(folders, tiny_model_dir):
    root, outside, secret = folders
    scene = write_tif(root / "scene.tif", 10)
    aoi = root / "aoi.geojson"
    aoi.write_text('<OGRVRTDataSource><OGRVRTLayer name="x"><SrcDataSource>/etc/passwd</SrcDataSource>'
                   '</OGRVRTLayer></OGRVRTDataSource>')
    error = refused(server(root, tiny_model_dir), "describe_file",
                    {"scenes": [scene], "aoi": str(aoi), "output": str(root / "o.gpkg")})
    assert error.code == "forbidden" and "GeoJSON" in str(error)
