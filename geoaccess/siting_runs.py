"""Temporary points under the p-median and p-center models, and robust siting over several scenarios.

`propose clinics --model p_median|p_center --max-sites P` and `propose clinics --robust A,B` land here
(from :func:`geoaccess.proposals.propose_clinics`); the outputs are those of `propose clinics` (same
files, same engine re-run check), the summary says which model and scenarios were used.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import ConfigError
from .pipeline import Run, compute_region_times

log = logging.getLogger("geoaccess")

#: p-median and p-center cost matrices reach this many times the clinic threshold (a point farther than
#: that does not count for a settlement; times beyond it count as the limit). docs/siting.md.
TIME_MODEL_LIMIT_FACTOR = 2.0


def _sitable(s: pd.DataFrame, threshold: float):
    beyond = ~(s["t_clinic_min"].to_numpy(dtype=float) <= threshold)
    sitable = s["loc_quality"].eq("exact").to_numpy() | s["kind"].eq("relocation").to_numpy()
    return beyond, sitable


def propose_clinics_more(config, data_dir: Path, out_dir: Path, *, threshold: float, max_sites, kinds, limit: float,
                         run: Run | None, model: str, capacity, robust, matrix_limit: float | None = None) -> dict:
    from .proposals import _as_facilities, _points, _variant_facts, _write, candidate_sites, settlement_candidate_costs
    from .outputs import provenance_inputs

    if model in ("p_median", "p_center") and (max_sites is None):
        raise ConfigError(None, f"--model {model} needs --max-sites P (the number of new points)")
    if model in ("p_median", "p_center") and capacity is not None:
        raise ConfigError(None, f"--capacity applies to the covering models (cover, max_cover), not {model}")
    if robust and model in ("p_median", "p_center"):
        raise ConfigError(None, "--robust applies to the covering models (cover, max_cover)")
    if robust:
        return _robust(config, data_dir, out_dir, threshold=threshold, max_sites=max_sites, kinds=kinds, limit=limit,
                       model=model, capacity=capacity, names=robust)
    from . import siting

    run = run or compute_region_times(config, data_dir)
    s = run.table
    beyond, sitable = _sitable(s, threshold)
    rows = ~(beyond & ~sitable)
    if matrix_limit is not None and not (np.isfinite(matrix_limit) and threshold <= matrix_limit <= 7 * 24 * 60):
        raise ConfigError(None, f"--limit {matrix_limit:g}: minutes from the threshold ({threshold:g}) up to a week")
    reach = float(matrix_limit) if matrix_limit else threshold * TIME_MODEL_LIMIT_FACTOR
    t0 = time.perf_counter()
    cand = candidate_sites(run, kinds, beyond & sitable)
    cost = settlement_candidate_costs(run, cand, reach, rows)
    t_cost = time.perf_counter() - t0
    sub = s[rows]
    # existing times on the cost matrix's basis: the engine's time from each settlement's position (the reported
    # time of an approximated settlement is its area's median, which a point at its seat would seem to "save")
    raw = run.raw_times if run.raw_times is not None else s
    existing = raw["t_clinic_min"].to_numpy(float)[rows]
    pop = np.nan_to_num(sub["population"].to_numpy(float))
    fn = siting.site_p_median if model == "p_median" else siting.site_p_center
    t0 = time.perf_counter()
    res = fn(cost, pop, cand["candidate_id"].to_numpy(), int(max_sites), existing_time=existing, limit_min=reach,
             settlement_ids=sub["settlement_id"].to_numpy(), time_limit=limit)
    widen_s = 0.0
    with_people = np.isfinite(existing) & (pop > 0)
    worst = float(existing[with_people].max()) if with_people.any() else reach
    final_reach = reach
    while model == "p_center" and res.objective >= final_reach - 1e-9 and final_reach < worst:
        # the worst time is at the matrix limit (times beyond it are capped): widen the limit. Only settlements at
        # or beyond the old limit can set a worst time above it, so only their rows are costed again.
        keep = existing >= final_reach - 1e-9
        final_reach = min(final_reach * 2.0, worst + 1.0)
        log.info("p-center: the worst time reaches the matrix limit; widening it to %.0f min for the %d settlements "
                 "beyond the old one", final_reach, int(keep.sum()))
        t1 = time.perf_counter()
        sub_rows = rows.copy()
        sub_rows[np.flatnonzero(rows)[~keep]] = False
        wide = settlement_candidate_costs(run, cand, final_reach, sub_rows)
        widen_s += time.perf_counter() - t1
        res = fn(wide, pop[keep], cand["candidate_id"].to_numpy(), int(max_sites), existing_time=existing[keep],
                 limit_min=final_reach, settlement_ids=sub["settlement_id"].to_numpy()[keep], time_limit=limit)
    if final_reach > reach:  # every settlement's time with the chosen points (a matrix of those points only)
        t1 = time.perf_counter()
        pick = cand.set_index("candidate_id").loc[list(res.site_ids)].reset_index()
        few = settlement_candidate_costs(run, pick, final_reach, rows)
        widen_s += time.perf_counter() - t1
        res = siting.evaluate_sites(few, pop, pick["candidate_id"].to_numpy(), model="p_center",
                                    info=res.summary | {"limit_widened_to_min": final_reach}, existing_time=existing,
                                    limit_min=final_reach, settlement_ids=sub["settlement_id"].to_numpy())
        reach = final_reach
        t_cost += widen_s
    t_solve = time.perf_counter() - t0 - widen_s
    sites, assign = res.to_frames()
    chosen = cand.set_index("candidate_id").loc[list(res.site_ids)].reset_index()
    new_fac = _as_facilities(chosen, "TMP-", "临时医疗点 ", "temporary_point")
    verify = _verify_times(run, new_fac, assign, rows, reach)
    points = _points(chosen.merge(sites, left_on="candidate_id", right_on="site_id", how="left")
                     .assign(facility_id=new_fac["facility_id"].to_numpy()))
    summary = {
        "region": config.key, "scenario": _variant_facts(run), "model": model, "max_sites": int(max_sites),
        "threshold_min": threshold, "limit_min": reach,
        "existing_worst_min": worst if np.isfinite(worst) else None, "candidate_kinds": list(kinds), "n_candidates": int(len(cand)),
        "candidate_rules": cand.attrs.get("suitability"), "n_settlements": int(rows.sum()), "n_targets": int((beyond & sitable).sum()),
        "n_beyond_not_sitable": int((beyond & ~sitable).sum()),
        "cost_matrix": {"pairs_within_limit": int(cost.nnz), "build_s": round(t_cost, 3)},
        "solve_s": round(t_solve, 3), "solver": res.summary,
        "within_threshold_after": _within(assign, threshold),
        "coverage_after_engine_rerun": verify, "verified": verify["agrees_with_solver"],
        "basis": f"every settlement the clinics models see (within {threshold:g} min already, or sitable); each "
                 f"goes to the nearer of its present clinic-or-better facility and the new points, both timed by the "
                 f"engine from the settlement's position; times beyond {reach:g} min count as {reach:g} min",
        "warnings": run.inputs.report.warnings + run.warnings,
    }
    assign = assign.rename(columns={"weight": "population"})
    _write(out_dir, {"proposed_points": points, "proposed_assignments": assign}, summary, "proposed_points",
           config.key, provenance_inputs(config, data_dir, run.inputs.paths))
    return {"summary": summary, "points": points, "result": res, "run": run}


def _within(assign: pd.DataFrame, threshold: float) -> dict:
    w = assign["weight"].to_numpy(float)
    before, after = (assign[c].to_numpy(float) <= threshold for c in ("time_before_min", "time_after_min"))
    return {"settlements_before": int(before.sum()), "settlements_after": int(after.sum()),
            "population_before": float(w[before].sum()), "population_after": float(w[after].sum())}


def _verify_times(run: Run, new_fac, assign: pd.DataFrame, rows: np.ndarray, limit: float) -> dict:
    """Re-run the engine with the new points: each settlement the solver sends to a point must reach it in the
    solver's minutes, and no settlement may reach a point faster than the solver's time after."""
    from .proposals import _model

    facilities = pd.concat([run.facilities, new_fac], ignore_index=True)
    times, _ = _model(run).times(run.table, facilities, groups={"new": ["temporary_point"]})
    t_new = times["t_new_min"].to_numpy(float)[rows]
    sent = assign["site_id"].notna().to_numpy()
    t_claim = assign["time_after_min"].to_numpy(float)
    diff = np.abs(t_new[sent] - t_claim[sent]) if sent.any() else np.zeros(0)
    faster = (t_new < np.minimum(t_claim, limit) - 1e-6) & (t_new <= limit)
    out = {"settlements_sent_to_new_points": int(sent.sum()),
           "max_time_difference_min": float(diff.max()) if diff.size else 0.0,
           "settlements_with_a_shorter_trip_missed": int(faster.sum())}
    out["agrees_with_solver"] = out["max_time_difference_min"] < 1e-6 and out["settlements_with_a_shorter_trip_missed"] == 0
    return out


def _robust(config, data_dir: Path, out_dir: Path, *, threshold, max_sites, kinds, limit, model, capacity, names):
    """One set of points that covers the targets under every listed scenario (rows stacked per scenario)."""
    from .outputs import provenance_inputs
    from .proposals import _as_facilities, _points, _verify, _write, candidate_sites, settlement_candidate_costs
    from .scenarios import describe, with_variant
    from .siting import run_propose_clinics

    if len(set(names)) < 2:
        raise ConfigError(None, f"--robust {','.join(names)}: list at least two different scenarios, e.g. "
                                "winter,baseline")
    variants = [with_variant(config, n, config.mode.name if config.mode else None, data_dir) for n in names]
    runs = [compute_region_times(v, data_dir) for v in variants]
    ids = runs[0].table["settlement_id"].astype(str).to_numpy()
    targets_any = np.zeros(len(ids), bool)
    parts = []
    for name, run in zip(names, runs):
        beyond, sitable = _sitable(run.table, threshold)
        targets_any |= beyond & sitable
        parts.append((name, run, beyond, sitable))
    cand = candidate_sites(runs[0], kinds, targets_any)
    costs, frames, existing, blocks = [], [], [], []
    start = 0
    for name, run, beyond, sitable in parts:
        rows = ~(beyond & ~sitable)
        costs.append(settlement_candidate_costs(run, cand, threshold, rows))
        sub = run.table[rows]
        frames.append(pd.DataFrame({"settlement_id": sub["settlement_id"].astype(str).to_numpy() + "@" + name,
                                    "population": sub["population"].to_numpy(), "kind": sub["kind"].to_numpy(),
                                    "county_code": sub["county_code"].to_numpy()}))
        existing.append(~beyond[rows])
        blocks.append((name, run, rows, slice(start, start + int(rows.sum())), ~beyond[rows]))
        start += int(rows.sum())
    cost = sp.vstack(costs, format="csr")
    sett = pd.concat(frames, ignore_index=True)
    t0 = time.perf_counter()
    res = run_propose_clinics(cost, sett, cand, np.concatenate(existing), threshold_min=threshold,
                              max_sites=max_sites, time_limit=limit, capacity=capacity)
    t_solve = time.perf_counter() - t0
    sites, assign = res.to_frames()
    chosen = cand.set_index("candidate_id").loc[list(res.site_ids)].reset_index()
    new_fac = _as_facilities(chosen, "TMP-", "临时医疗点 ", "temporary_point")
    checks = {name: _verify(run, new_fac, threshold, ex, res, rows=rows, block=blk)
              for name, run, rows, blk, ex in blocks}
    per = {}
    for name, run, rows, blk, ex in blocks:
        a = assign.iloc[blk]
        per[name] = {"targets": int((~ex).sum()), "covered_after": int(a["cov_after"].sum()),
                     "newly_covered": int(a["newly_cov"].sum()), "uncoverable": int(a["uncoverable"].sum())}
    points = _points(chosen.merge(sites, left_on="candidate_id", right_on="site_id", how="left")
                     .assign(facility_id=new_fac["facility_id"].to_numpy()))
    summary = {"region": config.key, "robust_over": list(names),
               "scenarios": {n: describe(r.config, r.graph) for n, r in zip(names, runs)},
               "threshold_min": threshold, "mode": "max_cover" if max_sites else "cover", "max_sites": max_sites,
               "capacity": capacity, "candidate_kinds": list(kinds), "n_candidates": int(len(cand)),
               "solve_s": round(t_solve, 3), "solver": res.summary, "by_scenario": per,
               "coverage_after_engine_rerun": checks, "verified": all(c["agrees_with_solver"] for c in checks.values()),
               "basis": "the rows of every scenario stacked (settlement_id@scenario): a point set that covers a target "
                        "in one scenario but not in another counts only where it covers; set covering covers every "
                        "coverable target in every scenario",
               "warnings": list(dict.fromkeys(sum((r.inputs.report.warnings + r.warnings for r in runs), [])))}
    _write(out_dir, {"proposed_points": points, "proposed_assignments": assign}, summary, "proposed_points",
           config.key, provenance_inputs(config, data_dir, runs[0].inputs.paths))
    return {"summary": summary, "points": points, "result": res, "runs": runs}
