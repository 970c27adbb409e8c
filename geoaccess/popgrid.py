"""Population grids: people per cell on the engine's grid — from a raster (`[inputs] population_raster`, any CRS,
e.g. WorldPop) or built from the census — and coverage shares and county zonal tables from every cell's travel
time (AccessMod's zonal statistics), beside the settlement-based shares (docs/access.md)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import InputError


def county_cells(counties, grid) -> np.ndarray:
    """Per cell (rows, cols): index of the county polygon it lies in, -1 outside every county."""
    import shapely
    from rasterio import features

    from ._crs import WGS84, is_geographic, transformer

    geoms = counties.geometry.to_numpy()
    if not is_geographic(grid.crs):
        tr = transformer(WGS84, grid.crs)
        geoms = shapely.transform(geoms, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
    label = features.rasterize(((g, i + 1) for i, g in enumerate(geoms) if g is not None and not g.is_empty),
                               out_shape=grid.shape, transform=grid.transform, fill=0, dtype="int32")
    return label - 1


def _cell_of(grid, lon, lat) -> np.ndarray:
    """Flat cell index of WGS84 points on ``grid`` (-1 outside)."""
    from ._crs import from_wgs84

    x, y = from_wgs84(lon, lat, grid.crs)
    c, r = ~grid.transform @ (np.asarray(x), np.asarray(y))
    r, c = np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)
    rows, cols = grid.shape
    ok = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    return np.where(ok, r * cols + c, -1)


def build_population_grid(settlements: pd.DataFrame, counties, grid, positions_cfg: dict, working_crs: str,
                          spread_km: float = 5.0) -> tuple[np.ndarray, dict]:
    """People per cell from the settlements' census populations, spread over habitable cells:

    - a settlement with its own coordinates: evenly over the habitable cells of its county within ``spread_km``
      of it (none: its own cell);
    - an approximated one: evenly over the habitable cells of its area (its township's, else its county's: the
      areas of the honest positions, docs/engine.md);

    so every settlement's people stay in the grid and each county keeps its total. Returns the grid and facts.
    """
    from scipy.spatial import cKDTree

    from ._crs import WGS84, transformer
    from .positions import unit_areas

    rows, cols = grid.shape
    people = np.zeros(rows * cols)
    pop = np.nan_to_num(settlements["population"].to_numpy(float), nan=0.0)
    areas = unit_areas(settlements, counties, grid, positions_cfg)
    cells, town, county = areas.cells, areas.town_group, areas.county_group
    kind = areas.settlement_area
    group = areas.settlement_group
    placed = np.zeros(len(settlements), bool)
    for name, cell_group in (("township", town), ("county", county)):
        sel = (kind == name) & (pop > 0)
        if not sel.any():
            continue
        n = np.bincount(cell_group[cell_group >= 0], minlength=int(group.max()) + 1 if len(group) else 0)
        g = group[sel]
        has = g < len(n)
        has[has] = n[g[has]] > 0
        per_group = np.bincount(g[has], weights=pop[sel][has], minlength=len(n))
        ok = cell_group >= 0
        share = np.zeros(len(cells))
        share[ok] = per_group[cell_group[ok]] / np.maximum(n[cell_group[ok]], 1)
        np.add.at(people, cells, share)
        placed[np.flatnonzero(sel)[has]] = True
    # settlements with their own coordinates (and any left): habitable cells of their county within spread_km
    rest = np.flatnonzero(~placed & (pop > 0))
    own_cell = _cell_of(grid, settlements["lon"].to_numpy(float)[rest], settlements["lat"].to_numpy(float)[rest])
    codes = counties["adcode"].astype(str).to_numpy()
    s_county = pd.Index(codes).get_indexer(settlements["county_code"].astype(str).to_numpy()[rest])
    lost = 0.0
    if len(rest):
        lon, lat = grid.centres(cells) if len(cells) else (np.zeros(0), np.zeros(0))
        tr = transformer(WGS84, working_crs)
        cx, cy = tr.transform(lon, lat)
        sx, sy = tr.transform(settlements["lon"].to_numpy(float)[rest], settlements["lat"].to_numpy(float)[rest])
        tree = cKDTree(np.column_stack([cx, cy])) if len(cells) else None
        near = tree.query_ball_point(np.column_stack([sx, sy]), r=spread_km * 1000.0) if tree else [[]] * len(rest)
        for k, i in enumerate(rest):
            hit = [h for h in near[k] if county[h] == s_county[k]]
            if hit:
                np.add.at(people, cells[hit], pop[i] / len(hit))
            elif own_cell[k] >= 0:
                people[own_cell[k]] += pop[i]
            else:
                lost += pop[i]
    facts = {"method": f"census populations of the settlements spread evenly over habitable cells: within {spread_km:g} km "
                       "of a located settlement in its county, over its township's (else county's) area for an "
                       "approximated one", "habitable": areas.limits, "settlement_people": float(pop.sum()),
             "grid_people": float(people.sum()), "people_outside_the_grid": float(lost)}
    return people.reshape(rows, cols), facts


def read_population_raster(path, grid) -> tuple[np.ndarray, dict]:
    """A people-per-cell raster in any CRS, summed onto ``grid`` (GDAL's area-weighted sum resampling)."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(path, f"cannot be read as a raster: {exc}") from None
    with src:
        if src.crs is None:
            raise InputError(path, "population raster has no CRS")
        data = src.read(1, masked=True).astype(np.float64).filled(0.0)
        if (data < 0).any():
            raise InputError(path, "population raster has negative people per cell")
        out = np.zeros(grid.shape, np.float64)
        reproject(data, out, src_transform=src.transform, src_crs=src.crs, dst_transform=grid.transform,
                  dst_crs=grid.crs, resampling=Resampling.sum, src_nodata=None, dst_nodata=0.0)
        facts = {"file": str(path), "crs": str(src.crs), "raster_people": float(data.sum()),
                 "grid_people": float(out.sum())}
    return out, facts


def grid_coverage(people: np.ndarray, cells, county_index: np.ndarray, counties, bands) -> tuple[dict, pd.DataFrame]:
    """Shares of the grid's people within each band of each level (region), and the zonal table: per county
    and level the people within each band (cells without a time count as beyond every band)."""
    from .coverage import minutes_key

    p = people.ravel()
    county = county_index.ravel()
    codes = counties["adcode"].astype(str).to_numpy()
    names = counties["name"].astype(str).to_numpy() if "name" in counties else codes
    region, rows = {}, []
    inside = county >= 0
    for level, minutes in cells.minutes.items():
        t = minutes.ravel().astype(np.float64)
        region[level] = {}
        for b in bands:
            within = np.isfinite(t) & (t <= b)
            region[level][minutes_key(b)] = float(p[within & inside].sum() / p[inside].sum()) if p[inside].sum() else None
        for ci in np.unique(county[inside]):
            sel = county == ci
            row = {"county_code": codes[ci], "county_name": names[ci], "level": level,
                   "grid_population": float(p[sel].sum())}
            for b in bands:
                within = sel & np.isfinite(t) & (t <= b)
                row[f"pop_within_{minutes_key(b)}"] = float(p[within].sum())
            rows.append(row)
    return region, pd.DataFrame(rows)
