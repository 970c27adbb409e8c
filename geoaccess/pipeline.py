"""The region run: inputs → network → terrain → travel times → coverage and blank spots → outputs."""
from __future__ import annotations

import logging
import platform
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .config import MAX_MINUTES, RegionConfig, check_threshold_order
from .coverage import TIME_COLS, classify, coverage_report, unit_summary
from .errors import ConfigError, InputError
from ._memory import peak_memory_mb
from .loaders import Inputs, load_inputs
from ._pools import thread_pool
from .progress import step

log = logging.getLogger("geoaccess")

SETTLEMENT_OUTPUT_COLUMNS = [
    "settlement_id", "name", "kind", "county_code", "county_name", "prefecture_code", "township_code", "admin_code",
    "ur_code", "lon", "lat", "loc_quality", "coord_source", "population", "pop_source",
    "t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min",
    "nearest_clinic_id", "nearest_thc_id", "nearest_county_id", "nearest_pref_id",
    "offroad_m", "offroad_min", "time_basis", "status", "gap_clinic", "gap_thc", "gap_county", "gap_severe",
]
THRESHOLD_KEYS = ("clinic", "thc", "county", "county_severe", "pref")


@dataclass
class Run:
    """Everything a region run computed: inputs, the graph, the settlement table and its metadata."""

    config: RegionConfig
    data_dir: Path
    inputs: Inputs
    table: gpd.GeoDataFrame
    thresholds: dict
    graph: object = None
    dem: object = None
    terrain_params: object = None
    engine: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    raw_times: pd.DataFrame | None = None  # engine times at each settlement's position, before location quality
    offroad_minutes: object = None  # the off-road leg model used: f(from_lon, from_lat, to_lon, to_lat) -> minutes
    facilities: gpd.GeoDataFrame | None = None  # the facilities routed to (register plus any added)
    rasters: object = None  # grid engines: travel.CellTimes (minutes from every cell, per level)
    model: object = None  # travel.TravelModel: the engine the run used (proposals cost and verify with it)
    positions: dict = field(default_factory=dict)  # how approximated positions were given their ranges
    facility_times: pd.DataFrame | None = None  # the engine's times from each facility (access.referral_times)


def parse_threshold_overrides(items: list[str], base: dict) -> dict:
    """Apply `LEVEL=MIN` overrides (from --threshold) to the config thresholds, with clear errors."""
    th = dict(base)
    for item in items or []:
        if "=" not in item:
            raise ConfigError(None, f"--threshold '{item}': expected LEVEL=MINUTES, e.g. county=90")
        key, value = (x.strip() for x in item.split("=", 1))
        if key not in THRESHOLD_KEYS:
            raise ConfigError(None, f"--threshold '{item}': unknown level '{key}' (use {', '.join(THRESHOLD_KEYS)})")
        try:
            minutes = float(value)
        except ValueError:
            raise ConfigError(None, f"--threshold '{item}': '{value}' is not a number of minutes") from None
        if not (np.isfinite(minutes) and 0 < minutes <= MAX_MINUTES):
            raise ConfigError(None, f"--threshold '{item}': minutes must be a finite positive number, at most {MAX_MINUTES:g}")
        th[key] = minutes
    if items:
        check_threshold_order(th, where="--threshold:")
    return th


def region_polygon(inputs: Inputs) -> shapely.Geometry:
    """The region's outline (union of county polygons; else a hull around the settlements), WGS84.

    Computed once per pair of county and settlement tables (a union of a region's counties takes ~0.1 s).
    """
    cached = getattr(inputs, "_outline", None)
    if cached is not None and cached[0] is inputs.counties and cached[1] is inputs.settlements:
        return cached[2]
    if inputs.counties is not None and len(inputs.counties):
        outline = shapely.union_all(inputs.counties.geometry.to_numpy())
    else:
        pts = shapely.points(inputs.settlements["lon"].to_numpy(), inputs.settlements["lat"].to_numpy())
        outline = shapely.convex_hull(shapely.multipoints(pts)).buffer(0.1)
    inputs._outline = (inputs.counties, inputs.settlements, outline)
    return outline


def road_spec(config: RegionConfig) -> dict:
    """The region config's [roads] section as `network.load_road_network` takes it."""
    roads = config.section("roads")
    return {"source": roads["source"], "paths": roads["paths"], "snap_tolerance_m": roads["snap_tolerance_m"],
            "clip_buffer_m": roads["clip_buffer_km"] * 1000.0, "network_type": roads["network_type"],
            "cache_dir": str(Path(roads["cache_dir"]).expanduser().resolve()), "offline": roads["offline"],
            "timeout": roads["timeout_s"], "retries": int(roads["retries"])}


