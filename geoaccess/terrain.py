"""Terrain: DEM samples along roads → direction-specific grades, speed factors and edge times; Tobler off-road legs.

Reading and sampling the DEM itself is :mod:`geoaccess.elevation`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from numba import njit, prange

from .elevation import (Dem, _bilinear_point, _check_working_crs, _crs_key, _interp, _nearest_valid, _on_grid,
                        _same_crs, _to_pixels, _transformer, _working_crs_for, check_dem_at, open_dem, sample_dem)
from .errors import ConfigError, InputError

#: The DEM's public names, from :mod:`geoaccess.elevation`, kept importable from here for code written before
#: the split.
__all__ = ["Dem", "open_dem", "sample_dem", "check_dem_at"]

log = logging.getLogger("geoaccess")



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
#: Off-road legs are sampled at most this many samples at a time (memory: ~100 bytes a sample).
LEG_CHUNK_SAMPLES = 4_000_000


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
    n = _segment_counts(straight, params.sample_spacing_m)
    if int((n + 1).sum()) > LEG_CHUNK_SAMPLES and nlegs > 1:
        # legs are independent: a few million samples at a time bound the memory (national runs: ~40 M samples)
        cuts = np.searchsorted(np.cumsum(n + 1), np.arange(LEG_CHUNK_SAMPLES, int((n + 1).sum()), LEG_CHUNK_SAMPLES))
        bounds = np.unique(np.r_[0, cuts, nlegs])
        minutes = np.concatenate([offroad_leg_times(flon[a:b], flat_[a:b], tlon[a:b], tlat[a:b], dem, params,
                                                    working_crs)[1] for a, b in zip(bounds[:-1], bounds[1:])])
        return walked, minutes
    wkt = _check_working_crs(working_crs)
    tr = _transformer(_crs_key("EPSG:4326"), wkt)
    fx, fy = (np.asarray(a) for a in tr.transform(flon, flat_))
    tx, ty = (np.asarray(a) for a in tr.transform(tlon, tlat))
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
