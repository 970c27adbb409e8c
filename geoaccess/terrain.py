"""DEM sampling along roads, direction-specific grade and altitude speed factors, Tobler off-road legs."""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from numba import njit, prange

from .errors import ConfigError, DataCoverageError, InputError

log = logging.getLogger("geoaccess")

#: Metres per degree of latitude / of longitude at the equator (WGS84, rounded); used only to
#: turn a geographic DEM's cell size into metres for the hole-filling search radius.
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON = 111_320.0
#: At most this many cells either way are searched for the nearest valid elevation.
_MAX_FILL_CELLS = 50


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TerrainParams:
    """Terrain model parameters; every default and its source is in docs/terrain.md.

    Grades are rise/run (0.06 = 6 %), signed in the direction of travel.
    """

    sample_spacing_m: float = 200.0
    grade_window_m: float = 2000.0
    grade_cap: float = 0.10
    uphill_free_grade: float = 0.02
    uphill_loss_per_grade: float = 5.0
    uphill_min_factor: float = 0.4
    downhill_free_grade: float = 0.04
    downhill_loss_per_grade: float = 3.0
    downhill_min_factor: float = 0.5
    altitude_threshold_m: float = 3000.0
    altitude_loss_per_km: float = 0.05
    altitude_min_factor: float = 0.8
    fill_radius_m: float = 2000.0
    tobler_max_kph: float = 6.0
    tobler_decay: float = 3.5
    tobler_slope_offset: float = 0.05
    offroad_speed_factor: float = 1.0
    offroad_detour_factor: float = 1.3
    offroad_min_kph: float = 1.0

    def __post_init__(self) -> None:
        positive = ("sample_spacing_m", "grade_window_m", "grade_cap", "tobler_max_kph", "offroad_speed_factor",
                    "offroad_min_kph", "offroad_detour_factor")
        non_negative = ("uphill_free_grade", "uphill_loss_per_grade", "downhill_free_grade",
                        "downhill_loss_per_grade", "altitude_threshold_m", "altitude_loss_per_km", "fill_radius_m",
                        "tobler_decay", "tobler_slope_offset")
        factors = ("uphill_min_factor", "downhill_min_factor", "altitude_min_factor")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(None, f"[terrain] {f.name} = {value!r}: must be a finite number")
            object.__setattr__(self, f.name, float(value))
            if f.name in positive and value <= 0:
                raise ConfigError(None, f"[terrain] {f.name} = {value!r}: must be > 0")
            if f.name in non_negative and value < 0:
                raise ConfigError(None, f"[terrain] {f.name} = {value!r}: must be ≥ 0")
            if f.name in factors and not 0 < value <= 1:
                raise ConfigError(None, f"[terrain] {f.name} = {value!r}: must be in (0, 1]")
        if self.offroad_detour_factor < 1:
            raise ConfigError(None, f"[terrain] offroad_detour_factor = {self.offroad_detour_factor!r}: must be ≥ 1")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TerrainParams:
        """Build from a config table (e.g. the region TOML's [terrain]); unknown keys are an error.

        Parameters
        ----------
        d : mapping of parameter name to value; missing names keep their defaults.

        Returns
        -------
        TerrainParams
        """
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                import difflib

                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(None, f"[terrain] unknown key '{key}'{hint}")
        return cls(**d)

    def to_dict(self) -> dict[str, float]:
        """The parameters as a plain dict (for run metadata)."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Speed models
# --------------------------------------------------------------------------------------------
def tobler_kph(slope: np.ndarray | float, params: TerrainParams | None = None) -> np.ndarray | float:
    """Tobler's (1993) hiking function: 6·exp(−3.5·|slope + 0.05|) km/h.

    Parameters
    ----------
    slope : rise/run in the direction of walking (negative downhill).
    params : takes the three coefficients from here (defaults: Tobler's 6, 3.5, 0.05).

    Returns
    -------
    Walking speed in km/h (scalar for scalar input).
    """
    p = params or TerrainParams()
    s = np.asarray(slope, dtype=np.float64)
    kph = p.tobler_max_kph * np.exp(-p.tobler_decay * np.abs(s + p.tobler_slope_offset))
    return float(kph) if kph.ndim == 0 else kph


def grade_speed_factor(grade: np.ndarray | float, params: TerrainParams | None = None) -> np.ndarray | float:
    """Vehicle speed multiplier for a road grade in the direction of travel.

    Piecewise linear: no loss up to a free grade, then a linear loss per unit of grade down to a
    floor; uphill and downhill have their own free grade, slope and floor. Grades beyond
    ±grade_cap are capped first.

    Parameters
    ----------
    grade : rise/run, positive uphill.
    params : TerrainParams (defaults if None).

    Returns
    -------
    Factor in (0, 1] (scalar for scalar input).
    """
    p = params or TerrainParams()
    g = np.clip(np.asarray(grade, dtype=np.float64), -p.grade_cap, p.grade_cap)
    up = np.maximum(p.uphill_min_factor, 1.0 - p.uphill_loss_per_grade * np.maximum(g - p.uphill_free_grade, 0.0))
    down = np.maximum(p.downhill_min_factor,
                      1.0 - p.downhill_loss_per_grade * np.maximum(-g - p.downhill_free_grade, 0.0))
    f = np.where(g >= 0, up, down)
    return float(f) if f.ndim == 0 else f


def altitude_speed_factor(elevation_m: np.ndarray | float, params: TerrainParams | None = None) -> np.ndarray | float:
    """Vehicle speed multiplier for altitude (engine power loss in thin air).

    1 up to altitude_threshold_m, then minus altitude_loss_per_km per 1000 m, floored at
    altitude_min_factor. Unknown elevation (NaN) gives 1.

    Parameters
    ----------
    elevation_m : metres above sea level.
    params : TerrainParams (defaults if None).

    Returns
    -------
    Factor in (0, 1] (scalar for scalar input).
    """
    p = params or TerrainParams()
    z = np.nan_to_num(np.asarray(elevation_m, dtype=np.float64), nan=-np.inf)
    f = np.maximum(p.altitude_min_factor,
                   1.0 - p.altitude_loss_per_km * np.maximum(z - p.altitude_threshold_m, 0.0) / 1000.0)
    return float(f) if f.ndim == 0 else f


# --------------------------------------------------------------------------------------------
# DEM
# --------------------------------------------------------------------------------------------
#: Default in-memory limit of open_dem (cells of the window read): 50 million cells is 400 MB as
#: float64. Larger windows are sampled tile by tile from the file (windowed mode). Overridden by
#: the environment variable GEOACCESS_DEM_MAX_CELLS or open_dem(max_cells=...).
DEM_MAX_CELLS = 50_000_000
#: Side of the square tiles (cells) a windowed DEM is read in: 2048² cells are 16 MB as float32
#: (integer and float32 DEMs) or 32 MB as float64.
DEM_TILE_SIZE = 2048


class Dem:
    """An elevation grid in its own CRS, held in memory or read from its file tile by tile.

    In memory (`windowed` False, the fast path for DEMs that fit): `array` is float64 metres with
    NaN where the file had nodata. Windowed (`windowed` True, a window larger than open_dem's
    `max_cells`): nothing is held but the path; sampling opens the file, reads the tiles of
    `tile_size` cells (plus a small halo) that hold the query points, one at a time, and releases
    them, so memory is bounded by one tile whatever the DEM's size. `array` then raises a
    GeoaccessError naming the file (nothing that needs the whole grid, such as the raster engine,
    can run on it); use `shape`, not `array.shape`, for the grid's size.

    `transform` maps (col, row) of cell corners of the grid (the window read, or the whole file)
    to the CRS; `offset` = (row, col) of the grid's first cell in the file; points are
    transformed into `crs` for sampling (the DEM is never resampled). Pickles small in windowed
    mode (distributed workers read the file themselves).
    """

    def __init__(self, array: np.ndarray | None, transform: Any, crs: Any, nodata: float | None, path: str, *,
                 shape: tuple[int, int] | None = None, offset: tuple[int, int] = (0, 0),
                 tile_size: int = DEM_TILE_SIZE, max_cells: int | None = None) -> None:
        if array is None and shape is None:
            raise ValueError("Dem needs an array (in memory) or a shape (windowed)")
        self._array = array
        self.transform = transform  # affine.Affine
        self.crs = crs  # rasterio.crs.CRS
        self.nodata = nodata
        self.path = path
        self.shape: tuple[int, int] = tuple(int(v) for v in (array.shape if array is not None else shape))
        self.offset: tuple[int, int] = (int(offset[0]), int(offset[1]))
        self.tile_size = int(tile_size)
        self.max_cells = max_cells
        self.warnings: list[str] = []  # problems open_dem found and the run goes on with (for the report)

    @property
    def windowed(self) -> bool:
        """True when the grid is not in memory but sampled tile by tile from `path`."""
        return self._array is None

    @property
    def array(self) -> np.ndarray:
        """The whole grid (float64 metres, NaN = nodata); raises InputError in windowed mode."""
        if self._array is None:
            rows, cols = self.shape
            raise InputError(self.path, f"the DEM window needed ({cols:,} columns × {rows:,} rows, "
                                        f"{_size(rows * cols * 8)} as float64) is larger than the in-memory limit "
                                        f"(max_cells = {self.max_cells:,} cells; environment variable "
                                        "GEOACCESS_DEM_MAX_CELLS), so it is read tile by tile and cannot be loaded "
                                        "whole. Whatever needs the whole grid (the raster engine, --engine raster) "
                                        "cannot use it: use the network engine (--engine network), or a coarser DEM "
                                        "(e.g. 30″ cells: gdalwarp -tr 0.0083333 0.0083333 -r average in.tif "
                                        "out.tif), or raise GEOACCESS_DEM_MAX_CELLS if the machine has the memory")
        return self._array

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the DEM's CRS."""
        rows, cols = self.shape
        xs, ys = zip(*(self.transform @ (c, r) for c, r in ((0, 0), (cols, 0), (0, rows), (cols, rows))))
        return min(xs), min(ys), max(xs), max(ys)

    def __repr__(self) -> str:
        mode = f"windowed, tiles of {self.tile_size}" if self.windowed else "in memory"
        return f"Dem({Path(self.path).name!r}, {self.shape[0]}×{self.shape[1]} cells, {mode})"


def open_dem(path: str | Path, region_bounds: tuple[float, float, float, float] | None = None,
             margin_m: float = 5000.0, max_cells: int | None = None, tile_size: int = DEM_TILE_SIZE) -> Dem:
    """Read band 1 of a DEM (any CRS) once, windowed to the region if bounds are given.

    A DEM that is not in EPSG:4326 is kept in its own CRS: sampling transforms the points into
    it (logged), so the grid is not resampled. A window larger than `max_cells` cells is not read:
    the Dem is returned in windowed mode and sampled tile by tile from the file (same values as
    in memory; memory bounded by one tile).

    Parameters
    ----------
    path : GeoTIFF (or any raster GDAL reads) of elevations in metres.
    region_bounds : (west, south, east, north) in degrees (WGS84) that the DEM must cover, e.g.
        the bounding box of roads, settlements and facilities. None reads the whole file.
    margin_m : cells this far around region_bounds are read too (bilinear neighbours and the
        hole-filling search near the region's edge; keep it ≥ TerrainParams.fill_radius_m).
    max_cells : largest window (rows × cols) read into memory; None takes the environment variable
        GEOACCESS_DEM_MAX_CELLS, else DEM_MAX_CELLS (50 million cells, 400 MB as float64).
    tile_size : side in cells of the tiles a windowed DEM is read in (aligned to the file's grid;
        best a multiple of the file's block size).

    Returns
    -------
    Dem

    Raises
    ------
    InputError : the file cannot be read or has no CRS.
    DataCoverageError : the DEM does not cover region_bounds.
    ConfigError : max_cells / GEOACCESS_DEM_MAX_CELLS or tile_size is not a valid count.
    """
    import rasterio
    from rasterio.windows import Window

    path = str(path)
    max_cells = _max_cells(max_cells)
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 1:
        raise ConfigError(None, f"open_dem tile_size = {tile_size!r}: must be a whole number of cells ≥ 1")
    try:
        src = rasterio.open(path)
    except (rasterio.errors.RasterioIOError, OSError) as exc:
        raise InputError(path, f"cannot read DEM: {exc}") from None
    with src:
        if src.crs is None:
            raise InputError(path, "DEM has no CRS (georeference it, e.g. gdal_edit.py -a_srs EPSG:4326)")
        if src.count < 1:
            raise InputError(path, "DEM has no bands")
        if src.transform.b != 0 or src.transform.d != 0:
            raise InputError(path, "DEM grid is rotated or sheared: warp it to a north-up grid first "
                                   "(gdalwarp in.tif out.tif)")
        window = None
        if region_bounds is not None:
            _check_coverage(src, path, region_bounds)
            need = _bounds_to_crs(region_bounds, "EPSG:4326", src.crs)
            mx, my = _metres_in_crs_units(src.crs, margin_m, max(abs(region_bounds[1]), abs(region_bounds[3])))
            mx += 2 * abs(src.transform.a)
            my += 2 * abs(src.transform.e)
            need = (need[0] - mx, need[1] - my, need[2] + mx, need[3] + my)
            # the window of the file's grid holding the box, whichever way its rows and columns run
            cs, rs = ~src.transform @ (np.array([need[0], need[2], need[0], need[2]]),
                                       np.array([need[1], need[1], need[3], need[3]]))
            c0, r0 = max(0, math.floor(min(cs))), max(0, math.floor(min(rs)))
            c1, r1 = min(src.width, math.ceil(max(cs))), min(src.height, math.ceil(max(rs)))
            window = Window(c0, r0, c1 - c0, r1 - r0)
        rows, cols = (int(window.height), int(window.width)) if window is not None else (src.height, src.width)
        transform = src.window_transform(window) if window is not None else src.transform
        nodata = src.nodata
        crs = src.crs
        windowed = rows * cols > max_cells
        if windowed:
            offset = (int(window.row_off), int(window.col_off)) if window is not None else (0, 0)
            block_rows, block_cols = src.block_shapes[0]
            step = max(1, math.ceil(math.sqrt(rows * cols / _PLAUSIBILITY_CELLS)))
            raw = src.read(1, window=window, out_shape=(max(1, rows // step), max(1, cols // step)))
        else:
            raw = src.read(1, window=window)
    where = " (window of the region)" if window is not None else ""
    if not windowed:  # in memory: north-up, west-to-east, whatever the file's orientation
        raw, transform = _north_up(raw, transform)
    values = _to_float(raw, nodata)
    del raw
    nodata, warnings = _check_elevations(values, nodata, path)
    if not _same_crs(crs, "EPSG:4326"):
        log.info("DEM %s is in %s, not EPSG:4326: sample points are transformed into the DEM's CRS "
                 "(the DEM itself is not resampled)", Path(path).name, crs.to_string())
    if windowed:
        log.info("DEM %s: %d×%d cells needed%s (%s as float64) exceed max_cells = %s: windowed mode, sampled in "
                 "tiles of %d×%d cells read from the file as needed, CRS %s", Path(path).name, cols, rows, where,
                 _size(rows * cols * 8), f"{max_cells:,}", tile_size, tile_size, crs.to_string())
        if block_cols > 4 * tile_size or block_rows > 4 * tile_size:
            log.warning("DEM %s is stored in blocks of %d×%d cells, much larger than the %d×%d tiles it is read "
                        "in: each tile read decompresses every block it touches (GDAL holds up to GDAL_CACHEMAX of "
                        "them), so memory and time are set by the blocks, not the tile; convert it to a tiled "
                        "GeoTIFF (gdal_translate -co TILED=YES -co COMPRESS=DEFLATE -co BIGTIFF=YES in.tif out.tif)",
                        Path(path).name, block_cols, block_rows, tile_size, tile_size)
        dem = Dem(None, transform, crs, nodata, path, shape=(rows, cols), offset=offset, tile_size=int(tile_size),
                  max_cells=max_cells)
        dem.warnings = warnings
        return dem
    array = values
    holes = int(np.isnan(array).sum())
    log.info("DEM %s: %d×%d cells read%s, %s nodata cells, CRS %s", Path(path).name, array.shape[1],
             array.shape[0], where, f"{holes:,}", crs.to_string())
    dem = Dem(array, transform, crs, nodata, path, max_cells=max_cells)
    dem.warnings = warnings
    return dem


#: Plausible elevations on land, metres: nothing on Earth is above Everest (8,849 m) and no land road is
#: far below the Dead Sea shore (−430 m). A DEM outside them is in other units or holds undeclared fills.
MAX_ELEVATION_M = 9000.0
MIN_ELEVATION_M = -500.0
#: Values DEMs use for "no data" (SRTM/int16, ArcGIS, GDAL float32 extremes); read as no-data when the
#: file declares none.
FILL_VALUES = (-32768.0, -32767.0, 32767.0, -9999.0, -99999.0, 65535.0, -3.4028234663852886e38,
               3.4028234663852886e38, -1e10)
#: A windowed DEM is checked on a decimated read of about this many cells.
_PLAUSIBILITY_CELLS = 4_000_000
#: Above this share of settlements on no-data cells the DEM is refused (terrain would be off where people live).
MAX_NODATA_SHARE = 0.5


def _north_up(raw: np.ndarray, transform: Any) -> tuple[np.ndarray, Any]:
    """The grid with rows north to south and columns west to east (a bottom-up GeoTIFF, y step > 0, flipped)."""
    from affine import Affine

    rows, cols = raw.shape
    a, c, e, f = transform.a, transform.c, transform.e, transform.f
    if e > 0:
        raw, f, e = raw[::-1], f + e * rows, -e
    if a < 0:
        raw, c, a = raw[:, ::-1], c + a * cols, -a
    return np.ascontiguousarray(raw), Affine(a, 0.0, c, 0.0, e, f)


def _check_elevations(values: np.ndarray, nodata: float | None, path: str) -> tuple[float | None, list[str]]:
    """Check the elevations read (float, NaN = no-data) are metres on land; returns (nodata, warnings).

    An undeclared fill value (FILL_VALUES, when the file has no nodata tag) is set to NaN in `values`
    and becomes the nodata value, with a warning. A window of no-data only and elevations above
    MAX_ELEVATION_M (decimetres, feet) are InputErrors; cells below MIN_ELEVATION_M and a grid of one
    value are warnings.
    """
    name = Path(path).name
    warnings: list[str] = []
    valid = np.isfinite(values)
    n = values.size
    if nodata is None:
        for fill in FILL_VALUES:
            hit = valid & (values == fill)
            if hit.any():
                k = int(hit.sum())
                values[hit] = np.nan
                valid &= ~hit
                nodata = fill
                warnings.append(f"{path}: the DEM declares no nodata value, but {k:,} of {n:,} cells read "
                                f"({k / n:.1%}) hold {fill:g}, a usual no-data fill: read as no-data, not as "
                                f"{fill:,.0f} m (declare it: gdal_edit.py -a_nodata {fill:g} {name})")
                break
    if not valid.any():
        raise DataCoverageError(path, f"the DEM holds no elevation over the region: all {n:,} cells read are no-data "
                                      "(a blank or wrongly masked file); use another DEM or run with --no-terrain")
    hi, lo = float(np.max(values[valid])), float(np.min(values[valid]))
    if hi > MAX_ELEVATION_M:
        raise InputError(path, f"elevations reach {hi:,.0f}, above the highest point on Earth (8,849 m): the DEM is not "
                               "in metres (decimetres? feet?) or holds an undeclared no-data value; convert it to metres "
                               f"(e.g. gdal_calc.py -A {name} --outfile=metres.tif --calc='A/10') or declare its nodata")
    if lo < MIN_ELEVATION_M:
        k = int((values[valid] < MIN_ELEVATION_M).sum())
        warnings.append(f"{path}: {k:,} cells lie below {MIN_ELEVATION_M:,.0f} m (lowest {lo:,.0f} m): sea depths or an "
                        "undeclared no-data value? roads and legs over them would be timed on false slopes")
    if hi == lo:
        warnings.append(f"{path}: every cell of the DEM holds {hi:g} m: it is flat, so travel times carry no grade or "
                        "altitude effect although terrain is on")
    return nodata, warnings


def check_dem_at(dem: Dem, lon: np.ndarray, lat: np.ndarray, what: str = "settlements") -> list[str]:
    """Warnings about no-data under the given points (WGS84); InputError when most of them have no elevation."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    located = np.isfinite(lon) & np.isfinite(lat)
    m = int(located.sum())
    if m == 0:
        return []
    z = sample_dem(dem, lon[located], lat[located])
    k = int(np.isnan(z).sum())
    if k > MAX_NODATA_SHARE * m:
        raise DataCoverageError(dem.path, f"the DEM has no elevation (no-data) at {k:,} of {m:,} {what} ({k / m:.0%}): "
                                          "terrain would be ignored where most people live; use a complete DEM or "
                                          "run with --no-terrain")
    if k:
        return [f"{dem.path}: no elevation (no-data) at {k:,} of {m:,} {what} ({k / m:.1%}): their terrain comes from "
                "the nearest valid cell within [terrain] fill_radius_m, else their legs are timed flat"]
    return []


def _to_float(raw: np.ndarray, nodata: float | None, dtype: Any = np.float64) -> np.ndarray:
    """Raw band values as float metres (float64 unless told), nodata → NaN."""
    array = raw.astype(dtype)
    if nodata is not None and not np.isnan(nodata):
        array[raw == nodata] = np.nan
    return array


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.0f} MB"


def _max_cells(max_cells: int | None) -> int:
    """open_dem's in-memory limit: the argument, else $GEOACCESS_DEM_MAX_CELLS, else DEM_MAX_CELLS."""
    source = "open_dem max_cells"
    if max_cells is None:
        env = os.environ.get("GEOACCESS_DEM_MAX_CELLS", "").strip()
        if not env:
            return DEM_MAX_CELLS
        source = "environment variable GEOACCESS_DEM_MAX_CELLS"
        try:
            max_cells = int(env.replace("_", "").replace(",", ""))
        except ValueError:
            raise ConfigError(None, f"{source} = {env!r}: must be a whole number of cells, e.g. 50000000") from None
    if isinstance(max_cells, bool) or not isinstance(max_cells, (int, np.integer)) or max_cells < 0:
        raise ConfigError(None, f"{source} = {max_cells!r}: must be a whole number of cells ≥ 0")
    return int(max_cells)


def sample_dem(dem: Dem, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Bilinear elevation at WGS84 points; NaN where the point's cell is nodata or off the grid.

    Parameters
    ----------
    dem : from open_dem.
    lon, lat : degrees (WGS84), any matching shapes.

    Returns
    -------
    Elevation in metres (float64), the shape of lon.
    """
    return _sample_xy(dem, lon, lat, "EPSG:4326")


def _sample_xy(dem: Dem, x: np.ndarray, y: np.ndarray, crs: Any) -> np.ndarray:
    """Bilinear sampling of points given in `crs` (transformed into the DEM's CRS)."""
    shape = np.shape(x)
    col, row = _to_pixels(dem, x, y, crs)
    return _interp(dem, col, row).reshape(shape)


def _interp(dem: Dem, col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """_bilinear on the whole grid in memory, or tile by tile for a windowed Dem (same values)."""
    if not dem.windowed:
        arr = dem.array
        if isinstance(arr, np.ndarray) and arr.dtype in (np.float32, np.float64) and arr.ndim == 2:
            return _bilinear_kernel(np.ascontiguousarray(arr), np.ascontiguousarray(col, dtype=np.float64),
                                    np.ascontiguousarray(row, dtype=np.float64))
        return _bilinear(arr, col, row)
    out = np.full(col.shape, np.nan)
    inside = np.flatnonzero(_on_grid(dem, col, row))
    if inside.size == 0:
        return out
    rows, cols = dem.shape
    own_r = np.minimum(row[inside].astype(np.int64), rows - 1)  # the cell holding the point, as in _bilinear
    own_c = np.minimum(col[inside].astype(np.int64), cols - 1)
    # the four bilinear neighbours lie within one cell of the point's own cell: a 1-cell halo
    for sel, tile in _tiles(dem, own_r, own_c, halo=1):
        pts = inside[sel]
        out[pts] = _bilinear(tile, col[pts], row[pts])
    return out


class _Tile:
    """A block of a windowed Dem's grid, indexed in the whole grid's (row, col) coordinates.

    Quacks like the in-memory array for _bilinear and _nearest_search_block: `shape` is the
    whole grid's, `tile[i, j]` takes grid indices (which must fall inside the block).
    """

    __slots__ = ("c0", "data", "r0", "shape")

    def __init__(self, data: np.ndarray, r0: int, c0: int, shape: tuple[int, int]) -> None:
        self.data, self.r0, self.c0, self.shape = data, r0, c0, shape

    def __getitem__(self, index: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        i, j = (np.asarray(v) for v in index)
        i, j = i - self.r0, j - self.c0
        h, w = self.data.shape
        if i.size and (i.min() < 0 or i.max() >= h or j.min() < 0 or j.max() >= w):
            raise RuntimeError("windowed DEM: a cell outside the tile read was asked for (internal error)")
        return self.data[i, j]


def _tiles(dem: Dem, r: np.ndarray, c: np.ndarray, halo: int):
    """Group cells (r, c) (grid indices, inside the grid) by the tile of the file holding them.

    Tiles are `dem.tile_size` squares aligned to the file's grid (so to its blocks when tile_size
    is a multiple of the block size). Yields (indices into r/c, _Tile) one tile at a time, in
    file order; each tile is read with `halo` cells around it (clipped to the grid), converted to
    float with NaN for nodata, and dropped before the next one is read.
    """
    rows, cols = dem.shape
    T = dem.tile_size
    orow, ocol = dem.offset
    ntc = (ocol + cols) // T + 1
    key = (r + orow) // T  # tile row, then tile row · ntc + tile col (in place: points can be many)
    key *= ntc
    key += (c + ocol) // T
    order = np.argsort(key, kind="stable")
    key = key[order]
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    tile_keys = key[np.r_[0, cuts]].tolist()
    del key
    for sel, k in zip(np.split(order, cuts), tile_keys):
        a, b = divmod(k, ntc)
        r0, r1 = max(0, a * T - orow - halo), min(rows, (a + 1) * T - orow + halo)
        c0, c1 = max(0, b * T - ocol - halo), min(cols, (b + 1) * T - ocol + halo)
        yield sel, _read_tile(dem, r0, r1, c0, c1)


def _read_tile(dem: Dem, r0: int, r1: int, c0: int, c1: int) -> _Tile:
    """Grid rows r0:r1, cols c0:c1 of a windowed Dem, read from its file.

    The file is opened for this one read and closed at once: closing drops the blocks GDAL
    cached for it, so memory stays bounded by one tile however many tiles a run reads (a
    dataset kept open lets GDAL's block cache grow to GDAL_CACHEMAX, 5 % of RAM by default).
    Opening a local GeoTIFF costs about half a millisecond.
    """
    import rasterio
    from rasterio.windows import Window

    orow, ocol = dem.offset
    try:
        with rasterio.open(dem.path) as src:
            raw = src.read(1, window=Window(ocol + c0, orow + r0, c1 - c0, r1 - r0))
    except (rasterio.errors.RasterioIOError, OSError) as exc:
        raise InputError(dem.path, f"cannot read DEM rows {orow + r0}–{orow + r1}, cols {ocol + c0}–{ocol + c1} "
                                   f"(windowed mode): {exc}") from None
    # float32 holds int8/16 and float32 elevations exactly and halves the tile; the arithmetic in
    # _bilinear / _nearest_search_block is float64 either way, so the answers are the same
    exact32 = (raw.dtype.kind in "iu" and raw.dtype.itemsize <= 2) or raw.dtype == np.float32
    return _Tile(_to_float(raw, dem.nodata, np.float32 if exact32 else np.float64), r0, c0, dem.shape)


def _to_pixels(dem: Dem, x: np.ndarray, y: np.ndarray, crs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (col, row) grid coordinates (cell corners at integers) of points in `crs`, flattened."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if not _same_crs(crs, dem.crs):
        x, y = _transformer(_crs_key(crs), _crs_key(dem.crs)).transform(x, y)
    col, row = ~dem.transform @ (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.asarray(col, dtype=np.float64), np.asarray(row, dtype=np.float64)


def _on_grid(dem: Dem, col: np.ndarray, row: np.ndarray) -> np.ndarray:
    rows, cols = dem.shape
    return np.isfinite(col) & np.isfinite(row) & (col >= 0) & (col <= cols) & (row >= 0) & (row <= rows)


def _bilinear(arr: np.ndarray, col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Bilinear interpolation between cell centres at fractional (col, row) corner coordinates.

    The value is NaN when the cell holding the point is NaN or the point is off the grid; NaN
    neighbours of a valid cell are left out and the weights renormalised.
    """
    rows, cols = arr.shape
    out = np.full(col.shape, np.nan)
    inside = np.isfinite(col) & np.isfinite(row) & (col >= 0) & (col <= cols) & (row >= 0) & (row <= rows)
    if not inside.any():
        return out
    c, r = col[inside], row[inside]
    own = arr[np.minimum(r.astype(np.int64), rows - 1), np.minimum(c.astype(np.int64), cols - 1)]
    cx, cy = c - 0.5, r - 0.5  # centre-based coordinates
    j0 = np.clip(np.floor(cx).astype(np.int64), 0, max(cols - 2, 0))
    i0 = np.clip(np.floor(cy).astype(np.int64), 0, max(rows - 2, 0))
    j1, i1 = np.minimum(j0 + 1, cols - 1), np.minimum(i0 + 1, rows - 1)
    fx = np.clip(cx - j0, 0.0, 1.0)
    fy = np.clip(cy - i0, 0.0, 1.0)
    corners = ((i0, j0, (1 - fx) * (1 - fy)), (i0, j1, fx * (1 - fy)), (i1, j0, (1 - fx) * fy), (i1, j1, fx * fy))
    num = np.zeros(c.shape)
    den = np.zeros(c.shape)
    for i, j, w in corners:
        v = arr[i, j]
        ok = ~np.isnan(v)
        num += np.where(ok, v * w, 0.0)
        den += np.where(ok, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        val = num / den
    val[np.isnan(own) | (den <= 0)] = np.nan
    out[inside] = val
    return out


@njit(cache=True, nogil=True, inline="always")
def _bilinear_point(arr, c, r):  # pragma: no cover - compiled
    """:func:`_bilinear` at one point: the same weights, NaN rules and clipping."""
    rows, cols = arr.shape
    if not (np.isfinite(c) and np.isfinite(r) and 0.0 <= c <= cols and 0.0 <= r <= rows):
        return np.nan
    if np.isnan(arr[min(int(r), rows - 1), min(int(c), cols - 1)]):
        return np.nan
    cx, cy = c - 0.5, r - 0.5
    j0 = min(max(int(np.floor(cx)), 0), max(cols - 2, 0))
    i0 = min(max(int(np.floor(cy)), 0), max(rows - 2, 0))
    j1, i1 = min(j0 + 1, cols - 1), min(i0 + 1, rows - 1)
    fx = min(max(cx - j0, 0.0), 1.0)
    fy = min(max(cy - i0, 0.0), 1.0)
    num = 0.0
    den = 0.0
    for i, j, w in ((i0, j0, (1 - fx) * (1 - fy)), (i0, j1, fx * (1 - fy)), (i1, j0, (1 - fx) * fy),
                    (i1, j1, fx * fy)):
        v = arr[i, j]
        if not np.isnan(v):
            num += v * w
            den += w
    return num / den if den > 0 else np.nan


@njit(cache=True, nogil=True, parallel=True)
def _bilinear_kernel(arr, col, row):  # pragma: no cover - compiled; checked against _bilinear in the tests
    """:func:`_bilinear` compiled, one point per iteration."""
    out = np.empty(col.size)
    for p in prange(col.size):
        out[p] = _bilinear_point(arr, col[p], row[p])
    return out


def _nearest_valid(dem: Dem, col: np.ndarray, row: np.ndarray, radius_m: float) -> np.ndarray:
    """Value of the nearest valid DEM cell within radius_m of each point's cell (NaN if none).

    col, row : fractional grid coordinates from _to_pixels. A windowed Dem reads, tile by tile,
    the tiles holding the points plus the search reach around them.
    """
    out = np.full(col.shape, np.nan)
    ok_pt = np.isfinite(col) & np.isfinite(row)
    if not ok_pt.any() or radius_m <= 0:
        return out
    rows, cols = dem.shape
    ci = np.where(ok_pt, np.floor(np.where(ok_pt, col, 0.0)), -10**9).astype(np.int64)
    ri = np.where(ok_pt, np.floor(np.where(ok_pt, row, 0.0)), -10**9).astype(np.int64)
    if dem.crs.is_geographic:
        _, lat = dem.transform @ (0.0, np.where(ok_pt, row, 0.0))
        cell_w = abs(dem.transform.a) * _M_PER_DEG_LON * np.cos(np.radians(np.clip(lat, -89.9, 89.9)))
        cell_h = np.full(col.shape, abs(dem.transform.e) * _M_PER_DEG_LAT)
    else:
        unit = dem.crs.linear_units_factor[1]
        cell_w = np.full(col.shape, abs(dem.transform.a) * unit)
        cell_h = np.full(col.shape, abs(dem.transform.e) * unit)
    reach = int(min(_MAX_FILL_CELLS, math.ceil(radius_m / max(1e-9, float(min(cell_w.min(), cell_h.min()))))))
    if not dem.windowed:
        _nearest_search(dem.array, ri, ci, cell_w, cell_h, reach, radius_m, out)
        return out
    # points with a grid cell within reach; each searches the tile holding its (clamped) cell + reach
    near = np.flatnonzero(ok_pt & (ri + reach >= 0) & (ri - reach < rows) & (ci + reach >= 0) & (ci - reach < cols))
    if near.size == 0:
        return out
    for sel, tile in _tiles(dem, np.clip(ri[near], 0, rows - 1), np.clip(ci[near], 0, cols - 1), halo=reach):
        pts = near[sel]
        part = np.full(pts.size, np.nan)
        _nearest_search_block(tile, ri[pts], ci[pts], cell_w[pts], cell_h[pts], reach, radius_m, part)
        out[pts] = part
    return out


def _nearest_search(arr: np.ndarray | _Tile, ri: np.ndarray, ci: np.ndarray, cell_w: np.ndarray,
                    cell_h: np.ndarray, reach: int, radius_m: float, out: np.ndarray) -> None:
    """Fill `out` with the nearest valid cell of arr within radius_m of each (ri, ci) (in place)."""
    rows, cols = arr.shape
    best = np.full(ri.shape, np.inf)
    for di in range(-reach, reach + 1):
        for dj in range(-reach, reach + 1):
            dist = np.hypot(di * cell_h, dj * cell_w)
            i, j = ri + di, ci + dj
            on = (i >= 0) & (i < rows) & (j >= 0) & (j < cols) & (dist <= radius_m) & (dist < best)
            if not on.any():
                continue
            v = arr[i[on], j[on]]
            good = ~np.isnan(v)
            idx = np.flatnonzero(on)[good]
            out[idx] = v[good]
            best[idx] = dist[idx]


def _nearest_search_block(tile: _Tile, ri: np.ndarray, ci: np.ndarray, cell_w: np.ndarray, cell_h: np.ndarray,
                          reach: int, radius_m: float, out: np.ndarray) -> None:
    """_nearest_search for the points of one tile, vectorised over the (2·reach + 1)² offsets.

    Same answer as the loop: the valid cell at the smallest distance, ties to the first offset in
    the loop's (di, dj) order (np.argmin returns the first minimum). The loop costs one numpy pass
    per offset, i.e. (2·reach + 1)² passes per tile (10,201 for a 1″ DEM); here it is one pass
    over points × offsets, in chunks of about a million.
    """
    rows, cols = tile.shape
    d = np.arange(-reach, reach + 1)
    di, dj = np.repeat(d, d.size), np.tile(d, d.size)
    chunk = max(1, 1_000_000 // di.size)
    for s in range(0, ri.size, chunk):
        sl = slice(s, s + chunk)
        dist = np.hypot(di * cell_h[sl, None], dj * cell_w[sl, None])
        i, j = ri[sl, None] + di, ci[sl, None] + dj
        on = (i >= 0) & (i < rows) & (j >= 0) & (j < cols) & (dist <= radius_m)
        v = np.full(dist.shape, np.nan)
        v[on] = tile[i[on], j[on]]
        dist[np.isnan(v)] = np.inf
        k = np.argmin(dist, axis=1)
        pts = np.arange(k.size)
        found = np.isfinite(dist[pts, k])
        part = out[sl]  # a view: written in place
        part[found] = v[pts[found], k[found]]


def _check_coverage(src: Any, path: str, region_bounds: tuple[float, float, float, float]) -> None:
    """Raise DataCoverageError if the raster does not cover the lon/lat box."""
    w, s, e, n = (float(v) for v in region_bounds)
    if not (w <= e and s <= n):
        raise InputError(path, f"region bounds {region_bounds} are not (west, south, east, north)")
    need = _bounds_to_crs((w, s, e, n), "EPSG:4326", src.crs)
    b = src.bounds  # (bottom > top for a bottom-up grid: take the extremes)
    left, right, bottom, top = min(b.left, b.right), max(b.left, b.right), min(b.bottom, b.top), max(b.bottom, b.top)
    tol = 1e-9 * max(1.0, abs(right - left))
    covered = (need[0] >= left - tol and need[2] <= right + tol
               and need[1] >= bottom - tol and need[3] <= top + tol)
    if not covered:
        hw, hs, he, hn = _bounds_to_crs((left, bottom, right, top), src.crs, "EPSG:4326")
        raise DataCoverageError(path, f"DEM covers lon {hw:.3f}–{he:.3f}, lat {hs:.3f}–{hn:.3f} but the region "
                                      f"needs lon {w:.3f}–{e:.3f}, lat {s:.3f}–{n:.3f}")


def _bounds_to_crs(bounds: tuple[float, float, float, float], src_crs: Any, dst_crs: Any) -> tuple[float, ...]:
    if _same_crs(src_crs, dst_crs):
        return tuple(float(v) for v in bounds)
    from rasterio.warp import transform_bounds

    return tuple(transform_bounds(src_crs, dst_crs, *bounds, densify_pts=21))


def _metres_in_crs_units(crs: Any, metres: float, max_abs_lat: float) -> tuple[float, float]:
    """A distance in metres as (x, y) extents in the CRS's units (degrees at the given latitude)."""
    if crs.is_geographic:
        coslat = max(math.cos(math.radians(min(max_abs_lat, 89.0))), 1e-3)
        return metres / (_M_PER_DEG_LON * coslat), metres / _M_PER_DEG_LAT
    unit = crs.linear_units_factor[1]
    return metres / unit, metres / unit


def _crs_key(crs: Any) -> str:
    return crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)


@lru_cache(maxsize=32)
def _transformer(src: str, dst: str):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


@lru_cache(maxsize=64)
def _same_crs_cached(a: str, b: str) -> bool:
    from pyproj import CRS

    return CRS.from_user_input(a) == CRS.from_user_input(b)


def _same_crs(a: Any, b: Any) -> bool:
    return _same_crs_cached(_crs_key(a), _crs_key(b))


def _working_crs_for(lon: np.ndarray, lat: np.ndarray) -> str:
    """A UTM zone for the centre of the points (used when no working CRS is given)."""
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    cx, cy = float(np.nanmean(lon)), float(np.nanmean(lat))
    info = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(cx, cy, cx, cy))
    code = f"EPSG:{info[0].code}"
    log.info("no working CRS given: using %s (UTM zone of the centre %.3f E, %.3f N)", code, cx, cy)
    return code


def _check_working_crs(working_crs: Any) -> str:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(working_crs)
    except CRSError as exc:
        raise ConfigError(None, f"working_crs {working_crs!r} is not a CRS: {exc}") from None
    if not crs.is_projected:
        raise ConfigError(None, f"working_crs {working_crs!r} must be a projected CRS in metres")
    return crs.to_wkt()


# --------------------------------------------------------------------------------------------
# Profiles: elevation samples → grades → segment times (shared by road edges and off-road legs)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Profiles:
    """Samples of many polylines concatenated; polyline p has n[p] equal segments of seg_len[p]."""

    n: np.ndarray  # int64 (P,)
    seg_len: np.ndarray  # float64 (P,)
    x: np.ndarray  # sample coordinates (S,), in the CRS handed to _profile_elevations
    y: np.ndarray

    @property
    def sample_start(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.n + 1)[:-1])).astype(np.int64)

    @property
    def seg_start(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.n)[:-1])).astype(np.int64)


@dataclass(frozen=True)
class _Elevations:
    z: np.ndarray  # (S,) filled; NaN only on void polylines
    filled: np.ndarray  # bool (S,) sample was filled (along the line or from a nearby cell)
    void: np.ndarray  # bool (P,) polyline has no elevation at all: treated as flat
    n_along: int
    n_nearest: int
    n_off_grid: int  # samples outside the DEM array (file extent or open_dem's window)


def _profile_elevations(prof: _Profiles, dem: Dem, crs: str, params: TerrainParams,
                        pixels: tuple[np.ndarray, np.ndarray] | None = None) -> _Elevations:
    """Sample the DEM at every profile point and fill holes (along the line, then nearest cell).

    ``pixels``: the samples' (col, row) on the DEM grid when the caller has them (else from prof.x/y in crs).
    """
    col, row = pixels if pixels is not None else _to_pixels(dem, prof.x, prof.y, crs)
    z = _interp(dem, col, row)
    missing0 = np.isnan(z)
    group = np.repeat(np.arange(prof.n.size), prof.n + 1)
    z = _fill_along(z, group)
    n_along = int((missing0 & ~np.isnan(z)).sum())
    n_nearest = 0
    still = np.isnan(z)
    if still.any():
        z[still] = _nearest_valid(dem, col[still], row[still], params.fill_radius_m)
        n_nearest = int((still & ~np.isnan(z)).sum())
        z = _fill_along(z, group)  # spread what the nearest cells gave along the line
        n_along += int((still & ~np.isnan(z)).sum()) - n_nearest
    void = np.isnan(np.add.reduceat(z, prof.sample_start)) if prof.n.size else np.zeros(0, bool)
    # a polyline is either fully filled or fully void after _fill_along
    return _Elevations(z=z, filled=missing0 & ~np.isnan(z), void=void, n_along=n_along, n_nearest=n_nearest,
                       n_off_grid=int((~_on_grid(dem, col, row)).sum()))


def _fill_along(z: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Fill NaN samples by linear interpolation between the valid samples of the same polyline
    (constant beyond the first/last valid one). Samples are equally spaced within a polyline."""
    miss = np.isnan(z)
    if not miss.any() or miss.all():
        return z
    s = z.size
    idx = np.arange(s)
    prev = np.maximum.accumulate(np.where(~miss, idx, -1))
    nxt = np.minimum.accumulate(np.where(~miss, idx, s)[::-1])[::-1]
    prev_ok = (prev >= 0) & (group[np.clip(prev, 0, s - 1)] == group)
    next_ok = (nxt < s) & (group[np.clip(nxt, 0, s - 1)] == group)
    out = z.copy()
    zp = z[np.clip(prev, 0, s - 1)]
    zn = z[np.clip(nxt, 0, s - 1)]
    both = miss & prev_ok & next_ok
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (idx - prev) / (nxt - prev)
    out[both] = (zp + (zn - zp) * t)[both]
    only_prev = miss & prev_ok & ~next_ok
    out[only_prev] = zp[only_prev]
    only_next = miss & next_ok & ~prev_ok
    out[only_next] = zn[only_next]
    return out


def _segment_counts(length: np.ndarray, spacing: float) -> np.ndarray:
    """Equal segments of at most `spacing` (a length a hair over a multiple, from projection
    round-off, does not add a segment)."""
    return np.maximum(1, np.ceil(length / spacing * (1 - 1e-9))).astype(np.int64)


def _segment_grades(prof: _Profiles, z: np.ndarray, window_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Grade of every segment over a window of ~window_m centred on it (clamped to its polyline).

    Returns (grade, segment mid elevation), both (T,) with T = Σ n; NaN elevations give grade 0.
    """
    n, seg_len = prof.n, prof.seg_len
    seg_poly = np.repeat(np.arange(n.size), n)
    j = np.arange(int(n.sum())) - prof.seg_start[seg_poly]
    with np.errstate(divide="ignore", invalid="ignore"):  # the window spans 2·half + 1 segments ≥ window_m
        half = np.where(seg_len > 0, np.ceil(np.maximum(window_m - seg_len, 0.0) / (2 * seg_len) - 1e-9), 0.0)
    half = half.astype(np.int64)[seg_poly]
    ns = n[seg_poly]
    lo = np.maximum(0, j - half)
    hi = np.minimum(ns, j + 1 + half)
    base = prof.sample_start[seg_poly]
    run = (hi - lo) * seg_len[seg_poly]
    with np.errstate(divide="ignore", invalid="ignore"):
        grade = (z[base + hi] - z[base + lo]) / run
    grade = np.where(np.isfinite(grade), grade, 0.0)
    mid = 0.5 * (z[base + j] + z[base + j + 1])
    return grade, mid


# --------------------------------------------------------------------------------------------
# Road edges
# --------------------------------------------------------------------------------------------
def add_edge_travel_times(G, dem: Dem | None = None, params: TerrainParams | None = None,
                          working_crs: str | None = None):
    """Add direction-specific, terrain-aware travel times to every directed edge.

    Each edge's geometry (oriented u→v) is cut into equal segments of about
    params.sample_spacing_m, the DEM is sampled at the cut points, and every segment gets the
    grade over a window of params.grade_window_m in the direction of travel. Segment speed =
    speed_kph × grade_speed_factor(grade) × altitude_speed_factor(elevation); the edge's time is
    the sum of segment length / speed. The twin v→u edge is computed from its own orientation,
    so it sees the negated grades. Without a DEM the times are flat: length / speed.

    Sets on every edge: `travel_time` (s), `flat_time` (s, length / speed_kph),
    `terrain_factor` (travel_time / flat_time), `grade_mean` (length-weighted signed grade),
    `grade_abs_max`, `elev_mean`, `elev_max` (m; NaN without elevation), `dem_filled` (samples
    whose elevation was filled), `dem_void` (no elevation at all: driven as flat at sea level),
    and `time_profile` = (cumulative metres, cumulative seconds) from u, for split_time.
    A summary goes to G.graph["terrain"] and the log.

    Parameters
    ----------
    G : networkx.MultiDiGraph in the osmnx format (WGS84 nodes x/y; edges with `length` m,
        `speed_kph`, optional `geometry` LineString in WGS84 — a straight line u→v if absent).
    dem : from open_dem, or None for flat times.
    params : TerrainParams (defaults if None).
    working_crs : projected CRS in metres for cutting geometries (the region's working_crs);
        None picks the UTM zone of the graph's centre.

    Returns
    -------
    G, modified in place.

    Raises
    ------
    InputError : an edge without a positive `length` or `speed_kph`.
    """
    params = params or TerrainParams()
    edges = list(G.edges(keys=True, data=True))
    m = len(edges)
    graph_crs = G.graph.get("crs", "EPSG:4326")
    length = np.empty(m)
    speed = np.empty(m)
    for i, (u, v, k, d) in enumerate(edges):
        length[i] = _edge_number(d, "length", (u, v, k), allow_zero=True)
        speed[i] = _edge_number(d, "speed_kph", (u, v, k))
    flat = length / (speed / 3.6)
    if m == 0:
        G.graph["terrain"] = {"edges": 0, "dem": None if dem is None else dem.path}
        return G
    if dem is None:
        for (u, v, k, d), L, t in zip(edges, length, flat):
            d.update(travel_time=float(t), flat_time=float(t), terrain_factor=1.0, grade_mean=0.0,
                     grade_abs_max=0.0, elev_mean=float("nan"), elev_max=float("nan"), dem_filled=0,
                     dem_void=True, time_profile=(np.array([0.0, L]), np.array([0.0, t])))
        G.graph["terrain"] = {"edges": m, "dem": None, "params": params.to_dict()}
        log.info("terrain: no DEM given, %d edges get flat times length / speed (no grade or altitude applied)", m)
        return G

    import shapely

    geoms = _edge_geometries(G, edges)
    vxy, vidx = shapely.get_coordinates(geoms, return_index=True)  # vertices in the graph's CRS
    if working_crs is None:
        lon, lat = vxy[:, 0], vxy[:, 1]
        if not _same_crs(graph_crs, "EPSG:4326"):
            lon, lat = _transformer(_crs_key(graph_crs), _crs_key("EPSG:4326")).transform(lon, lat)
        working_crs = _working_crs_for(np.asarray(lon), np.asarray(lat))
    wkt = _check_working_crs(working_crs)
    wx, wy = _transformer(_crs_key(graph_crs), wkt).transform(vxy[:, 0], vxy[:, 1])
    along, first, last = _vertex_distances(np.asarray(wx), np.asarray(wy), vidx, m)
    n = _segment_counts(along[last], params.sample_spacing_m)
    seg_len = length / n
    sample_poly = np.repeat(np.arange(m), n + 1)
    k = np.arange(int((n + 1).sum())) - np.concatenate(([0], np.cumsum(n + 1)[:-1]))[sample_poly]
    x, y = _points_along(vxy, along, first, last, sample_poly, k / n[sample_poly])
    prof = _Profiles(n=n, seg_len=seg_len, x=x, y=y)

    elev = _profile_elevations(prof, dem, graph_crs, params)
    grade, mid = _segment_grades(prof, elev.z, params.grade_window_m)
    capped = int((np.abs(grade) > params.grade_cap).sum())
    grade = np.clip(grade, -params.grade_cap, params.grade_cap)
    seg_poly = np.repeat(np.arange(m), n)
    factor = grade_speed_factor(grade, params) * altitude_speed_factor(mid, params)
    seg_time = seg_len[seg_poly] / (speed[seg_poly] / 3.6 * factor)

    seg_start, sample_start = prof.seg_start, prof.sample_start
    travel = np.add.reduceat(seg_time, seg_start)
    grade_mean = np.add.reduceat(grade, seg_start) / n
    grade_abs_max = np.maximum.reduceat(np.abs(grade), seg_start)
    elev_mean = np.add.reduceat(elev.z, sample_start) / (n + 1)
    elev_max = np.maximum.reduceat(elev.z, sample_start)
    filled = np.add.reduceat(elev.filled.astype(np.int64), sample_start)
    cum = np.cumsum(seg_time)
    before = np.concatenate(([0.0], cum))[seg_start]  # time accumulated before each edge
    cum_time = np.zeros(sample_poly.size)
    cum_time[k > 0] = cum - np.repeat(before, n)
    cum_dist = k * seg_len[sample_poly]
    sample_end = (sample_start + n + 1).tolist()

    with np.errstate(invalid="ignore", divide="ignore"):
        tf = np.where(flat > 0, travel / flat, 1.0)
    columns = zip(edges, travel.tolist(), flat.tolist(), tf.tolist(), grade_mean.tolist(), grade_abs_max.tolist(),
                  elev_mean.tolist(), elev_max.tolist(), filled.tolist(), elev.void.tolist(), sample_start.tolist(),
                  sample_end)
    for (_, _, _, d), tt, ft, f, gm, ga, em, ex, fl, vd, s0, s1 in columns:
        d.update(travel_time=tt, flat_time=ft, terrain_factor=f, grade_mean=gm, grade_abs_max=ga, elev_mean=em,
                 elev_max=ex, dem_filled=fl, dem_void=vd, time_profile=(cum_dist[s0:s1], cum_time[s0:s1]))

    summary = {
        "edges": m, "dem": dem.path, "samples": int(sample_poly.size), "filled_along_edge": elev.n_along,
        "filled_nearest_cell": elev.n_nearest, "void_edges": int(elev.void.sum()), "capped_segments": capped,
        "off_grid_samples": elev.n_off_grid,
        "terrain_factor_mean": float(np.average(tf, weights=np.maximum(length, 1e-9))),
        "params": params.to_dict(),
    }
    G.graph["terrain"] = summary
    log.info("terrain: %d edges, %s samples every ≤%.0f m, grade over %.0f m; DEM holes filled: %d samples "
             "along their edge, %d from the nearest cell within %.0f m; %d edges without elevation driven flat "
             "(dem_void); %d segments capped at ±%.0f%% grade; length-weighted terrain factor %.3f",
             m, f"{sample_poly.size:,}", params.sample_spacing_m, params.grade_window_m, elev.n_along,
             elev.n_nearest, params.fill_radius_m, summary["void_edges"], capped, 100 * params.grade_cap,
             summary["terrain_factor_mean"])
    if summary["void_edges"]:
        log.warning("terrain: %d edges have no DEM elevation within %.0f m and were given flat times",
                    summary["void_edges"], params.fill_radius_m)
    if elev.n_off_grid:
        log.warning("terrain: %d road samples lie outside the DEM grid read from %s: they were filled from "
                    "neighbours or driven flat. The roads reach [roads] clip_buffer_km beyond the region: use a DEM "
                    "that extends that far, or lower clip_buffer_km in the region config", elev.n_off_grid,
                    Path(dem.path).name)
    return G


def split_time(profile: tuple[np.ndarray, np.ndarray], distance_m: np.ndarray | float) -> np.ndarray | float:
    """Seconds from an edge's start (u) to a distance along it, from its `time_profile`.

    Parameters
    ----------
    profile : (cumulative metres, cumulative seconds) as stored by add_edge_travel_times.
    distance_m : metres from u (clamped to the edge).

    Returns
    -------
    Seconds (exact: speed is constant within a profile segment).
    """
    dist, secs = profile
    out = np.interp(np.asarray(distance_m, dtype=np.float64), dist, secs)
    return float(out) if out.ndim == 0 else out


def edge_time_to_fraction(G, edges: Iterable[tuple[Any, Any, Any]], fractions: np.ndarray) -> np.ndarray:
    """Seconds from each edge's u to a fraction (0–1) of its length, e.g. a snap point.

    Parameters
    ----------
    G : graph after add_edge_travel_times.
    edges : (u, v, key) per query.
    fractions : fraction of the edge length from u, one per edge.

    Returns
    -------
    float64 array of seconds; time to v is fraction 1 → travel_time.
    """
    fractions = np.clip(np.asarray(fractions, dtype=np.float64), 0.0, 1.0)
    out = np.empty(fractions.shape)
    for i, (u, v, k) in enumerate(edges):
        d = G.edges[u, v, k]
        out[i] = split_time(d["time_profile"], fractions[i] * d["length"])
    return out


def _edge_number(d: Mapping[str, Any], key: str, edge: tuple, allow_zero: bool = False) -> float:
    value = d.get(key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(None, f"road edge {edge} has no numeric '{key}' (got {d.get(key)!r})") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InputError(None, f"road edge {edge} has {key} = {value!r}; it must be "
                               f"{'≥ 0' if allow_zero else '> 0'}")
    return value


def _edge_geometries(G, edges: list) -> np.ndarray:
    """Edge LineStrings oriented u→v (straight lines where absent; reversed ones are flipped)."""
    import shapely

    nodes = G.nodes
    geoms = np.empty(len(edges), dtype=object)
    ux = np.empty(len(edges))
    uy = np.empty(len(edges))
    vx = np.empty(len(edges))
    vy = np.empty(len(edges))
    for i, (u, v, _, d) in enumerate(edges):
        ux[i], uy[i] = nodes[u]["x"], nodes[u]["y"]
        vx[i], vy[i] = nodes[v]["x"], nodes[v]["y"]
        geoms[i] = d.get("geometry")
    absent = np.array([g is None for g in geoms], dtype=bool)
    if absent.any():
        ends = (np.column_stack([ux[absent], uy[absent]]), np.column_stack([vx[absent], vy[absent]]))
        coords = np.stack(ends, axis=1)
        geoms[absent] = shapely.linestrings(coords)
    not_line = shapely.get_type_id(geoms) != 1
    if (not_line | shapely.is_empty(geoms)).any():
        i = int(np.flatnonzero(not_line | shapely.is_empty(geoms))[0])
        u, v, k, _ = edges[i]
        kind = "an empty geometry" if shapely.is_empty(geoms[i]) else f"a {geoms[i].geom_type}"
        raise InputError(None, f"road edge {(u, v, k)} has {kind}; edges need a LineString u→v")
    start = shapely.get_coordinates(shapely.get_point(geoms, 0))
    end = shapely.get_coordinates(shapely.get_point(geoms, -1))
    d_keep = np.hypot(start[:, 0] - ux, start[:, 1] - uy) + np.hypot(end[:, 0] - vx, end[:, 1] - vy)
    d_flip = np.hypot(end[:, 0] - ux, end[:, 1] - uy) + np.hypot(start[:, 0] - vx, start[:, 1] - vy)
    flip = d_flip < d_keep
    if flip.any():
        geoms[flip] = shapely.reverse(geoms[flip])
        log.warning("terrain: %d edge geometries ran v→u and were reversed to run u→v", int(flip.sum()))
    return geoms


def _vertex_distances(x: np.ndarray, y: np.ndarray, vidx: np.ndarray,
                      nlines: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance of every vertex from its line's start, and each line's first/last vertex index.

    x, y are the vertices of all lines (metric CRS), vidx the line each belongs to (sorted).
    """
    step = np.hypot(np.diff(x), np.diff(y))
    step[vidx[1:] != vidx[:-1]] = 0.0  # no length across line boundaries
    cum = np.concatenate(([0.0], np.cumsum(step)))
    first = np.searchsorted(vidx, np.arange(nlines))
    last = np.searchsorted(vidx, np.arange(nlines), side="right") - 1
    return cum - cum[first][vidx], first, last


def _points_along(vxy: np.ndarray, along: np.ndarray, first: np.ndarray, last: np.ndarray, line_of: np.ndarray,
                  fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points at `fraction` (0–1) of the metric length of lines[line_of] (vectorised linear
    referencing); located with the metric distances, returned in the vertices' own CRS."""
    total = along[last]
    offset = np.concatenate(([0.0], np.cumsum(total + 1.0)[:-1]))  # lines apart on one axis
    line_of_vertex = np.repeat(np.arange(first.size), last - first + 1)
    key = along + offset[line_of_vertex]
    target = fraction * total[line_of] + offset[line_of]
    lo, hi = first[line_of], np.maximum(last[line_of] - 1, first[line_of])
    pos = np.clip(np.searchsorted(key, target, side="right") - 1, lo, hi)
    nxt = np.minimum(pos + 1, last[line_of])
    span = key[nxt] - key[pos]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.clip(np.where(span > 0, (target - key[pos]) / span, 0.0), 0.0, 1.0)
    return vxy[pos, 0] + t * (vxy[nxt, 0] - vxy[pos, 0]), vxy[pos, 1] + t * (vxy[nxt, 1] - vxy[pos, 1])


# --------------------------------------------------------------------------------------------
# Off-road legs
# --------------------------------------------------------------------------------------------
#: Spacing (m) of the knots at which a straight leg's points are projected onto the DEM grid; between knots
#: the grid position is interpolated linearly (on Tibet's Albers grid the samples move by under 0.4 m, against
#: DEM cells of ~900 m).
LEG_KNOT_SPACING_M = 5000.0


def _leg_pixels(dem: Dem, crs: str, fx: np.ndarray, fy: np.ndarray, tx: np.ndarray, ty: np.ndarray,
                leg: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DEM grid (col, row) of the samples at fraction ``t`` of straight legs ``leg`` from (fx, fy) to (tx, ty).

    The legs are straight in ``crs``; only knots every ``LEG_KNOT_SPACING_M`` are transformed into the DEM's
    CRS (one pyproj call for a few points instead of one per 200 m sample), the samples between them are
    placed linearly on the grid.
    """
    m = np.maximum(1, np.ceil(np.hypot(tx - fx, ty - fy) / LEG_KNOT_SPACING_M)).astype(np.int64)
    kleg = np.repeat(np.arange(m.size), m + 1)
    kstart = np.concatenate(([0], np.cumsum(m + 1)[:-1]))
    u = (np.arange(int((m + 1).sum())) - kstart[kleg]) / m[kleg]
    kc, kr = _to_pixels(dem, fx[kleg] + (tx - fx)[kleg] * u, fy[kleg] + (ty - fy)[kleg] * u, crs)
    pos = t * m[leg]
    a = np.minimum(np.floor(pos).astype(np.int64), m[leg] - 1)
    f = pos - a
    k0 = kstart[leg] + a
    return kc[k0] + f * (kc[k0 + 1] - kc[k0]), kr[k0] + f * (kr[k0 + 1] - kr[k0])


def offroad_leg_times(from_lon: np.ndarray, from_lat: np.ndarray, to_lon: np.ndarray, to_lat: np.ndarray,
                      dem: Dem | None, params: TerrainParams | None = None,
                      working_crs: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Walking time of straight off-road legs (e.g. settlement → its snap point on a road).

    Each leg is cut into equal segments of about params.sample_spacing_m; the DEM grade of each
    segment in the direction of travel (windowed as for roads) gives Tobler's speed ×
    offroad_speed_factor, floored at offroad_min_kph; the walked length is the geodesic
    straight-line length × offroad_detour_factor. Without a DEM the legs are flat (Tobler at
    slope 0, 5.04 km/h with the defaults).

    Parameters
    ----------
    from_lon, from_lat, to_lon, to_lat : degrees (WGS84), one entry per leg, from → to.
    dem : from open_dem, or None.
    params : TerrainParams (defaults if None).
    working_crs : projected CRS for placing the samples; None picks a UTM zone.

    Returns
    -------
    (length_m, minutes) : walked length (straight × detour) in metres and time in minutes.

    Raises
    ------
    InputError : a leg with non-finite coordinates (row = 1-based leg number).
    """
    from pyproj import Geod

    params = params or TerrainParams()
    flon, flat_, tlon, tlat = (np.atleast_1d(np.asarray(a, dtype=np.float64)).ravel()
                               for a in (from_lon, from_lat, to_lon, to_lat))
    if not flon.size == flat_.size == tlon.size == tlat.size:
        raise InputError(None, "off-road legs: from/to coordinate arrays differ in length")
    bad = ~(np.isfinite(flon) & np.isfinite(flat_) & np.isfinite(tlon) & np.isfinite(tlat))
    if bad.any():
        raise InputError(None, "off-road leg has non-finite coordinates", row=int(np.flatnonzero(bad)[0]) + 1)
    nlegs = flon.size
    if nlegs == 0:
        return np.zeros(0), np.zeros(0)
    _, _, straight = Geod(ellps="WGS84").inv(flon, flat_, tlon, tlat)
    straight = np.asarray(straight, dtype=np.float64)
    walked = straight * params.offroad_detour_factor
    if dem is None:
        kph = max(params.offroad_min_kph, tobler_kph(0.0, params) * params.offroad_speed_factor)
        return walked, walked / (kph / 3.6) / 60.0

    if working_crs is None:
        working_crs = _working_crs_for(np.concatenate([flon, tlon]), np.concatenate([flat_, tlat]))
    wkt = _check_working_crs(working_crs)
    tr = _transformer(_crs_key("EPSG:4326"), wkt)
    fx, fy = (np.asarray(a) for a in tr.transform(flon, flat_))
    tx, ty = (np.asarray(a) for a in tr.transform(tlon, tlat))
    n = _segment_counts(straight, params.sample_spacing_m)
    leg = np.repeat(np.arange(nlegs), n + 1)
    start = np.concatenate(([0], np.cumsum(n + 1)[:-1]))
    t = (np.arange(int((n + 1).sum())) - start[leg]) / n[leg]
    col, row = _leg_pixels(dem, wkt, fx, fy, tx, ty, leg, t)
    seg_len = straight / n
    minutes = np.full(nlegs, np.nan)
    arr = None if dem.windowed else dem.array
    if isinstance(arr, np.ndarray) and arr.ndim == 2 and arr.dtype in (np.float32, np.float64):
        minutes = _leg_minutes_kernel(np.ascontiguousarray(arr), col, row, start, n, seg_len, params.grade_window_m,
                                      params.tobler_max_kph, params.tobler_decay, params.tobler_slope_offset,
                                      params.offroad_speed_factor, params.offroad_min_kph,
                                      params.offroad_detour_factor)
    slow = np.flatnonzero(np.isnan(minutes))  # legs over a DEM hole (filled as for roads), or a windowed DEM
    if len(slow):
        on = np.isin(leg, slow)
        prof = _Profiles(n=n[slow], seg_len=seg_len[slow], x=(fx[leg] + (tx - fx)[leg] * t)[on],
                         y=(fy[leg] + (ty - fy)[leg] * t)[on])
        elev = _profile_elevations(prof, dem, wkt, params, pixels=(col[on], row[on]))
        grade, _ = _segment_grades(prof, elev.z, params.grade_window_m)
        kph = np.maximum(params.offroad_min_kph, tobler_kph(grade, params) * params.offroad_speed_factor)
        seg_leg = np.repeat(np.arange(len(slow)), prof.n)
        seg_time = (prof.seg_len[seg_leg] * params.offroad_detour_factor) / (kph / 3.6)
        minutes[slow] = np.add.reduceat(seg_time, prof.seg_start) / 60.0
        log.debug("off-road legs: %d legs, median %.0f m walked; %d over DEM holes: %d samples filled along the "
                  "leg, %d from the nearest cell; %d legs without elevation walked as flat", nlegs,
                  float(np.median(walked)), len(slow), elev.n_along, elev.n_nearest, int(elev.void.sum()))
    return walked, minutes


@njit(cache=True, nogil=True, parallel=True)
def _leg_minutes_kernel(arr, col, row, start, n, seg_len, window_m, kph_max, decay, offset, speed_factor,
                        min_kph, detour):  # pragma: no cover - compiled; checked against the numpy path in tests
    """Minutes of each straight leg from its samples' grid positions: the numpy path of
    :func:`offroad_leg_times` (bilinear elevations, windowed grade, Tobler) in one pass per leg.

    NaN for a leg with a sample on a DEM hole: those go the numpy way, which fills holes as for roads.
    """
    out = np.full(n.size, np.nan)
    for i in prange(n.size):
        m = n[i]
        s0 = start[i]
        z = np.empty(m + 1)
        hole = False
        for k in range(m + 1):
            z[k] = _bilinear_point(arr, col[s0 + k], row[s0 + k])
            hole |= np.isnan(z[k])
        if hole:
            continue
        sl = seg_len[i]
        half = 0
        if sl > 0:
            half = int(math.ceil(max(window_m - sl, 0.0) / (2 * sl) - 1e-9))
        total = 0.0
        for j in range(m):
            lo = max(0, j - half)
            hi = min(m, j + 1 + half)
            run = (hi - lo) * sl
            grade = (z[hi] - z[lo]) / run if run > 0 else 0.0
            if not np.isfinite(grade):
                grade = 0.0
            kph = kph_max * math.exp(-decay * abs(grade + offset)) * speed_factor
            if kph < min_kph:
                kph = min_kph
            total += (sl * detour) / (kph / 3.6)
        out[i] = total / 60.0
    return out