@dataclass(frozen=True)
class GridAhead:
    """The combined engine's grid of a region, the minutes of its moves and the units' areas on it (futures).

    They need only the inputs and the DEM, so they are drawn in a thread of their own from the moment the DEM is
    read, while the road graph is built (:func:`prepare_region` with ``grid_ahead``); each is waited for where it
    is first used (:class:`geoaccess.travel.TravelModel`, :func:`compute_region_times`).
    """

    grid: Future
    weights: Future
    areas: Future


def _grid_ahead(config: RegionConfig, inputs: Inputs, dem, params) -> GridAhead:
    from .combined import grid_move_weights
    from .positions import unit_areas
    from .travel import combined_area_grid, region_grid

    pool = ThreadPoolExecutor(1, thread_name_prefix="geoaccess-grid")
    grid = pool.submit(region_grid, config, inputs, dem)
    weights = pool.submit(lambda: grid_move_weights(grid.result(), params))
    areas = pool.submit(lambda: unit_areas(inputs.settlements, inputs.counties, combined_area_grid(grid.result(), dem),
                                           config.section("positions")))
    pool.shutdown(wait=False)  # the jobs run on in order; each result is waited for where it is used
    return GridAhead(grid, weights, areas)


@dataclass
class PreparedRegion:
    """A region ready to route: inputs, the facilities routed to, the DEM and the road graph with its times."""

    config: RegionConfig
    inputs: Inputs
    facilities: gpd.GeoDataFrame
    graph: object
    dem: object
    params: object
    roads: dict
    speeds: dict
    timings: dict
    #: the combined engine's grid, its move minutes and the units' areas, drawn while the road graph was built
    grid_ahead: GridAhead | None = None

    def offroad_minutes(self, flon, flat, tlon, tlat):
        """The off-road leg model of this region (terrain-aware; flat without a DEM)."""
        from .terrain import offroad_leg_times

        return offroad_leg_times(flon, flat, tlon, tlat, self.dem, self.params, self.config.working_crs)[1]

    def engine_facts(self) -> dict:
        """What the engine was given, for the run summary."""
        from .network import graph_summary

        G = self.graph
        return {"terrain": self.dem is not None, "terrain_params": self.params.to_dict(),
                "working_crs": self.config.working_crs, "road_source": self.roads["source"],
                "graph": graph_summary(G), "build_report": G.graph.get("build_report", {}),
                "speeds_kph": self.speeds["road_class"], "speeds_source": self.speeds["source"]}


def prepare_region(config: RegionConfig, data_dir: Path, *, terrain: bool = True, inputs: Inputs | None = None,
                   extra_facilities: gpd.GeoDataFrame | None = None, grid_ahead: bool = False) -> PreparedRegion:
    """Load the inputs, open the DEM and build the road graph with terrain-aware edge times.

    ``grid_ahead``: also draw the combined engine's grid, its move minutes and the units' areas (:class:`GridAhead`)
    in a thread of their own once the DEM is read, while the road graph is built.
    """
    from . import network as net_mod
    from .terrain import TerrainParams, add_edge_travel_times

    timings: dict[str, float] = {}
    t = time.perf_counter()
    with step("inputs"):
        inputs = inputs or load_inputs(config, data_dir)
    if config.scenario is not None:  # scenario: facilities added / removed, its files recorded (geoaccess/scenarios.py)
        from .scenarios import apply_to_inputs

        inputs = apply_to_inputs(config, inputs)
    timings["load_s"] = time.perf_counter() - t
    if inputs.facilities is None or inputs.facilities.empty:
        raise InputError(config.input_path("facilities", data_dir), "no facility register: travel times need facilities")
    facilities = inputs.facilities
    if extra_facilities is not None and len(extra_facilities):
        facilities = pd.concat([facilities, extra_facilities], ignore_index=True)
    params = TerrainParams.from_dict(config.section("terrain"))

    dem_path = config.input_path("dem", data_dir)
    outline = region_polygon(inputs)
    with step("road network"), thread_pool(1, "geoaccess-dem") as pool:
        # the DEM is read (GDAL, without the GIL) while the road graph is built: one step for both
        def dem_then_grid():
            found = _open_region_dem(config, inputs, facilities, dem_path, terrain)
            return found, (_grid_ahead(config, inputs, found[0], params) if grid_ahead else None)

        dem_job = pool.submit(dem_then_grid)
        t = time.perf_counter()
        G = net_mod.load_road_network(road_spec(config), data_dir, outline, config.working_crs)
        speeds = config.section("speeds")
        G = net_mod.assign_speeds(G, speeds["road_class"], speeds["default_kph"], use_maxspeed=speeds["use_maxspeed"])
        timings["network_s"] = time.perf_counter() - t
        (dem, dem_warnings, timings["dem_s"]), ahead = dem_job.result()
    for w in dem_warnings:  # after the road graph's, in the same order every run
        inputs.report.warn(w)
    if terrain and dem is not None:
        inputs.paths["dem"] = dem_path
    elif terrain:
        inputs.report.skipped.append(f"dem: {dem_path} not found — travel times are flat (no grade or altitude)")
        log.warning("no DEM: travel times are flat")
    roads = config.section("roads")
    t = time.perf_counter()
    with step("terrain along the roads"):
        G = add_edge_travel_times(G, dem, params, config.working_crs)
    if config.scenario is not None or config.mode is not None:  # scenario / travel mode: road times changed
        from .scenarios import apply_to_graph

        G = apply_to_graph(config, G, dem, params)
    timings["terrain_s"] = time.perf_counter() - t
    return PreparedRegion(config, inputs, facilities, G, dem, params, roads, speeds, timings, ahead)


