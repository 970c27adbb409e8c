"""Result objects of the library calls: tables as (Geo)DataFrames, a typed summary, and ``.write(folder)``.

`gaps_result` is the planners' pipeline (travel times, gaps, blank spots, county and prefecture tables);
`GapsResult.write` writes it through the one atomic writer (`_atomic.atomic_output_dir`), exactly as
``python cli.py gaps`` does — the CLI calls these same functions.
"""
from __future__ import annotations

import copy
import json
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import geopandas as gpd
import pandas as pd

from .config import RegionConfig
from . import pipeline
from .pipeline import (Run, check_invariants, county_table, gaps_referral, json_default,
                       prefecture_table, run_audit, scenario_facts, summarise)
from .sections import Record


@dataclass(frozen=True)
class GapsSummary(Record):
    """The run summary of `gaps` (what summary.json holds), one typed field per entry.

    Shares are 0–1, times minutes, counts settlements unless a name says population. Reads as a mapping too
    (``summary["coverage"]``); `to_dict` is the JSON document.
    """

    region: str
    region_name: str
    config: str
    data_dir: str
    inputs: dict  # settlements, by_kind, by_loc_quality, facilities, facilities_by_level, counties, layers
    status_counts: dict
    time_basis_counts: dict
    thresholds_min: dict  # level → minutes
    gaps: dict  # gap_clinic … gap_severe → settlements beyond the threshold
    gaps_population: dict  # the same, people
    gaps_range: dict  # low / high ends over the approximated positions' ranges
    positions: dict  # how settlements without their own coordinates were timed
    county_hospital_access: dict
    coverage: dict  # share within each band by level, by count and by population, with ranges
    blank_spots: dict  # totals by rule, exemptions, cannot_check, not_auditable
    engine: dict
    timings_s: dict
    warnings: list
    assumptions: list
    skipped: list
    repairs: list
    software: dict
    wall_time_s: float
    peak_memory_mb: Any
    #: Entries `pipeline.summarise` adds beyond the fields above (kept, so nothing of summary.json is lost).
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, values) -> GapsSummary:
        """From the dict `pipeline.summarise` returns (summary.json); unknown entries go to `extra`."""
        names = [n for n in cls._names() if n != "extra"]
        return cls(**{k: values[k] for k in names}, extra={k: v for k, v in values.items() if k not in names})

    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        if key == "extra":
            raise KeyError(key)
        return super().__getitem__(key)

    def __iter__(self):
        return iter([n for n in self._names() if n != "extra"] + list(self.extra))

    def __len__(self) -> int:
        return len(self._names()) - 1 + len(self.extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (summary.json)."""
        return {k: copy.deepcopy(self[k]) for k in self}


@dataclass
class GapsResult:
    """Everything `gaps` computed for one region: the tables, the summary, and how to write them.

    Attributes
    ----------
    settlements : GeoDataFrame
        One row per settlement (points, WGS84): the columns of settlements.csv (docs/maps.md).
    facilities : GeoDataFrame
        The facility register routed to.
    counties : GeoDataFrame
        County summary, one row per county of the region, with its polygon (``county_summary`` layer).
    prefectures : DataFrame
        Prefecture summary (``prefecture_summary``).
    blank_spots, exemptions, cannot_check : DataFrame
        The blank-spot audit (空白点): gaps by rule, exemptions applied, units that cannot be checked.
    referral : GeoDataFrame
        Every facility's minutes to the nearest facility of each higher level (``referral`` layer).
    referral_chains : DataFrame
        Per settlement, the chain time (nearest centre → its nearest county hospital) beside the direct time.
    relocation : GeoDataFrame
        The relocation settlements (易地搬迁安置点) of ``settlements``.
    summary : GapsSummary
        The run summary; after `write`, the one written (its timings include writing).
    """

    config: RegionConfig
    data_dir: Path
    engine: str
    terrain: bool
    thresholds: dict
    settlements: gpd.GeoDataFrame
    facilities: gpd.GeoDataFrame
    counties: gpd.GeoDataFrame
    prefectures: pd.DataFrame
    blank_spots: pd.DataFrame
    exemptions: pd.DataFrame
    cannot_check: pd.DataFrame
    relocation: gpd.GeoDataFrame
    summary: GapsSummary
    run: Run = field(repr=False)
    audit: Any = field(repr=False)
    referral: gpd.GeoDataFrame | None = None
    referral_chains: pd.DataFrame | None = None
    out_dir: Path | None = None
    started: float = field(default=0.0, repr=False)

    def layers(self) -> dict[str, pd.DataFrame]:
        """The layers of geoaccess.gpkg by name (exemptions and cannot_check only when not empty)."""
        out = {"settlements": self.settlements, "facilities": self.facilities, "county_summary": self.counties,
               "prefecture_summary": self.prefectures, "blank_spots": self.blank_spots,
               "relocation": self.relocation}
        if len(self.exemptions):
            out["exemptions"] = self.exemptions
        if len(self.cannot_check):
            out["cannot_check"] = self.cannot_check
        if self.referral is not None:
            out["referral"] = self.referral
        return out

    def write(self, folder: str | Path) -> Path:
        """Write the output set of `gaps` into `folder` (CSV, GeoPackage, shapefile, rasters, summary.json, manifest).

        All or nothing, through the one atomic writer: the folder is replaced whole when it holds an earlier
        geoaccess output set, and refused (`OutputError`) when it holds files of the user's, is an input, or
        cannot be written. Returns the folder.
        """
        from . import progress
        from ._atomic import atomic_output_dir
        from .export import export_layers, shapefile_beside
        from .outputs import provenance_inputs

        out_dir = Path(folder)
        config, run, audit = self.config, self.run, self.audit
        t = time.perf_counter()
        layers = self.layers()
        with atomic_output_dir(out_dir, inputs=provenance_inputs(config, self.data_dir, run.inputs.paths),
                               command="gaps", parameters={"engine": self.engine, "terrain": self.terrain,
                                                           "thresholds": self.thresholds,
                                                           "scenario": scenario_facts(run)}) as tmp:
            rasters = _write_rasters_in_background(run, tmp)  # GDAL releases the GIL: beside the vector layers
            csv_layers = {k: v for k, v in layers.items() if k != "facilities"} | {"exemptions": audit.exemptions,
                                                                                    "cannot_check": audit.cannot_check}
            if self.referral_chains is not None:
                csv_layers["referral_chains"] = self.referral_chains
            try:
                # the settlements' shapefile first: a large one is written by a second process beside the rest
                with shapefile_beside(run.table, tmp, "settlements") as shapefile_written:
                    with progress.step("write CSV"):
                        export_layers(csv_layers, tmp, formats=("csv",), region=config.key)
                    with progress.step("write GeoPackage"):
                        export_layers(layers, tmp, formats=("gpkg",), region=config.key)
                    with progress.step("write shapefile (the rest, when written beside)"):
                        shapefile_written()
            except BaseException:
                futures_wait([rasters])  # no thread may still write into a staging folder that is being removed
                raise
            with progress.step("write travel-time rasters (the rest, written beside the layers)"):
                rasters.result()
            run.timings["write_s"] = time.perf_counter() - t
            summary = summarise(run, audit, time.perf_counter() - self.started)
            if "referral" in self.summary.extra:
                summary["referral"] = self.summary.extra["referral"]
            (tmp / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1, default=json_default),
                                              encoding="utf-8")
        self.summary = GapsSummary.from_mapping(summary)
        self.out_dir = out_dir
        return out_dir

    def report(self) -> dict:
        """What the CLI prints from: the summary, the folder written and the tables the report quotes."""
        return {**self.summary.to_dict(), "out_dir": str(self.out_dir),
                "tables": {"counties": self.counties.drop(columns="geometry", errors="ignore"),
                           "relocation": self.relocation}}


def _write_rasters_in_background(run: Run, folder: Path):
    """Start writing ``traveltime_{level}.tif`` for every level in a thread; returns its future."""
    from .raster import write_travel_time_tif

    def write():
        for group, minutes in (run.rasters.minutes.items() if run.rasters is not None else ()):
            write_travel_time_tif(folder / f"traveltime_{group}.tif", minutes, run.rasters)

    pool = ThreadPoolExecutor(1, thread_name_prefix="geoaccess-rasters")
    try:
        return pool.submit(write)
    finally:
        pool.shutdown(wait=False)


def gaps_result(config: RegionConfig, data_dir: Path, *, engine: str = "combined", terrain: bool = True,
                compute: Callable[..., Run] | None = None) -> GapsResult:
    """Travel times, gaps and blank spots of a region under its config's thresholds (nothing written).

    `compute` replaces `pipeline.compute_region_times` (same arguments), e.g. the partitioned Dask run.
    """
    from ._atomic import prefetch_checksums
    from .access import referral_summary
    from .outputs import configured_inputs

    from . import progress

    t0 = time.perf_counter()
    progress.clear()
    prefetch_checksums(configured_inputs(config, data_dir))  # a manifest's input checksums, while the engine runs
    th = config.thresholds
    with progress.step("travel times (all steps)"):
        # looked up on the module at call time (a test's stand-in for it must not outlive the test)
        run = (compute or pipeline.compute_region_times)(config, data_dir, terrain=terrain, engine=engine,
                                                           thresholds=th)
    check_invariants(run.table, len(run.inputs.settlements))
    with progress.step("blank-spot audit"):
        audit = run_audit(run)
    with progress.step("county and prefecture tables"):
        counties = county_table(run, audit)
        prefectures = prefecture_table(run, audit)
    relocation = run.table[run.table["kind"].eq("relocation")]
    t_ref = time.perf_counter()
    referral, chains = gaps_referral(run)
    run.timings["referral_s"] = time.perf_counter() - t_ref
    summary = summarise(run, audit, time.perf_counter() - t0)
    summary["referral"] = referral_summary(referral, chains, float(th["county_severe"]))
    summary = GapsSummary.from_mapping(summary)
    return GapsResult(config=config, data_dir=Path(data_dir), engine=engine, terrain=terrain, thresholds=th,
                      settlements=run.table, facilities=run.inputs.facilities,
                      counties=_with_polygons(counties, run.inputs.counties), prefectures=prefectures,
                      blank_spots=audit.blank_spots, exemptions=audit.exemptions, cannot_check=audit.cannot_check,
                      relocation=relocation, summary=summary, run=run, audit=audit, referral=referral,
                      referral_chains=chains, started=t0)


def _with_polygons(table: pd.DataFrame, counties: gpd.GeoDataFrame | None):
    """The county table with each county's polygon (a plain table when there are no boundaries)."""
    if counties is None:
        return table
    geo = counties[["adcode", "geometry"]].rename(columns={"adcode": "county_code"})
    return gpd.GeoDataFrame(table.merge(geo, on="county_code", how="left"), geometry="geometry", crs=4326)


def read_gaps_layers(out_dir: Path) -> dict[str, gpd.GeoDataFrame]:
    """The layers of the `gaps` output set in `out_dir` (geoaccess.gpkg), plus its matching proposals."""
    import pyogrio

    layers = {}
    for name, _ in pyogrio.list_layers(out_dir / "geoaccess.gpkg"):
        layers[name] = gpd.read_file(out_dir / "geoaccess.gpkg", layer=name)
    for path in matching_proposals(out_dir):
        for name, _ in pyogrio.list_layers(path):
            layers[name] = gpd.read_file(path, layer=name)
    return layers


def same_inputs(out_dir: Path, manifest: dict) -> bool:
    """Whether an output set (its manifest) was made from the inputs of the gaps run in ``out_dir``."""
    from ._atomic import read_manifest

    basis = {k: v.get("sha256") for k, v in read_manifest(out_dir).get("inputs", {}).items()}
    theirs = {k: v.get("sha256") for k, v in manifest.get("inputs", {}).items()}
    return not any(theirs.get(k) != h for k, h in basis.items())


def matching_proposals(out_dir: Path) -> list[Path]:
    """The newest proposal set of each kind in ``{out_dir}/proposals/`` made from the same inputs as the gaps run.

    A set made from other inputs (another register, other roads, another config) is skipped with a warning:
    the map never draws proposals of a different run.
    """
    import logging

    from ._atomic import read_manifest

    log = logging.getLogger("geoaccess")
    newest: dict[str, tuple[str, Path]] = {}
    for folder in sorted((out_dir / "proposals").glob("[!.]*")):
        m = read_manifest(folder)
        gpkg = next((folder / n for n in ("proposed_points.gpkg", "regional_centres.gpkg") if (folder / n).exists()), None)
        if m is None or gpkg is None:
            continue
        if not same_inputs(out_dir, m):
            log.warning("map: %s was computed from other inputs than the gaps run in %s; not drawn", folder, out_dir)
            continue
        if gpkg.name not in newest or m.get("written", "") >= newest[gpkg.name][0]:
            newest[gpkg.name] = (m.get("written", ""), gpkg)
    for _, gpkg in newest.values():
        log.info("map: drawing %s", gpkg.parent)
    return [gpkg for _, gpkg in newest.values()]
