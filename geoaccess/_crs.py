"""Coordinate reference systems in one place: cached transformers, metres per degree, and the metres check.

Every module that moves points between WGS84 and a working or grid CRS takes its transformer from
`transformer` (built once per pair, ``always_xy``: longitude / easting first); lengths of a degree come
from `metres_per_degree` (the WGS84 ellipsoid); a CRS used for metric work passes `check_metres`.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from .errors import ConfigError

WGS84 = "EPSG:4326"


@lru_cache(maxsize=64)
def transformer(src, dst) -> Transformer:
    """The cached ``always_xy`` transformer from `src` to `dst` (anything `pyproj.CRS` accepts, hashable)."""
    return Transformer.from_crs(src, dst, always_xy=True)


@lru_cache(maxsize=64)
def _crs(value) -> CRS:
    return CRS.from_user_input(value)


def is_geographic(crs) -> bool:
    """True for a longitude / latitude CRS (degrees)."""
    return _crs(crs).is_geographic


def from_wgs84(lon, lat, crs) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 longitude / latitude → coordinates in `crs` (unchanged, as float arrays, when `crs` is geographic)."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    if is_geographic(crs):
        return lon, lat
    x, y = transformer(WGS84, crs).transform(lon, lat)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def metres_per_degree(lat_deg) -> tuple[np.ndarray, np.ndarray]:
    """Metres in one degree of longitude and of latitude at `lat_deg` on the WGS84 ellipsoid (series to O(e^6))."""
    lat = np.radians(np.asarray(lat_deg, dtype=float))
    deg_lon = 111412.84 * np.cos(lat) - 93.5 * np.cos(3 * lat) + 0.118 * np.cos(5 * lat)
    deg_lat = 111132.954 - 559.822 * np.cos(2 * lat) + 1.175 * np.cos(4 * lat)
    return deg_lon, deg_lat


def check_metres(value, path: str | Path | None = None, where: str = "[region] working_crs") -> CRS:
    """The CRS `value` if it is projected with metre axes; otherwise one ConfigError line naming `where`."""
    try:
        crs = CRS.from_user_input(value)
    except CRSError as exc:
        raise ConfigError(path, f"{where} is not a CRS: {exc}") from None
    if not crs.is_projected:
        raise ConfigError(path, f"{where} must be a projected CRS in metres (metric work)")
    units = {(a.unit_name, float(a.unit_conversion_factor)) for a in crs.axis_info}
    if not all(name in ("metre", "meter") and factor == 1.0 for name, factor in units):
        raise ConfigError(path, f"{where} is in {', '.join(sorted(n for n, _ in units))}, not metres: "
                                "distances, snapping and speeds are computed in metres (use +units=m)")
    return crs