def _open_region_dem(config: RegionConfig, inputs: Inputs, facilities, dem_path: Path | None, terrain: bool):
    """(the region's DEM window or None, its warnings, seconds taken); None without terrain or a DEM file."""
    from .elevation import check_dem_at, open_dem

    t = time.perf_counter()
    if not (terrain and dem_path is not None and dem_path.exists()):
        return None, [], time.perf_counter() - t
    s = inputs.settlements
    x0, y0, x1, y1 = shapely.bounds(region_polygon(inputs))  # roads are clipped to the region + a buffer
    lon = np.r_[s["lon"].to_numpy(), facilities["lon"].to_numpy(), x0, x1]
    lat = np.r_[s["lat"].to_numpy(), facilities["lat"].to_numpy(), y0, y1]
    margin_m = config.section("roads")["clip_buffer_km"] * 1000.0 + 5000.0
    box = dem_box(dem_path, (np.nanmin(lon), np.nanmin(lat), np.nanmax(lon), np.nanmax(lat)), s, facilities,
                  inputs.report)
    dem = open_dem(dem_path, region_bounds=box, margin_m=margin_m)
    return dem, dem.warnings + check_dem_at(dem, s["lon"].to_numpy(), s["lat"].to_numpy()), time.perf_counter() - t


def dem_box(dem_path: Path, box: tuple, settlements: pd.DataFrame, facilities: pd.DataFrame, report) -> tuple:
    """The lon/lat box (west, south, east, north) the DEM is read over: the region's, cut to the DEM's own extent
    when the region reaches beyond it but at most `elevation.MAX_NODATA_SHARE` of the settlements do (islands south
    of a national DEM); the settlements and facilities beyond it are reported (no elevation: flat legs, or cut off
    by the grid engines). Otherwise the box is unchanged and `open_dem` refuses a DEM that misses the region."""
    import rasterio

    from .elevation import MAX_NODATA_SHARE, _bounds_to_crs

    try:
        with rasterio.open(dem_path) as src:
            b = src.bounds
            left, bottom, right, top = _bounds_to_crs((min(b.left, b.right), min(b.bottom, b.top), max(b.left, b.right),
                                                       max(b.bottom, b.top)), src.crs, "EPSG:4326")
    except Exception:  # unreadable or without a CRS: open_dem names the problem
        return box
    w, so, e, n = box
    if w >= left and e <= right and so >= bottom and n <= top:
        return box

    def beyond(frame):
        lon, lat = frame["lon"].to_numpy(float), frame["lat"].to_numpy(float)
        ok = np.isfinite(lon) & np.isfinite(lat)
        return ok & ~((lon >= left) & (lon <= right) & (lat >= bottom) & (lat <= top)), ok

    out_s, ok_s = beyond(settlements)
    out_f, _ = beyond(facilities)
    if out_s.sum() > MAX_NODATA_SHARE * max(1, ok_s.sum()):
        return box
    report.warn(f"{dem_path}: the region (lon {w:.2f}–{e:.2f}, lat {so:.2f}–{n:.2f}) reaches beyond the DEM (lon "
                f"{left:.2f}–{right:.2f}, lat {bottom:.2f}–{top:.2f}): {int(out_s.sum()):,} settlements and "
                f"{int(out_f.sum()):,} facilities lie outside it and have no elevation (their rows stay; with no "
                "terrain cell they may be unreachable); the DEM is read over its own extent")
    return max(w, left), max(so, bottom), min(e, right), min(n, top)


