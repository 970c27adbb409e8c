"""Catchments: the area each facility serves — the grid cells for which it is the nearest of its level —
cut by travel-time band, with the settlements and people inside (docs/access.md)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import ConfigError, InputError


def parse_bands(text: str | None, default) -> list[float]:
    """'15,30,60,120' → sorted positive minutes; ConfigError naming --minutes otherwise."""
    if text is None:
        values = [float(b) for b in default]
    else:
        try:
            values = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(None, f"--minutes '{text}': expected minutes separated by commas, e.g. 15,30,60,120") \
                from None
    if not values or any(not (v > 0 and np.isfinite(v)) for v in values) or len(set(values)) != len(values):
        raise ConfigError(None, f"--minutes {text or default}: must be distinct positive minutes")
    return sorted(values)


def cell_labels(minutes: np.ndarray, nearest: np.ndarray, bands: list[float]) -> np.ndarray:
    """Per cell: facility row × number of bands + band index (band k: bands[k-1] < t ≤ bands[k]); -1 outside
    every band, at barriers and where no facility is reached."""
    nb = len(bands)
    t = np.asarray(minutes, np.float64)
    ok = np.isfinite(t) & (np.asarray(nearest) >= 0) & (t <= bands[-1])
    band = np.searchsorted(np.asarray(bands, float), np.where(ok, t, 0.0), side="left")
    return np.where(ok, np.asarray(nearest, np.int64) * nb + band, -1)


def catchment_polygons(cells, level: str, facilities: pd.DataFrame, settlements: pd.DataFrame, bands: list[float],
                       working_crs: str):
    """A GeoDataFrame (WGS84): one row per facility and band with its area, settlements and people.

    ``cells`` is the engine's :class:`geoaccess.travel.CellTimes`; its ``nearest`` rows index ``facilities``.
    A settlement belongs to the polygon of the cell it lies in.
    """
    import geopandas as gpd
    import shapely
    from rasterio import features

    from ._crs import from_wgs84

    grid = cells.grid
    labels = cell_labels(cells.minutes[level], cells.nearest[level], bands)
    rows, cols = grid.shape
    nb = len(bands)
    pieces: dict[int, list] = {}
    lab32 = labels.astype(np.int32)
    for geom, value in features.shapes(lab32, mask=lab32 >= 0, transform=grid.transform, connectivity=8):
        pieces.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    keys = sorted(pieces)
    geoms = [shapely.union_all(pieces[k]) for k in keys]
    # settlements: the cell each lies in
    x, y = from_wgs84(settlements["lon"].to_numpy(float), settlements["lat"].to_numpy(float), grid.crs)
    c, r = ~grid.transform @ (np.asarray(x), np.asarray(y))
    r, c = np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    s_lab = np.full(len(settlements), -1, np.int64)
    s_lab[inside] = labels[r[inside], c[inside]]
    pop = np.nan_to_num(settlements["population"].to_numpy(float), nan=0.0)
    n_by = pd.Series(1, index=s_lab).groupby(level=0).sum()
    p_by = pd.Series(pop, index=s_lab).groupby(level=0).sum()
    fac_row, band = np.divmod(np.asarray(keys, np.int64), nb)
    edges = np.r_[0.0, bands]
    out = gpd.GeoDataFrame({
        "facility_id": facilities["facility_id"].astype(str).to_numpy()[fac_row],
        "name": facilities["name"].to_numpy()[fac_row], "level": facilities["level"].to_numpy()[fac_row],
        "county_code": facilities["county_code"].astype(str).to_numpy()[fac_row],
        "band_from_min": edges[band], "band_to_min": edges[band + 1],
        "n_settlements": n_by.reindex(keys, fill_value=0).to_numpy().astype(int),
        "population": p_by.reindex(keys, fill_value=0.0).to_numpy(float),
    }, geometry=geoms, crs=grid.crs)
    out["area_km2"] = out.geometry.to_crs(working_crs).area.to_numpy() / 1e6
    return out.to_crs(4326)


def cells_for(model, settlements: pd.DataFrame, facilities: pd.DataFrame, level: str):
    """The engine's cell field for one level group (grid engines only)."""
    from .schema import LEVEL_GROUPS

    if model.engine == "network":
        raise InputError(None, "catchments need a grid engine: use --engine combined or raster")
    _, cells = model.times(settlements, facilities, groups={level: LEVEL_GROUPS[level]})
    return cells


# ----------------------------------------------------------------------------- per-facility travel-time rasters

def facility_ids_for_rasters(spec: str, facilities: pd.DataFrame, level: str) -> list[str]:
    """``--facility-rasters`` → facility ids: ``all`` (every facility of the level group, register order) or ids
    separated by commas; ConfigError (one line) for an unknown id or one outside the level group."""
    from .schema import LEVEL_GROUPS

    ids = facilities["facility_id"].astype(str)
    members = ids[facilities["level"].isin(LEVEL_GROUPS[level]).to_numpy()].tolist()
    if spec.strip().lower() == "all":
        return members
    wanted = list(dict.fromkeys(x.strip() for x in spec.split(",") if x.strip()))
    if not wanted:
        raise ConfigError(None, "--facility-rasters: give facility ids separated by commas, or all")
    level_of = dict(zip(ids, facilities["level"].astype(str)))
    for fid in wanted:
        if fid not in level_of:
            raise ConfigError(None, f"--facility-rasters: unknown facility id '{fid}' (not in the facility register)")
        if fid not in members:
            raise ConfigError(None, f"--facility-rasters: facility '{fid}' is a {level_of[fid]}, not of level "
                                    f"{level} (that level or higher)")
    return wanted


def facility_time_rasters(model, facilities: pd.DataFrame, ids: list[str]):
    """Minutes from every grid cell to each facility of ``ids`` alone (AccessMod issue #268), one at a time.

    The combined engine's graph is built once (facilities as its destinations, no origins); each facility is one
    search of its kernel (``combined.level_passes`` with a group of that facility alone), so a facility's raster is
    the level raster of a register holding only it: same grid, NaN at barriers, inf where unreached. Yields
    (facility_id, float32 minutes (rows, cols)); the grid is ``model.terrain_grid()``.
    """
    from .combined import build_combined_graph, level_passes

    if model.engine != "combined":
        raise InputError(None, "--facility-rasters needs the combined engine (--engine combined)")
    prep = model.prep
    grid = model.terrain_grid()
    graph = build_combined_graph(prep.graph, grid, prep.params, prep.dem, working_crs=model.config.working_crs,
                                 origin_lon=np.zeros(0), origin_lat=np.zeros(0),
                                 dest_lon=facilities["lon"].to_numpy(float), dest_lat=facilities["lat"].to_numpy(float),
                                 direct_km=model.direct_km)
    labels = facilities["facility_id"].astype(str).to_numpy()
    row_of = {fid: k for k, fid in enumerate(labels)}
    for fid in ids:
        if graph.dest_nodes[row_of[fid]] < 0:
            raise InputError(None, f"--facility-rasters: facility '{fid}' has no coordinates (or lies off the grid)")
    for fid in ids:
        res = level_passes(graph, labels, {fid: (fid,)}, threads=1)[fid]
        yield fid, res.cell_minutes
