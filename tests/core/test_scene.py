"""Scene: band choice, stretch, nodata policy, boundless and decimated reads, on real GeoTIFFs."""

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from mgimm_core import scene as scene_module
from mgimm_core.errors import BandError, CRSError, GeotransformError, SceneError
from mgimm_core.scene import Scene, Stretch
from tests.conftest import default_pixels


def source_pixels(path, bands, window=None):
    with rasterio.open(path) as ds:
        return ds.read(list(bands), window=window)


# ----------------------------------------------------------------------------- band choice
def test_three_bands_without_colour_interpretation_are_used_in_order(make_raster):
    path = make_raster(colorinterp="gray,undefined,undefined")
    with Scene.open(path) as s:
        assert s.band_indexes == (1, 2, 3)
        image, valid = s.read(Window(0, 0, s.width, s.height))
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.moveaxis(default_pixels(3, 48, 64, "uint8"), 0, -1))
    assert valid.all()


def test_colour_interpretation_orders_red_green_blue(make_raster):
    path = make_raster(count=4, colorinterp="blue,undefined,red,green")
    with Scene.open(path) as s:
        assert s.band_indexes == (3, 4, 1)
        image, _ = s.read(Window(0, 0, 8, 8))
    np.testing.assert_array_equal(image[..., 0], source_pixels(path, [3], Window(0, 0, 8, 8))[0])


