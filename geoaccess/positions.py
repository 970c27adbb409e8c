"""Honest times for settlements without their own coordinates: a range over the area they may lie in.

A village the gazetteer cannot place is put at its township seat, but it is not *at* the seat: it lies
somewhere in its township. Its township's area is taken as the Voronoi cell of the located township
seats of its county, clipped to the county polygon (computed on the DEM grid); only the habitable
cells of that area count — below the altitude and slope under which the region's exactly located
settlements lie (a quantile, or limits from the config). The engine's time from each such cell gives:

* ``t_{level}_min``: the median cell (an actual cell, so ``nearest_{level}_id`` is the facility that
  time refers to);
* ``t_{level}_low_min`` / ``t_{level}_high_min``: the ``range_quantiles`` of the cells (default 10 % /
  90 %).

A settlement whose township seat is not located either takes its county's habitable area. A
relocation site sits at its host unit's seat (they are built beside it): its estimate is the seat's
time and its range spans that and the host unit's area. Exactly located rows have low = estimate =
high. Order statistics of pointwise-ordered fields over the same cells keep
``t_clinic ≤ t_thc ≤ t_county ≤ t_pref`` for every estimate and bound.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit, prange

from .coverage import GROUPS

log = logging.getLogger("geoaccess")

#: time_basis values and what they mean (also in schema.py).
TIME_BASIS = {
    "measured": "own coordinates",
    "township_area": "median over the habitable cells of its township's area (Voronoi of located seats in the county)",
    "county_area": "median over the habitable cells of its county (its township seat is not located)",
    "host_position": "relocation site at its host unit's seat; range over the host unit's area",
    "position": "approximated position's own time: no habitable cell could be found for its unit",
}


@dataclass(frozen=True)
class AreaGrid:
    """A grid over which units' areas are drawn (the DEM window): WGS84-degree or projected transform."""

    transform: object
    shape: tuple[int, int]
    crs: str
    elevation: np.ndarray | None  # metres, NaN = no data; None = no DEM (every cell habitable)

    def centres(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 lon/lat of cell centres (cell = row * cols + col)."""
        from .combined import _from_grid_crs

        r, c = np.divmod(np.asarray(cells, np.int64), self.shape[1])
        x, y = self.transform @ (c + 0.5, r + 0.5)
        return _from_grid_crs(self.crs, np.asarray(x), np.asarray(y))


@dataclass(frozen=True)
class Areas:
    """Which cells each approximated settlement may lie in.

    ``group_of_cell[k]`` is the area group of cell ``cells[k]`` under the township grouping and the
    county grouping; ``settlement_group`` the group of each settlement (-1: exact or none).
    """

    cells: np.ndarray              # candidate cell indices (habitable, inside a county)
    town_group: np.ndarray         # per candidate cell: township area index, -1 none
    county_group: np.ndarray       # per candidate cell: county index
    settlement_area: np.ndarray    # per settlement: "township" | "county" | "" (measured or no area)
    settlement_group: np.ndarray   # per settlement: index in the township or county grouping, -1
    limits: dict                   # habitable limits used and where they came from


def unit_areas(settlements: pd.DataFrame, counties, grid: AreaGrid, positions_cfg: dict) -> Areas:
    """The township and county areas of a region on ``grid`` and the area of every approximated settlement."""
    from rasterio import features

    rows, cols = grid.shape
    n = len(settlements)
    exact = settlements["loc_quality"].eq("exact").to_numpy()
    kind = settlements["kind"].astype(str).to_numpy()
    ccode = settlements["county_code"].fillna("").astype(str).to_numpy()
    tcode = settlements["township_code"].fillna("").astype(str).to_numpy()
    quality = settlements["loc_quality"].astype(str).to_numpy()
    empty = Areas(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                  np.full(n, "", object), np.full(n, -1, np.int64), {})
    if counties is None or not len(counties):
        return empty
    codes = counties["adcode"].astype(str).to_numpy()
    geoms = counties.geometry.to_numpy()
    if grid.crs and not _geographic(grid.crs):
        from .combined import road_engine

        tr = road_engine._transformer("EPSG:4326", grid.crs)
        import shapely

        geoms = shapely.transform(geoms, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
    label = features.rasterize(((g, i + 1) for i, g in enumerate(geoms) if g is not None and not g.is_empty),
                               out_shape=(rows, cols), transform=grid.transform, fill=0, dtype="int32").ravel() - 1
    slope = _slope(grid) if grid.elevation is not None else None
    # limits per province (the first two digits of the county codes): a province's habitable land is learnt from
    # its own located settlements, so its figures are the same alone and inside a national run
    province = np.array([c[:2] for c in codes], dtype=object)
    provinces = sorted(set(province))
    settlement_province = np.array([c[:2] for c in ccode], dtype=object)
    by_province = {}
    for p in provinces:  # one province (a regional run): every settlement, as before provinces were told apart
        mine = settlement_province == p if len(provinces) > 1 else np.ones(n, bool)
        by_province[p] = habitable_limits(settlements[mine], grid, positions_cfg, cell_slope=slope)
    ok = label >= 0
    if grid.elevation is not None:
        alt_of = np.array([by_province[p]["max_altitude_m"] for p in province], float)
        slope_of = np.array([by_province[p]["max_slope"] for p in province], float)
        z = grid.elevation.ravel()
        at = np.flatnonzero(ok)
        keep = np.isfinite(z[at]) & (z[at] <= alt_of[label[at]]) & (slope.ravel()[at] <= slope_of[label[at]])
        ok[at[~keep]] = False
    cells = np.flatnonzero(ok)
    if len(provinces) == 1:
        limits = by_province[provinces[0]]
    else:
        alts = [v["max_altitude_m"] for v in by_province.values()]
        slopes = [v["max_slope"] for v in by_province.values()]
        limits = {"max_altitude_m": max(alts), "max_slope": max(slopes),
                  "source": f"per province, each from its own exactly located settlements ({len(provinces)} provinces: "
                            f"altitude {min(alts):.0f}–{max(alts):.0f} m, slope {min(slopes):.2f}–{max(slopes):.2f})",
                  "by_province": {p: {"max_altitude_m": v["max_altitude_m"], "max_slope": v["max_slope"],
                                      "source": v["source"]} for p, v in by_province.items()}}
    county_group = label[cells].astype(np.int64)

    # township areas: nearest located township seat of the same county (equirectangular metric, fine at this scale)
    seats = exact & (kind == "township_seat") & (tcode != "")
    seat_county = pd.Index(codes).get_indexer(ccode[seats])
    s_ok = seat_county >= 0
    seat_idx = np.flatnonzero(seats)[s_ok]
    seat_county = seat_county[s_ok]
    town_codes = tcode[seat_idx]
    town_group = np.full(len(cells), -1, np.int64)
    if len(seat_idx) and len(cells):
        from scipy.spatial import cKDTree

        lon, lat = grid.centres(cells)
        lat0 = np.cos(np.radians(np.nanmean(lat)))
        big = 1e4  # degrees: separates counties in the third coordinate
        slon = settlements["lon"].to_numpy(float)[seat_idx]
        slat = settlements["lat"].to_numpy(float)[seat_idx]
        tree = cKDTree(np.column_stack([slon * lat0, slat, seat_county * big]))
        d, j = tree.query(np.column_stack([lon * lat0, lat, county_group * big]))
        has = np.isfinite(d) & (d < big / 2)
        town_group[has] = j[has]

    # the area of each approximated settlement
    area = np.full(n, "", object)
    group = np.full(n, -1, np.int64)
    town_index = pd.Index(town_codes)
    county_index = pd.Index(codes)
    t_hit = town_index.get_indexer(tcode)
    c_hit = county_index.get_indexer(ccode)
    approx = ~exact
    use_town = approx & (t_hit >= 0) & np.isin(quality, ["township", "county", "prefecture"]) \
        & ~((kind == "township_seat"))
    # a village placed at its county seat because its township seat is unknown has no township area
    use_town &= ~((quality == "county") & (kind != "relocation"))
    use_county = approx & ~use_town & (c_hit >= 0)
    area[use_town], group[use_town] = "township", t_hit[use_town]
    area[use_county], group[use_county] = "county", c_hit[use_county]
    counts = np.bincount(town_group[town_group >= 0], minlength=len(town_codes))
    log.info("positions: %s habitable cells in %d counties and %d township areas (altitude ≤ %.0f m, slope ≤ %.2f, %s); "
             "%d approximated settlements take a township area, %d a county area",
             f"{len(cells):,}", len(codes), int((counts > 0).sum()), limits["max_altitude_m"], limits["max_slope"],
             limits["source"], int(use_town.sum()), int(use_county.sum()))
    return Areas(cells, town_group, county_group, area, group, limits)


def _geographic(crs: str) -> bool:
    from pyproj import CRS

    return CRS.from_user_input(crs).is_geographic


def _slope(grid: AreaGrid) -> np.ndarray:
    from .raster import _slope_magnitude, cell_sizes

    dx, dy = cell_sizes(grid.transform, grid.shape, grid.crs)
    return _slope_magnitude(grid.elevation.astype(np.float32), dx, dy)


def habitable_limits(settlements: pd.DataFrame, grid: AreaGrid, cfg: dict,
                     cell_slope: np.ndarray | None = None) -> dict:
    """Altitude and slope limits of habitable cells: from the config, else a quantile over located settlements."""
    q = float(cfg.get("habitable_quantile", 0.99))
    alt, slope = float(cfg.get("habitable_max_altitude_m", 0.0)), float(cfg.get("habitable_max_slope", 0.0))
    if grid.elevation is None:
        return {"max_altitude_m": np.inf, "max_slope": np.inf, "source": "no DEM: every cell of the unit counts"}
    exact = settlements["loc_quality"].eq("exact").to_numpy()
    lon = settlements["lon"].to_numpy(float)[exact]
    lat = settlements["lat"].to_numpy(float)[exact]
    from .combined import _to_grid_crs

    x, y = _to_grid_crs(grid.crs, lon, lat)
    col, row = ~grid.transform @ (np.asarray(x), np.asarray(y))
    r, c = np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)
    inside = (r >= 0) & (r < grid.shape[0]) & (c >= 0) & (c < grid.shape[1])
    src = []
    if alt <= 0 or slope <= 0:
        if inside.sum() < 10:
            return {"max_altitude_m": np.inf, "max_slope": np.inf,
                    "source": "too few located settlements to learn limits: every cell of the unit counts"}
        z = grid.elevation[r[inside], c[inside]]
        s = (_slope(grid) if cell_slope is None else cell_slope)[r[inside], c[inside]]
        if alt <= 0:
            alt = float(np.nanquantile(z, q))
            src.append(f"altitude: {q:.0%} of the {int(inside.sum())} exactly located settlements lie at or below it")
        if slope <= 0:
            slope = float(np.nanquantile(s, q))
            src.append(f"slope: {q:.0%} of them lie on cells at most this steep")
    if not src:
        src.append("[positions] limits from the config")
    return {"max_altitude_m": alt, "max_slope": slope, "source": "; ".join(src)}


def sample_cells(areas: Areas, per_area: int) -> np.ndarray:
    """Up to ``per_area`` candidate cells of every township and county area (evenly spread, deterministic)."""
    keep = np.zeros(len(areas.cells), bool)
    for groups in (areas.town_group, areas.county_group):
        valid = np.flatnonzero(groups >= 0)
        if not len(valid):
            continue
        order = valid[np.argsort(groups[valid], kind="stable")]
        g = groups[order]
        start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
        size = np.diff(np.r_[start, len(g)])
        rank = np.arange(len(g)) - np.repeat(start, size)
        step = np.maximum(1, np.ceil(size / per_area)).astype(np.int64)
        keep[order[rank % np.repeat(step, size) == 0]] = True
    return np.flatnonzero(keep)


def honest_times(settlements: pd.DataFrame, times: pd.DataFrame, areas: Areas, cell_minutes: np.ndarray,
                 cell_nearest: np.ndarray, facility_ids: np.ndarray, quantiles=(0.1, 0.9)) -> pd.DataFrame:
    """Estimates, ranges and ``time_basis`` for every settlement.

    Parameters
    ----------
    times : engine result at each settlement's position (``t_{g}_min``, ``nearest_{g}_id``).
    areas : from :func:`unit_areas` (its ``cells`` may be a subset, with ``town_group``/``county_group`` alike).
    cell_minutes : (len(areas.cells), 4) minutes from each candidate cell, levels in GROUPS order (inf unreachable).
    cell_nearest : (len(areas.cells), 4) facility index (row of the facility table), -1 none.
    facility_ids : facility_id per facility index.

    Returns
    -------
    ``times`` with ``t_{g}_min`` replaced for approximated rows, ``t_{g}_low_min`` / ``t_{g}_high_min``,
    ``nearest_{g}_id`` of the reported estimate, ``time_basis`` and ``range_area``.
    """
    t = times.copy()
    n = len(settlements)
    exact = settlements["loc_quality"].eq("exact").to_numpy()
    kind = settlements["kind"].astype(str).to_numpy()
    est = np.array(t[[f"t_{g}_min" for g in GROUPS]], dtype=float)
    low, high = est.copy(), est.copy()
    near = np.array(t[[f"nearest_{g}_id" for g in GROUPS]], dtype=object)
    basis = np.where(exact, "measured", "position").astype(object)
    range_area = np.full(n, "", object)
    qs = (float(quantiles[0]), 0.5, float(quantiles[1]))
    fin = np.isfinite(cell_minutes[:, 0]) if len(cell_minutes) else np.zeros(0, bool)
    for area_kind, groups in (("township", areas.town_group), ("county", areas.county_group)):
        rows = np.flatnonzero(areas.settlement_area == area_kind)
        if not len(rows):
            continue
        stats = _order_stats(groups, fin, cell_minutes, cell_nearest, qs,
                             wanted=np.unique(areas.settlement_group[rows]))
        if stats is None:
            continue
        has, val, idx = stats
        g = areas.settlement_group[rows]
        g_ok = (g >= 0) & (g < len(has))
        rows, g = rows[g_ok], g[g_ok]
        sel = has[g]
        rows, g = rows[sel], g[sel]
        reloc = kind[rows] == "relocation"
        lo_v, md_v, hi_v = val[0][g], val[1][g], val[2][g]
        fac = idx[1][g]
        # villages: the median cell; relocation sites: their host seat's time, the range widened to hold it
        own = est[rows]
        e = np.where(reloc[:, None], own, md_v)
        lo = np.where(reloc[:, None], np.fmin(lo_v, own), lo_v)
        hi = np.where(reloc[:, None], np.fmax(hi_v, own), hi_v)
        est[rows], low[rows], high[rows] = e, lo, hi
        nid = np.where(fac >= 0, facility_ids[np.maximum(fac, 0)], None)
        near[rows[~reloc]] = nid[~reloc]
        basis[rows] = np.where(reloc, "host_position", f"{area_kind}_area")
        range_area[rows] = area_kind
    for k, g in enumerate(GROUPS):
        for arr in (est, low, high):
            arr[~np.isfinite(arr[:, k]), k] = np.nan
        t[f"t_{g}_min"] = est[:, k]
        t[f"t_{g}_low_min"] = low[:, k]
        t[f"t_{g}_high_min"] = high[:, k]
        t[f"nearest_{g}_id"] = near[:, k]
    t["time_basis"] = basis
    t["range_area"] = range_area
    return t


def _order_stats(groups: np.ndarray, finite: np.ndarray, minutes: np.ndarray, nearest: np.ndarray, qs,
                 wanted: np.ndarray | None = None):
    """Per group: whether it has cells, the q-th order statistic of each level (nearest rank) and its facility.

    Within a group the cells are ordered by minutes, ties by cell order (a stable sort).
    """
    valid = (groups >= 0) & finite
    if wanted is not None:
        valid &= np.isin(groups, wanted)
    valid = np.flatnonzero(valid)
    if not len(valid):
        return None
    g = groups[valid]
    n_groups = int(g.max()) + 1
    size = np.bincount(g, minlength=n_groups)
    start = np.r_[0, np.cumsum(size)[:-1]].astype(np.int64)
    has = size > 0
    ranks = np.stack([np.clip(np.ceil(q * size).astype(np.int64) - 1, 0, np.maximum(size - 1, 0)) for q in qs])
    members = valid[np.argsort(g, kind="stable")]  # the cells of each group, in cell order
    vals = [np.full((n_groups, minutes.shape[1]), np.nan) for _ in qs]
    idxs = [np.full((n_groups, minutes.shape[1]), -1, np.int64) for _ in qs]
    for k in range(minutes.shape[1]):
        v, i = _group_order_stats(np.ascontiguousarray(minutes[:, k], dtype=np.float64),
                                  np.ascontiguousarray(nearest[:, k], dtype=np.int64), members, start, size, ranks)
        for q in range(len(qs)):
            vals[q][has, k] = v[q][has]
            idxs[q][has, k] = i[q][has]
    return has, vals, idxs


@njit(cache=True, parallel=True)
def _group_order_stats(minutes, nearest, members, start, size, ranks):  # pragma: no cover - compiled
    """(values, facility) (len(ranks), n_groups) at rank ``ranks[q, g]`` of group g's cells sorted by minutes."""
    nq, n_groups = ranks.shape
    vals = np.full((nq, n_groups), np.nan)
    idx = np.full((nq, n_groups), -1, np.int64)
    for gi in prange(n_groups):
        n = size[gi]
        if n == 0:
            continue
        seg = members[start[gi]:start[gi] + n]
        order = np.argsort(minutes[seg], kind="mergesort")
        for q in range(nq):
            pick = seg[order[ranks[q, gi]]]
            vals[q, gi] = minutes[pick]
            idx[q, gi] = nearest[pick]
    return vals, idx
