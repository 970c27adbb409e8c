"""Elevation: reading a DEM (whole or tile by tile), checking it, and sampling it at points.

The DEM half of what was ``terrain.py`` (as osmnx keeps ``elevation.py``): :func:`open_dem` reads the
region's window of a GeoTIFF (windowed mode for grids beyond the memory limit), :func:`sample_dem` and the
private samplers interpolate it bilinearly (compiled for grids in memory), and the CRS helpers place points
on its grid. :mod:`geoaccess.terrain` turns the samples into grades, speeds and times.
"""
from __future__ import annotations

import logging
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

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
    """The working CRS as WKT, checked as the config checks it (:func:`geoaccess._crs.check_metres`)."""
    from ._crs import check_metres

    return check_metres(working_crs, where=f"working_crs {working_crs!r}").to_wkt()
