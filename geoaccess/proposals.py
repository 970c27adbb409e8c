"""Proposals: temporary medical points and regional medical centres, costed by the travel-time engine."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from .config import RegionConfig, resolve_project_file
from .errors import ConfigError
from .pipeline import Run, compute_region_times, json_default
from .outputs import provenance_inputs
from .schema import COUNTY_HOSPITAL_LEVELS

log = logging.getLogger("geoaccess")

CANDIDATE_KINDS = ("targets", "settlements", "roads")


def _settlement_candidates(sub: pd.DataFrame, source) -> pd.DataFrame:
    """Settlements as candidate sites (id `S:<settlement_id>`)."""
    return pd.DataFrame({"candidate_id": "S:" + sub["settlement_id"].astype(str), "name": sub["name"],
                         "source": source, "lon": sub["lon"], "lat": sub["lat"], "county_code": sub["county_code"]})


def candidate_sites(run: Run, kinds, targets: np.ndarray) -> pd.DataFrame:
    """Candidate points: the target settlements, all settlements and/or road junctions (WGS84)."""
    s = run.table
    frames = []
    for kind in kinds:
        if kind not in CANDIDATE_KINDS:
            raise ConfigError(None, f"unknown candidate kind '{kind}' (use {', '.join(CANDIDATE_KINDS)})")
        if kind == "targets":
            sub = s[targets]
        elif kind == "settlements":
            sub = s
        else:
            xs, ys = zip(*((d["x"], d["y"]) for _, d in run.graph.nodes(data=True))) if len(run.graph) else ((), ())
            frames.append(pd.DataFrame({"candidate_id": [f"road:{n}" for n in run.graph.nodes],
                                        "name": "road point", "source": "road", "lon": xs, "lat": ys,
                                        "county_code": ""}))
            continue
        frames.append(_settlement_candidates(sub, kind))
    cand = pd.concat(frames, ignore_index=True).drop_duplicates("candidate_id").reset_index(drop=True)
    if "roads" in kinds and run.inputs.counties is not None:
        from .pipeline import region_polygon
        import shapely

        hit = shapely.contains_xy(region_polygon(run.inputs), cand["lon"].to_numpy(), cand["lat"].to_numpy())
        cand = cand[hit | (cand["source"] != "road")].reset_index(drop=True)
        road = cand["source"] == "road"
        if road.any():
            pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(cand.loc[road, "lon"], cand.loc[road, "lat"]), crs=4326,
                                   index=cand.index[road])
            j = gpd.sjoin(pts, run.inputs.counties[["adcode", "geometry"]], predicate="within", how="left")
            j = j[~j.index.duplicated()]
            cand.loc[road, "county_code"] = j["adcode"].fillna("").to_numpy()
    from .suitability import filter_candidates

    cand, facts = filter_candidates(run, cand, getattr(run, "data_dir", None))
    cand.attrs["suitability"] = facts
    return cand


def settlement_candidate_costs(run: Run, candidates: pd.DataFrame, limit_min: float, rows: np.ndarray | None = None):
    """Sparse settlements (all, or the `rows` mask) × candidates minutes within `limit_min`, by the run's own engine.

    Each settlement is costed from its position (an approximated one from its township or county seat)."""
    s = run.table if rows is None else run.table[rows]
    return _model(run).cost_matrix(s, candidates, limit_min)


def _model(run: Run):
    """The travel model of the run (a run built without one gets the network engine over its graph)."""
    if run.model is not None:
        return run.model
    raise ConfigError(None, "this run has no travel model: compute it with pipeline.compute_region_times")


def _positive(option: str, value: float | None, default: float, unit: str) -> float:
    """`value` (or `default` when not given — 0 is given, not missing) as a positive finite number, else ConfigError."""
    v = default if value is None else value
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ConfigError(None, f"{option} {value!r}: not a number of {unit}") from None
    if not (np.isfinite(v) and v > 0):
        raise ConfigError(None, f"{option} {value if value is not None else v:g}: {unit} must be a positive number")
    return v


def _points(frame: pd.DataFrame) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame["lon"], frame["lat"]), crs=4326)


def _write(out_dir: Path, layers: dict[str, pd.DataFrame], summary: dict, prefix: str, region: str, inputs) -> None:
    from ._atomic import atomic_output_dir
    from .export import export_layers

    command = {"proposed_points": "propose clinics", "regional_centres": "propose centres"}[prefix]
    with atomic_output_dir(out_dir, inputs=inputs, command=command) as tmp:
        export_layers(layers, tmp, formats=("csv",), region=region)
        export_layers({k: v for k, v in layers.items() if isinstance(v, gpd.GeoDataFrame)}, tmp, formats=("shp",),
                      region=region)
        export_layers(layers, tmp / "_gpkg", formats=("gpkg",), region=region)
        (tmp / "_gpkg" / "geoaccess.gpkg").rename(tmp / f"{prefix}.gpkg")
        (tmp / "_gpkg").rmdir()
        (tmp / f"{prefix}_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1,
                                                               default=json_default), encoding="utf-8")


# ----------------------------------------------------------------------------- temporary points

def propose_clinics(config: RegionConfig, data_dir: Path, out_dir: Path | None, *, threshold_min: float | None = None,
                    max_sites: int | None = None, candidates=None, time_limit: float | None = None,
                    run: Run | None = None, model: str | None = None, capacity: float | None = None,
                    robust: list[str] | None = None, matrix_limit: float | None = None) -> dict:
    """Temporary medical points (临时医疗点) for settlements beyond the clinic threshold, relocation first.

    Coverage is judged at each settlement's position (the engine's own times); the result is checked by
    re-running the engine with the proposed points added as `temporary_point` facilities. Written into
    `out_dir` unless it is None; the returned ``write(folder)`` writes the same output set.
    """
    from .siting import run_propose_clinics

    sit = config.section("siting")
    threshold = _positive("--threshold", threshold_min, sit["clinic_threshold_min"], "minutes")
    limit = _positive("--time-limit", time_limit, sit["time_limit_s"], "seconds")
    if max_sites is not None and (isinstance(max_sites, bool) or not isinstance(max_sites, (int, np.integer))
                                  or max_sites < 1):
        raise ConfigError(None, f"--max-sites {max_sites}: must be a whole number of points, at least 1 (leave it out "
                                "for the fewest points that cover every target)")
    kinds = candidates or sit["candidates"]
    model = model or ("cover" if max_sites is None else "max_cover")
    if model in ("p_median", "p_center") or robust:
        from .siting_runs import propose_clinics_more

        return propose_clinics_more(config, data_dir, out_dir, threshold=threshold, max_sites=max_sites, kinds=kinds,
                                    limit=limit, run=run, model=model, capacity=capacity, robust=robust,
                                    matrix_limit=matrix_limit)
    if model == "max_cover" and max_sites is None:
        raise ConfigError(None, "--model max_cover needs --max-sites K")
    if model == "cover" and max_sites is not None:
        raise ConfigError(None, "--model cover finds the fewest points: leave out --max-sites (or use max_cover)")
    if capacity is not None:
        _positive("--capacity", capacity, 1.0, "people")
    run = run or compute_region_times(config, data_dir)
    s = run.table
    beyond = ~(s["t_clinic_min"].to_numpy(dtype=float) <= threshold)  # reported times (approximations disclosed)
    sitable = s["loc_quality"].eq("exact").to_numpy() | s["kind"].eq("relocation").to_numpy()
    targets = beyond & sitable
    rows = ~(beyond & ~sitable)  # settlements the model sees: within the threshold already, or sitable targets
    covered_before = ~beyond[rows]
    log.info("propose clinics: %d settlements beyond %.0f min of a clinic; %d of them sitable (own coordinates, "
             "or a relocation settlement)", int(beyond.sum()), threshold, int(targets.sum()))
    t0 = time.perf_counter()
    cand = candidate_sites(run, kinds, targets)
    cost = settlement_candidate_costs(run, cand, threshold, rows)
    t_cost = time.perf_counter() - t0
    sub = s[rows]
    sett = pd.DataFrame({"settlement_id": sub["settlement_id"].to_numpy(), "population": sub["population"].to_numpy(),
                         "kind": sub["kind"].to_numpy(), "county_code": sub["county_code"].to_numpy()})
    t0 = time.perf_counter()
    res = run_propose_clinics(cost, sett, cand, covered_before, threshold_min=threshold, max_sites=max_sites,
                              time_limit=limit, capacity=capacity)
    t_solve = time.perf_counter() - t0
    sites, assign = res.to_frames()
    chosen = cand.set_index("candidate_id").loc[list(res.site_ids)].reset_index()
    new_fac = _as_facilities(chosen, "TMP-", "临时医疗点 ", "temporary_point")
    verify = _verify(run, new_fac, threshold, covered_before, res, rows=rows)
    claimed_after = int(res.summary["coverage"]["after"]["settlements"])
    points = _points(chosen.merge(sites, left_on="candidate_id", right_on="site_id", how="left")
                     .assign(facility_id=new_fac["facility_id"].to_numpy()))
    relocation = s["kind"].eq("relocation").to_numpy()
    summary = {
        "region": config.key, "scenario": _variant_facts(run), "capacity": capacity,
        "threshold_min": threshold, "mode": "max_cover" if max_sites else "cover",
        "max_sites": max_sites, "candidate_kinds": list(kinds), "n_candidates": int(len(cand)),
        "candidate_rules": cand.attrs.get("suitability"),
        "n_targets": int(targets.sum()), "n_relocation_targets": int((targets & relocation).sum()),
        "n_beyond_not_sitable": int((beyond & ~sitable).sum()),
        "not_sitable_note": "villages beyond the threshold that have no coordinates of their own (placed at their "
                            "township or county seat) cannot be sited for: they are counted here, not targeted",
        "cost_matrix": {"pairs_within_threshold": int(cost.nnz), "build_s": round(t_cost, 3)},
        "solve_s": round(t_solve, 3), "solver": res.summary,
        "coverage_before": {"settlements": int((~beyond).sum()),
                            "population": float(np.nansum(s["population"].to_numpy()[~beyond]))},
        "coverage_after_solver": {"settlements": claimed_after},
        "coverage_after_engine_rerun": verify,
        "verified": verify["agrees_with_solver"],
        "basis": "targets: settlements beyond the threshold by their reported times, with coordinates of their own, "
                 "plus relocation settlements (sited at their host unit's position); coverage of a target by a "
                 "point is judged by the engine's time from the target's position",
        "warnings": run.inputs.report.warnings + run.warnings,
    }
    inputs = provenance_inputs(config, data_dir, run.inputs.paths)

    def write(folder: Path) -> None:
        _write(folder, {"proposed_points": points, "proposed_assignments": assign}, summary, "proposed_points",
               config.key, inputs)

    if out_dir is not None:
        write(out_dir)
    return {"summary": summary, "points": points, "assignments": assign, "result": res, "run": run, "write": write}


def _variant_facts(run: Run) -> dict:
    from .scenarios import describe

    return describe(run.config, run.graph)


def _as_facilities(chosen: pd.DataFrame, id_prefix: str, name_prefix: str, level: str) -> gpd.GeoDataFrame:
    """Chosen candidate sites as register rows, ready to route to."""
    return _points(pd.DataFrame({
        "facility_id": id_prefix + chosen["candidate_id"].str.replace(":", "-"),
        "name": name_prefix + chosen["name"].astype(str), "level": level, "admin_code": "",
        "county_code": chosen["county_code"], "lon": chosen["lon"], "lat": chosen["lat"], "coord_sys": "wgs84",
        "basis": "proposed by geoaccess"}))


def _verify(run: Run, new_facilities: gpd.GeoDataFrame, threshold: float, existing: np.ndarray, res,
            rows: np.ndarray | None = None, block: slice | None = None) -> dict:
    """Re-run the engine with the new facilities added; check the solver's coverage and times against it.

    The solver's claim per settlement is "within the threshold of a chosen site, at time t". The engine,
    re-run over the register plus the new sites, gives each settlement's time to the nearest new site; the
    two must agree on who is covered and on the minutes. Coverage after = existing cover ∪ that set.
    """
    level = str(new_facilities["level"].iloc[0])
    facilities = pd.concat([run.facilities, new_facilities], ignore_index=True)
    times, _ = _model(run).times(run.table, facilities, groups={"new": [level]})
    t_new = times["t_new_min"].to_numpy(dtype=float)
    if rows is not None:
        t_new = t_new[rows]
    engine_cov = t_new <= threshold + 1e-9
    _, assign = res.to_frames()
    if block is not None:  # robust siting: this scenario's rows of the stacked problem
        assign = assign.iloc[block]
    solver_cov = assign["site_id"].notna().to_numpy()
    solver_t = assign["time_min"].to_numpy(dtype=float)
    both = engine_cov & solver_cov
    after = existing | engine_cov
    pop = np.nan_to_num(run.table["population"].to_numpy(dtype=float))
    pop = pop if rows is None else pop[rows]
    out = {"covered_after": int(after.sum()), "population_after": float(pop[after].sum()),
           "newly_covered": int((after & ~existing).sum()),
           "same_settlements_covered": bool(np.array_equal(engine_cov, solver_cov)),
           "max_time_difference_min": float(np.max(np.abs(t_new[both] - solver_t[both]))) if both.any() else 0.0}
    claimed = int(res.summary["coverage"]["after"]["settlements"]) if block is None else \
        int(assign["cov_after"].sum())
    out["agrees_with_solver"] = (out["same_settlements_covered"] and out["max_time_difference_min"] < 1e-6
                                 and out["covered_after"] == claimed)
    return out


# ----------------------------------------------------------------------------- regional centres

def propose_centres(config: RegionConfig, data_dir: Path, out_dir: Path | None, *, threshold_min: float | None = None,
                    time_limit: float | None = None, run: Run | None = None) -> dict:
    """Sites for the plan's county-level regional medical centres, and the plan-versus-optimum comparison.

    Written into `out_dir` unless it is None; the returned ``write(folder)`` writes the same output set.
    """
    from .siting import run_propose_centres

    sit = config.section("siting")
    if not sit["regional_centres"]:
        raise ConfigError(config.source, "[siting] regional_centres: this region's config names no centre list")
    centres_csv = resolve_project_file(sit["regional_centres"], config.source)
    threshold = _positive("--threshold", threshold_min, sit["centre_threshold_min"], "minutes")
    limit = _positive("--time-limit", time_limit, sit["time_limit_s"], "seconds")
    run = run or compute_region_times(config, data_dir)
    s = run.table
    seats = s[s["kind"].isin(["county_seat", "township_seat"])]
    hosp = run.facilities[run.facilities["level"].isin(COUNTY_HOSPITAL_LEVELS)]
    cand = pd.concat([
        _settlement_candidates(seats, seats["kind"]),
        pd.DataFrame({"candidate_id": "F:" + hosp["facility_id"].astype(str), "name": hosp["name"],
                      "source": "existing " + hosp["level"], "lon": hosp["lon"], "lat": hosp["lat"],
                      "county_code": hosp["county_code"]}),
    ], ignore_index=True)
    cand = cand[cand["county_code"].astype(str).str.len() == 6].reset_index(drop=True)
    existing = run.table["t_pref_min"].to_numpy(dtype=float) <= threshold  # reported times, as for clinics
    t0 = time.perf_counter()
    cost = settlement_candidate_costs(run, cand, threshold)
    t_cost = time.perf_counter() - t0
    sett = pd.DataFrame({"settlement_id": s["settlement_id"].to_numpy(), "population": s["population"].to_numpy(),
                         "county_code": s["county_code"].to_numpy()})
    t0 = time.perf_counter()
    out = run_propose_centres(cost, sett, cand, existing, centres_csv, threshold_min=threshold, time_limit=limit)
    t_solve = time.perf_counter() - t0
    plan, opt = out["plan"], out["optimum"]
    names = dict(zip(run.inputs.counties["adcode"], run.inputs.counties["name"])) if run.inputs.counties is not None else {}
    sites, assign = plan.to_frames()
    site_tab = cand.set_index("candidate_id").loc[list(plan.site_ids)].reset_index()
    site_tab = site_tab.merge(sites.drop(columns=[c for c in ("county_code",) if c in sites]), left_on="candidate_id",
                              right_on="site_id", how="left")
    site_tab["county_name"] = site_tab["county_code"].map(names)
    new_fac = _as_facilities(site_tab, "RC-", "县级区域医疗中心 ", "county_regional_centre")
    verify = _verify(run, new_fac, threshold, existing, plan)
    claimed = int(plan.summary["coverage"]["after"]["settlements"])
    comparison = dict(out["comparison"])
    for key in ("added_counties", "dropped_counties", "kept_counties", "plan_counties", "optimum_counties"):
        comparison[key + "_names"] = [names.get(c, c) for c in comparison.get(key, [])]
    opt_tab = cand.set_index("candidate_id").loc[list(opt.site_ids)].reset_index()
    opt_tab["county_name"] = opt_tab["county_code"].map(names)
    summary = {
        "region": config.key, "threshold_min": threshold, "n_centres": int(len(plan.site_ids)),
        "n_candidates": int(len(cand)), "cost_matrix": {"pairs_within_threshold": int(cost.nnz), "build_s": round(t_cost, 3)},
        "solve_s": round(t_solve, 3), "existing_cover": {
            "basis": f"settlements within {threshold:.0f} min of a prefecture hospital (reported times: approximated "
                     "positions by their area's median)",
            "settlements": int(existing.sum()),
            "population": float(np.nansum(s["population"].to_numpy()[existing]))},
        "plan": plan.summary, "optimum": opt.summary, "comparison": comparison,
        "coverage_after_solver": {"settlements": claimed}, "coverage_after_engine_rerun": verify,
        "verified": verify["agrees_with_solver"],
        "warnings": run.inputs.report.warnings + run.warnings,
    }
    layers = {"regional_centres": _points(site_tab.assign(facility_id=new_fac["facility_id"].to_numpy())),
              "centre_assignments": assign, "optimal_centres": _points(opt_tab)}
    inputs = provenance_inputs(config, data_dir, run.inputs.paths) | {"regional_centres_plan": centres_csv}

    def write(folder: Path) -> None:
        _write(folder, layers, summary, "regional_centres", config.key, inputs)

    if out_dir is not None:
        write(out_dir)
    return {"summary": summary, "sites": site_tab, "optimum": opt_tab, "run": run, "write": write}
