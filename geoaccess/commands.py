"""What each CLI command does, in library calls; printing is kept here, analysis elsewhere."""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import analyses, api
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
    from .elevation import check_dem_at, open_dem

    reg = api.load_region(region, data)
    cfg, data_dir, how = reg.config, reg.data_dir, reg.data_from
    inputs = api.load_inputs(reg)
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


def _setup(region: str, data: str | None, out: str | None, overrides: dict | None = None):
    """The region (`api.load_region`), its config and data folder, and the run folder."""
    from .outputs import run_folder

    reg = api.load_region(region, data, overrides)
    log.info("region %s (%s); data %s (from %s)", reg.key, reg.config.source, reg.data_dir, reg.data_from)
    return reg, reg.config, reg.data_dir, run_folder(reg.config, out)


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

    reg, cfg, data_dir, run_dir = _setup(region, data, out)
    engine = engine or "combined"
    out_dir = traveltime_folder(run_dir, engine, terrain)
    with _claim(cfg, data_dir, run_dir, out_dir, command="traveltime"):
        res = api.travel_time_result(reg, engine, None if terrain else "flat")
        res.write(out_dir)
    summary = res.summary
    access = summary["county_hospital_access"]
    print(f"{len(res.settlements)} settlements → {out_dir / 'settlements.csv'}")
    print(f"within 60 min of a county hospital: {access['share_within_60_min']:.1%}; "
          f"within 120 min: {access['share_within_120_min']:.1%} (status: {summary['status']})")
    print_warnings(summary["warnings"])
    return 0


def gaps(regions: list[str] | str, data: str | None, out: str | None, *, thresholds: list[str] | None = None,
         engine: str | None = None, terrain: bool = True, scheduler: str | None = None, workers: int | None = None,
         partition: str | None = None, buffer_km: float = 100.0, scenario: str | None = None,
         mode: str | None = None) -> int:
    """Run the whole pipeline (one region, several in parallel, or one partitioned) and print the report.

    ``scenario`` / ``mode`` (docs/scenarios.md): the run's inputs changed, outputs in a folder of their own beside
    the baseline's; ``mode="both"`` runs motorised and walking and prints both."""
    import functools

    from .errors import ConfigError
    from .pipeline import parse_threshold_overrides

    regions = [regions] if isinstance(regions, str) else list(regions)
    distributed = scheduler is not None or workers is not None
    if workers is not None and workers < 1:
        raise ConfigError(None, f"--workers {workers}: need at least one worker process")
    if partition and len(regions) > 1:
        raise ConfigError(None, "--partition splits one region: give a single --region")
    if (scenario or mode) and (len(regions) > 1 or distributed or partition):
        raise ConfigError(None, "--scenario / --mode run one region in one process: give a single --region, "
                                "without --partition, --workers or --scheduler")
    if scenario or mode:
        return _gaps_variants(regions[0], data, out, thresholds=thresholds, engine=engine or "combined",
                              terrain=terrain, scenario=scenario, mode=mode)
    if len(regions) > 1 or (distributed and not partition):
        from . import distributed as dd

        from ._atomic import check_target, foreign_files
        from .errors import OutputError
        from .outputs import protected_paths

        # fail fast on a bad name, before a cluster starts; the thresholds travel inside each config
        configs = [_with_thresholds(load_region(r), thresholds) for r in regions]
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
                                    workers=workers, terrain=terrain, engine=engine, out_dirs=out_dirs)
        for summary in summaries.values():
            print_gaps_report(summary)
        return 0
    cfg = load_region(regions[0])
    th = parse_threshold_overrides(thresholds, cfg.thresholds) if thresholds else None
    reg, cfg, data_dir, out_dir = _setup(regions[0], data, out, {"thresholds": th} if th else None)
    compute = None
    engine = engine or "combined"  # the same default with or without --partition: same flags, same engine
    if partition:
        from . import distributed as dd

        dd.check_partition_options(partition, buffer_km, engine)
        compute = functools.partial(dd.partitioned_run, by=partition, buffer_km=buffer_km, scheduler=scheduler,
                                    workers=workers)
    with _claim(cfg, data_dir, out_dir):
        result = api.gaps(reg, engine, None if terrain else "flat", compute=compute)
        result.write(out_dir)
    print_gaps_report(result.report())
    return 0


