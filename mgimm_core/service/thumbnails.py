"""Thumbnails of the chip the model saw, for interactive clients (a PNG without an imaging library)."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

THUMBNAIL_MAX_SIDE = 256


def thumbnail_png_b64(image: np.ndarray, mask: np.ndarray | None = None,
                      max_side: int = THUMBNAIL_MAX_SIDE) -> str:
    """The chip the model saw as a base64 PNG at most `max_side` pixels a side (nearest neighbour),
    pixels outside the region's mask dimmed so the region stands out."""
    rgb = np.asarray(image, dtype=np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if mask is not None and mask.shape == rgb.shape[:2] and mask.any():
        rgb = np.where(mask[:, :, None], rgb, (rgb // 2.5).astype(np.uint8))
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        rows = (np.arange(max(1, round(h * scale))) / scale).astype(int)
        cols = (np.arange(max(1, round(w * scale))) / scale).astype(int)
        rgb = rgb[rows][:, cols]
    return base64.b64encode(encode_png(rgb)).decode("ascii")


def encode_png(rgb: np.ndarray) -> bytes:
    """A minimal 8-bit RGB PNG (no filter, zlib): enough for thumbnails, no imaging library needed."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))