def test_single_band_is_grey_in_three_identical_channels(make_raster):
    path = make_raster(count=1)
    with Scene.open(path) as s:
        assert s.band_indexes == (1,)
        image, _ = s.read(Window(0, 0, 16, 16))
    assert image.shape == (16, 16, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    np.testing.assert_array_equal(image[..., 0], default_pixels(1, 48, 64, "uint8")[0, :16, :16])


def test_explicit_bands_pick_those_bands(make_raster):
    path = make_raster(count=6)
    with Scene.open(path, bands=(5, 1, 2)) as s:
        image, _ = s.read(Window(3, 4, 10, 10))
    expected = source_pixels(path, [5, 1, 2], Window(3, 4, 10, 10))
    np.testing.assert_array_equal(image, np.moveaxis(expected, 0, -1))


@pytest.mark.parametrize("count", [4, 6])
def test_many_bands_without_colour_interpretation_need_a_choice(make_raster, count):
    path = make_raster(count=count, colorinterp=["gray"] + ["undefined"] * (count - 1))
    with pytest.raises(BandError, match="-b 3,2,1") as info:
        Scene.open(path)
    assert path in str(info.value)
    assert info.value.code == "band_error"


@pytest.mark.parametrize("bands", [(0, 1, 2), (1, 2, 7), (1, 2)])
def test_bad_band_choice_is_refused(make_raster, bands):
    path = make_raster(count=6)
    with pytest.raises(BandError) as info:
        Scene.open(path, bands=bands)
    assert path in str(info.value)


def test_landsat_sample_natural_colour(landsat_path):
    with pytest.raises(BandError):
        Scene.open(landsat_path)
    with Scene.open(landsat_path, bands=(3, 2, 1)) as s:
        assert (s.width, s.height, s.dtype) == (349, 352, "uint8")
        assert s.crs.to_epsg() == 31985
        assert s.gsd_m() == pytest.approx(28.5, rel=2e-3)
        image, valid = s.read(Window(0, 0, s.width, s.height))
    expected = np.moveaxis(source_pixels(landsat_path, [3, 2, 1]), 0, -1)
    np.testing.assert_array_equal(image, expected)
    assert valid.all()


# ----------------------------------------------------------------------------- stretch
def test_uint8_is_shown_unchanged(make_raster):
    with Scene.open(make_raster()) as s:
        assert s.stretch.is_identity()


def test_percentiles_given_stretch_uint8_too(make_raster):
    """A dark 8-bit scene (values 10..60) is stretched when percentiles are asked for, and only then."""
    data = (10 + default_pixels(3, 48, 64, "uint16") % 51).astype("uint8")
    path = make_raster(data=data)
    with Scene.open(path) as plain:
        assert plain.stretch.is_identity()
    with Scene.open(path, percentiles=(0, 100)) as stretched:
        np.testing.assert_allclose(stretched.stretch.low, data.reshape(3, -1).min(1))
        np.testing.assert_allclose(stretched.stretch.high, data.reshape(3, -1).max(1))
        rgb, _ = stretched.read(Window(0, 0, 64, 48))
    assert rgb.max() == 255 and rgb.min() == 0


def test_uint16_percentile_stretch_is_scene_wide(make_raster):
    path = make_raster(dtype="uint16")
    data = default_pixels(3, 48, 64, "uint16")
    with Scene.open(path) as s:                          # the default: 2-98 % for data that is not uint8
        low, high = s.stretch.low, s.stretch.high
        np.testing.assert_allclose(low, np.percentile(data.reshape(3, -1), 2, axis=1))
        np.testing.assert_allclose(high, np.percentile(data.reshape(3, -1), 98, axis=1))
        top, _ = s.read(Window(0, 0, 64, 8))
        bottom, _ = s.read(Window(0, 40, 64, 8))
    assert top.dtype == np.uint8
    # The same stretch on both windows: the top is dark, the bottom bright (a per-tile stretch
    # would map both to the full 0..255 range).
    assert top[..., 0].max() < 60 and bottom[..., 0].min() > 190
    expected = Stretch(low, high).apply(data[:, 40:48, :])
    np.testing.assert_array_equal(bottom, np.moveaxis(expected, 0, -1))


def test_zeros_the_file_does_not_mark_are_warned_of_as_fill(make_raster, recwarn):
    """A swath's 0 fill without a declared nodata (the Landsat 8 sample of training/real_scenes.py:
    16%) pulls the stretch down; the warning names --nodata 0, which removes it and the effect."""
    data = default_pixels(3, 48, 64, "uint16")
    data[:, :, :16] = 0                                   # a quarter of the scene is fill
    path = make_raster(dtype="uint16", data=data)
    with Scene.open(path) as s, pytest.warns(UserWarning, match=r"25% of its pixels are 0.*--nodata 0"):
        assert s.stretch.low[0] == 0
    recwarn.clear()
    with Scene.open(path, nodata=0) as s:
        assert s.stretch.low[0] > 0
    assert not [w for w in recwarn if "are 0" in str(w.message)]


def test_stretch_excludes_nodata(make_raster):
    data = default_pixels(1, 48, 64, "uint16")
    data[:, :, :32] = 60000
    path = make_raster(count=1, dtype="uint16", data=data, nodata=60000)
    with Scene.open(path) as s:
        assert s.stretch.high[0] < 60000
        np.testing.assert_allclose(s.stretch.high, [np.percentile(data[:, :, 32:], 98)])


def test_float_stretch_ignores_nan_and_nan_is_invalid(make_raster):
    data = default_pixels(1, 48, 64, "float32")
    data[0, 0, :10] = np.nan
    path = make_raster(count=1, dtype="float32", data=data)
    with Scene.open(path) as s:
        assert np.isfinite(s.stretch.low[0]) and np.isfinite(s.stretch.high[0])
        _, valid = s.read(Window(0, 0, 64, 48))
    assert not valid[0, :10].any() and valid[0, 10:].all()


def test_value_range_overrides_the_stretch(make_raster):
    path = make_raster(count=1, dtype="uint16")
    with Scene.open(path, value_range=(1000, 2000)) as s:
        assert (s.stretch.low, s.stretch.high) == ((1000.0,), (2000.0,))
        image, _ = s.read(Window(0, 0, 64, 48))
    # band 1 holds row * 100 + col + 1000: row 0 col 0 -> 0, row 5 col 0 -> 1500 -> 128.
    assert image[0, 0, 0] == 0 and image[5, 0, 0] == 128 and image[20, 0, 0] == 255


def test_stretch_comes_from_overviews_not_full_resolution(make_raster, monkeypatch):
    # Overviews made from one content, then full resolution overwritten: the stretch must follow
    # the overview, proving it never read the full-resolution scene.
    path = make_raster(count=1, dtype="uint16", width=128, height=128, tiled=True,
                       overviews=[2, 4])
    with rasterio.open(path, "r+") as ds:
        ds.write(np.full((1, 128, 128), 40000, dtype="uint16"))
    monkeypatch.setattr(scene_module, "STRETCH_SAMPLE_PIXELS", 32 * 32)
    with Scene.open(path) as s:
        assert s.stretch.high[0] < 20000
        assert "overview" in s.stretch.source


# ----------------------------------------------------------------------------- nodata
def test_file_nodata_marks_pixels_invalid(make_raster):
    data = default_pixels(3, 48, 64, "uint8")
    data[:, 10:20, 5:9] = 0
    path = make_raster(data=data, nodata=0)
    with Scene.open(path) as s:
        assert s.nodata == 0 and s.mask_kind == "nodata"
        image, valid = s.read(Window(0, 0, 64, 48))
    assert not valid[10:20, 5:9].any()
    np.testing.assert_array_equal(valid, ~np.all(data == 0, axis=0))
    assert (image[~valid] == 0).all() and valid.sum() >= 48 * 64 - 40 - 3


def test_user_nodata_overrides_file(make_raster):
    path = make_raster(count=1, nodata=None)
    value = int(default_pixels(1, 48, 64, "uint8")[0, 3, 3])
    with Scene.open(path, nodata=value) as s:
        _, valid = s.read(Window(0, 0, 64, 48))
    assert not valid[3, 3]
    assert valid.sum() == np.count_nonzero(default_pixels(1, 48, 64, "uint8")[0] != value)


def test_mask_band_marks_pixels_invalid(make_raster):
    mask = np.ones((48, 64), bool)
    mask[:, 40:] = False
    path = make_raster(mask=mask)
    with Scene.open(path) as s:
        assert s.mask_kind == "mask" and s.nodata is None
        image, valid = s.read(Window(0, 0, 64, 48))
    np.testing.assert_array_equal(valid, mask)
    assert (image[:, 40:] == 0).all()


def test_alpha_band_marks_pixels_invalid_and_is_not_a_colour(make_raster):
    alpha = np.ones((48, 64), bool)
    alpha[:12] = False
    path = make_raster(alpha=alpha, colorinterp="red,green,blue")
    with Scene.open(path) as s:
        assert s.band_indexes == (1, 2, 3) and s.mask_kind == "alpha"
        _, valid = s.read(Window(0, 0, 64, 48))
    np.testing.assert_array_equal(valid, alpha)


def test_grey_with_alpha_is_grey(make_raster):
    path = make_raster(count=1, alpha=np.ones((48, 64), bool))
    with Scene.open(path) as s:
        assert s.band_indexes == (1,) and s.mask_kind == "alpha"


# ----------------------------------------------------------------------------- reading
def test_boundless_window_pads_with_invalid_zeros(make_raster):
    path = make_raster()
    with Scene.open(path) as s:
        image, valid = s.read(Window(-4, 40, 16, 16))
    assert image.shape == (16, 16, 3)
    assert not valid[:, :4].any() and not valid[8:].any() and valid[:8, 4:].all()
    assert (image[:, :4] == 0).all() and (image[8:] == 0).all()
    expected = np.moveaxis(default_pixels(3, 48, 64, "uint8")[:, 40:48, 0:12], 0, -1)
    np.testing.assert_array_equal(image[:8, 4:], expected)


def test_window_entirely_outside_is_all_invalid(make_raster):
    with Scene.open(make_raster()) as s:
        image, valid = s.read(Window(100, 100, 8, 8))
    assert image.shape == (8, 8, 3) and not valid.any() and not image.any()


def test_out_shape_reads_through_overviews(make_raster):
    path = make_raster(count=1, width=64, height=64, tiled=True, overviews=[2])
    with rasterio.open(path, "r+") as ds:      # full resolution changed, overview kept
        ds.write(np.full((1, 64, 64), 255, dtype="uint8"))
    with Scene.open(path) as s:
        low, _ = s.read(Window(0, 0, 64, 64), out_shape=(32, 32))
        full, _ = s.read(Window(0, 0, 64, 64))
    assert (full == 255).all()
    np.testing.assert_array_equal(low[..., 0], default_pixels(1, 64, 64, "uint8")[0, ::2, ::2])


def test_out_shape_on_boundless_window(make_raster):
    path = make_raster(width=64, height=64)
    with Scene.open(path) as s:
        image, valid = s.read(Window(32, 32, 64, 64), out_shape=(16, 16))
    assert image.shape == (16, 16, 3)
    assert valid[:8, :8].all() and not valid[8:].any() and not valid[:, 8:].any()


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize("layout", [
    dict(tiled=True, compress="deflate"), dict(tiled=False, rows_per_strip=5),
    dict(bigtiff=True, tiled=True), dict(overviews=[2, 4], tiled=True)])
def test_layouts_read_identically(make_raster, layout):
    path = make_raster(**layout)
    with Scene.open(path) as s:
        image, _ = s.read(Window(5, 7, 30, 20))
        if layout.get("tiled"):
            assert s.block_shape == (16, 16)
        assert s.overviews == layout.get("overviews", [])
    np.testing.assert_array_equal(
        image, np.moveaxis(source_pixels(path, [1, 2, 3], Window(5, 7, 30, 20)), 0, -1))


def test_cog_and_vrt_open(make_raster, tmp_path):
    src = make_raster(tiled=True)
    cog = str(tmp_path / "cog.tif")
    rasterio.shutil.copy(src, cog, driver="COG", blocksize=32)
    vrt = tmp_path / "scene.vrt"
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">scene.tif</SourceFilename>'
        f'<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>' for b in (1, 2, 3))
    vrt.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="48">'
                   f'<GeoTransform>500000, 10, 0, 4500000, 0, -10</GeoTransform>{bands}'
                   f'</VRTDataset>')
    expected = np.moveaxis(default_pixels(3, 48, 64, "uint8"), 0, -1)
    for path, driver in ((cog, "GTiff"), (str(vrt), "VRT")):
        with Scene.open(path) as s:
            assert s.driver == driver
            image, _ = s.read(Window(0, 0, 64, 48))
        np.testing.assert_array_equal(image, expected)