def _with_thresholds(cfg, thresholds: list[str] | None):
    """The config with `--threshold LEVEL=MIN` overrides applied (checked as the CLI checks them)."""
    from .pipeline import parse_threshold_overrides

    if not thresholds:
        return cfg
    return cfg.with_overrides(thresholds=parse_threshold_overrides(thresholds, cfg.thresholds))


def _gaps_variants(region: str, data: str | None, out: str | None, *, thresholds, engine: str, terrain: bool,
                   scenario: str | None, mode: str | None) -> int:
    """`gaps --scenario NAME [--mode M]`: one run per mode (both = motorised and walking), each in its own folder."""
    from .pipeline import run_gaps
    from .scenarios import get_mode, variant_folder, with_variant

    _, cfg, data_dir, run_dir = _setup(region, data, out)
    modes = ["motorised", "walking"] if mode == "both" else [mode]
    variants = []
    for m in modes:
        get_mode(cfg, m)
        variants.append(with_variant(cfg, scenario, m, data_dir))  # every name and file checked before any run
    lines = []
    for vcfg in variants:
        folder = variant_folder(run_dir, vcfg)
        with _claim(vcfg, data_dir, folder):
            summary = run_gaps(vcfg, data_dir, folder, thresholds=thresholds, terrain=terrain, engine=engine)
        print(f"\n=== scenario {summary['scenario']['name']}, mode {summary['scenario']['mode']} ===")
        print_gaps_report(summary)
        lines.append(summary)
    if len(lines) > 1:
        print("\nModes side by side (share of settlements within the county-hospital lines; gaps):")
        rows = []
        for s in lines:
            acc = s["county_hospital_access"]
            k1, k2 = (f"share_within_{s['thresholds_min'][k]:g}_min" for k in ("county", "county_severe"))
            rows.append([s["scenario"]["mode"], f"{acc[k1]:.1%}", f"{acc[k2]:.1%}", str(s["gaps"]["gap_county"]),
                         str(s["gaps"]["gap_severe"]), s["out_dir"]])
        print(format_table(["mode", f"≤{lines[0]['thresholds_min']['county']:g} min",
                            f"≤{lines[0]['thresholds_min']['county_severe']:g} min", "gap county", "gap severe",
                            "outputs"], rows))
    return 0


def compare_command(region: str, data: str | None, out: str | None, *, scenarios: list[str], mode: str | None,
                    engine: str | None, terrain: bool) -> int:
    """Two scenarios side by side (docs/scenarios.md): compare_{A}_{B}/ in the run folder."""
    from .compare import compare_folder, run_compare
    from .errors import ConfigError
    from .scenarios import get_mode, with_variant

    _, cfg, data_dir, run_dir = _setup(region, data, out)
    if len(scenarios) != 2:
        raise ConfigError(None, f"compare needs --scenario twice (got {len(scenarios)}), e.g. --scenario baseline "
                                "--scenario winter")
    if mode == "both":
        raise ConfigError(None, "compare --mode both: compare one mode at a time (--mode walking)")
    get_mode(cfg, mode)
    a, b = scenarios
    for name in (a, b):
        with_variant(cfg, name, mode, data_dir)  # unknown names and missing files fail before any run
    folder = compare_folder(run_dir, a, b)
    with _claim(cfg, data_dir, run_dir, folder, command="compare"):
        res = run_compare(cfg, data_dir, folder, a, b, mode=mode, engine=engine or "combined", terrain=terrain)
    s = res["summary"]
    lines = s["lines_min"]
    print(f"\n{cfg.name}: {b} against {a} (mode {s['mode']}) — settlements and people crossing the lines to a "
          f"county hospital")
    rows = []
    for r in s["by_prefecture"] + [dict(s["region_total"], prefecture_name="all")]:
        row = [r.get("prefecture_name") or r.get("prefecture_code", "")]
        for m in lines.values():
            row += [f"{int(r[f'n_newly_beyond_{m:g}'])} / {r[f'pop_newly_beyond_{m:g}']:,.0f}",
                    f"{int(r[f'n_newly_within_{m:g}'])} / {r[f'pop_newly_within_{m:g}']:,.0f}",
                    f"{r[f'share_within_{m:g}_{a}']:.1%} → {r[f'share_within_{m:g}_{b}']:.1%}"]
        rows.append(row)
    head = ["prefecture"]
    for m in lines.values():
        head += [f"newly >{m:g} (n / people)", f"newly ≤{m:g}", f"within {m:g} min"]
    print(format_table(head, rows))
    print(f"  settlements faster / slower / unchanged to a county hospital: {s['no_time_shorter']['faster']} / "
          f"{s['no_time_shorter']['slower']} / {s['no_time_shorter']['same']}")
    print(f"  outputs: {folder}/compare_{a}_{b}.csv, _counties.csv, _prefectures.csv, compare_{a}_{b}.html")
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
    tables = summary["tables"]
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