def finish_table(prepared: PreparedRegion, times: pd.DataFrame, thresholds: dict, *, model=None,
                 cells=None, areas=None) -> tuple[gpd.GeoDataFrame, dict]:
    """The settlement table: honest times and ranges for approximated positions, statuses, gaps, columns in order.

    ``cells`` (travel.CellTimes) gives the minutes from every grid cell; without it (road-only engine) the
    positions' ranges come from up to ``[positions] samples_per_area`` cells of each unit, timed by ``model``.
    ``areas``: ``positions.unit_areas`` on that grid when already computed.
    Returns the table and a description of the positions method (for the summary).
    """
    from .positions import GROUPS, honest_times, sample_cells, unit_areas
    from .travel import TravelModel

    s = prepared.inputs.settlements
    model = model or TravelModel(prepared, "network")
    pcfg = prepared.config.section("positions")
    grid = model.area_grid(cells)
    areas = areas if areas is not None else unit_areas(s, prepared.inputs.counties, grid, pcfg)
    fac = prepared.facilities
    if cells is not None:
        idx = areas.cells
        minutes = np.column_stack([cells.minutes[g].ravel()[idx].astype(np.float64) for g in GROUPS])
        nearest = np.column_stack([cells.nearest[g].ravel()[idx] for g in GROUPS])
        how = f"every habitable cell of the unit ({len(idx):,} cells), timed by the {model.engine} engine"
    else:
        keep = sample_cells(areas, int(pcfg["samples_per_area"]))
        areas = type(areas)(areas.cells[keep], areas.town_group[keep], areas.county_group[keep],
                            areas.settlement_area, areas.settlement_group, areas.limits)
        lon, lat = grid.centres(areas.cells)
        minutes, nearest = model.point_times(lon, lat, fac) if len(lon) else (np.zeros((0, 4)), np.zeros((0, 4), int))
        how = (f"up to {int(pcfg['samples_per_area'])} habitable cells per unit ({len(lon):,} cells), timed by the "
               f"{model.engine} engine")
    q = pcfg["range_quantiles"]
    times = honest_times(s, times, areas, minutes, nearest, fac["facility_id"].to_numpy(), quantiles=q)
    positions = {"method": "settlements without their own coordinates: the median over the habitable cells of their "
                           "township's area (Voronoi cell of the located township seats of the county, inside the "
                           "county polygon), else of their county; relocation sites keep their host seat's time; "
                           f"range = the {q[0]:.0%}–{q[1]:.0%} quantiles of those cells",
                 "cells": how, "habitable": areas.limits,
                 "range_quantiles": list(q), "time_basis_counts": pd.Series(times["time_basis"]).value_counts().to_dict()}
    inside = shapely.contains_xy(shapely.buffer(region_polygon(prepared.inputs), 0.02), s["lon"].to_numpy(),
                                 s["lat"].to_numpy())
    times = classify(s, times, thresholds, inside_region=inside)
    table = gpd.GeoDataFrame(s.join(times.drop(columns=[c for c in times.columns if c in s.columns])),
                             geometry="geometry", crs=4326)
    ordered = [c for c in SETTLEMENT_OUTPUT_COLUMNS if c in table.columns]
    extra = [c for c in table.columns if c not in ordered and c != "geometry"]
    return table[ordered + extra + ["geometry"]], positions


