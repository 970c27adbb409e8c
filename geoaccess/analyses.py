"""The analyses beyond gaps, for the library API: accessibility, own unit, referral, capacity coverage,
catchments, population grid and the proposals — each a result with tables, a summary and ``.write(folder)``.

Re-exported by `geoaccess.api` (``ga.accessibility`` …); the CLI commands call exactly these.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd

from .export import write_csv
from .config import RegionConfig
from .errors import ConfigError, InputError
from .loaders import Inputs
from .pipeline import Run
from .region import Engine, Region, as_region, engine_name


# ----------------------------------------------------------------------------- tables with a summary

@dataclass
class TableResult:
    """Tables and a summary of one analysis, and how its output set is written.

    The tables are attributes too (``result.settlements``, ``result.counties``); `write` writes
    ``files`` (CSV, or a GeoPackage layer for ``.gpkg``) and the summary as JSON through the atomic writer.
    """

    command: str
    region: Region
    tables: dict[str, pd.DataFrame]
    summary: dict
    parameters: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file name → table key
    summary_file: str | None = None
    inputs: dict[str, Path] = field(default_factory=dict, repr=False)
    extra: Callable[[Path], None] | None = field(default=None, repr=False)  # writes more files into the staging folder
    json_default: Callable | None = field(default=None, repr=False)

    def __getattr__(self, name: str):
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or table {name!r} "
                             f"(tables: {', '.join(tables)})")

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self.__dict__.get("tables", {})))

    def write(self, folder: str | os.PathLike) -> Path:
        """Write the output set into `folder`, all or nothing; returns the folder."""
        import pyogrio

        from ._atomic import atomic_output_dir
        from .outputs import provenance_inputs

        out_dir = Path(folder)
        cfg, data_dir = self.region.config, self.region.data_dir
        with atomic_output_dir(out_dir, inputs=provenance_inputs(cfg, data_dir, self.inputs), command=self.command,
                               parameters=self.parameters) as tmp:
            for name, key in self.files.items():
                if name.endswith(".gpkg"):
                    pyogrio.write_dataframe(self.tables[key], tmp / name, layer=Path(name).stem, driver="GPKG")
                else:
                    write_csv(self.tables[key], tmp / name)
            if self.summary_file:
                (tmp / self.summary_file).write_text(json.dumps(self.summary, ensure_ascii=False, indent=1,
                                                                default=self.json_default), encoding="utf-8")
            if self.extra is not None:
                self.extra(tmp)
        return out_dir


def _model(region: Region, engine: str, inputs: Inputs | None = None):
    """The prepared region and its travel model."""
    from .pipeline import prepare_region
    from .travel import TravelModel

    prep = prepare_region(region.config, region.data_dir, inputs=inputs)
    return prep, TravelModel(prep, engine)


def _numbers(values, name: str) -> list[float] | None:
    if values is None:
        return None
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(None, f"{name}={values!r}: expected a list of numbers") from None


def accessibility(region: Region | str, level: str, method: str = "2sfca", *, catchment: float | None = None,
                  supply: str | None = None, engine: Engine = "combined", bands: Sequence[float] | None = None,
                  weights: Sequence[float] | None = None, beta: float | None = None,
                  min_minutes: float | None = None, write_matrix: bool = False) -> TableResult:
    """Supply–demand accessibility (2SFCA, E2SFCA, Gaussian 2SFCA, gravity) per settlement, county and facility.

    Parameters
    ----------
    level : {"clinic", "thc", "county", "pref"}
        Facility level (that level or higher).
    method : {"2sfca", "e2sfca", "g2sfca", "gravity"}
    catchment : float, optional
        Catchment in minutes (default: the level's threshold).
    supply : str, optional
        Register column giving each facility's supply (beds, doctors); default one unit per facility.
    bands, weights, beta, min_minutes
        E2SFCA bands (minutes) and weights; gravity decay power and shortest trip (default: [access]).
    write_matrix : bool
        Also write ``od_{level}.csv`` (the pairs within the catchment) with `TableResult.write`.

    Returns
    -------
    TableResult
        ``.settlements``, ``.counties``, ``.facilities``, ``.od`` (DataFrames; scores per 10,000 people) and
        ``.summary`` (docs/access.md).
    """
    from .access import decay_from_config, register_values, supply_demand_access
    from .loaders import load_inputs as _load

    region, engine = as_region(region), engine_name(engine, ("combined", "network"))
    cfg = region.config
    catch = float(catchment) if catchment is not None else float(cfg.thresholds[level])
    decay = decay_from_config(cfg.section("access"), method, catch, bands=_numbers(bands, "bands"),
                              weights=_numbers(weights, "weights"), beta=beta, min_minutes=min_minutes)
    inputs = _load(cfg, region.data_dir)
    sup = register_values(cfg, region.data_dir, inputs.facilities, supply, "supply") if supply else None
    prep, model = _model(region, engine, inputs)
    res = supply_demand_access(model, prep.inputs.settlements, prep.facilities, level, decay, sup,
                               supply_name=f"register column '{supply}'" if supply else "one per facility")
    res.summary |= {"region": cfg.key, "engine": engine, "positions": "each settlement's own position (approximated "
                    "positions: their seat's), not the area medians of settlements.csv"}
    stem = f"access_{method}_{level}"
    files = {f"{stem}.csv": "settlements", f"{stem}_counties.csv": "counties", f"{stem}_facilities.csv": "facilities"}
    if write_matrix:
        files[f"od_{level}.csv"] = "od"
    return TableResult("access", region, {"settlements": res.settlements, "counties": res.counties,
                                          "facilities": res.facilities, "od": res.od}, res.summary,
                       parameters={"level": level, "engine": engine, "supply": supply, "write_matrix": write_matrix,
                                   **decay.describe()},
                       files=files, summary_file="access_summary.json", inputs=prep.inputs.paths)


def own_unit(region: Region | str, engine: Engine = "combined") -> TableResult:
    """Care in one's own county / township (就地就医) against the nearest across borders (就近就医).

    Returns
    -------
    TableResult
        ``.settlements`` (own-unit and nearest times per settlement, minutes), ``.counties`` and ``.summary``
        (by level: population shares within the threshold, people gaining by crossing the border).
    """
    from .access import own_unit_summary, own_unit_table

    region, engine = as_region(region), engine_name(engine, ("combined", "network"))
    cfg = region.config
    acc, th = cfg.section("access"), cfg.thresholds
    prep, model = _model(region, engine)
    table = own_unit_table(model, prep.inputs.settlements, prep.facilities,
                           county_limit_min=acc["own_county_limit_min"],
                           township_limit_min=acc["own_township_limit_min"])
    counties = own_unit_summary(table, th)
    pop = table["population"].fillna(0).to_numpy(float)
    levels = {}
    for level, unit in (("county", "county"), ("thc", "township")):
        m = float(th[level])
        near = table[f"t_{level}_min"].to_numpy(float) <= m
        own = table[f"t_{level}_own_min"].to_numpy(float) <= m
        levels[level] = {"unit": unit, "minutes": m,
                         "pop_share_nearest": float(pop[near].sum() / pop.sum()),
                         "pop_share_own_unit": float(pop[own].sum() / pop.sum()),
                         "people_gaining_by_crossing": float(pop[near & ~own].sum()),
                         "of_whom_in_units_without_such_facility":
                             float(pop[near & ~own & table[f"own_{level}_status"].eq("none_in_unit").to_numpy()].sum()),
                         "people_whose_nearest_is_across_the_border":
                             float(pop[table[f"own_{level}_status"].ne("own").to_numpy()
                                       & np.isfinite(table[f"t_{level}_min"].to_numpy(float))].sum()),
                         "status_counts": table[f"own_{level}_status"].value_counts().to_dict()}
    summary = {"region": cfg.key, "engine": engine, "population": float(pop.sum()), "levels": levels,
               "limits_min": {"county": acc["own_county_limit_min"], "township": acc["own_township_limit_min"]},
               "positions": "each settlement's own position (approximated positions: their seat's)"}
    return TableResult("own-unit", region, {"settlements": table, "counties": counties}, summary,
                       parameters={"engine": engine, "thresholds": th, **summary["limits_min"]},
                       files={"own_unit.csv": "settlements", "own_unit_counties.csv": "counties"},
                       summary_file="own_unit_summary.json", inputs=prep.inputs.paths)


def referral(region: Region | str, engine: Engine = "combined") -> TableResult:
    """Referral times between facility levels and each settlement's chain (settlement → township centre →
    county hospital).

    Returns
    -------
    TableResult
        ``.facilities`` (each facility's minutes to the nearest higher level), ``.chains`` (per settlement,
        chain against direct minutes) and ``.summary``.
    """
    from .access import referral_summary, referral_tables

    region, engine = as_region(region), engine_name(engine, ("combined", "network"))
    cfg = region.config
    prep, model = _model(region, engine)
    ref, chains = referral_tables(model, prep.inputs.settlements, prep.facilities)
    summary = {"region": cfg.key, "engine": engine,
               **referral_summary(ref, chains, float(cfg.thresholds["county_severe"]))}
    return TableResult("referral", region, {"facilities": ref, "chains": chains}, summary,
                       parameters={"engine": engine},
                       files={"referral.csv": "facilities", "referral_chains.csv": "chains"},
                       summary_file="referral_summary.json", inputs=prep.inputs.paths)


def capacity_coverage(region: Region | str, level: str, capacity: str | float, *, max_minutes: float | None = None,
                      order: str = "register", engine: Engine = "combined") -> TableResult:
    """Capacity-aware coverage (AccessMod): each facility serves the nearest people until its capacity or the
    time limit.

    Parameters
    ----------
    capacity : str or float
        People each facility can serve: a number (``"inf"``: no limit) or a register column.
    max_minutes : float, optional
        Time limit (default: the level's threshold).
    order : {"register", "population"}
        Which facility takes its people first.

    Returns
    -------
    TableResult
        ``.settlements``, ``.facilities``, ``.counties`` (people covered, uncovered for capacity or distance)
        and ``.summary``.
    """
    from .access import coverage_with_capacity, parse_capacity
    from .loaders import load_inputs as _load

    region, engine = as_region(region), engine_name(engine, ("combined", "network"))
    cfg, capacity = region.config, str(capacity)
    minutes = coverage_minutes(cfg, level, max_minutes, order)
    inputs = _load(cfg, region.data_dir)
    cap, cap_text = parse_capacity(capacity, cfg, region.data_dir, inputs.facilities)
    prep, model = _model(region, engine, inputs)
    res = coverage_with_capacity(model, prep.inputs.settlements, prep.facilities, level, cap, minutes, order)
    res.summary |= {"region": cfg.key, "engine": engine, "capacity": cap_text,
                    "positions": "each settlement's own position (approximated positions: their seat's)"}
    return TableResult("coverage", region, {"settlements": res.settlements, "facilities": res.facilities,
                                            "counties": res.counties}, res.summary,
                       parameters={"level": level, "capacity": capacity, "max_minutes": minutes, "order": order,
                                   "engine": engine},
                       files={f"coverage_{level}.csv": "settlements", f"coverage_{level}_facilities.csv": "facilities",
                              f"coverage_{level}_counties.csv": "counties"},
                       summary_file="coverage_summary.json", inputs=prep.inputs.paths)


def coverage_minutes(cfg: RegionConfig, level: str, max_minutes: float | None, order: str) -> float:
    """The time limit of `capacity_coverage` (the level's threshold unless given), checked with `order`."""
    from .access import ORDERS

    minutes = float(max_minutes) if max_minutes is not None else float(cfg.thresholds[level])
    if not (minutes > 0 and np.isfinite(minutes)):
        raise ConfigError(None, f"--max-minutes {max_minutes}: must be a positive number of minutes")
    if order not in ORDERS:
        raise ConfigError(None, f"--order {order}: use {' or '.join(ORDERS)}")
    return minutes


def catchment_areas(region: Region | str, level: str, minutes: Sequence[float] | str | None = None, *,
                    engine: Engine = "combined", facility_rasters: str | Sequence[str] | None = None) -> TableResult:
    """Polygons of the area each facility serves (nearest of its level), cut by travel-time band.

    Parameters
    ----------
    minutes : list of float or "15,30,60" text, optional
        Band upper ends in minutes (default 15, 30, 60, 120).
    facility_rasters : "all", "ID1,ID2" or a list of facility ids, optional
        Also write (with ``.write``) one travel-time GeoTIFF per facility, ``traveltime_{level}_{id}.tif``
        (minutes from every cell to that facility; combined engine), and the level's ``traveltime_{level}.tif``.
        Unknown ids, or ids of another level, are refused before any work.

    Returns
    -------
    TableResult
        ``.polygons`` (GeoDataFrame: facility, band, people, settlements and km² inside).
    """
    from .catchments import catchment_polygons, cells_for, facility_ids_for_rasters, parse_bands
    from .loaders import load_inputs

    region, engine = as_region(region), engine_name(engine, ("combined", "raster"))
    cfg = region.config
    if facility_rasters is not None and engine != "combined":
        raise InputError(None, "--facility-rasters needs the combined engine (--engine combined)")
    text = minutes if minutes is None or isinstance(minutes, str) else ",".join(f"{float(m):g}" for m in minutes)
    bands = parse_bands(text, [15, 30, 60, 120])
    inputs = load_inputs(cfg, region.data_dir)
    if facility_rasters is not None and not isinstance(facility_rasters, str):
        facility_rasters = ",".join(map(str, facility_rasters))
    ids = facility_ids_for_rasters(facility_rasters, inputs.facilities, level) if facility_rasters else []
    prep, model = _model(region, engine, inputs=inputs)
    cells = cells_for(model, prep.inputs.settlements, prep.facilities, level)
    polys = catchment_polygons(cells, level, prep.facilities, prep.inputs.settlements, bands, cfg.working_crs)

    def write_rasters(folder: Path) -> None:
        _write_facility_rasters(folder, model, prep.facilities, level, ids, cells)

    return TableResult("catchments", region, {"polygons": polys, "table": polys.drop(columns="geometry")},
                       {"level": level, "bands_min": bands, "population": float(prep.inputs.settlements["population"]
                                                                                .fillna(0).sum())},
                       parameters={"level": level, "bands_min": bands, "engine": engine, "facility_rasters": ids},
                       files={f"catchments_{level}.gpkg": "polygons", f"catchments_{level}.csv": "table"},
                       inputs=prep.inputs.paths, extra=write_rasters if ids else None)


def _write_facility_rasters(folder: Path, model, facilities: pd.DataFrame, level: str, ids: list, cells) -> None:
    """``traveltime_{level}.tif`` and one ``traveltime_{level}_{id}.tif`` per facility id, with progress."""
    import logging
    import re
    import time

    from .catchments import facility_time_rasters
    from .raster import write_travel_time_tif

    log = logging.getLogger("geoaccess")
    write_travel_time_tif(folder / f"traveltime_{level}.tif", cells.minutes[level], cells)
    t0 = time.perf_counter()
    for k, (fid, minutes_grid) in enumerate(facility_time_rasters(model, facilities, ids), 1):
        part = re.sub(r"[^A-Za-z0-9_-]+", "-", str(fid))  # an id as part of a file name
        write_travel_time_tif(folder / f"traveltime_{level}_{part}.tif", minutes_grid, cells)
        if k == len(ids) or k % max(1, len(ids) // 20) == 0 or len(ids) <= 20:
            log.info("facility rasters: %d/%d (%s), %.0f s", k, len(ids), fid, time.perf_counter() - t0)


def population_grid(region: Region | str, raster: str | os.PathLike | None = None, *,
                    engine: Engine = "combined") -> TableResult:
    """Coverage from every grid cell's travel time and a population grid (a raster, else one built from the census).

    Returns
    -------
    TableResult
        ``.counties`` (zonal shares per county) and ``.summary`` (grid and settlement-point shares by level
        and band); ``.people`` is the people-per-cell array on the engine's grid.
    """
    from .coverage import coverage_shares
    from .pipeline import compute_region_times
    from .popgrid import build_population_grid, county_cells, grid_coverage, read_population_raster

    region, engine = as_region(region), engine_name(engine, ("combined", "raster"))
    cfg, data_dir = region.config, region.data_dir
    path = population_raster_path(cfg, data_dir, raster)
    bands = [float(b) for b in cfg.thresholds["bands"]]
    run = compute_region_times(cfg, data_dir, engine=engine)
    if run.rasters is None or run.inputs.counties is None:
        raise InputError(None, "population-grid needs a grid engine (combined or raster) and county boundaries")
    grid = run.rasters.grid
    if path is not None:
        people, facts = read_population_raster(path, grid)
        run.inputs.paths["population_raster"] = path
    else:
        people, facts = build_population_grid(run.inputs.settlements, run.inputs.counties, grid,
                                              cfg.section("positions"), cfg.working_crs,
                                              cfg.section("access")["grid_spread_km"])
    counties = run.inputs.counties
    region_shares, zonal = grid_coverage(people, run.rasters, county_cells(counties, grid), counties, bands)
    settlement = coverage_shares(run.table, bands, weight="population")
    summary = {"region": cfg.key, "engine": engine, "grid": facts, "bands_min": bands,
               "grid_shares": region_shares, "settlement_shares": settlement,
               "source": "raster" if path is not None else "built from the census (population-grid)"}

    def write_grid(tmp: Path) -> None:
        if path is None:
            import rasterio

            with rasterio.open(tmp / "population_grid.tif", "w", driver="GTiff", height=grid.shape[0],
                               width=grid.shape[1], count=1, dtype="float32", crs=grid.crs,
                               transform=grid.transform, compress="deflate") as dst:
                dst.write(people.astype(np.float32), 1)

    res = TableResult("population-grid", region, {"counties": zonal}, summary,
                      parameters={"engine": engine, "raster": str(path or "")}, files={"grid_zonal.csv": "counties"},
                      summary_file="population_grid_summary.json", inputs=run.inputs.paths, extra=write_grid,
                      json_default=float)
    res.people = people
    return res


def population_raster_path(cfg: RegionConfig, data_dir: Path, raster) -> Path | None:
    """The population raster to use (given, else [inputs] population_raster, else None); InputError if missing."""
    path = Path(raster) if raster else cfg.input_path("population_raster", data_dir)
    if path is not None and not path.is_file():
        raise InputError(path, "population raster not found")
    return path


# ----------------------------------------------------------------------------- proposals

@dataclass
class ProposalResult:
    """Proposed sites (temporary medical points or regional centres) with their tables and summary."""

    kind: str  # "clinics" | "centres"
    region: Region
    sites: gpd.GeoDataFrame
    tables: dict[str, pd.DataFrame]
    summary: dict
    run: Run = field(repr=False)
    _write: Callable[[Path], None] = field(repr=False, default=None)

    def write(self, folder: str | os.PathLike) -> Path:
        """The proposal's output set (CSV, shapefile, GeoPackage, summary JSON), atomically; returns the folder."""
        self._write(Path(folder))
        return Path(folder)


def propose_clinics(region: Region | str, threshold: float | None = None, *, max_sites: int | None = None,
                    candidates: Sequence[str] | None = None, time_limit: float | None = None,
                    run: Run | None = None, model: str | None = None, capacity: float | None = None,
                    robust: Sequence[str] | None = None, matrix_limit: float | None = None) -> ProposalResult:
    """Temporary medical points (临时医疗点) for settlements beyond the clinic threshold, relocation first.

    Parameters
    ----------
    threshold : float, optional
        Minutes to a clinic (default [siting] clinic_threshold_min, 30).
    max_sites : int, optional
        Best K points (maximal covering); default: the fewest covering every target.
    candidates : list of {"targets", "settlements", "roads"}, optional
        Candidate sites (default [siting] candidates).
    time_limit : float, optional
        Solver time limit in seconds.
    run : Run, optional
        A travel-time run of the same region to reuse (`pipeline.compute_region_times`).
    model : {"cover", "p_median", "p_center"}, optional
        Set/maximal covering (default), least population-weighted time, or smallest worst time (docs/siting.md).
    capacity : float, optional
        People one new point may serve (covering models).
    robust : list of scenario names, optional
        Cover the targets of every listed scenario at once (docs/scenarios.md).
    matrix_limit : float, optional
        Minutes the p-models' cost matrix reaches (times beyond count as the limit).

    Returns
    -------
    ProposalResult
        ``.sites`` (points, with the people each newly covers), ``.tables["assignments"]``, ``.summary`` (solver,
        coverage, verified by re-running the engine).
    """
    from .proposals import propose_clinics as _propose

    region = as_region(region)
    res = _propose(region.config, region.data_dir, None, threshold_min=threshold, max_sites=max_sites,
                   candidates=list(candidates) if candidates else None, time_limit=time_limit, run=run, model=model,
                   capacity=capacity, robust=list(robust) if robust else None, matrix_limit=matrix_limit)
    return ProposalResult("clinics", region, res["points"], {"assignments": res["assignments"]}, res["summary"],
                          res["run"], res["write"])


def propose_centres(region: Region | str, threshold: float | None = None, *, time_limit: float | None = None,
                    run: Run | None = None) -> ProposalResult:
    """Sites for the plan's county-level regional medical centres (县级区域医疗中心), and the optimum to compare.

    Returns
    -------
    ProposalResult
        ``.sites`` (one per named county, with its gain), ``.tables["optimum"]`` (the same number placed
        anywhere) and ``.summary`` (plan against optimum, verified by the engine).
    """
    from .proposals import propose_centres as _propose

    region = as_region(region)
    res = _propose(region.config, region.data_dir, None, threshold_min=threshold, time_limit=time_limit, run=run)
    return ProposalResult("centres", region, res["sites"], {"optimum": res["optimum"]}, res["summary"], res["run"],
                          res["write"])
