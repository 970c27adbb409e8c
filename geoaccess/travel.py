"""One travel model per region run: which engine, over which roads, terrain and off-road model.

Every engine returns the same travel-time result: a table aligned to the settlements
(``t_{level}_min``, ``nearest_{level}_id``, ``offroad_m``, ``offroad_min``, ``snap_lon``/``snap_lat``;
``attrs['engine']`` and ``attrs['warnings']``) and, for the grid engines, a :class:`CellTimes` with the
minutes from every DEM cell. The gaps run, the honest positions, the proposals' cost matrices and
their verification all go through :class:`TravelModel`, so they use one model.

Engines:

``combined`` (default)
    roads and terrain in one search (:mod:`geoaccess.combined`);
``network``
    roads only; each point reaches the nearest road point by a straight off-road leg (:mod:`geoaccess.engine`);
``raster``
    the friction-surface method (AccessMod style): roads burned into the DEM grid (:mod:`geoaccess.raster`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import InputError
from .positions import GROUPS, AreaGrid
from .schema import LEVEL_GROUPS

log = logging.getLogger("geoaccess")

ENGINES = ("combined", "network", "raster")
DEFAULT_ENGINE = "combined"


# --------------------------------------------------------------------------- the result contract, written once
def check_facility_table(facilities: pd.DataFrame) -> None:
    """Every engine needs ``facility_id`` and ``level``: refuse a table without them in one line."""
    for col in ("facility_id", "level"):
        if col not in facilities.columns:
            raise InputError(None, f"facilities table has no '{col}' column")


def level_table(index, minutes: Mapping[str, np.ndarray], nearest_ids: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """The level columns of a travel-time result: ``t_{group}_min`` for every group (NaN where the time is not
    finite), then ``nearest_{group}_id`` (None where there is no time)."""
    out = pd.DataFrame(index=index)
    for group, m in minutes.items():
        t = np.asarray(m, dtype=float).copy()
        t[~np.isfinite(t)] = np.nan
        out[f"t_{group}_min"] = t
    for group, ids in nearest_ids.items():
        ids = np.asarray(ids, dtype=object).copy()
        ids[np.isnan(out[f"t_{group}_min"].to_numpy())] = None
        out[f"nearest_{group}_id"] = ids
    return out


@dataclass(frozen=True)
class CellTimes:
    """Minutes from every grid cell to the nearest facility of each level, and which facility (table row)."""

    grid: AreaGrid
    minutes: dict          # group → float32 (rows, cols): NaN barrier, inf unreachable
    nearest: dict          # group → int32 (rows, cols): row of the facility table, -1 none

    # the raster writer needs shape / crs / transform
    @property
    def shape(self):
        return self.grid.shape

    @property
    def crs(self):
        return self.grid.crs

    @property
    def transform(self):
        return self.grid.transform


class TravelModel:
    """Travel times of one region under one engine: the prepared region (roads with terrain times, DEM,
    off-road parameters) plus the engine's settings from the config."""

    def __init__(self, prep, engine: str = DEFAULT_ENGINE):
        if engine not in ENGINES:
            raise InputError(None, f"unknown engine '{engine}': use {', '.join(ENGINES)}")
        self.prep = prep
        self.engine = engine
        self.config = prep.config
        off = prep.config.section("offroad")
        self.direct_km = float(off["direct_km"])
        self.road_legs_km = float(off["road_legs_km"])
        self.max_offroad_m = float(off["max_offroad_km"]) * 1000.0
        if engine == "raster":
            if prep.dem is None:
                raise InputError(None, "--engine raster needs the region's DEM (and cannot be used with --no-terrain)")
            if prep.dem.windowed:
                raise InputError(prep.dem.path, "--engine raster needs the whole DEM window in memory and this one "
                                                "exceeds GEOACCESS_DEM_MAX_CELLS: use --engine network or a coarser DEM")
        self._grid = None
        self._weights = None
        #: replaces the combined engine's level searches when set (the partitioned run's windows on a cluster)
        self.search_all = None

    # ----------------------------------------------------------------------- the grid
    def terrain_grid(self):
        """The combined engine's grid of the region (:func:`region_grid`; drawn ahead when the region was
        prepared with ``grid_ahead``)."""
        if self._grid is None:
            ahead = self.prep.grid_ahead
            self._grid = ahead.grid.result() if ahead is not None else region_grid(self.config, self.prep.inputs,
                                                                                   self.prep.dem)
        return self._grid

    def move_weights(self) -> tuple:
        """The minutes of every move of :meth:`terrain_grid` (``combined.grid_move_weights``), computed once per
        model: every combined graph of this model (the gaps run, point times, cost matrices) shares them."""
        if self._weights is None:
            from .combined import grid_move_weights

            ahead = self.prep.grid_ahead
            self._weights = ahead.weights.result() if ahead is not None else grid_move_weights(self.terrain_grid(),
                                                                                                self.prep.params)
        return self._weights

    def area_grid(self, cells: CellTimes | None = None) -> AreaGrid:
        """The grid units' areas are drawn on (the engine's, else the DEM window, else a flat 30″ grid)."""
        if cells is not None:
            return cells.grid
        if self.engine == "combined":
            return self._combined_area_grid()
        dem = self.prep.dem
        if dem is not None and not dem.windowed:
            return AreaGrid(dem.transform, dem.shape, _crs_str(dem.crs), dem.array)
        flat = flat_dem(self.prep.inputs)
        return AreaGrid(flat.transform, flat.shape, "EPSG:4326", None)

    def _combined_area_grid(self) -> AreaGrid:
        return combined_area_grid(self.terrain_grid(), self.prep.dem)

    # ----------------------------------------------------------------------- times
    def times(self, settlements: pd.DataFrame, facilities: pd.DataFrame,
              groups: Mapping[str, Sequence[str]] | None = None) -> tuple[pd.DataFrame, CellTimes | None]:
        """The travel-time result for ``settlements`` to ``facilities`` and, for grid engines, the cell field."""
        groups = dict(LEVEL_GROUPS if groups is None else groups)
        prep, cfg = self.prep, self.config
        if self.engine == "network":
            from .engine import compute_travel_times

            out = compute_travel_times(prep.graph, settlements, facilities, working_crs=cfg.working_crs,
                                       offroad_minutes=prep.offroad_minutes, terrain=prep.params, groups=groups,
                                       max_offroad_m=self.max_offroad_m)
            return out, None
        if self.engine == "combined":
            from .combined import compute_on_grid

            out, (results, grid) = compute_on_grid(prep.graph, self.terrain_grid(), prep.dem, settlements,
                                                   facilities, params=prep.params,
                                                   working_crs=cfg.working_crs, direct_km=self.direct_km,
                                                   road_legs_km=self.road_legs_km, groups=groups,
                                                   search_all=self.search_all, move_weights=self.move_weights())
            cells = CellTimes(self._combined_area_grid(), {g: r.cell_minutes for g, r in results.items()},
                              {g: r.cell_nearest for g, r in results.items()})
            return out, cells
        return self._raster_times(settlements, facilities, groups)

    def _raster_times(self, settlements, facilities, groups):
        import geopandas as gpd

        from . import raster

        prep = self.prep
        G, dem = prep.graph, prep.dem
        edges = G.graph.get("raster_roads") or [  # raster_roads: a scenario's open stretches (geoaccess/scenarios.py)
            (d["geometry"], d["speed_kph"]) for _, _, d in G.edges(data=True) if d.get("geometry") is not None]
        roads = gpd.GeoDataFrame({"speed_kph": [e[1] for e in edges]}, geometry=[e[0] for e in edges], crs=4326)
        surface = raster.friction_surface(dem.array, dem.transform, roads=roads, crs=_crs_str(dem.crs),
                                          **raster.friction_params(prep.params))
        results = raster.travel_time_raster(surface, facilities, groups=groups)
        out = raster.settlement_times(results, settlements, surface)
        out["offroad_m"] = np.nan
        out["offroad_min"] = np.nan
        out.attrs["engine"] = {"engine": "raster", "grid": "×".join(map(str, dem.shape)),
                               "method": "anisotropic Tobler friction, roads burned in at their class speed, "
                                         "8-connected multi-source cost distance (docs/raster.md)"}
        out.attrs["warnings"] = []
        row_of = pd.Index(facilities["facility_id"].astype(str))
        nearest = {}
        for g, res in results.items():
            rows = row_of.get_indexer(pd.Index(np.asarray(res.facility_ids).astype(str)))
            lab = res.nearest
            nearest[g] = np.where(lab >= 0, rows[np.maximum(lab, 0)] if len(rows) else -1, -1).astype(np.int32)
        area = AreaGrid(surface.transform, surface.shape, surface.crs, surface.elevation.astype(np.float64))
        return out, CellTimes(area, {g: r.minutes for g, r in results.items()}, nearest)

    def point_times(self, lon: np.ndarray, lat: np.ndarray, facilities: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(minutes (n, 4), facility row (n, 4)) from arbitrary WGS84 points, levels in GROUPS order."""
        pts = pd.DataFrame({"lon": lon, "lat": lat})
        out, _ = self.times(pts, facilities)
        row_of = pd.Index(facilities["facility_id"].astype(str))
        minutes = np.column_stack([out[f"t_{g}_min"].to_numpy(float) for g in GROUPS])
        minutes = np.where(np.isnan(minutes), np.inf, minutes)
        near = np.column_stack([row_of.get_indexer(pd.Index(out[f"nearest_{g}_id"].astype(str))) for g in GROUPS])
        return minutes, near

    # ----------------------------------------------------------------------- proposals
    def cost_matrix(self, settlements: pd.DataFrame, candidates: pd.DataFrame, limit_min: float):
        """Sparse settlements × candidates minutes within ``limit_min`` (explicit zeros kept), this engine's model."""
        prep, cfg = self.prep, self.config
        if self.engine == "combined":
            from .combined import build_combined_graph

            g = build_combined_graph(prep.graph, self.terrain_grid(), prep.params, prep.dem,
                                     working_crs=cfg.working_crs, origin_lon=settlements["lon"].to_numpy(float),
                                     origin_lat=settlements["lat"].to_numpy(float),
                                     dest_lon=candidates["lon"].to_numpy(float),
                                     dest_lat=candidates["lat"].to_numpy(float), direct_km=self.direct_km,
                                     road_legs_km=self.road_legs_km, move_weights=self.move_weights())
            return g.cost_matrix(limit_min)
        if self.engine == "raster":
            raise InputError(None, "proposals are costed by the combined or the network engine, not --engine raster")
        from .engine import build_engine_graph, cost_matrix

        net = build_engine_graph(prep.graph, settlements["lon"].to_numpy(), settlements["lat"].to_numpy(),
                                 candidates["lon"].to_numpy(), candidates["lat"].to_numpy(),
                                 working_crs=cfg.working_crs, offroad_minutes=prep.offroad_minutes,
                                 terrain=prep.params)
        return cost_matrix(net, net.origin_nodes, net.dest_nodes, limit_min)


def _crs_str(crs) -> str:
    return crs.to_string() if hasattr(crs, "to_string") else str(crs)


def region_grid(config, inputs, dem):
    """The combined engine's grid of a region: its DEM (``dem``; None: a flat 30″ grid) over the region polygon
    grown by ``[offroad] grid_buffer_km``, with ``grid_moves`` moves per cell. It needs only the inputs and the DEM."""
    from .combined import terrain_grid
    from .pipeline import region_polygon

    off = config.section("offroad")
    return terrain_grid(dem if dem is not None else flat_dem(inputs), region=region_polygon(inputs),
                        buffer_m=float(off["grid_buffer_km"]) * 1000.0, working_crs=config.working_crs,
                        moves=int(off["grid_moves"]))


def combined_area_grid(grid, dem) -> AreaGrid:
    """The grid units' areas are drawn on under the combined engine: its own grid (every cell habitable without
    a DEM)."""
    return AreaGrid(grid.transform, grid.shape, grid.crs, grid.elevation if dem is not None else None)


def flat_dem(inputs):
    """A flat 30″ grid over the region of ``inputs`` (no DEM, or --no-terrain): the grid engines then run on level
    ground."""
    from affine import Affine

    from .pipeline import region_polygon
    from .elevation import Dem

    import shapely

    x0, y0, x1, y1 = shapely.bounds(region_polygon(inputs))
    step = 1.0 / 120.0
    pad = 0.3  # degrees, ~30 km: room for the grid buffer
    x0, y0 = np.floor((x0 - pad) / step) * step, np.floor((y0 - pad) / step) * step
    x1, y1 = np.ceil((x1 + pad) / step) * step, np.ceil((y1 + pad) / step) * step
    cols, rows = int(round((x1 - x0) / step)), int(round((y1 - y0) / step))
    return Dem(np.zeros((rows, cols)), Affine(step, 0, x0, 0, -step, y1), "EPSG:4326", None, "(flat grid, no DEM)")