def compute_region_times(config: RegionConfig, data_dir: Path, *, terrain: bool = True,
                         engine: str = "combined", thresholds: dict | None = None,
                         inputs: Inputs | None = None, extra_facilities: gpd.GeoDataFrame | None = None,
                         searcher=None) -> Run:
    """Load a region and compute travel times from every settlement to each facility level.

    ``engine``: ``combined`` (roads and terrain in one search, the default), ``network`` (roads only) or
    ``raster`` (friction surface); see :mod:`geoaccess.travel`. ``searcher(prepared region)`` gives what runs the
    combined engine's level searches in its place for this run (the partitioned run's windows on a cluster,
    :func:`geoaccess.distributed.partitioned_run`); the times are the same.
    """
    from .access import times_with_facility_origins
    from .travel import TravelModel

    prep = prepare_region(config, data_dir, terrain=terrain, inputs=inputs, extra_facilities=extra_facilities,
                          grid_ahead=engine == "combined")
    model = TravelModel(prep, engine)
    if searcher is not None:
        if engine != "combined":
            raise ConfigError(None, f"a searcher replaces the combined engine's searches, not --engine {engine}'s")
        model.search_all = searcher(prep)
    th = thresholds or config.thresholds
    s = prep.inputs.settlements
    t = time.perf_counter()
    # the facilities ride along as extra origins, for the referral table (issue 14; no second search)
    times, cells, facility_times = times_with_facility_origins(model, s, prep.facilities)
    prep.timings["engine_s"] = time.perf_counter() - t
    t = time.perf_counter()
    areas = prep.grid_ahead.areas.result() if prep.grid_ahead is not None else None  # drawn while the roads were built
    model.search_all = None  # later uses of the model (proposals, point times) search in this process
    table, positions = finish_table(prep, times, th, model=model, cells=cells, areas=areas)
    prep.timings["positions_s"] = time.perf_counter() - t
    eng = {**times.attrs.get("engine", {}), **prep.engine_facts()}
    return Run(config=config, data_dir=Path(data_dir), inputs=prep.inputs, table=table, thresholds=th,
               graph=prep.graph, dem=prep.dem, terrain_params=prep.params, engine=eng, timings=prep.timings,
               warnings=list(times.attrs.get("warnings", [])), raw_times=times.copy(),
               offroad_minutes=prep.offroad_minutes, facilities=prep.facilities, rasters=cells, model=model,
               positions=positions, facility_times=facility_times)


def check_invariants(table: pd.DataFrame, n_input: int) -> None:
    """Every input row exactly once; t_clinic ≤ t_thc ≤ t_county ≤ t_pref wherever both are known."""
    if len(table) != n_input or not table["settlement_id"].is_unique:
        raise AssertionError(f"settlement rows: {len(table)} out for {n_input} in")
    v = table[TIME_COLS].to_numpy(dtype=float)
    v = np.where(np.isnan(v), np.inf, v)
    if not (v[:, :-1] <= v[:, 1:] + 1e-9).all():
        raise AssertionError("t_clinic ≤ t_thc ≤ t_county ≤ t_pref violated")
    for col in TIME_COLS:
        lo_col, hi_col = col.replace("_min", "_low_min"), col.replace("_min", "_high_min")
        if lo_col in table.columns:
            lo, est, hi = (np.where(np.isnan(a), np.inf, a) for a in
                           (table[c].to_numpy(dtype=float) for c in (lo_col, col, hi_col)))
            if not ((lo <= est + 1e-9) & (est <= hi + 1e-9)).all():
                raise AssertionError(f"{lo_col} ≤ {col} ≤ {hi_col} violated")


def county_hospital_access(table: pd.DataFrame, thresholds: dict | None = None) -> dict:
    """Share of settlements within the county and severe thresholds of a county hospital, over all (with the
    range from approximated positions) and over exactly located settlements."""
    th = thresholds or {"county": 60.0, "county_severe": 120.0}
    tc = table["t_county_min"].to_numpy(dtype=float)
    lo = table.get("t_county_low_min", table["t_county_min"]).to_numpy(dtype=float)
    hi = table.get("t_county_high_min", table["t_county_min"]).to_numpy(dtype=float)
    exact = table["loc_quality"].eq("exact").to_numpy()
    out = {}
    for key in ("county", "county_severe"):
        m = float(th[key])
        k = f"{m:g}"
        out[f"share_within_{k}_min"] = float(np.mean(tc <= m))
        out[f"share_within_{k}_min_low"] = float(np.mean(hi <= m))
        out[f"share_within_{k}_min_high"] = float(np.mean(lo <= m))
        out[f"share_within_{k}_min_exactly_located"] = float(np.mean(tc[exact] <= m)) if exact.any() else None
    return out