def _gaps_outputs(reg, out_dir: Path) -> None:
    """Run `gaps` into out_dir first when it holds no gaps outputs (map and export read them)."""
    from ._atomic import read_manifest

    if read_manifest(out_dir) is None or not (out_dir / "geoaccess.gpkg").exists():
        log.info("no gaps outputs in %s: running gaps first", out_dir)
        api.gaps(reg).write(out_dir)


def _catchment_layer(cfg, data_dir: Path, out_dir: Path, level: str, compute: bool):
    """The catchments of ``level`` for the map: the newest set in ``{out}/catchments/`` made from the gaps run's
    inputs, else (``compute``) computed here with the default bands, else None."""
    import geopandas as gpd

    from ._atomic import read_manifest
    from .results import same_inputs

    newest = None
    for folder in sorted((out_dir / "catchments").glob(f"{level}_*min")):
        m, gpkg = read_manifest(folder), folder / f"catchments_{level}.gpkg"
        if m is None or not gpkg.exists():
            continue
        if not same_inputs(out_dir, m):
            log.warning("map: %s was computed from other inputs than the gaps run in %s; not drawn", folder, out_dir)
            continue
        if newest is None or m.get("written", "") >= newest[0]:
            newest = (m.get("written", ""), gpkg)
    if newest is not None:
        log.info("map: drawing %s", newest[1].parent)
        polys = gpd.read_file(newest[1])
    elif compute:
        from .catchments import catchment_polygons, cells_for
        from .pipeline import prepare_region
        from .travel import TravelModel

        log.info("map: no catchments of level %s in %s: computing them (bands 15,30,60,120 min)", level, out_dir)
        prep = prepare_region(cfg, data_dir)
        cells = cells_for(TravelModel(prep, "combined"), prep.inputs.settlements, prep.facilities, level)
        polys = catchment_polygons(cells, level, prep.facilities, prep.inputs.settlements, [15, 30, 60, 120],
                                   cfg.working_crs)
    else:
        return None
    polys.attrs["level"] = level
    return polys


def map_command(region: str, data: str | None, out: str | None, *, level: str = "county", tiles: str = "offline",
                maps_dir: str | None = None, catchments: str | None = None) -> int:
    """Write {region}_coverage.html and the report figures from the gaps outputs into maps/ of the run folder."""
    from ._atomic import atomic_output_dir
    from .mapping import plot_county_coverage, plot_settlement_bands, write_map

    reg, cfg, data_dir, out_dir = _setup(region, data, out)
    folder = Path(maps_dir) if maps_dir else out_dir / "maps"
    with _claim(cfg, data_dir, out_dir, folder, command="map") as folder:
        _gaps_outputs(reg, out_dir)
        mi = api.map_inputs(out_dir, reg)
        polys = _catchment_layer(cfg, data_dir, out_dir, catchments or level, compute=catchments is not None)
        if polys is not None:
            mi.layers["catchments"] = polys
        m = api.coverage_map(mi, level, tiles=tiles)
        with atomic_output_dir(folder, command="map", derived_from=out_dir,
                               parameters={"level": level, "tiles": tiles}) as tmp:
            html = write_map(m, tmp / f"{cfg.key}_coverage.html")
            figs = [plot_settlement_bands(mi.layers["settlements"], mi.counties, level,
                                          tmp / f"{cfg.key}_bands_{level}.png", caption=mi.caption)]
            if "county_summary" in mi.layers:
                figs.append(plot_county_coverage(mi.layers["county_summary"], tmp / f"{cfg.key}_county_coverage.png",
                                                 caption=mi.caption))
    print(f"map: {folder / html.name}")
    for f in figs:
        print(f"figure: {folder / f.name}")
    return 0


