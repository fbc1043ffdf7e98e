"""Unit-square line plots written as PNG with numpy and the standard library only.

The benchmark must draw its ROC, precision-recall and reliability curves on a machine without
matplotlib or Pillow, so this draws into an RGB array and encodes it with zlib. There is no text:
axes run 0..1 with a grid line every 0.1, and the caller prints which colour is which.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Series colours, in order (the text report names them).
COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("blue", (31, 119, 180)),
    ("orange", (255, 127, 14)),
    ("green", (44, 160, 44)),
    ("red", (214, 39, 40)),
    ("purple", (148, 103, 189)),
    ("brown", (140, 86, 75)),
)


@dataclass(frozen=True)
class Series:
    points: Sequence[tuple[float, float]]
    markers: Sequence[tuple[float, float]] = ()


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an (height, width, 3) uint8 array."""
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


class Canvas:
    def __init__(self, size: int = 400, margin: int = 20) -> None:
        self.size, self.margin = size, margin
        self.image = np.full((size + 2 * margin, size + 2 * margin, 3), 255, dtype=np.uint8)

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        return self.margin + x * self.size, self.margin + (1.0 - y) * self.size

    def line(
        self,
        a: tuple[float, float],
        b: tuple[float, float],
        colour: tuple[int, int, int],
        width: int = 1,
    ) -> None:
        (x0, y0), (x1, y1) = self._xy(*a), self._xy(*b)
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        xs = np.linspace(x0, x1, steps + 1).round().astype(int)
        ys = np.linspace(y0, y1, steps + 1).round().astype(int)
        h, w, _ = self.image.shape
        for dx in range(-(width // 2), width // 2 + 1):
            for dy in range(-(width // 2), width // 2 + 1):
                cx, cy = np.clip(xs + dx, 0, w - 1), np.clip(ys + dy, 0, h - 1)
                self.image[cy, cx] = colour

    def marker(self, p: tuple[float, float], colour: tuple[int, int, int], radius: int = 4) -> None:
        x, y = (round(v) for v in self._xy(*p))
        h, w, _ = self.image.shape
        self.image[
            max(0, y - radius) : min(h, y + radius + 1), max(0, x - radius) : min(w, x + radius + 1)
        ] = colour

    def frame(self) -> None:
        grey, black = (225, 225, 225), (0, 0, 0)
        for k in range(1, 10):
            self.line((k / 10, 0), (k / 10, 1), grey)
            self.line((0, k / 10), (1, k / 10), grey)
        for a, b in (((0, 0), (1, 0)), ((0, 0), (0, 1)), ((1, 0), (1, 1)), ((0, 1), (1, 1))):
            self.line(a, b, black)


def plot(path: Path, series: Sequence[Series], diagonal: bool = False) -> None:
    """Series as polylines (first colour first), markers as squares; optional y = x reference."""
    canvas = Canvas()
    canvas.frame()
    if diagonal:
        canvas.line((0, 0), (1, 1), (150, 150, 150))
    for (_, colour), s in zip(COLOURS, series, strict=False):
        pts = list(s.points)
        for a, b in itertools.pairwise(pts):
            canvas.line(a, b, colour, width=2)
        for m in s.markers:
            canvas.marker(m, colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(canvas.image))