def summarise(run: Run, audit, wall_s: float) -> dict:
    """The run summary (summary.json): inputs, statuses, coverage shares, engine, versions, assumptions."""
    tab = run.table
    th = run.thresholds
    bands = th["bands"]
    cov = coverage_report(tab, bands)
    rep = run.inputs.report
    county_line = county_hospital_access(tab, th)
    return {
        "region": run.config.key, "region_name": run.config.name, "config": str(run.config.source),
        "data_dir": str(run.data_dir),
        "inputs": {
            "settlements": int(len(tab)), "by_kind": tab["kind"].value_counts().to_dict(),
            "by_loc_quality": tab["loc_quality"].value_counts().to_dict(),
            "facilities": int(len(run.inputs.facilities)),
            "facilities_by_level": run.inputs.facilities["level"].value_counts().to_dict(),
            "counties": int(len(run.inputs.counties)) if run.inputs.counties is not None else 0,
            "layers": rep.layers,
        },
        "status_counts": tab["status"].value_counts().to_dict(),
        "time_basis_counts": tab["time_basis"].value_counts().to_dict(),
        "thresholds_min": {k: th[k] for k in THRESHOLD_KEYS},
        "gaps": {k: int(tab[k].sum()) for k in ("gap_clinic", "gap_thc", "gap_county", "gap_severe")},
        "gaps_population": {k: float(tab.loc[tab[k], "population"].sum()) for k in
                            ("gap_clinic", "gap_thc", "gap_county", "gap_severe")},
        "gaps_range": gap_ranges(tab, th),
        "positions": run.positions,
        "county_hospital_access": county_line,
        "coverage": cov,
        "blank_spots": audit.summary(),
        "scenario": scenario_facts(run),
        "engine": run.engine, "timings_s": {k: round(v, 3) for k, v in run.timings.items()},
        "warnings": rep.warnings + run.warnings, "assumptions": rep.assumptions + engine_assumptions(run) + _scenario_lines(run), "skipped": rep.skipped,
        "repairs": rep.repairs, "software": software_versions(), "wall_time_s": round(wall_s, 2),
        "peak_memory_mb": peak_memory_mb(), "machine": machine_facts(), "steps": _steps(),
    }


def scenario_facts(run: Run) -> dict:
    """The run's scenario and travel mode, and what they changed (docs/scenarios.md)."""
    from .scenarios import describe

    return describe(run.config, run.graph)


def _scenario_lines(run: Run) -> list[str]:
    """The scenario and mode in words, for the report's assumptions (nothing for the baseline)."""
    f = scenario_facts(run)
    out = []
    if f["name"] != "baseline":
        r = f.get("roads", {})
        out.append(f"scenario {f['name']}: {f.get('description', '')} ({f.get('source', '')})"
                   + (f"; {r['km_slower']:,.0f} km of road slower, {r['km_faster']:,.0f} km faster, "
                      f"{r['km_closed']:,.0f} km closed" if r else ""))
    if f["mode"] != "motorised":
        out.append(f"travel mode {f['mode']}: {f.get('mode_definition', {})}")
    return out


def machine_facts() -> dict:
    """CPUs, memory and load of the machine the run took its wall time on (timings depend on them)."""
    import os

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    return {"cpus": os.cpu_count(), "memory_gb": mem_gb, "load_average_1_5_15_min": load}


def _steps() -> list[dict]:
    from .progress import recorded

    return recorded()


def gap_ranges(table: pd.DataFrame, thresholds: dict) -> dict:
    """Settlements beyond each threshold at the low end of their range (certainly beyond) and at the high end
    (possibly beyond), beside the count at the estimates (``gaps``)."""
    out = {}
    for flag, g, key in (("gap_clinic", "clinic", "clinic"), ("gap_thc", "thc", "thc"), ("gap_county", "county", "county"),
                         ("gap_severe", "county", "county_severe")):
        m = float(thresholds[key])
        lo = table.get(f"t_{g}_low_min", table[f"t_{g}_min"]).to_numpy(float)
        hi = table.get(f"t_{g}_high_min", table[f"t_{g}_min"]).to_numpy(float)
        out[flag] = {"low": int((~(lo <= m)).sum()), "high": int((~(hi <= m)).sum())}
    return out


