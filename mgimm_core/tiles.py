"""The tile grid: square windows over a scene, in scene pixels.

`TileGrid` is pure arithmetic (no I/O): tiles of `size` pixels step by `size - overlap` from the
top-left corner. Edges are covered without padding where the scene allows it: the last column and
the last row of tiles are moved inward to end exactly at the right and bottom edges, so every tile is
full size and inside the scene. Only a scene smaller than one tile gets a tile that extends past its
edge (the outside is read as invalid). `tile_grid` rounds the tile size to a multiple of the file's
internal blocks when asked, so most windows read whole blocks. `iter_tiles` reads lazily, one tile at
a time, and skips tiles that are mostly invalid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from rasterio.windows import Window

from mgimm_core.scene import Scene


def tile_starts(length: int, size: int, step: int) -> list[int]:
    """Offsets (pixels) of tiles of `size` stepping by `step` that cover 0..length.

    The last offset is moved back to `length - size` so the last tile ends at the edge; when
    `length <= size` there is one tile at 0.
    """
    if length <= size:
        return [0]
    count = 1 + math.ceil((length - size) / step)
    starts = [i * step for i in range(count)]
    starts[-1] = length - size
    return starts


@dataclass(frozen=True)
class TileGrid:
    """A lazy grid of `size` x `size` windows (pixels) over a `width` x `height` scene."""

    width: int
    height: int
    size: int
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"tile size {self.size}: must be at least 1 pixel.")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"tile overlap {self.overlap}: must be 0 <= overlap < size "
                             f"({self.size}).")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"scene size {self.width}x{self.height}: must be at least 1x1.")

    @property
    def step(self) -> int:
        """Pixels from one tile's offset to the next."""
        return self.size - self.overlap

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of tiles."""
        return (len(tile_starts(self.height, self.size, self.step)),
                len(tile_starts(self.width, self.size, self.step)))

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def window(self, index: int) -> Window:
        """The window of tile `index` (row-major, 0-based)."""
        rows, cols = self.shape
        if not 0 <= index < rows * cols:
            raise IndexError(f"tile {index}: the grid has {rows * cols} tiles.")
        row, col = divmod(index, cols)
        return Window(tile_starts(self.width, self.size, self.step)[col],
                      tile_starts(self.height, self.size, self.step)[row], self.size, self.size)

    def __iter__(self) -> Iterator[Window]:
        col_starts = tile_starts(self.width, self.size, self.step)
        for row_off in tile_starts(self.height, self.size, self.step):
            for col_off in col_starts:
                yield Window(col_off, row_off, self.size, self.size)


def aligned_size(size: int, block_shape: tuple[int, int], width: int, height: int) -> int:
    """`size` rounded to the nearest multiple of the file's square internal block (pixels).

    Unchanged for striped files (a block spans the full width), non-square blocks, or blocks
    larger than the tile.
    """
    rows, cols = block_shape
    if rows != cols or cols >= width or rows >= height or cols > size:
        return size
    return max(cols, int(round(size / cols)) * cols)


def tile_grid(scene: Scene, size: int = 512, overlap: int = 0,
              align_to_blocks: bool = True) -> TileGrid:
    """The grid of `size`-pixel tiles over a scene (size rounded to whole blocks if asked)."""
    if align_to_blocks:
        size = aligned_size(size, scene.block_shape, scene.width, scene.height)
    return TileGrid(scene.width, scene.height, size, min(overlap, size - 1))


@dataclass(frozen=True)
class Tile:
    """One tile as the model sees it."""

    index: int                  # row-major position in the grid, 0-based
    window: Window              # scene pixels
    image: np.ndarray           # uint8 (h, w, 3); h, w = out_size or the tile size
    valid: np.ndarray           # bool (h, w)
    valid_fraction: float       # share of valid pixels, 0..1


def iter_tiles(scene: Scene, grid: TileGrid, *, min_valid_fraction: float = 0.5,
               out_size: int | None = None) -> Iterator[Tile]:
    """Read tiles one at a time, skipping those with less than `min_valid_fraction` valid pixels.

    out_size: read each tile at out_size x out_size pixels (through overviews or a decimated read)
    instead of its full resolution.
    """
    out_shape = None if out_size is None else (out_size, out_size)
    for index, window in enumerate(grid):
        image, valid = scene.read(window, out_shape)
        fraction = float(np.count_nonzero(valid)) / valid.size
        if fraction < min_valid_fraction or fraction == 0:
            continue
        yield Tile(index, window, image, valid, fraction)
