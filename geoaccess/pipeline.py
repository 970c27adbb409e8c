"""The region run: inputs → network → terrain → travel times → coverage and blank spots → outputs."""
from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .config import RegionConfig
from .coverage import TIME_COLS, apply_location_quality, classify, coverage_report, unit_summary
from .errors import ConfigError, InputError
from ._memory import peak_memory_mb
from .loaders import Inputs, load_inputs

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
    rasters: tuple | None = None  # raster engine: ({group: LevelTimes}, Surface)


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
        if not minutes > 0:
            raise ConfigError(None, f"--threshold '{item}': minutes must be positive")
        th[key] = minutes
    return th


def region_polygon(inputs: Inputs) -> shapely.Geometry:
    """The region's outline (union of county polygons; else a hull around the settlements), WGS84."""
    if inputs.counties is not None and len(inputs.counties):
        return shapely.union_all(inputs.counties.geometry.to_numpy())
    pts = shapely.points(inputs.settlements["lon"].to_numpy(), inputs.settlements["lat"].to_numpy())
    return shapely.convex_hull(shapely.multipoints(pts)).buffer(0.1)


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
                   extra_facilities: gpd.GeoDataFrame | None = None) -> PreparedRegion:
    """Load the inputs, open the DEM and build the road graph with terrain-aware edge times."""
    from . import network as net_mod
    from .terrain import TerrainParams, add_edge_travel_times, open_dem

    timings: dict[str, float] = {}
    t = time.perf_counter()
    inputs = inputs or load_inputs(config, data_dir)
    timings["load_s"] = time.perf_counter() - t
    if inputs.facilities is None or inputs.facilities.empty:
        raise InputError(config.input_path("facilities", data_dir), "no facility register: travel times need facilities")
    facilities = inputs.facilities
    if extra_facilities is not None and len(extra_facilities):
        facilities = pd.concat([facilities, extra_facilities], ignore_index=True)
    s = inputs.settlements
    params = TerrainParams.from_dict(config.section("terrain"))

    t = time.perf_counter()
    dem = None
    dem_path = config.input_path("dem", data_dir)
    if terrain and dem_path is not None and dem_path.exists():
        x0, y0, x1, y1 = shapely.bounds(region_polygon(inputs))  # roads are clipped to the region + a buffer
        lon = np.r_[s["lon"].to_numpy(), facilities["lon"].to_numpy(), x0, x1]
        lat = np.r_[s["lat"].to_numpy(), facilities["lat"].to_numpy(), y0, y1]
        margin_m = config.section("roads")["clip_buffer_km"] * 1000.0 + 5000.0
        dem = open_dem(dem_path, region_bounds=(np.nanmin(lon), np.nanmin(lat), np.nanmax(lon), np.nanmax(lat)),
                       margin_m=margin_m)
        inputs.paths["dem"] = dem_path
    elif terrain:
        inputs.report.skipped.append(f"dem: {dem_path} not found — travel times are flat (no grade or altitude)")
        log.warning("no DEM: travel times are flat")
    timings["dem_s"] = time.perf_counter() - t

    t = time.perf_counter()
    roads = config.section("roads")
    spec = {"source": roads["source"], "paths": roads["paths"], "snap_tolerance_m": roads["snap_tolerance_m"],
            "clip_buffer_m": roads["clip_buffer_km"] * 1000.0, "network_type": roads["network_type"],
            "cache_dir": str(Path(roads["cache_dir"]).expanduser().resolve()), "offline": roads["offline"],
            "timeout": roads["timeout_s"], "retries": int(roads["retries"])}
    G = net_mod.load_road_network(spec, data_dir, region_polygon(inputs), config.working_crs)
    speeds = config.section("speeds")
    G = net_mod.assign_speeds(G, speeds["road_class"], speeds["default_kph"], use_maxspeed=speeds["use_maxspeed"])
    timings["network_s"] = time.perf_counter() - t
    t = time.perf_counter()
    G = add_edge_travel_times(G, dem, params, config.working_crs)
    timings["terrain_s"] = time.perf_counter() - t
    return PreparedRegion(config, inputs, facilities, G, dem, params, roads, speeds, timings)


def finish_table(prepared: PreparedRegion, times: pd.DataFrame, thresholds: dict) -> gpd.GeoDataFrame:
    """The settlement table: honest times for approximated positions, statuses, gaps, columns in order."""
    s = prepared.inputs.settlements
    times = apply_location_quality(s, times)
    inside = shapely.contains_xy(shapely.buffer(region_polygon(prepared.inputs), 0.02), s["lon"].to_numpy(),
                                 s["lat"].to_numpy())
    times = classify(s, times, thresholds, inside_region=inside)
    table = gpd.GeoDataFrame(s.join(times.drop(columns=[c for c in times.columns if c in s.columns])),
                             geometry="geometry", crs=4326)
    ordered = [c for c in SETTLEMENT_OUTPUT_COLUMNS if c in table.columns]
    extra = [c for c in table.columns if c not in ordered and c != "geometry"]
    return table[ordered + extra + ["geometry"]]