def export_command(region: str, data: str | None, out: str | None, *, formats: list[str], crs: str = "EPSG:4326",
                   dest: str | None = None) -> int:
    """Export every layer of the gaps outputs for GIS teams (shp, gpkg, csv, geojson) into a folder of its own."""
    from .export import output_crs

    output_crs(crs)  # a bad --crs costs nothing
    reg, cfg, data_dir, out_dir = _setup(region, data, out)
    target = Path(dest) if dest else out_dir / "export"
    with _claim(cfg, data_dir, out_dir, target, command="export") as target:
        _gaps_outputs(reg, out_dir)
        files = api.export(out_dir, target, formats, crs=crs, region=cfg.key)
    print(f"{len(files)} files in {target} ({', '.join(formats)}; {crs})")
    return 0


def propose_clinics_command(region: str, data: str | None, out: str | None, *, threshold: float | None,
                            max_sites: int | None, candidates: list[str] | None, time_limit: float | None,
                            model: str | None = None, capacity: float | None = None, scenario: str | None = None,
                            mode: str | None = None, robust: str | None = None, limit: float | None = None) -> int:
    """Temporary medical points: the fewest that cover every target, the best K, p-median or p-center."""
    from .errors import ConfigError
    from .outputs import clinics_folder
    from .scenarios import variant_folder, with_variant

    reg, cfg, data_dir, run_dir = _setup(region, data, out)
    if mode == "both":
        raise ConfigError(None, "propose --mode both: site for one mode at a time (--mode walking)")
    if robust and scenario:
        raise ConfigError(None, "--robust lists the scenarios itself: leave out --scenario")
    names = [n.strip() for n in robust.split(",") if n.strip()] if robust else None
    cfg = with_variant(cfg, scenario, mode, data_dir)
    for n in names or []:
        with_variant(cfg, n, mode, data_dir)  # unknown names fail before any run
    reg = replace(reg, config=cfg)
    run_dir = variant_folder(run_dir, cfg)
    sit = cfg.section("siting")
    out_dir = clinics_folder(run_dir, float(threshold or sit["clinic_threshold_min"]), max_sites,
                             list(candidates or sit["candidates"]))
    if limit is not None and model not in ("p_median", "p_center"):
        raise ConfigError(None, "--limit applies to --model p_median and p_center")
    tail = "".join([f"_{model}" if model in ("p_median", "p_center") else "", f"_limit{limit:g}" if limit else "",
                    f"_cap{capacity:g}" if capacity else "", f"_robust-{'+'.join(names)}" if names else ""])
    out_dir = out_dir.with_name(out_dir.name + tail) if tail else out_dir
    with _claim(cfg, data_dir, run_dir, out_dir, command="propose clinics"):
        res = api.propose_clinics(reg, threshold, max_sites=max_sites, candidates=candidates, time_limit=time_limit,
                                  model=model, capacity=capacity, robust=names, matrix_limit=limit)
        res.write(out_dir)
    s = res.summary
    sol = s["solver"]
    if s.get("model") in ("p_median", "p_center"):
        b, a = sol["before"], sol["after"]
        print(f"\n临时医疗点 temporary medical points — {cfg.name}, model {s['model']}, {s['max_sites']} new points, "
              f"matrix limit {s['limit_min']:g} min")
        print(f"  objective {sol['objective']:,.1f} ({sol['objective_unit']}); solver {sol['status']}, gap "
              f"{sol['mip_gap']:.2%}, solve {s['solve_s']:.2f} s")
        print(f"  population-weighted mean minutes to a clinic or better: {b['pop_weighted_mean_min']:.1f} → "
              f"{a['pop_weighted_mean_min']:.1f} (times capped at {s['limit_min']:g} min); worst over settlements with "
              f"people: {s.get('existing_worst_min') or b['worst_min']:.0f} → {a['worst_min']:.0f} min")
        w = s["within_threshold_after"]
        print(f"  within {s['threshold_min']:g} min: {w['settlements_before']} → {w['settlements_after']} settlements, "
              f"{w['population_before']:,.0f} → {w['population_after']:,.0f} people")
        v = s["coverage_after_engine_rerun"]
        print(f"  checked by re-running the engine with the points added: times equal to "
              f"{v['max_time_difference_min']:.1e} min, {v['settlements_with_a_shorter_trip_missed']} shorter trips "
              f"missed — {'agrees' if s['verified'] else 'DISAGREES'}")
        print(f"  outputs: {out_dir}/proposed_points.(csv|shp|gpkg), proposed_assignments.csv, proposed_points_summary.json")
        print_warnings(s["warnings"])
        return 0
    if s.get("robust_over"):
        print(f"\n临时医疗点 temporary medical points — {cfg.name}, robust over {', '.join(s['robust_over'])}, "
              f"threshold {s['threshold_min']:.0f} min, mode {s['mode']}")
        print(f"  points proposed: {sol['n_sites']}   solver {sol['status']}, gap {sol['mip_gap']:.2%}, "
              f"solve {s['solve_s']:.2f} s")
        for name, r in s["by_scenario"].items():
            v = s["coverage_after_engine_rerun"][name]
            print(f"  {name}: {r['newly_covered']} of {r['targets']} targets covered ({r['uncoverable']} beyond every "
                  f"candidate); engine re-run {'agrees' if v['agrees_with_solver'] else 'DISAGREES'}")
        print(f"  outputs: {out_dir}/proposed_points.(csv|shp|gpkg), proposed_assignments.csv, proposed_points_summary.json")
        print_warnings(s["warnings"])
        return 0
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
    if sol.get("capacity"):
        c = sol["capacity"]
        print(f"  capacity {c['people_per_point']:,.0f} people per point: {c['served_population']:,.0f} of "
              f"{c['target_population']:,.0f} target people served (largest load {c['max_load']:,.0f})")
    if sol.get("uncoverable", {}).get("settlements"):
        print(f"  no candidate within reach of {sol['uncoverable']['settlements']} target settlements")
    v = s["coverage_after_engine_rerun"]
    print(f"  checked by re-running the engine with the points added: the same {v['newly_covered']} targets covered, "
          f"times equal to {v['max_time_difference_min']:.1e} min — {'agrees' if s['verified'] else 'DISAGREES'}")
    print(f"  outputs: {out_dir}/proposed_points.(csv|shp|gpkg), proposed_assignments.csv, proposed_points_summary.json")
    print_warnings(s["warnings"])
    return 0


