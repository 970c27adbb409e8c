"""Friction surface and compiled multi-source cost-distance over a DEM grid (raster engine)."""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from .errors import ConfigError, InputError
from .schema import LEVEL_GROUPS
from .terrain import TerrainParams

log = logging.getLogger("geoaccess")

_TERRAIN_DEFAULTS = TerrainParams()
TOBLER_DEFAULTS: dict[str, float] = {"base": _TERRAIN_DEFAULTS.tobler_max_kph, "a": _TERRAIN_DEFAULTS.tobler_decay,
                                     "b": _TERRAIN_DEFAULTS.tobler_slope_offset}
"""Tobler's hiking function: speed_kph = base * exp(-a * |slope + b|) (slope = rise / run); the coefficients are
``terrain.TerrainParams``'s, their one definition."""

OUT_NODATA = -9999.0
"""Nodata value of the travel-time GeoTIFFs (barriers and unreachable cells)."""

_MIN_PER_M_AT_1_KPH = 0.06  # minutes to cover one metre at 1 km/h


@dataclass(frozen=True)
class Surface:
    """A friction surface on a DEM grid.

    Attributes
    ----------
    elevation : float32 (rows, cols) metres; NaN marks a barrier (no data).
    road_kph : float32 (rows, cols) road speed burned in; 0 off road.
    slope : float32 (rows, cols) slope magnitude (rise / run) for isotropic runs.
    dx_m, dy_m : float64 (rows,) east-west and north-south cell size of each row, metres.
    transform : affine.Affine of the grid; crs : its CRS as a string.
    tobler : Tobler parameters (base, a, b).
    offroad_max_kph, offroad_min_kph : cap and floor on the off-road speed.
    """

    elevation: np.ndarray
    road_kph: np.ndarray
    slope: np.ndarray
    dx_m: np.ndarray
    dy_m: np.ndarray
    transform: object
    crs: str
    tobler: Mapping[str, float]
    offroad_max_kph: float
    offroad_min_kph: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.elevation.shape

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask of passable cells."""
        return ~np.isnan(self.elevation)

    def offroad_kph(self, slope: np.ndarray | float) -> np.ndarray:
        """Off-road speed (km/h) for a slope (rise / run, signed in the direction of travel)."""
        t = self.tobler
        speed = t["base"] * np.exp(-t["a"] * np.abs(np.asarray(slope, dtype=np.float64) + t["b"]))
        return np.clip(speed, self.offroad_min_kph, self.offroad_max_kph)


@dataclass(frozen=True)
class LevelTimes:
    """Cost-distance result for one facility level group."""

    minutes: np.ndarray        # float32 (rows, cols); NaN at barriers, inf where unreachable
    nearest: np.ndarray        # int32 (rows, cols) index into facility_ids; -1 where none
    facility_ids: np.ndarray   # facility_id of each source, in source order
    path: Path | None          # the GeoTIFF written, if any


def read_dem(path: str | Path) -> tuple[np.ndarray, object, str, float | None]:
    """Read band 1 of a DEM GeoTIFF.

    Returns
    -------
    (array, transform, crs string, nodata)
    """
    import rasterio

    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(path, "DEM has no CRS")
            return src.read(1), src.transform, src.crs.to_string(), src.nodata
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(path, f"cannot read DEM: {exc}") from None


def cell_sizes(transform, shape: tuple[int, int], crs: str = "EPSG:4326") -> tuple[np.ndarray, np.ndarray]:
    """East-west and north-south cell size (metres) of each row.

    Geographic grids use the WGS84 ellipsoid lengths of a degree at each row's centre latitude
    (series to O(e^6)); projected grids use the transform's pixel size.
    """
    from ._crs import is_geographic, metres_per_degree

    rows = shape[0]
    if not is_geographic(crs):
        return np.full(rows, abs(transform.a)), np.full(rows, abs(transform.e))
    deg_lon, deg_lat = metres_per_degree(transform.f + transform.e * (np.arange(rows) + 0.5))
    return deg_lon * abs(transform.a), deg_lat * abs(transform.e)


@njit(cache=True)
def _slope_magnitude(z, dx, dy):
    """|grad z| by central differences, one-sided next to barriers and edges; 0 on isolated cells."""
    rows, cols = z.shape
    out = np.empty_like(z)
    for r in range(rows):
        for c in range(cols):
            zc = z[r, c]
            if math.isnan(zc):
                out[r, c] = np.nan
                continue
            grad2 = 0.0
            for axis in range(2):  # 0: east-west, 1: north-south
                lo = hi = zc
                steps = 0
                for side in (-1, 1):
                    rr = r + side if axis == 1 else r
                    cc = c + side if axis == 0 else c
                    if 0 <= rr < rows and 0 <= cc < cols and not math.isnan(z[rr, cc]):
                        steps += 1
                        if side == 1:
                            hi = z[rr, cc]
                        else:
                            lo = z[rr, cc]
                if steps > 0:
                    g = (hi - lo) / (steps * (dx[r] if axis == 0 else dy[r]))
                    grad2 += g * g
            out[r, c] = math.sqrt(grad2)
    return out


def burn_roads(roads, transform, shape: tuple[int, int], crs: str = "EPSG:4326") -> np.ndarray:
    """Rasterise road lines at their `speed_kph` (float32, 0 off road); the fastest road wins a cell."""
    from rasterio import features

    out = np.zeros(shape, dtype=np.float32)
    if roads is None or len(roads) == 0:
        return out
    if "speed_kph" not in roads.columns:
        raise InputError(None, "roads have no 'speed_kph' column")
    if roads.crs is not None and roads.crs != crs:
        roads = roads.to_crs(crs)
    roads = roads[roads.geometry.notna() & ~roads.geometry.is_empty]
    speed = roads["speed_kph"].to_numpy(dtype=float)
    if not np.all(np.isfinite(speed) & (speed > 0)):
        raise InputError(None, "roads: speed_kph must be a positive number on every line")
    order = np.argsort(speed, kind="stable")  # slowest first, so the fastest is burned last
    shapes = zip(roads.geometry.to_numpy()[order], speed[order])
    return features.rasterize(shapes, out=out, transform=transform, all_touched=False)


def friction_surface(
    dem_array: np.ndarray,
    transform,
    *,
    roads=None,
    tobler: Mapping[str, float] | None = None,
    offroad_max_kph: float | None = None,
    offroad_min_kph: float = 0.0,
    nodata: float | None = None,
    crs: str = "EPSG:4326",
) -> Surface:
    """Build a friction surface: Tobler off-road speeds from the DEM, roads burned in, no data = barrier.

    Elevation is kept (not a speed per cell) so that anisotropic runs can take the slope of each
    move; roads take precedence over off-road speed in their cells but stay barriers on no-data cells.

    Parameters
    ----------
    dem_array : elevation (metres), any numeric dtype; `nodata` cells and NaN are barriers.
    transform : affine transform of the grid.
    roads : GeoDataFrame of lines with `speed_kph` (reprojected to `crs` if needed), or None.
    tobler : overrides of TOBLER_DEFAULTS (`base` km/h, `a`, `b`).
    offroad_max_kph : cap on the off-road speed; None = Tobler's peak (`base`).
    offroad_min_kph : floor on the off-road speed (0 = none).
    nodata : the DEM's nodata value.
    crs : CRS of the grid; geographic grids get per-row cell sizes in metres.

    Returns
    -------
    Surface
    """
    params = dict(TOBLER_DEFAULTS)
    unknown = set(tobler or {}) - set(params)
    if unknown:
        raise ConfigError(None, f"tobler: unknown parameter(s) {sorted(unknown)}; expected base, a, b")
    params.update({k: float(v) for k, v in (tobler or {}).items()})
    if params["base"] <= 0 or params["a"] < 0:
        raise ConfigError(None, "tobler: base must be > 0 and a >= 0")
    cap = params["base"] if offroad_max_kph is None else float(offroad_max_kph)
    if cap <= 0 or not 0 <= offroad_min_kph <= cap:
        raise ConfigError(None, "off-road speeds: need offroad_max_kph > 0 and 0 <= offroad_min_kph <= offroad_max_kph")
    dem = np.asarray(dem_array)
    if dem.ndim != 2:
        raise InputError(None, f"DEM must be a 2-D array, got shape {dem.shape}")
    z = dem.astype(np.float32)
    if nodata is not None:
        z[dem == nodata] = np.nan
    dx, dy = cell_sizes(transform, z.shape, crs)
    road = burn_roads(roads, transform, z.shape, crs)
    road[np.isnan(z)] = 0.0
    log.info("friction surface: %d x %d cells, %d barrier, %d road cells; Tobler %s, off-road %.1f-%.1f km/h",
             z.shape[0], z.shape[1], int(np.isnan(z).sum()), int((road > 0).sum()), params, offroad_min_kph, cap)
    return Surface(z, road, _slope_magnitude(z, dx, dy), dx, dy, transform, crs, params, cap, float(offroad_min_kph))


def friction_params(terrain) -> dict:
    """friction_surface keyword arguments matching the network engine's off-road legs.

    Parameters
    ----------
    terrain : geoaccess.terrain.TerrainParams (Tobler coefficients, offroad_speed_factor, offroad_min_kph).

    Returns
    -------
    dict with `tobler`, `offroad_max_kph`, `offroad_min_kph`. The legs' detour factor has no raster
    counterpart: the grid path itself bends round the terrain.
    """
    base = terrain.tobler_max_kph * terrain.offroad_speed_factor
    return {"tobler": {"base": base, "a": terrain.tobler_decay, "b": terrain.tobler_slope_offset},
            "offroad_max_kph": base, "offroad_min_kph": min(terrain.offroad_min_kph, base)}


def _move_table(dx: np.ndarray, dy: np.ndarray, knight_moves: bool):
    """Neighbour offsets (dr, dc) and the length (m) of each move from each row."""
    offsets = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    if knight_moves:
        offsets += [(-2, -1), (-2, 1), (2, -1), (2, 1), (-1, -2), (-1, 2), (1, -2), (1, 2)]
    dr = np.array([o[0] for o in offsets], dtype=np.int64)
    dc = np.array([o[1] for o in offsets], dtype=np.int64)
    rows = len(dx)
    r = np.arange(rows)[:, None]
    r2 = np.clip(r + dr[None, :], 0, rows - 1)
    # horizontal and vertical extent measured at the mid-latitude of the move
    h = np.abs(dc)[None, :] * 0.5 * (dx[r] + dx[r2])
    v = np.abs(dr)[None, :] * 0.5 * (dy[r] + dy[r2])
    return dr, dc, np.hypot(h, v)


@njit(cache=True, inline="always")
def knight_blocked(zf, r, col, cols, drk, dck):
    """True when a knight's move (drk, dck) from cell (r, col) passes between two cells one of which is a barrier."""
    if drk == 2 or drk == -2:
        m1 = (r + drk // 2) * cols + col
        m2 = m1 + dck
    else:
        m1 = r * cols + col + dck // 2
        m2 = m1 + drk * cols
    return math.isnan(zf[m1]) or math.isnan(zf[m2])


# The heap holds one int64 per queued cell: the float32 bits of its time (which order like the
# times, as times are >= 0) in the high half and the cell index in the low half, so one integer
# comparison orders by time, then by cell (deterministic ties), and one load fetches both.
_CELL_MASK = 0xFFFFFFFF


@njit(cache=True)
def _heap_item(minutes, cell):
    return (np.int64(np.float32(minutes).view(np.int32)) << 32) | cell


@njit(cache=True)
def _sift_up(heap, pos, i, item):
    while i > 0:
        parent = (i - 1) >> 2
        above = heap[parent]
        if above <= item:
            break
        heap[i] = above
        pos[above & _CELL_MASK] = i
        i = parent
    heap[i] = item
    pos[item & _CELL_MASK] = i


@njit(cache=True)
def _sift_down(heap, pos, item, size):
    i = 0
    while True:
        first = 4 * i + 1
        if first >= size:
            break
        best = first
        least = heap[first]
        for child in range(first + 1, min(first + 4, size)):
            if heap[child] < least:
                best = child
                least = heap[child]
        if least >= item:
            break
        heap[i] = least
        pos[least & _CELL_MASK] = i
        i = best
    heap[i] = item
    pos[item & _CELL_MASK] = i


@njit(cache=True)
def _cost_distance_kernel(elev, road_kph, cell_pace, dr, dc, lengths, src, anisotropic,
                          tob_a, tob_b, tob_pace0, pace_min, pace_max):
    """Multi-source Dijkstra over the implicit grid with an indexed 4-ary heap (decrease-key).

    Relaxes edges in reverse: settling cell c gives neighbour n the time n -> c, so the result is
    the travel time from every cell to its nearest source. Move cost = length * (p_n + p_c) / 2 with
    p the pace (min/m) of each cell: road pace on roads, else Tobler on the slope of the move n -> c
    (anisotropic) or the cell's precomputed pace (isotropic; `cell_pace` is unused otherwise).
    """
    rows, cols = elev.shape
    n_cells = rows * cols
    nmoves = dr.shape[0]
    knight = nmoves > 8
    zf = elev.ravel()
    rk = road_kph.ravel()
    cp = cell_pace.ravel()
    dist = np.empty(n_cells, dtype=np.float32)
    label = np.empty(n_cells, dtype=np.int32)
    pos = np.empty(n_cells, dtype=np.int32)  # heap slot; -1 never queued, -2 settled or barrier
    for i in range(n_cells):
        barrier = math.isnan(zf[i])
        dist[i] = np.nan if barrier else np.inf
        label[i] = -1
        pos[i] = -2 if barrier else -1
    heap = np.empty(n_cells, dtype=np.int64)  # only the frontier's pages are ever touched
    size = 0
    for s in range(src.shape[0]):
        i = src[s]
        if pos[i] == -1:  # sources start at 0 minutes: their order in the heap is free
            dist[i] = 0.0
            label[i] = s
            heap[size] = i
            pos[i] = size
            size += 1
    while size > 0:
        c = heap[0] & _CELL_MASK
        dcur = dist[c]
        pos[c] = -2
        size -= 1
        if size > 0:
            _sift_down(heap, pos, heap[size], size)
        r = c // cols
        col = c - r * cols
        zc = zf[c]
        lab = label[c]
        if anisotropic:
            pc = _MIN_PER_M_AT_1_KPH / rk[c] if rk[c] > 0.0 else -1.0  # -1: off road, pace depends on the move
        else:
            pc = cp[c]
        for k in range(nmoves):
            rr = r + dr[k]
            cc = col + dc[k]
            if rr < 0 or rr >= rows or cc < 0 or cc >= cols:
                continue
            n = rr * cols + cc
            if pos[n] == -2:
                continue
            if knight and k >= 8 and knight_blocked(zf, r, col, cols, dr[k], dc[k]):
                continue
            length = lengths[r, k]
            if anisotropic:
                pn = _MIN_PER_M_AT_1_KPH / rk[n] if rk[n] > 0.0 else -1.0
                if pn < 0.0 or pc < 0.0:
                    walk = tob_pace0 * math.exp(tob_a * abs((zc - zf[n]) / length + tob_b))
                    walk = min(max(walk, pace_min), pace_max)
                    pn = walk if pn < 0.0 else pn
                    half_c = walk if pc < 0.0 else pc
                else:
                    half_c = pc
                cand = np.float32(dcur + length * 0.5 * (pn + half_c))
            else:
                cand = np.float32(dcur + length * 0.5 * (cp[n] + pc))
            if cand < dist[n]:
                dist[n] = cand
                label[n] = lab
                p = pos[n]
                if p == -1:
                    p = size
                    size += 1
                _sift_up(heap, pos, p, _heap_item(cand, n))
    return dist.reshape(rows, cols), label.reshape(rows, cols)


@njit(cache=True)
def _cell_pace_kernel(slope, road_kph, tob_a, tob_b, tob_pace0, pace_min, pace_max):
    out = np.empty(slope.shape, dtype=np.float32)
    for r in range(slope.shape[0]):
        for c in range(slope.shape[1]):
            if road_kph[r, c] > 0.0:
                out[r, c] = _MIN_PER_M_AT_1_KPH / road_kph[r, c]
            else:
                out[r, c] = min(max(tob_pace0 * math.exp(tob_a * abs(slope[r, c] + tob_b)), pace_min), pace_max)
    return out


def _tobler_args(surface: Surface) -> tuple[float, ...]:
    """Kernel constants: a, b, pace at Tobler's peak, and the pace bounds set by the speed cap and floor."""
    t = surface.tobler
    slowest = _MIN_PER_M_AT_1_KPH / surface.offroad_min_kph if surface.offroad_min_kph > 0 else np.inf
    return (float(t["a"]), float(t["b"]), _MIN_PER_M_AT_1_KPH / float(t["base"]),
            _MIN_PER_M_AT_1_KPH / surface.offroad_max_kph, slowest)


def cell_pace(surface: Surface) -> np.ndarray:
    """Isotropic pace (minutes per metre) of each cell: road pace on roads, else Tobler on |slope|.

    NaN at barriers (the slope is NaN there).
    """
    return _cell_pace_kernel(surface.slope, surface.road_kph, *_tobler_args(surface))


def cost_distance(
    surface: Surface,
    source_rows: Sequence[int] | np.ndarray,
    source_cols: Sequence[int] | np.ndarray,
    *,
    anisotropic: bool = True,
    knight_moves: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Travel time from every cell to its nearest source, all sources in one pass.

    Parameters
    ----------
    surface : the friction surface.
    source_rows, source_cols : grid cells of the sources (must be passable).
    anisotropic : Tobler on the signed slope of each move (uphill slower than downhill);
        False uses each cell's slope magnitude.
    knight_moves : 16-connected (adds knight's moves) instead of 8-connected.

    Returns
    -------
    minutes : float32 (rows, cols); NaN at barriers, inf where unreachable.
    nearest : int32 (rows, cols) index of the nearest source; -1 at barriers and unreachable cells.
    """
    n_rows, n_cols = surface.shape
    sr = np.asarray(source_rows, dtype=np.int64).ravel()
    sc = np.asarray(source_cols, dtype=np.int64).ravel()
    if sr.shape != sc.shape:
        raise ValueError("source_rows and source_cols differ in length")
    if np.any((sr < 0) | (sr >= n_rows) | (sc < 0) | (sc >= n_cols)):
        raise ValueError("a source lies outside the grid")
    if np.any(np.isnan(surface.elevation[sr, sc])):
        raise ValueError("a source lies on a barrier (no-data) cell; snap it with source_cells()")
    dr, dc, lengths = _move_table(surface.dx_m, surface.dy_m, knight_moves)
    pace = np.empty((0, 0), dtype=np.float32) if anisotropic else cell_pace(surface)
    return _cost_distance_kernel(surface.elevation, surface.road_kph, pace, dr, dc, lengths, sr * n_cols + sc,
                                 anisotropic, *_tobler_args(surface))


def _cell_index(transform, shape: tuple[int, int], lon, lat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column of the cell holding each point, and whether it lies inside the grid."""
    inv = ~transform
    x, y = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    col = np.floor(inv.a * x + inv.b * y + inv.c)
    row = np.floor(inv.d * x + inv.e * y + inv.f)
    inside = np.isfinite(row) & np.isfinite(col) & (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])
    return np.where(inside, row, 0).astype(np.int64), np.where(inside, col, 0).astype(np.int64), inside


def source_cells(
    surface: Surface,
    lon,
    lat,
    *,
    names: Sequence[str] | None = None,
    radius_cells: int = 3,
    path: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Grid cells of source points; points on a barrier move to the nearest passable cell.

    Parameters
    ----------
    lon, lat : coordinates in the grid's CRS (degrees for the EPSG:4326 DEM).
    names : labels for error messages (e.g. facility ids).
    radius_cells : search radius (cells) for a passable cell around a point on a barrier.
    path : the file the points came from, for error messages.

    Returns
    -------
    (rows, cols) int64 arrays.

    Raises
    ------
    InputError naming the point if it lies outside the grid or no passable cell is within the radius.
    """
    lon = np.atleast_1d(np.asarray(lon, dtype=float))
    lat = np.atleast_1d(np.asarray(lat, dtype=float))
    names = [str(i) for i in range(len(lon))] if names is None else [str(n) for n in names]
    rows, cols, inside = _cell_index(surface.transform, surface.shape, lon, lat)
    if not inside.all():
        i = int(np.flatnonzero(~inside)[0])
        raise InputError(path, f"facility {names[i]} at ({lon[i]:.5f}, {lat[i]:.5f}) lies outside the DEM")
    valid = surface.valid
    R, C = surface.shape
    for i in np.flatnonzero(~valid[rows, cols]):
        r0, r1 = max(rows[i] - radius_cells, 0), min(rows[i] + radius_cells + 1, R)
        c0, c1 = max(cols[i] - radius_cells, 0), min(cols[i] + radius_cells + 1, C)
        rr, cc = np.nonzero(valid[r0:r1, c0:c1])
        if rr.size == 0:
            raise InputError(path, f"facility {names[i]} at ({lon[i]:.5f}, {lat[i]:.5f}) lies on DEM no-data "
                                   f"with no valid cell within {radius_cells} cells")
        rr, cc = rr + r0, cc + c0
        metres = np.hypot((cc - cols[i]) * surface.dx_m[rows[i]], (rr - rows[i]) * surface.dy_m[rows[i]])
        j = int(np.argmin(metres))
        log.info("facility %s on DEM no-data: moved %.0f m to the nearest valid cell", names[i], metres[j])
        rows[i], cols[i] = rr[j], cc[j]
    return rows, cols


def write_travel_time_tif(path: str | Path, minutes: np.ndarray, surface: Surface) -> Path:
    """Write minutes as a float32 GeoTIFF on the surface's grid (LZW; barriers and unreachable = OUT_NODATA)."""
    import rasterio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.where(np.isfinite(minutes), minutes, OUT_NODATA).astype(np.float32)
    rows, cols = surface.shape
    profile = dict(driver="GTiff", width=cols, height=rows, count=1, dtype="float32", crs=surface.crs,
                   transform=surface.transform, nodata=OUT_NODATA, compress="lzw", predictor=3)
    if rows >= 256 and cols >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(1, units="minutes", meaning="travel time to the nearest facility")
    return path


def travel_time_raster(
    surface: Surface,
    facilities,
    out_dir: str | Path | None = None,
    *,
    groups: Mapping[str, Sequence[str]] = LEVEL_GROUPS,
    anisotropic: bool = True,
    knight_moves: bool = False,
    snap_radius_cells: int = 3,
) -> dict[str, LevelTimes]:
    """Cost-distance to the nearest facility of each level group; one GeoTIFF per group.

    Parameters
    ----------
    surface : the friction surface.
    facilities : table with `facility_id`, `level` and WGS84 `lon`/`lat` (or point geometry, any
        CRS); facilities without coordinates are ignored (logged).
    out_dir : where to write `traveltime_{group}.tif` (the name the map command reads); None writes nothing.
    groups : level group -> facility levels it includes.
    anisotropic, knight_moves : see cost_distance.
    snap_radius_cells : see source_cells.

    Returns
    -------
    {group: LevelTimes}; a group without facilities is unreachable everywhere.
    """
    from .travel import check_facility_table

    check_facility_table(facilities)
    lon, lat = _grid_xy(facilities, surface.crs)
    located = np.isfinite(lon) & np.isfinite(lat)
    if not located.all():
        log.warning("raster engine: %d facilities have no coordinates and are ignored", int((~located).sum()))
    ids = facilities["facility_id"].astype(str).to_numpy()[located]
    levels = facilities["level"].astype(str).to_numpy()[located]
    rows, cols = source_cells(surface, lon[located], lat[located], names=ids, radius_cells=snap_radius_cells)
    out: dict[str, LevelTimes] = {}
    for group, members in groups.items():
        sel = np.isin(levels, list(members))
        if not sel.any():
            log.warning("raster engine: no facilities in level group %r; it is unreachable everywhere", group)
        minutes, nearest = cost_distance(surface, rows[sel], cols[sel], anisotropic=anisotropic,
                                         knight_moves=knight_moves)
        path = write_travel_time_tif(Path(out_dir) / f"traveltime_{group}.tif", minutes, surface) if out_dir else None
        log.info("raster engine: level %s, %d facilities%s", group, int(sel.sum()), f" -> {path}" if path else "")
        out[group] = LevelTimes(minutes, nearest, ids[sel], path)
    return out


def _grid_xy(df, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of a table's points in the grid's CRS: its WGS84 `lon`/`lat`, else its geometry."""
    from pyproj import CRS

    from ._crs import WGS84, transformer

    if {"lon", "lat"} <= set(df.columns):
        x, y = df["lon"].to_numpy(dtype=float), df["lat"].to_numpy(dtype=float)
        if CRS.from_user_input(crs) != CRS.from_epsg(4326):
            x, y = transformer(WGS84, crs).transform(x, y)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    geom = df.to_crs(crs).geometry if getattr(df, "crs", None) is not None else df.geometry
    return geom.x.to_numpy(dtype=float), geom.y.to_numpy(dtype=float)


def sample_raster(values: np.ndarray, transform, lon, lat) -> np.ndarray:
    """Value of the cell holding each point (nearest cell, no interpolation) as float64.

    `lon`, `lat` are in the grid's CRS (degrees for the EPSG:4326 DEM). Points outside the grid,
    on barriers (NaN) or unreachable (inf) give NaN.
    """
    rows, cols, inside = _cell_index(transform, values.shape, lon, lat)
    out = values[rows, cols].astype(np.float64)
    out[~inside | ~np.isfinite(out)] = np.nan
    return out


def settlement_times(results: Mapping[str, LevelTimes], settlements, surface: Surface):
    """Times and nearest facility per settlement from raster results (travel-time result contract).

    Parameters
    ----------
    results : from travel_time_raster.
    settlements : table with WGS84 `lon`/`lat` (or point geometry).
    surface : the surface the results were computed on.

    Returns
    -------
    DataFrame aligned to `settlements.index` with `t_{group}_min` (NaN when unreachable) and
    `nearest_{group}_id` (None when unreachable), read from the cell holding each settlement.
    """
    from .travel import level_table

    x, y = _grid_xy(settlements, surface.crs)
    minutes, nearest = {}, {}
    for group, res in results.items():
        minutes[group] = sample_raster(res.minutes, surface.transform, x, y)
        idx = sample_raster(res.nearest, surface.transform, x, y)
        ok = np.isfinite(idx) & (idx >= 0)
        ids = np.full(len(x), None, dtype=object)
        ids[ok] = res.facility_ids[idx[ok].astype(np.int64)]
        nearest[group] = ids
    return level_table(settlements.index, minutes, nearest)