def compute_region_times(config: RegionConfig, data_dir: Path, *, terrain: bool = True,
                         engine: str = "network", thresholds: dict | None = None,
                         inputs: Inputs | None = None, extra_facilities: gpd.GeoDataFrame | None = None) -> Run:
    """Load a region and compute travel times from every settlement to each facility level."""
    from .engine import compute_travel_times

    prep = prepare_region(config, data_dir, terrain=terrain, inputs=inputs, extra_facilities=extra_facilities)
    if engine == "raster" and prep.dem is None:
        raise InputError(config.input_path("dem", data_dir),
                         "--engine raster needs the region's DEM (and --no-terrain cannot be used with it)")
    if engine == "raster" and prep.dem.windowed:
        raise InputError(prep.dem.path, "--engine raster needs the whole DEM window in memory and this one exceeds "
                                        "GEOACCESS_DEM_MAX_CELLS: use --engine network or a coarser DEM")
    th = thresholds or config.thresholds
    s = prep.inputs.settlements
    t = time.perf_counter()
    rasters = None
    if engine == "raster":
        times, rasters = _raster_times(prep.graph, prep.dem, prep.params, prep.facilities, s)
    else:
        times = compute_travel_times(prep.graph, s, prep.facilities, working_crs=config.working_crs,
                                     offroad_minutes=prep.offroad_minutes,
                                     max_offroad_m=config.section("offroad")["max_offroad_km"] * 1000.0)
    prep.timings["engine_s"] = time.perf_counter() - t
    table = finish_table(prep, times, th)
    eng = {**times.attrs.get("engine", {}), **prep.engine_facts()}
    return Run(config=config, data_dir=Path(data_dir), inputs=prep.inputs, table=table, thresholds=th,
               graph=prep.graph, dem=prep.dem, terrain_params=prep.params, engine=eng, timings=prep.timings,
               warnings=list(times.attrs.get("warnings", [])), raw_times=times.copy(),
               offroad_minutes=prep.offroad_minutes, facilities=prep.facilities, rasters=rasters)


def _raster_times(G, dem, params, facilities: pd.DataFrame, settlements: pd.DataFrame):
    """The friction-surface engine: roads burned into the DEM grid, one cost-distance pass per level."""
    from . import raster

    edges = [(d["geometry"], d["speed_kph"]) for _, _, d in G.edges(data=True) if d.get("geometry") is not None]
    roads = gpd.GeoDataFrame({"speed_kph": [e[1] for e in edges]}, geometry=[e[0] for e in edges], crs=4326)
    surface = raster.friction_surface(dem.array, dem.transform, roads=roads, crs=str(dem.crs),
                                      **raster.friction_params(params))
    results = raster.travel_time_raster(surface, facilities)
    times = raster.settlement_times(results, settlements, surface)
    times["offroad_m"] = np.nan
    times["offroad_min"] = np.nan
    shape = "×".join(map(str, dem.shape))
    times.attrs["engine"] = {"engine": "raster", "grid": shape, "method": "anisotropic Tobler friction, roads burned "
                             "in at their class speed, 8-connected multi-source cost distance (docs/raster.md)"}
    times.attrs["warnings"] = []
    return times, (results, surface)


def check_invariants(table: pd.DataFrame, n_input: int) -> None:
    """Every input row exactly once; t_clinic ≤ t_thc ≤ t_county ≤ t_pref wherever both are known."""
    if len(table) != n_input or not table["settlement_id"].is_unique:
        raise AssertionError(f"settlement rows: {len(table)} out for {n_input} in")
    v = table[TIME_COLS].to_numpy(dtype=float)
    v = np.where(np.isnan(v), np.inf, v)
    if not (v[:, :-1] <= v[:, 1:] + 1e-9).all():
        raise AssertionError("t_clinic ≤ t_thc ≤ t_county ≤ t_pref violated")


def county_hospital_access(table: pd.DataFrame) -> dict:
    """Share of settlements within 60 and 120 minutes of a county hospital, over all and over exactly located."""
    tc = table["t_county_min"].to_numpy(dtype=float)
    exact = table["loc_quality"].eq("exact").to_numpy()
    return {
        "share_within_60_min": float(np.mean(tc <= 60)), "share_within_120_min": float(np.mean(tc <= 120)),
        "share_within_60_min_exactly_located": float(np.mean(tc[exact] <= 60)) if exact.any() else None,
        "share_within_120_min_exactly_located": float(np.mean(tc[exact] <= 120)) if exact.any() else None,
    }