def propose_centres_command(region: str, data: str | None, out: str | None, *, threshold: float | None,
                            time_limit: float | None, scenario: str | None = None, mode: str | None = None) -> int:
    """The plan's county-level regional medical centres: the site in each named county, and the optimum."""
    from .errors import ConfigError
    from .outputs import centres_folder
    from .scenarios import variant_folder, with_variant

    reg, cfg, data_dir, run_dir = _setup(region, data, out)
    if mode == "both":
        raise ConfigError(None, "propose --mode both: site for one mode at a time (--mode walking)")
    cfg = with_variant(cfg, scenario, mode, data_dir)
    reg = replace(reg, config=cfg)
    run_dir = variant_folder(run_dir, cfg)
    out_dir = centres_folder(run_dir, float(threshold or cfg.section("siting")["centre_threshold_min"]))
    with _claim(cfg, data_dir, run_dir, out_dir, command="propose centres"):
        res = api.propose_centres(reg, threshold, time_limit=time_limit)
        res.write(out_dir)
    s = res.summary
    print(f"\n县级区域医疗中心 county-level regional medical centres — {cfg.name}, threshold {s['threshold_min']:.0f} min")
    print(f"  already within {s['threshold_min']:.0f} min of a prefecture hospital: "
          f"{s['existing_cover']['settlements']} settlements, {s['existing_cover']['population']:.0f} people")
    rows = [[r["county_name"], r["name"], f"{r['pop_new']:.0f}", f"{r['pop_only']:.0f}", f"{r['pop_catch']:.0f}",
             r.get("new_counties", "")] for _, r in res.sites.sort_values("pop_new", ascending=False).iterrows()]
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


