"""Tile grid arithmetic (no I/O) and the lazy tile reader on real GeoTIFFs."""

import itertools

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from mgimm_core.scene import Scene
from mgimm_core.tiles import TileGrid, aligned_size, iter_tiles, tile_grid, tile_starts
from tests.conftest import default_pixels


# ----------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("length, size, step, expected", [
    (100, 32, 32, [0, 32, 64, 68]),       # last tile moved back to end at the edge
    (96, 32, 32, [0, 32, 64]),            # exact fit: no extra tile
    (100, 32, 24, [0, 24, 48, 68]),       # overlap 8
    (20, 32, 32, [0]),                    # scene smaller than a tile
    (32, 32, 32, [0]),
])
def test_tile_starts(length, size, step, expected):
    assert tile_starts(length, size, step) == expected


@pytest.mark.parametrize("width, height, size, overlap", [
    (100, 70, 32, 0), (100, 70, 32, 8), (64, 64, 32, 0), (20, 10, 32, 0), (1, 1, 1, 0)])
def test_grid_covers_every_pixel_and_len_matches(width, height, size, overlap):
    grid = TileGrid(width, height, size, overlap)
    windows = list(grid)
    assert len(windows) == len(grid) == grid.shape[0] * grid.shape[1]
    covered = np.zeros((height, width), bool)
    for w in windows:
        assert (w.width, w.height) == (size, size)
        if width >= size and height >= size:          # tiles stay inside the scene
            assert 0 <= w.col_off <= width - size and 0 <= w.row_off <= height - size
        covered[w.row_off:w.row_off + size, w.col_off:w.col_off + size] = True
    assert covered.all()
    assert [grid.window(i) for i in range(len(grid))] == windows


def test_grid_is_lazy_on_huge_scenes():
    grid = TileGrid(10_000_000, 10_000_000, 512)
    assert len(grid) == 19532 ** 2
    first = list(itertools.islice(grid, 3))
    assert first == [Window(0, 0, 512, 512), Window(512, 0, 512, 512), Window(1024, 0, 512, 512)]


def test_bad_grid_parameters():
    with pytest.raises(ValueError, match="overlap"):
        TileGrid(100, 100, 32, 32)
    with pytest.raises(ValueError, match="size"):
        TileGrid(100, 100, 0)


def test_aligned_size():
    assert aligned_size(500, (256, 256), 10000, 10000) == 512
    assert aligned_size(300, (256, 256), 10000, 10000) == 256
    assert aligned_size(500, (1, 10000), 10000, 10000) == 500      # striped: unchanged
    assert aligned_size(100, (256, 256), 10000, 10000) == 100      # block larger than tile


def test_tile_grid_aligns_to_internal_blocks(make_raster):
    path = make_raster(width=100, height=70, tiled=True, blocksize=16)
    with Scene.open(path) as s:
        grid = tile_grid(s, size=30)
        assert grid.size == 32
        offsets = [(w.col_off, w.row_off) for w in grid]
    inner = [o for o in offsets if o[0] != 100 - 32 and o[1] != 70 - 32]
    assert inner and all(c % 16 == 0 and r % 16 == 0 for c, r in inner)
    with Scene.open(path) as s:
        assert tile_grid(s, size=30, align_to_blocks=False).size == 30


# ----------------------------------------------------------------------------- reading
def test_tiles_reassemble_the_scene(landsat_path):
    with Scene.open(landsat_path, bands=(3, 2, 1)) as s:
        grid = tile_grid(s, size=100)
        mosaic = np.zeros((s.height, s.width, 3), np.uint8)
        tiles = list(iter_tiles(s, grid))
    assert len(tiles) == len(grid)
    for tile in tiles:
        w = tile.window
        assert tile.image.shape == (100, 100, 3) and tile.valid_fraction == 1.0
        mosaic[w.row_off:w.row_off + 100, w.col_off:w.col_off + 100] = tile.image
    with rasterio.open(landsat_path) as ds:
        np.testing.assert_array_equal(mosaic, np.moveaxis(ds.read([3, 2, 1]), 0, -1))


def test_mostly_invalid_tiles_are_skipped(make_raster):
    mask = np.zeros((64, 64), bool)
    mask[:, :40] = True             # columns 0..39 valid
    path = make_raster(width=64, height=64, mask=mask)
    with Scene.open(path) as s:
        grid = TileGrid(64, 64, 16)
        kept = list(iter_tiles(s, grid, min_valid_fraction=0.5))
        everything = list(iter_tiles(s, grid, min_valid_fraction=0.0))
    # Tile columns at 0, 16 fully valid; 32 half valid (8 of 16 columns): kept at 0.5; 48 empty.
    assert sorted({t.window.col_off for t in kept}) == [0, 16, 32]
    assert {t.valid_fraction for t in kept if t.window.col_off == 32} == {0.5}
    assert len(everything) == 12            # fully empty tiles are never yielded
    assert [t.index for t in kept] == sorted(t.index for t in kept)


def test_tiles_at_coarser_resolution_come_from_overviews(make_raster):
    path = make_raster(count=1, width=64, height=64, tiled=True, overviews=[2])
    with rasterio.open(path, "r+") as ds:      # full resolution changed, overview kept
        ds.write(np.full((1, 64, 64), 255, dtype="uint8"))
    with Scene.open(path) as s:
        tiles = list(iter_tiles(s, TileGrid(64, 64, 32), out_size=16))
    assert len(tiles) == 4 and all(t.image.shape == (16, 16, 3) for t in tiles)
    overview = default_pixels(1, 64, 64, "uint8")[0, ::2, ::2]
    np.testing.assert_array_equal(tiles[3].image[..., 0], overview[16:, 16:])


def test_iter_tiles_is_lazy(make_raster):
    path = make_raster(width=64, height=64)
    with Scene.open(path) as s:
        tiles = iter_tiles(s, TileGrid(64, 64, 16))
        first = next(tiles)
        assert first.index == 0 and first.window == Window(0, 0, 16, 16)