def engine_assumptions(run: Run) -> list[str]:
    """What the travel-time model assumed, in words, for every report."""
    p = run.terrain_params
    from .terrain import tobler_kph

    flat_kph = max(p.offroad_min_kph, tobler_kph(0.0, p) * p.offroad_speed_factor)
    offroad = (f"off-road movement: straight line × {p.offroad_detour_factor:g} detour at Tobler's speed × "
               f"{p.offroad_speed_factor:g} ({flat_kph:.1f} km/h on the flat, slower uphill and on steep ground, at "
               f"least {p.offroad_min_kph:g} km/h); it stands for the unmapped local roads and tracks")
    eng = run.engine.get("engine")
    if eng == "combined":
        how = (f"travel: one search over the roads and the DEM grid together ({run.engine.get('grid_moves')} moves per "
               f"cell, cells without elevation are barriers); a trip may leave or join a road in any cell it crosses "
               f"and goes straight across land to any facility when that is faster")
    elif eng == "raster":
        how = "travel: friction-surface cost distance on the DEM grid with the roads burned in (docs/raster.md)"
    else:
        how = "travel: the road graph only; each settlement and facility reaches the nearest road point off road"
    out = [f"roads: {run.engine.get('road_source')} network as given (the China 2000 layers hold national and "
           f"provincial trunk roads only); speeds by class {run.engine.get('speeds_kph')} km/h "
           f"({run.engine.get('speeds_source')})", how, offroad]
    if run.dem is not None:
        text = ("terrain: grade sampled along each road every "
                f"{p.sample_spacing_m:.0f} m over a {p.grade_window_m:.0f} m window; uphill and downhill slow "
                "differently")
        high = _road_km_above(run.graph, p.altitude_threshold_m)
        if high:  # stated only where the region's roads climb above the threshold
            text += (f"; altitude derating above {p.altitude_threshold_m:.0f} m ({high:,.0f} km of road lie above "
                     "it)")
        out.append(text + " (docs/terrain.md)")
    parts = run.engine.get("partitions")
    if parts:
        out.append(_partition_words(parts))
    return out


def _partition_words(parts: dict) -> str:
    """The partitioned run in one line: what was searched where, and how much the windows certified."""
    rounds = parts["rounds"] or [{}]
    first, last = rounds[0], rounds[-1]
    if parts.get("engine") == "combined":
        total = first.get("node_levels", 0)
        share = f"{first.get('certified', 0) / total:.1%}" if total else "—"
        return (f"run on Dask ({parts['workers']} workers): each {parts['by']}'s window of the graph (grid and roads "
                f"within {parts['buffer_km']:g} km) searched on a worker; {share} of the cells' and settlements' "
                f"level times certified there, {last.get('node_levels', 0):,} searched again in the whole graph; "
                "the same times as one process (docs/distributed.md)")
    return (f"run on Dask ({parts['workers']} workers): each {parts['by']} routed on the roads within "
            f"{parts['buffer_km']:g} km of it, uncertified settlements routed again on the whole graph; the same "
            "times as one process (docs/distributed.md)")


def _road_km_above(G, metres: float) -> float:
    """Kilometres of road whose highest point is above `metres` (a two-way road's two directed edges count once)."""
    if G is None:
        return 0.0
    seen, metres_total = set(), 0.0
    for u, v, d in G.edges(data=True):
        if not d.get("elev_max", float("nan")) > metres:
            continue
        key = (min(str(u), str(v)), max(str(u), str(v)), round(float(d.get("length", 0.0)), 1))
        if key not in seen:
            seen.add(key)
            metres_total += float(d.get("length", 0.0))
    return metres_total / 1000.0