def access_command(region: str, data: str | None, out: str | None, *, level: str, method: str,
                   catchment: float | None = None, supply: str | None = None, write_matrix: bool = False,
                   engine: str | None = None, bands: str | None = None, weights: str | None = None,
                   beta: float | None = None, min_minutes: float | None = None) -> int:
    """Supply–demand accessibility (2SFCA family, gravity) per settlement and county: its own set in access/."""
    from .access import decay_from_config
    from .outputs import access_folder

    reg, cfg, data_dir, run_dir = _setup(region, data, out)
    catch = float(catchment) if catchment is not None else float(cfg.thresholds[level])
    bands_min, weight_list = _numbers(bands, "--bands"), _numbers(weights, "--weights")
    decay_from_config(cfg.section("access"), method, catch, bands=bands_min, weights=weight_list, beta=beta,
                      min_minutes=min_minutes)  # a bad option costs nothing
    out_dir = access_folder(run_dir, method, level, catch, supply)
    with _claim(cfg, data_dir, run_dir, out_dir, command="access"):
        res = api.accessibility(reg, level, method, catchment=catchment, supply=supply, engine=engine or "combined",
                                bands=bands_min, weights=weight_list, beta=beta, min_minutes=min_minutes,
                                write_matrix=write_matrix)
        res.write(out_dir)
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
    from .outputs import own_unit_folder

    reg, cfg, data_dir, run_dir = _setup(region, data, out)
    out_dir = own_unit_folder(run_dir)
    th = cfg.thresholds
    with _claim(cfg, data_dir, run_dir, out_dir, command="own-unit"):
        res = api.own_unit(reg, engine or "combined")
        res.write(out_dir)
    counties = res.counties
    for level, label in (("county", "county hospital in one's own county"), ("thc", "health centre in one's own township")):
        r = res.summary["levels"][level]
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
    from .outputs import referral_folder

    reg, cfg, data_dir, run_dir = _setup(region, data, out)
    out_dir = referral_folder(run_dir)
    with _claim(cfg, data_dir, run_dir, out_dir, command="referral"):
        res = api.referral(reg, engine or "combined")
        res.write(out_dir)
    summary, referral = res.summary, res.facilities
    severe = float(cfg.thresholds["county_severe"])
    print(f"township centre → nearest county hospital: median {_num(summary['median_referral_thc_to_county_min'], '.0f')} min")
    print(f"settlement → its township centre → that centre's county hospital: median {_num(summary['median_chain_min'], '.0f')} "
          f"min; direct to the nearest county hospital: median {_num(summary['median_direct_min'], '.0f')} min")
    print(f"people within {severe:g} min: {_num(summary[f'pop_share_direct_within_{severe:g}_min'], '.1%')} direct, "
          f"{_num(summary[f'pop_share_chain_within_{severe:g}_min'], '.1%')} by the referral chain")
    worst = referral[referral["level"].eq("township_health_centre")].sort_values("t_county_min", ascending=False)
    print("\nTownship centres farthest from a county hospital:")
    print(format_table(["facility", "name", "minutes", "to"],
                       [[r["facility_id"], r["name"], _minutes(r["t_county_min"]), r["nearest_county_id"]]
                        for _, r in worst.head(5).iterrows()]))
    print(f"  outputs: {out_dir}")
    return 0