# ----------------------------------------------------------------------------- georeferencing
@pytest.mark.parametrize("crs, origin, res, expected_m", [
    ("EPSG:32633", (500000, 4_500_000), 10.0, 10.0),        # UTM near the central meridian
    ("EPSG:3857", (0, 8_399_738), 10.0, 5.0),                # Web Mercator at ~60N: half
    ("EPSG:4326", (0.0, 0.0024), 0.0001, 11.1),              # degrees at the equator
    ("EPSG:3035", (4_321_000, 3_210_000), 10.0, 10.0),       # equal-area (LAEA Europe)
    ("EPSG:3413", (0, -1_000_000), 10.0, 10.0 / 0.97),       # polar stereographic (70N true)
])
def test_gsd_in_metres_for_several_crs(make_raster, crs, origin, res, expected_m):
    path = make_raster(crs=crs, origin=origin, res=res)
    with Scene.open(path) as s:
        assert s.pixel_size() == pytest.approx((res, res))
        assert s.gsd_m() == pytest.approx(expected_m, rel=0.03)


def test_raster_without_crs_has_no_gsd(make_raster):
    path = make_raster(crs=None, transform=Affine(1, 0, 0, 0, -1, 48))
    with Scene.open(path) as s:
        assert s.crs is None
        assert s.info()["gsd_m"] is None
        with pytest.raises(CRSError, match=path.replace(".", r"\.")):
            s.gsd_m()


