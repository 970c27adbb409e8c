"""Settlements drawn as a raster layer, for maps with too many settlements for one marker each (a national
run: 676,000 settlements would make a page of hundreds of MB that no browser draws smoothly).

Each pixel of a Web Mercator image takes the colour of the *worst* travel-time band among the settlements
in it (unreachable counts as worst), so gaps stay visible at national zoom; pixels without settlements are
transparent. One image per level group, a few hundred KB each as PNG.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

#: Above this many located settlements the map draws them as images instead of markers.
MAX_SETTLEMENT_MARKERS = 60_000
#: Width of the image in pixels (the height follows the data's aspect in Web Mercator).
IMAGE_PIXELS = 2400

_R = 6378137.0


def _mercator(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lat = np.clip(lat, -85.0, 85.0)
    return np.radians(lon) * _R, np.log(np.tan(np.pi / 4 + np.radians(lat) / 2)) * _R


def settlement_band_images(settlements: pd.DataFrame, levels, bands, colours: list[str],
                           pixels: int = IMAGE_PIXELS) -> tuple[dict, list[list[float]]]:
    """RGBA image (rows, cols, 4) per level of the settlements' bands, and the images' [[south, west], [north, east]].

    ``colours``: hex colour per band index as `mapping.band_index` numbers them (the last is unreachable).
    """
    from .mapping import band_index

    lon, lat = settlements["lon"].to_numpy(float), settlements["lat"].to_numpy(float)
    ok = np.isfinite(lon) & np.isfinite(lat)
    x, y = _mercator(lon[ok], lat[ok])
    left, right, bottom, top = x.min(), x.max(), y.min(), y.max()
    pad = 0.002 * max(right - left, top - bottom, 1.0)
    left, right, bottom, top = left - pad, right + pad, bottom - pad, top + pad
    width = int(pixels)
    height = max(1, int(round(width * (top - bottom) / (right - left))))
    col = np.clip(((x - left) / (right - left) * width).astype(np.int64), 0, width - 1)
    row = np.clip(((top - y) / (top - bottom) * height).astype(np.int64), 0, height - 1)
    pix = row * width + col
    rgb = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in colours], dtype=np.uint8)
    images = {}
    for lv in levels:
        band = band_index(settlements[f"t_{lv}_min"].to_numpy(float)[ok], bands)
        worst = np.full(width * height, -1, dtype=np.int64)
        np.maximum.at(worst, pix, band)
        img = np.zeros((width * height, 4), dtype=np.uint8)
        has = worst >= 0
        img[has, :3] = rgb[worst[has]]
        img[has, 3] = 235
        images[lv] = img.reshape(height, width, 4)
    lon0 = np.degrees(left / _R)
    lon1 = np.degrees(right / _R)
    lat0 = np.degrees(2 * np.arctan(np.exp(bottom / _R)) - np.pi / 2)
    lat1 = np.degrees(2 * np.arctan(np.exp(top / _R)) - np.pi / 2)
    return images, [[float(lat0), float(lon0)], [float(lat1), float(lon1)]]