def _num(v, spec: str) -> str:
    """A number in ``spec`` format, or "—" when there is none."""
    return "—" if v is None or v != v else format(v, spec)


def coverage_command(region: str, data: str | None, out: str | None, *, level: str, capacity: str,
                     max_minutes: float | None = None, order: str = "register", engine: str | None = None) -> int:
    """Capacity-aware coverage (AccessMod's geographic coverage): its own set in coverage/."""
    from .outputs import coverage_folder

    reg, cfg, data_dir, run_dir = _setup(region, data, out)
    minutes = analyses.coverage_minutes(cfg, level, max_minutes, order)
    out_dir = coverage_folder(run_dir, level, capacity, minutes, order)
    with _claim(cfg, data_dir, run_dir, out_dir, command="coverage"):
        res = api.capacity_coverage(reg, level, capacity, max_minutes=max_minutes, order=order,
                                    engine=engine or "combined")
        res.write(out_dir)
    s = res.summary
    cap_text = s["capacity"]
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
                       engine: str | None = None, facility_rasters: str | None = None) -> int:
    """Catchment polygons per facility and travel-time band: its own set in catchments/; with
    ``facility_rasters`` (ids or ``all``) also one travel-time GeoTIFF per facility and the level's."""
    from .catchments import parse_bands
    from .outputs import catchments_folder

    reg, cfg, data_dir, run_dir = _setup(region, data, out)
    bands = parse_bands(minutes, [15, 30, 60, 120])
    out_dir = catchments_folder(run_dir, level, bands)
    with _claim(cfg, data_dir, run_dir, out_dir, command="catchments"):
        res = api.catchment_areas(reg, level, bands, engine=engine or "combined", facility_rasters=facility_rasters)
        res.write(out_dir)
    polys = res.polygons
    pop = res.summary["population"]
    ids = res.parameters["facility_rasters"]
    by_band = polys.groupby("band_to_min")[["population", "n_settlements", "area_km2"]].sum()
    print(f"{len(polys)} catchment polygons of {polys['facility_id'].nunique()} facilities ({level}), by band:")
    rows = []
    acc = 0.0
    for b, r in by_band.iterrows():
        acc += r["population"]
        rows.append([f"≤ {b:g} min", f"{r['population']:,.0f}", f"{acc / pop:.1%}", int(r["n_settlements"]),
                     f"{r['area_km2']:,.0f}"])
    print(format_table(["band", "people", "cumulative", "settlements", "km²"], rows))
    if ids:
        print(f"travel-time rasters: traveltime_{level}.tif (nearest of the level) and one per facility, "
              f"traveltime_{level}_{{facility_id}}.tif ({len(ids)})")
    print(f"  outputs: {out_dir}")
    return 0


def population_grid_command(region: str, data: str | None, out: str | None, *, raster: str | None = None,
                            engine: str | None = None) -> int:
    """Coverage from a population grid (a raster, else one built from the census): its own set, population_grid/."""
    from .outputs import population_grid_folder

    reg, cfg, data_dir, run_dir = _setup(region, data, out)
    out_dir = population_grid_folder(run_dir)
    analyses.population_raster_path(cfg, data_dir, raster)  # a missing raster costs nothing
    with _claim(cfg, data_dir, run_dir, out_dir, command="population-grid"):
        res = api.population_grid(reg, raster, engine=engine or "combined")
        res.write(out_dir)
    summary = res.summary
    facts, bands = summary["grid"], summary["bands_min"]
    region_shares, settlement = summary["grid_shares"], summary["settlement_shares"]
    print(f"population grid ({summary['source']}): {facts['grid_people']:,.0f} people on the engine's grid")
    print("\nShare of people within … minutes: grid cells (settlement points)")
    rows = [[LEVEL_LABELS[g]] + [f"{region_shares[g][k]:.1%} ({settlement[g][k]:.1%})" for k in region_shares[g]]
            for g in region_shares]
    print(format_table(["level"] + [f"{b:g} min" for b in bands], rows))
    print(f"  outputs: {out_dir}")
    return 0