def test_rotated_geotransform_is_refused(make_raster):
    path = make_raster(transform=Affine(10, 2, 500000, 2, -10, 4_500_000))
    with pytest.raises(GeotransformError, match="gdalwarp"):
        Scene.open(path)


# ----------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(SceneError, match="no such file"):
        Scene.open(tmp_path / "nope.tif")


def test_not_a_raster(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("just text")
    with pytest.raises(SceneError, match="not a raster"):
        Scene.open(path)


def test_truncated_file_fails_at_open(make_raster, tmp_path):
    path = make_raster(width=256, height=256, tiled=True, blocksize=64, compress="deflate",
                       data=np.random.default_rng(0).integers(0, 255, (3, 256, 256)))
    truncated = tmp_path / "truncated.tif"
    content = open(path, "rb").read()
    truncated.write_bytes(content[: len(content) * 2 // 3])
    with pytest.raises(SceneError, match="corrupt") as info:
        Scene.open(truncated)
    assert str(truncated) in str(info.value)


def test_info_is_json_serialisable(make_raster):
    import json

    with Scene.open(make_raster(dtype="uint16", nodata=0, overviews=[2])) as s:
        info = json.loads(json.dumps(s.info()))
    assert info["crs"]["epsg"] == 32633 and info["size"] == {"width": 64, "height": 48}
    assert info["nodata"] == 0 and info["overviews"] == [2] and info["dtype"] == "uint16"
    assert len(info["stretch"]["low"]) == 3 and info["gsd_m"] == pytest.approx(10, rel=1e-2)


def test_palette_band_is_shown_in_its_colours(make_raster):
    data = np.zeros((1, 48, 64), np.uint8)
    data[0, :, 32:] = 1
    path = make_raster(count=1, data=data, colormap={0: (0, 0, 255, 255), 1: (255, 128, 0, 255)})
    with Scene.open(path) as s:
        assert s.info()["palette"] is True
        image, _ = s.read(Window(0, 0, 64, 48))
    assert tuple(image[0, 0]) == (0, 0, 255) and tuple(image[0, 40]) == (255, 128, 0)
    for stretch in ({"percentiles": (2, 98)}, {"value_range": (0, 10)}):   # indexes are not values to stretch
        with Scene.open(path, **stretch) as s, pytest.warns(UserWarning, match="colour table"):
            image, _ = s.read(Window(0, 0, 64, 48))
        assert tuple(image[0, 0]) == (0, 0, 255) and tuple(image[0, 40]) == (255, 128, 0)


def test_local_crs_gsd_uses_its_linear_unit(make_raster, tmp_path):
    make_raster(name="source.tif", count=1)
    vrt = tmp_path / "local.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="48"><SRS>LOCAL_CS["site grid",UNIT["metre",1]]'
        '</SRS><GeoTransform>0, 2, 0, 96, 0, -2</GeoTransform><VRTRasterBand dataType="Byte" '
        'band="1"><SimpleSource><SourceFilename relativeToVRT="1">source.tif</SourceFilename>'
        '<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    with Scene.open(vrt) as s:
        assert s.crs is not None and s.crs.to_epsg() is None
        assert s.gsd_m() == pytest.approx(2.0)


def test_open_caps_gdal_block_cache(make_raster, monkeypatch):
    # Memory must not grow with scene size while tiles are iterated (see bench/bench_tiles.py).
    from rasterio.env import get_gdal_config, set_gdal_config

    before = get_gdal_config("GDAL_CACHEMAX")
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    monkeypatch.setattr(scene_module, "_block_cache_capped", False)
    set_gdal_config("GDAL_CACHEMAX", 2**31)
    try:
        Scene.open(make_raster()).close()
        assert int(get_gdal_config("GDAL_CACHEMAX")) <= scene_module.BLOCK_CACHE_BYTES
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)