def software_versions() -> dict:
    """Versions of Python and the libraries that shaped the numbers."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("geoaccess", "numpy", "scipy", "pandas", "geopandas", "shapely", "pyogrio", "rasterio", "networkx",
                "osmnx", "pyproj"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def county_table(run: Run, audit) -> pd.DataFrame:
    """County summary for every county of the region (counties without settlements keep a row)."""
    tab = run.table
    counties = run.inputs.counties
    names = dict(zip(counties["adcode"], counties["name"])) if counties is not None else \
        dict(zip(tab["county_code"], tab["county_name"]))
    blanks = audit.blank_spots.groupby("county_code").size() if len(audit.blank_spots) else pd.Series(dtype=int)
    out = unit_summary(tab, "county_code", names, blanks, run.thresholds)
    if counties is not None:
        full = pd.DataFrame({"county_code": counties["adcode"], "county_name": counties["name"]})
        out = full.merge(out.drop(columns="county_name"), on="county_code", how="left")
        out["n_settlements"] = out["n_settlements"].fillna(0).astype(int)
        out["n_blank_spots"] = out["county_code"].map(blanks).fillna(0).astype(int)
    out.insert(2, "prefecture_code", out["county_code"].str[:4] + "00")
    return out.sort_values("county_code").reset_index(drop=True)


def prefecture_table(run: Run, audit) -> pd.DataFrame:
    """Prefecture summary (same measures as the county summary)."""
    tab = run.table
    prefs = run.inputs.prefectures
    names = dict(zip(prefs["adcode"], prefs["name"])) if prefs is not None else {}
    blanks = audit.blank_spots.assign(p=audit.blank_spots["county_code"].astype(str).str[:4] + "00").groupby("p").size() \
        if len(audit.blank_spots) else None
    return unit_summary(tab, "prefecture_code", names, blanks, run.thresholds)


def run_audit(run: Run):
    """The blank-spot audit of a computed run, under the region's standards."""
    from .audit import audit_blank_spots

    inp = run.inputs
    counties = pd.DataFrame({"county_code": inp.counties["adcode"], "county_name": inp.counties["name"]}) \
        if inp.counties is not None else run.table[["county_code", "county_name"]].drop_duplicates()
    basis = inp.facilities["basis"].astype(str)
    note = "register derived from the standards: one facility per located administrative seat" \
        if basis.str.contains("standard-derived").any() else ""
    return audit_blank_spots(standards=run.config.section("standards"), settlements=run.table,
                             facilities=inp.facilities, counties=counties, gazetteer=inp.gazetteer,
                             county_codes=inp.county_codes, thresholds=run.thresholds, register_note=note,
                             register_from_seats=bool(len(basis)) and basis.str.contains("standard-derived").all(),
                             county_seats=_county_seats(run))


def _county_seats(run: Run) -> pd.DataFrame | None:
    """Each county's seat by admin code (the gazetteer's county row, XXXXXX000000), WGS84; None without a gazetteer."""
    from .coords import to_wgs84

    gaz = run.inputs.gazetteer
    if gaz is None or "level" not in gaz:
        return None
    rows = gaz[gaz["level"].eq("county")].dropna(subset=["lon", "lat"])
    if rows.empty:
        return None
    lon, lat = to_wgs84(rows["lon"].to_numpy(float), rows["lat"].to_numpy(float), run.config.raw["inputs"]["gazetteer_crs"])
    code6 = rows["code"].astype(str).str[:6]
    cc = run.inputs.county_codes
    current = code6.map(cc["county_code"]).fillna(code6) if cc is not None and "county_code" in cc else code6
    return pd.DataFrame({"county_code": current.to_numpy(), "lon": lon, "lat": lat})


def run_gaps(config: RegionConfig, data_dir: Path, out_dir: Path, *, thresholds: list[str] | None = None,
             terrain: bool = True, engine: str = "combined", compute=None) -> dict:
    """The planners' command: travel times, gaps, blank spots; every output written atomically.

    `results.gaps_result` then `GapsResult.write` (what ``geoaccess.gaps(...).write(folder)`` does), for
    callers that pass a config: `thresholds` are `LEVEL=MIN` overrides (as --threshold), `compute` replaces
    `compute_region_times` (e.g. the partitioned Dask run). Returns `GapsResult.report()`.
    """
    from .results import gaps_result

    if thresholds:
        config = config.with_overrides(thresholds=parse_threshold_overrides(thresholds, config.thresholds))
    result = gaps_result(config, data_dir, engine=engine, terrain=terrain, compute=compute)
    result.write(out_dir)
    return result.report()


def gaps_referral(run: Run) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """The gaps run's referral tables (:func:`geoaccess.access.referral_tables`) from its own pass: the facilities'
    times rode along as origins, the chains use the settlements' times at their own positions (``raw_times``).
    The facility table keeps the register's points (a point layer in the GeoPackage, lon/lat in the CSV)."""
    from .access import referral_tables
    from .travel import TravelModel

    model = run.model
    if model is None:  # the partitioned run: the same road-only model, for the facilities' one pass
        prep = PreparedRegion(run.config, run.inputs, run.facilities, run.graph, run.dem, run.terrain_params, {}, {},
                              {})
        model = TravelModel(prep, "network")
    referral, chains = referral_tables(model, run.inputs.settlements, run.facilities, settlement_times=run.raw_times,
                                       origin_times=run.facility_times)
    return gpd.GeoDataFrame(referral, geometry=run.facilities.geometry.to_numpy(), crs=run.facilities.crs), chains


def json_default(o):
    """json.dumps `default=`: numpy numbers and arrays as Python values (NaN as null), paths and the rest as text."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