def summarise(run: Run, audit, wall_s: float) -> dict:
    """The run summary (summary.json): inputs, statuses, coverage shares, engine, versions, assumptions."""
    tab = run.table
    th = run.thresholds
    bands = th["bands"]
    cov = coverage_report(tab, bands)
    rep = run.inputs.report
    county_line = county_hospital_access(tab)
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
        "county_hospital_access": county_line,
        "coverage": cov,
        "blank_spots": {"total": int(len(audit.blank_spots)), "by_rule": audit.counts_by_rule(),
                        "exemptions": int(len(audit.exemptions)), "not_auditable": audit.not_auditable},
        "engine": run.engine, "timings_s": {k: round(v, 3) for k, v in run.timings.items()},
        "warnings": run.warnings, "assumptions": rep.assumptions + engine_assumptions(run), "skipped": rep.skipped,
        "repairs": rep.repairs, "software": software_versions(), "wall_time_s": round(wall_s, 2),
        "peak_memory_mb": peak_memory_mb(),
    }


def engine_assumptions(run: Run) -> list[str]:
    """What the travel-time model assumed, in words, for every report."""
    p = run.terrain_params
    out = [f"roads: {run.engine.get('road_source')} network as given (the China 2000 layers hold national and "
           f"provincial trunk roads only); speeds by class {run.engine.get('speeds_kph')} km/h "
           f"({run.engine.get('speeds_source')})",
           f"off-road legs from each settlement/facility to the nearest road point: straight line × "
           f"{p.offroad_detour_factor} detour at Tobler's speed × {p.offroad_speed_factor} "
           f"({6 * np.exp(-3.5 * 0.05) * p.offroad_speed_factor:.1f} km/h on the flat), terrain-adjusted; "
           "they stand for the unmapped local roads and tracks"]
    if run.dem is not None:
        out.append("terrain: grade sampled along each road every "
                   f"{p.sample_spacing_m:.0f} m over a {p.grade_window_m:.0f} m window; uphill and downhill slow "
                   "differently; altitude derating above "
                   f"{p.altitude_threshold_m:.0f} m (docs/terrain.md)")
    return out


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
                             county_codes=inp.county_codes, thresholds=run.thresholds, register_note=note)


def run_gaps(config: RegionConfig, data_dir: Path, out_dir: Path, *, thresholds: list[str] | None = None,
             terrain: bool = True, engine: str = "network", compute=None) -> dict:
    """The planners' command: travel times, gaps, blank spots; every output written atomically.

    `compute` replaces `compute_region_times` (same arguments), e.g. the partitioned Dask run.
    """
    from ._atomic import atomic_output_dir
    from .export import export_layers
    from .outputs import provenance_inputs

    t0 = time.perf_counter()
    th = parse_threshold_overrides(thresholds or [], config.thresholds)
    run = (compute or compute_region_times)(config, data_dir, terrain=terrain, engine=engine, thresholds=th)
    check_invariants(run.table, len(run.inputs.settlements))
    audit = run_audit(run)
    counties = county_table(run, audit)
    prefs = prefecture_table(run, audit)
    relocation = run.table[run.table["kind"].eq("relocation")]
    t = time.perf_counter()
    layers = {"settlements": run.table, "facilities": run.inputs.facilities,
              "county_summary": _with_polygons(counties, run.inputs.counties),
              "prefecture_summary": prefs, "blank_spots": audit.blank_spots, "relocation": relocation}
    if len(audit.exemptions):
        layers["exemptions"] = audit.exemptions
    with atomic_output_dir(out_dir, inputs=provenance_inputs(config, data_dir, run.inputs.paths), command="gaps",
                           parameters={"engine": engine, "terrain": terrain, "thresholds": th}) as tmp:
        csv_layers = {k: v for k, v in layers.items() if k != "facilities"} | {"exemptions": audit.exemptions}
        export_layers(csv_layers, tmp, formats=("csv",), region=config.key)
        export_layers(layers, tmp, formats=("gpkg",), region=config.key)
        export_layers({"settlements": run.table}, tmp, formats=("shp",), region=config.key)
        if run.rasters:
            from .raster import write_travel_time_tif

            results, surface = run.rasters
            for group, res in results.items():
                write_travel_time_tif(tmp / f"traveltime_{group}.tif", res.minutes, surface)
        run.timings["write_s"] = time.perf_counter() - t
        summary = summarise(run, audit, time.perf_counter() - t0)
        (tmp / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1, default=_json_default),
                                          encoding="utf-8")
    summary["out_dir"] = str(out_dir)
    summary["_tables"] = {"counties": counties, "relocation": relocation, "audit": audit}
    return summary


def _with_polygons(table: pd.DataFrame, counties: gpd.GeoDataFrame | None):
    if counties is None:
        return table
    geo = counties[["adcode", "geometry"]].rename(columns={"adcode": "county_code"})
    return gpd.GeoDataFrame(table.merge(geo, on="county_code", how="left"), geometry="geometry", crs=4326)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
