"""Facility siting on sparse travel-time matrices: temporary points (LSCP/MCLP) and regional centres."""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from geoaccess.errors import GeoaccessError, InputError

log = logging.getLogger("geoaccess")

DEFAULT_SOLVER = "highs"
CENTRE_COLUMNS = ["prefecture", "county_name_plan", "county_name_current", "county_code_current",
                  "county_code_2016", "zutuan", "source"]


# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class SitingResult:
    """The chosen sites, the settlement→site assignment and a JSON-serialisable summary.

    `sites` has one row per chosen site (sorted by id); `assignments` one row per settlement,
    in input order. Column meanings are in docs/siting.md.
    """

    model: str
    site_ids: list
    sites: pd.DataFrame
    assignments: pd.DataFrame
    summary: dict

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def mip_gap(self) -> float:
        return self.summary["mip_gap"]

    @property
    def objective(self) -> float:
        return self.summary["objective"]

    def to_frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(sites, assignments): join to candidate / settlement geometry on `site_id` / `settlement_id`."""
        return self.sites.copy(), self.assignments.copy()


# ---------------------------------------------------------------- inputs

@dataclass(frozen=True)
class _Problem:
    times: sp.csr_matrix   # settlements × candidates sorted by id; stored entry = within threshold (minutes)
    reach: sp.csr_matrix   # same pattern, all ones
    weights: np.ndarray
    existing: np.ndarray
    ids: np.ndarray        # candidate ids, sorted
    order: np.ndarray      # sorted position → input position
    settlement_ids: np.ndarray
    threshold_min: float


def _prepare(cost, weights, candidate_ids, threshold_min, existing_cover, settlement_ids) -> _Problem:
    """Validate inputs; keep stored pairs with time ≤ threshold; sort candidates by id."""
    if not sp.issparse(cost):
        raise TypeError("cost must be a scipy.sparse matrix (settlements × candidates, minutes)")
    coo = sp.coo_matrix(cost)
    n, m = coo.shape
    ids = np.asarray(candidate_ids)
    if ids.shape != (m,):
        raise ValueError(f"candidate_ids has {ids.size} entries, cost has {m} columns")
    if len(np.unique(ids)) != m:
        raise ValueError("candidate_ids must be unique")
    w = np.asarray(weights, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"weights has {w.size} entries, cost has {n} rows")
    if not np.isfinite(w).all() or (w < 0).any():
        raise InputError(None, "settlement weights (population) must be finite and ≥ 0; "
                               f"{int((~np.isfinite(w)).sum())} missing, {int((w < 0).sum())} negative")
    existing = np.zeros(n, bool) if existing_cover is None else np.asarray(existing_cover, dtype=bool)
    if existing.shape != (n,):
        raise ValueError("existing_cover must be a boolean array with one entry per settlement")
    sids = np.arange(n) if settlement_ids is None else np.asarray(settlement_ids)
    if sids.shape != (n,):
        raise ValueError("settlement_ids must have one entry per settlement")

    order = np.argsort(ids, kind="stable")
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    keep = coo.data <= threshold_min            # NaN is never within reach
    if (coo.data[keep] < 0).any():
        raise ValueError("cost holds negative travel times")
    r, c, t = coo.row[keep], rank[coo.col[keep]], coo.data[keep]
    o = np.lexsort((t, c, r))                   # one entry per pair: the shortest time
    r, c, t = r[o], c[o], t[o]
    first = np.ones(r.size, bool)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    times = sp.csr_matrix((t[first], (r[first], c[first])), shape=(n, m))
    reach = sp.csr_matrix((np.ones(int(first.sum())), (r[first], c[first])), shape=(n, m))
    return _Problem(times, reach, w, existing, ids[order], order, sids, float(threshold_min))


def _reduce(reach: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, labels: np.ndarray | None,
            drop_empty: bool) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Target rows × allowed columns; columns covering the same targets (and label) collapse to the lowest id.

    Returns the reduced matrix, the kept columns and, per allowed column, its kept stand-in (-1: dropped).
    """
    sub = reach[rows][:, cols].tocsc()
    sub.sort_indices()
    kept: dict = {}
    keep = []
    stand_in = np.full(cols.size, -1)
    for k in range(sub.shape[1]):
        idx = sub.indices[sub.indptr[k]:sub.indptr[k + 1]]
        if drop_empty and idx.size == 0:
            continue
        key = (None if labels is None else labels[k], idx.tobytes())
        if key not in kept:
            kept[key] = len(keep)
            keep.append(k)
        stand_in[k] = kept[key]
    keep = np.asarray(keep, dtype=np.int64)
    return sub[:, keep].tocsr(), cols[keep], stand_in


# ---------------------------------------------------------------- MIP and solvers

@dataclass
class _Mip:
    """max/min c·v  s.t.  row_lo ≤ A v ≤ row_hi,  0 ≤ v ≤ col_hi,  the first n_int columns integer."""

    c: np.ndarray
    A: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_hi: np.ndarray
    n_int: int
    maximize: bool
    start: np.ndarray | None = None
    highs_options: dict = field(default_factory=dict)


@dataclass
class _Solution:
    v: np.ndarray
    status: str
    gap: float
    objective: float
    bound: float
    seconds: float


def _solve(mip: _Mip, solver, time_limit: float | None, mip_gap: float) -> _Solution:
    """Solve with HiGHS directly (solver="highs") or any pulp solver object."""
    if mip.A.shape[1] == 0:
        return _Solution(np.zeros(0), "optimal", 0.0, 0.0, 0.0, 0.0)
    if isinstance(solver, str):
        if solver.lower() != "highs":
            raise ValueError(f"unknown solver {solver!r}: use 'highs' or a pulp solver object")
        sol = _solve_highspy(mip, time_limit, mip_gap)
    else:
        sol = _solve_pulp(mip, solver, time_limit)
    if sol.v is None:
        raise GeoaccessError(f"siting: the solver found no solution (status {sol.status})")
    return sol


def _highs_status(h) -> str:
    import highspy
    s = h.getModelStatus()
    return {highspy.HighsModelStatus.kOptimal: "optimal",
            highspy.HighsModelStatus.kTimeLimit: "time_limit",
            highspy.HighsModelStatus.kInfeasible: "infeasible"}.get(s, h.modelStatusToString(s).lower())


@contextlib.contextmanager
def _banner_off_stdout():
    """Send what C code writes to file descriptor 1 to the null device meanwhile (stdout stays the report's)."""
    import os
    import sys

    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no file descriptor 1 to protect
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _solve_highspy(mip: _Mip, time_limit: float | None, mip_gap: float) -> _Solution:
    import highspy
    inf = highspy.kHighsInf
    A = mip.A.tocsc()
    lp = highspy.HighsLp()
    lp.num_row_, lp.num_col_ = A.shape
    lp.col_cost_ = mip.c
    lp.col_lower_ = np.zeros(A.shape[1])
    lp.col_upper_ = mip.col_hi
    lp.row_lower_ = np.where(np.isfinite(mip.row_lo), mip.row_lo, -inf)
    lp.row_upper_ = np.where(np.isfinite(mip.row_hi), mip.row_hi, inf)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr
    lp.a_matrix_.index_ = A.indices
    lp.a_matrix_.value_ = A.data
    lp.integrality_ = ([highspy.HighsVarType.kInteger] * mip.n_int
                       + [highspy.HighsVarType.kContinuous] * (A.shape[1] - mip.n_int))
    lp.sense_ = highspy.ObjSense.kMaximize if mip.maximize else highspy.ObjSense.kMinimize
    with _banner_off_stdout():
        h = highspy.Highs()  # HiGHS prints its banner on the process's stdout before any option can stop it
    h.setOptionValue("output_flag", False)
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("mip_rel_gap", float(mip_gap))
    if time_limit is not None:
        h.setOptionValue("time_limit", float(time_limit))
    for key, value in mip.highs_options.items():
        h.setOptionValue(key, value)
    h.passModel(lp)
    if mip.start is not None:
        start = highspy.HighsSolution()
        start.col_value = list(mip.start)
        h.setSolution(start)
    t0 = time.perf_counter()
    h.run()
    seconds = time.perf_counter() - t0
    info = h.getInfo()
    has_solution = info.primal_solution_status == 2
    v = np.asarray(h.getSolution().col_value) if has_solution else None
    return _Solution(v, _highs_status(h), float(info.mip_gap), float(info.objective_function_value),
                     float(info.mip_dual_bound), seconds)


def _solve_pulp(mip: _Mip, solver, time_limit: float | None) -> _Solution:
    import pulp
    prob = pulp.LpProblem("siting", pulp.LpMaximize if mip.maximize else pulp.LpMinimize)
    n_col = mip.A.shape[1]
    new_var = getattr(prob, "add_variable", pulp.LpVariable)         # pulp ≥ 3.3 owns variables by model
    v = [new_var(f"v{j:08d}", 0, float(mip.col_hi[j]), pulp.LpInteger if j < mip.n_int else pulp.LpContinuous)
         for j in range(n_col)]
    prob += pulp.LpAffineExpression([(v[j], float(mip.c[j])) for j in np.flatnonzero(mip.c)])
    A = mip.A.tocsr()
    for i in range(A.shape[0]):
        sl = slice(A.indptr[i], A.indptr[i + 1])
        expr = pulp.LpAffineExpression([(v[j], float(a)) for j, a in zip(A.indices[sl], A.data[sl])])
        lo, hi = mip.row_lo[i], mip.row_hi[i]
        if lo == hi:
            prob += expr == float(lo)
            continue
        if np.isfinite(lo):
            prob += expr >= float(lo)
        if np.isfinite(hi):
            prob += expr <= float(hi)
    if time_limit is not None and getattr(solver, "timeLimit", None) is None:
        solver = copy.copy(solver)
        solver.timeLimit = time_limit
    t0 = time.perf_counter()
    prob.solve(solver)
    seconds = time.perf_counter() - t0
    highs = getattr(prob, "solverModel", None)
    if highs is not None and hasattr(highs, "getInfo"):      # pulp.HiGHS: read HiGHS itself
        info = highs.getInfo()
        status, gap, bound = _highs_status(highs), float(info.mip_gap), float(info.mip_dual_bound)
    else:
        status = {pulp.LpSolutionOptimal: "optimal", pulp.LpSolutionIntegerFeasible: "feasible"}.get(
            prob.sol_status, pulp.LpStatus[prob.status].lower())
        gap = 0.0 if status == "optimal" else float("nan")
        bound = float("nan")
    values = [var.varValue for var in v]
    x = None if any(val is None for val in values) or status == "infeasible" else np.asarray(values, float)
    return _Solution(x, status, gap, float(pulp.value(prob.objective) or 0.0), bound, seconds)


def _combine(sols: list[_Solution]) -> dict:
    """Status/gap/time of one or more sequential solves (lexicographic stages)."""
    bad = [s.status for s in sols if s.status != "optimal"]
    return {"status": bad[0] if bad else "optimal",
            "mip_gap": max((s.gap for s in sols), default=0.0),
            "bound": sols[-1].bound if sols else 0.0,
            "solve_seconds": sum(s.seconds for s in sols),
            "stages": len(sols)}


# ---------------------------------------------------------------- models

def _lscp(A: sp.csr_matrix) -> _Mip:
    """min Σ x_j  s.t.  Σ_j a_ij x_j ≥ 1 for every coverable target i,  x binary.

    HiGHS solves its LPs by interior point here: on dense reach (30–45 candidates per settlement)
    the simplex root cut loop stalled at 19–30 % gap where IPM reached 1.3–12 % (docs/siting.md).
    """
    t, k = A.shape
    return _Mip(np.ones(k), A, np.ones(t), np.full(t, np.inf), np.ones(k), k, maximize=False,
                highs_options={"mip_lp_solver": "ipm"})


def _mclp(A: sp.csr_matrix, w: np.ndarray, labels: np.ndarray, lo: np.ndarray, hi: np.ndarray,
          floors: Sequence[tuple[np.ndarray, float]] = ()) -> _Mip:
    """max Σ w_i z_i  s.t.  z_i ≤ Σ_j a_ij x_j,  lo_g ≤ Σ_{j∈g} x_j ≤ hi_g,  x binary, 0 ≤ z ≤ 1.

    z may be continuous: for integer x the optimum sets z_i = 1 exactly when i is covered.
    `floors` adds rows Σ u_i z_i ≥ f (the earlier stages of a lexicographic objective).
    """
    t, k = A.shape
    groups = sp.csr_matrix((np.ones(k), (labels, np.arange(k))), shape=(len(lo), k))
    blocks = [[A, -sp.identity(t, format="csr")], [groups, sp.csr_matrix((len(lo), t))]]
    row_lo, row_hi = [np.zeros(t), lo], [np.full(t, np.inf), hi]
    for u, f in floors:
        blocks.append([sp.csr_matrix((1, k)), sp.csr_matrix(u.reshape(1, -1))])
        row_lo.append([f])
        row_hi.append([np.inf])
    return _Mip(np.r_[np.zeros(k), w], sp.bmat(blocks, format="csr"), np.concatenate(row_lo).astype(float),
                np.concatenate(row_hi).astype(float), np.ones(k + t), k, maximize=True)


def _greedy(A: sp.csr_matrix, w: np.ndarray, labels: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Warm start: add the column of largest new coverage (lowest id on ties) while it gains and its
    group has room; then fill groups below their minimum with their lowest-id columns."""
    t, k = A.shape
    chosen = np.zeros(k, bool)
    used = np.zeros(len(lo))
    At = A.T.tocsr()
    open_w = w.astype(float).copy()
    while k:
        gain = At @ open_w
        gain[chosen | (used[labels] >= hi[labels])] = -1.0
        j = int(np.argmax(gain))
        if gain[j] <= 0:
            break
        chosen[j] = True
        used[labels[j]] += 1
        open_w[At.indices[At.indptr[j]:At.indptr[j + 1]]] = 0.0
    for g in np.flatnonzero(used < lo):
        chosen[np.flatnonzero(~chosen & (labels == g))[: int(lo[g] - used[g])]] = True
    return chosen


def _canonical(A: sp.csr_matrix, chosen: np.ndarray, objectives: Sequence[np.ndarray], labels: np.ndarray,
               lo: np.ndarray) -> np.ndarray:
    """Deterministic clean-up that never lowers any objective (Σ w_i [i covered] per weight vector).

    1. drop chosen sites that cover nothing no other chosen site covers (highest id first, groups
       kept at their minimum);
    2. swap each chosen site for the lowest-id unchosen site of its group that loses nothing.
    Repeats until stable: the result has no redundant site and is 1-swap minimal in candidate id.
    """
    k = A.shape[1]
    chosen = chosen.copy()
    At = A.T.tocsr()
    eps = [1e-9 * max(1.0, float(w.sum())) for w in objectives]
    count = A @ chosen.astype(float)
    used = np.bincount(labels[chosen], minlength=len(lo))
    ids = np.arange(k)

    def targets(j):
        return At.indices[At.indptr[j]:At.indptr[j + 1]]

    def only(j):                                      # covered by j and by no other chosen site
        idx = targets(j)
        return idx[count[idx] == 1]

    def move(j, on: bool):
        count[targets(j)] += 1 if on else -1
        used[labels[j]] += 1 if on else -1
        chosen[j] = on

    def open_gain():                                  # per column: weight of targets nobody covers
        return [At @ (w * (count == 0)) for w in objectives]

    while True:
        changed = False
        for j in np.flatnonzero(chosen)[::-1]:
            lost = only(j)
            if used[labels[j]] > lo[labels[j]] and all(w[lost].sum() <= e for w, e in zip(objectives, eps)):
                move(j, False)
                changed = True
        base = open_gain()
        for j in np.flatnonzero(chosen):
            ok = ~chosen & (ids < j) & (labels == labels[j])
            if not ok.any():
                continue
            lost = only(j)
            for w, g, e in zip(objectives, base, eps):
                ok &= g + A[lost].T @ w[lost] >= w[lost].sum() - e
            if ok.any():
                move(j, False)
                move(int(np.flatnonzero(ok)[0]), True)
                base = open_gain()
                changed = True
        if not changed:
            return chosen


def _min_cover(A, solver, time_limit, mip_gap):
    """LSCP on the reduced matrix, greedy warm start, canonical clean-up."""
    k = A.shape[1]
    labels, lo, hi = np.zeros(k, dtype=np.int64), np.array([0.0]), np.array([float(k)])
    ones = np.ones(A.shape[0])
    mip = _lscp(A)
    mip.start = _greedy(A, ones, labels, lo, hi).astype(float)
    sol = _solve(mip, solver, time_limit, mip_gap)
    return _canonical(A, sol.v > 0.5, [ones], labels, lo), _combine([sol])


def _max_cover(A, objectives, labels, lo, hi, solver, time_limit, mip_gap, start=None):
    """Lexicographic MCLP: maximise each objective in turn, holding the earlier ones at their optimum.

    Warm start: the better (on the first objective) of the greedy solution and `start`.
    """
    k = A.shape[1]

    def covered(x: np.ndarray) -> np.ndarray:
        return (A @ x.astype(float)) > 0

    greedy = _greedy(A, objectives[0], labels, lo, hi)
    if start is None or objectives[0] @ covered(greedy) >= objectives[0] @ covered(start):
        start = greedy
    floors, sols = [], []
    for w in objectives:
        mip = _mclp(A, w, labels, lo, hi, floors)
        mip.start = np.r_[start, covered(start)].astype(float)
        sol = _solve(mip, solver, time_limit, mip_gap)
        sols.append(sol)
        start = sol.v[:k] > 0.5
        achieved = float(w @ covered(start))
        floors.append((w, achieved - 0.5))   # half a person of slack: an exact floor trips HiGHS presolve
    return _canonical(A, start, objectives, labels, lo), _combine(sols)


# ---------------------------------------------------------------- outputs

def _result(model: str, pb: _Problem, chosen: np.ndarray, info: dict, priority: np.ndarray | None = None,
            candidate_county: np.ndarray | None = None, settlement_county: np.ndarray | None = None) -> SitingResult:
    """Tables and summary for chosen sorted candidate columns (settlement ties → lowest site id)."""
    n = pb.weights.size
    w, existing = pb.weights, pb.existing
    is_chosen = np.zeros(pb.ids.size, bool)
    is_chosen[chosen] = True
    coo = pb.times.tocoo()
    sel = is_chosen[coo.col]
    r, c, t = coo.row[sel], coo.col[sel], coo.data[sel]
    o = np.lexsort((c, t, r))
    r, c, t = r[o], c[o], t[o]
    first = np.ones(r.size, bool)
    first[1:] = r[1:] != r[:-1]
    nearest = np.full(n, -1)
    nearest[r[first]] = c[first]
    t_near = np.full(n, np.nan)
    t_near[r[first]] = t[first]
    n_cov = np.bincount(r, minlength=n)
    after = existing | (n_cov > 0)
    reachable = np.diff(pb.reach.indptr) > 0
    uncoverable = ~existing & ~reachable

    slot = np.full(pb.ids.size, -1)
    slot[chosen] = np.arange(chosen.size)
    k = chosen.size
    new = ~existing[r]
    only = new & (n_cov[r] == 1)
    ci = slot[c]
    near_slot = slot[nearest[nearest >= 0]]
    sites = pd.DataFrame({
        "site_id": pb.ids[chosen],
        "n_reach": np.bincount(ci, minlength=k),
        "n_new": np.bincount(ci[new], minlength=k),
        "pop_new": np.bincount(ci[new], weights=w[r[new]], minlength=k),
        "n_only": np.bincount(ci[only], minlength=k),
        "pop_only": np.bincount(ci[only], weights=w[r[only]], minlength=k),
        "n_catch": np.bincount(near_slot, minlength=k),
        "pop_catch": np.bincount(near_slot, weights=w[nearest >= 0], minlength=k),
    })
    if priority is not None:
        pn = new & priority[r]
        sites["n_prio_new"] = np.bincount(ci[pn], minlength=k)
    by_county = {}
    if candidate_county is not None:
        sites.insert(1, "county_code", candidate_county[chosen])
    if settlement_county is not None:
        gain = (pd.DataFrame({"site_id": pb.ids[c[new]], "county": settlement_county[r[new]], "pop": w[r[new]]})
                .groupby(["site_id", "county"], sort=True)["pop"].sum())
        by_county = {s: {str(cty): float(p) for cty, p in g.droplevel(0).items()}
                     for s, g in gain.groupby(level=0, sort=True)}
        sites["new_counties"] = [";".join(by_county.get(s, {})) for s in sites["site_id"]]

    assignments = pd.DataFrame({
        "settlement_id": pb.settlement_ids,
        "site_id": pd.Series(np.where(nearest >= 0, pb.ids[np.maximum(nearest, 0)], None), dtype=object),
        "time_min": t_near,
        "n_covering": n_cov,
        "cov_before": existing,
        "cov_after": after,
        "newly_cov": after & ~existing,
        "uncoverable": uncoverable,
        "weight": w,
    })
    if priority is not None:
        assignments["priority"] = priority

    def tally(mask):
        return {"settlements": int(mask.sum()), "population": float(w[mask].sum())}

    summary = {
        "model": model,
        "threshold_min": pb.threshold_min,
        "n_settlements": int(n),
        "n_candidates": int(pb.ids.size),
        "n_sites": int(k),
        "site_ids": [_py(s) for s in pb.ids[chosen]],
        **info,
        "coverage": {"before": tally(existing), "after": tally(after), "new": tally(after & ~existing)},
        "targets": tally(~existing),
        "uncoverable": {**tally(uncoverable), "ids": [_py(s) for s in pb.settlement_ids[uncoverable]]},
    }
    if priority is not None:
        summary["priority"] = {"before": tally(priority & existing), "after": tally(priority & after),
                               "all": tally(priority)}
    summary.setdefault("objective", float(w[after & ~existing].sum()))
    summary["sites"] = [
        {key: _py(val) for key, val in row.items()} | ({"new_population_by_county": by_county.get(row["site_id"], {})}
                                                       if settlement_county is not None else {})
        for row in sites.to_dict("records")]
    return SitingResult(model, summary["site_ids"], sites, assignments, summary)


def _py(value: Any) -> Any:
    """numpy scalar → plain Python (for JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def _mask(values, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=bool)
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a boolean array with one entry per settlement")
    return arr


def _labels(values, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values).astype(str)
    if arr.shape != (n,):
        raise ValueError(f"{name} has {arr.size} entries, expected {n}")
    return arr


# ---------------------------------------------------------------- public models

def propose_temporary_points(cost: sp.spmatrix, weights, candidate_ids, *, threshold_min: float,
                             mode: str = "cover", max_sites: int | None = None, existing_cover=None,
                             priority=None, priority_factor: float | None = None, settlement_ids=None,
                             settlement_county=None, solver=DEFAULT_SOLVER, time_limit: float | None = 60.0,
                             mip_gap: float = 1e-4, capacity: float | None = None) -> SitingResult:
    """Temporary medical points (临时医疗点) for settlements beyond the threshold.

    Parameters
    ----------
    cost : scipy.sparse matrix, settlements × candidates, minutes; every *stored* entry
        (explicit zeros included) with time ≤ `threshold_min` counts as within reach.
    weights : population per settlement (finite, ≥ 0).
    candidate_ids : one unique id per column.
    mode : "cover" — fewest points covering every coverable target (LSCP);
        "max_cover" — the `max_sites` points covering most target population (MCLP).
    existing_cover : settlements already within the threshold of a facility (not targets).
    priority : bool per settlement (e.g. relocation sites). In "max_cover", with
        `priority_factor=None` the objective is lexicographic (priority population first, then
        all population); with a number their weight is multiplied by it. "cover" covers all anyway.
    solver : "highs" (highspy, default) or a pulp solver object (e.g. ``pulp.HiGHS(msg=False)``).
    time_limit : seconds per solve (per stage when lexicographic); None for none.
    capacity : people one point can serve (None: no limit). With a capacity the models assign people
        to points (a settlement may be split) and ``summary["capacity"]`` reports who is served; the
        priority rule is then a weight only (``priority_factor``, default 1).

    Returns
    -------
    SitingResult
    """
    if capacity is not None:
        if not (np.isfinite(capacity) and capacity > 0):
            raise InputError(None, f"capacity {capacity!r}: people per point must be a positive number")
        return _capacitated_points(cost, weights, candidate_ids, threshold_min=threshold_min, mode=mode,
                                   max_sites=max_sites, existing_cover=existing_cover, priority=priority,
                                   priority_factor=priority_factor, settlement_ids=settlement_ids,
                                   settlement_county=settlement_county, solver=solver, time_limit=time_limit,
                                   mip_gap=mip_gap, capacity=float(capacity))
    pb = _prepare(cost, weights, candidate_ids, threshold_min, existing_cover, settlement_ids)
    n = pb.weights.size
    prio = _mask(priority, n, "priority")
    s_county = _labels(settlement_county, n, "settlement_county")
    reachable = np.diff(pb.reach.indptr) > 0
    all_cols = np.arange(pb.ids.size)
    if mode == "cover":
        if max_sites is not None:
            raise ValueError("max_sites applies to mode='max_cover'; 'cover' finds the fewest points")
        rows = np.flatnonzero(~pb.existing & reachable)
        A, cols, _ = _reduce(pb.reach, rows, all_cols, None, drop_empty=True)
        chosen, solve = _min_cover(A, solver, time_limit, mip_gap)
        info = {"mode": "cover", **solve, "objective": int(chosen.sum())}
    elif mode == "max_cover":
        if max_sites is None or max_sites < 0:
            raise ValueError("mode='max_cover' needs max_sites ≥ 0")
        w = pb.weights.copy()
        if prio is not None and priority_factor is not None:
            w[prio] *= priority_factor
        rows = np.flatnonzero(~pb.existing & reachable & (w > 0))
        A, cols, _ = _reduce(pb.reach, rows, all_cols, None, drop_empty=True)
        objectives = [w[rows]]
        if prio is not None and priority_factor is None and prio[rows].any():
            objectives = [w[rows] * prio[rows], w[rows]]
        chosen, solve = _max_cover(A, objectives, np.zeros(cols.size, int), np.array([0.0]),
                                   np.array([float(max_sites)]), solver, time_limit, mip_gap)
        rule = None if prio is None else "lexicographic" if priority_factor is None else f"weight x {priority_factor:g}"
        info = {"mode": "max_cover", "max_sites": int(max_sites), **solve, "priority_rule": rule}
    else:
        raise ValueError(f"mode must be 'cover' or 'max_cover', not {mode!r}")
    log.info("siting %s: %d points chosen from %d candidates for %d targets (%s, %.2f s)", mode,
             int(chosen.sum()), pb.ids.size, int((~pb.existing).sum()), info["status"], info["solve_seconds"])
    return _result("temporary_points", pb, cols[chosen], info, priority=prio, settlement_county=s_county)


def _capacitated_points(cost, weights, candidate_ids, *, threshold_min, mode, max_sites, existing_cover, priority,
                        priority_factor, settlement_ids, settlement_county, solver, time_limit, mip_gap,
                        capacity) -> SitingResult:
    """`propose_temporary_points` with a capacity per point (see `_capacitated`)."""
    pb = _prepare(cost, weights, candidate_ids, threshold_min, existing_cover, settlement_ids)
    n = pb.weights.size
    prio = _mask(priority, n, "priority")
    s_county = _labels(settlement_county, n, "settlement_county")
    reachable = np.diff(pb.reach.indptr) > 0
    w = pb.weights.copy()
    if prio is not None and priority_factor is not None:
        w[prio] *= priority_factor
    if mode == "cover":
        if max_sites is not None:
            raise ValueError("max_sites applies to mode='max_cover'; 'cover' finds the fewest points")
        rows = np.flatnonzero(~pb.existing & reachable)
    elif mode == "max_cover":
        if max_sites is None or max_sites < 0:
            raise ValueError("mode='max_cover' needs max_sites ≥ 0")
        rows = np.flatnonzero(~pb.existing & reachable & (w > 0))
    else:
        raise ValueError(f"mode must be 'cover' or 'max_cover', not {mode!r}")
    A = pb.reach[rows].tocsr()
    x, solve, served, per_col = _capacitated(A, pb.weights[rows], capacity, max_sites if mode == "max_cover" else None,
                                             solver, time_limit, mip_gap)
    cols = np.flatnonzero(x)
    info = {"mode": mode, **solve, "capacity": capacity,
            "priority_rule": None if prio is None else f"weight x {priority_factor if priority_factor else 1:g}"}
    if mode == "max_cover":
        info["max_sites"] = int(max_sites)
    res = _result("temporary_points", pb, cols, info, priority=prio, settlement_county=s_county)
    served_all = np.zeros(n)
    served_all[rows] = served
    res.assignments["served_people"] = served_all
    load = dict(zip([_py(i) for i in pb.ids[cols]], per_col[cols].tolist()))
    res.sites["served_people"] = res.sites["site_id"].map(load).astype(float)
    res.summary["capacity"] = {"people_per_point": capacity, "served_population": float(served.sum()),
                               "target_population": float(pb.weights[rows].sum()),
                               "fully_served_settlements": int((served >= pb.weights[rows] - 1e-6).sum()),
                               "max_load": float(per_col[cols].max()) if cols.size else 0.0,
                               "note": "coverage counts reach (a chosen point within the threshold); served_people "
                                       "what the capacities let each point take (a settlement may be split)"}
    if mode == "max_cover":
        res.summary["objective"] = float(served.sum())
    return res


def _centres_model(model: str, cost, weights, candidate_ids, existing_cover, threshold_min, candidate_county,
                   settlement_ids, settlement_county, group, lo, hi, solver, time_limit, mip_gap,
                   initial_sites=None) -> SitingResult:
    """MCLP with group cardinality rows lo_g ≤ Σ_{j∈g} x_j ≤ hi_g; `group` per candidate (-1: not allowed)."""
    pb = _prepare(cost, weights, candidate_ids, threshold_min, existing_cover, settlement_ids)
    n, m = pb.weights.size, pb.ids.size
    c_county = _labels(candidate_county, m, "candidate_county")
    c_county = None if c_county is None else c_county[pb.order]
    s_county = _labels(settlement_county, n, "settlement_county")
    group = np.asarray(group, dtype=np.int64)[pb.order]
    allowed = np.flatnonzero(group >= 0)
    reachable = np.diff(pb.reach.indptr) > 0
    rows = np.flatnonzero(~pb.existing & reachable & (pb.weights > 0))
    # equality groups must keep a column even when it reaches nobody new
    A, cols, stand_in = _reduce(pb.reach, rows, allowed, group[allowed], drop_empty=not lo.any())
    start = None
    if initial_sites is not None:
        initial = np.asarray(initial_sites)
        pos = np.searchsorted(pb.ids, initial)
        if (pos >= m).any() or (pb.ids[np.minimum(pos, m - 1)] != initial).any():
            raise ValueError("initial_sites holds ids that are not candidates")
        to_kept = np.full(m, -1)
        to_kept[allowed] = stand_in
        k = to_kept[pos]
        start = np.zeros(cols.size, bool)
        start[k[k >= 0]] = True
    chosen, solve = _max_cover(A, [pb.weights[rows]], group[cols], lo, hi, solver, time_limit, mip_gap,
                               start=start)
    log.info("siting %s: %d centres, %.0f people newly within %g min (%s, %.2f s)", model, int(chosen.sum()),
             float(pb.weights[rows] @ (A @ chosen.astype(float) > 0)), threshold_min, solve["status"],
             solve["solve_seconds"])
    info = {**solve, "marginal": "pop_only = drop when this centre alone is removed, others fixed (not re-optimised)"}
    return _result(model, pb, cols[chosen], info, candidate_county=c_county, settlement_county=s_county)


def site_regional_centres(cost: sp.spmatrix, weights, candidate_ids, candidate_county,
                          required_counties: Sequence[str], existing_cover=None, *, threshold_min: float = 120.0,
                          settlement_ids=None, settlement_county=None, solver=DEFAULT_SOLVER,
                          time_limit: float | None = 60.0, mip_gap: float = 1e-4) -> SitingResult:
    """One centre in each required county, jointly maximising the population newly within the threshold.

    Parameters
    ----------
    cost, weights, candidate_ids, existing_cover : as in `propose_temporary_points`
        (`existing_cover`: settlements already within the threshold, e.g. of prefecture hospitals).
    candidate_county : county code per candidate.
    required_counties : county codes that must each get exactly one centre (Tibet: the plan's 19).
    settlement_county : county code per settlement; fills `new_counties` (where the gain lies).

    Returns
    -------
    SitingResult with per-centre `pop_new` (newly covered), `pop_only` (marginal: lost if this
    centre alone is removed, others fixed) and `n_catch`/`pop_catch` (nearest-centre catchment).
    """
    county = np.asarray(candidate_county).astype(str)
    required = sorted({str(c) for c in required_counties})
    missing = sorted(set(required) - set(county))
    if missing:
        raise InputError(None, f"no candidate site in required counties: {', '.join(missing)}")
    index = {c: i for i, c in enumerate(required)}
    group = np.array([index.get(c, -1) for c in county], dtype=np.int64)
    ones = np.ones(len(required))
    return _centres_model("regional_centres", cost, weights, candidate_ids, existing_cover, threshold_min, county,
                          settlement_ids, settlement_county, group, ones, ones, solver, time_limit, mip_gap)


def site_unconstrained(cost: sp.spmatrix, weights, candidate_ids, p: int, existing_cover=None, *,
                       threshold_min: float = 120.0, candidate_county=None, settlement_ids=None,
                       settlement_county=None, initial_sites: Sequence | None = None, solver=DEFAULT_SOLVER,
                       time_limit: float | None = 60.0, mip_gap: float = 1e-4) -> SitingResult:
    """At most p centres anywhere (no county rule), same objective as `site_regional_centres`.

    Sites that would add nobody are not placed, so fewer than p may come back.
    `initial_sites` (e.g. the plan's sites) warm-starts HiGHS, so the optimum found is never
    below the plan even when the time limit stops the search.
    """
    if p < 0:
        raise ValueError("p must be ≥ 0")
    return _centres_model("unconstrained", cost, weights, candidate_ids, existing_cover, threshold_min,
                          candidate_county, settlement_ids, settlement_county, np.zeros(len(candidate_ids)),
                          np.array([0.0]), np.array([float(p)]), solver, time_limit, mip_gap,
                          initial_sites=initial_sites)


def compare_plan_to_optimum(plan_result: SitingResult, opt_result: SitingResult,
                            candidate_county: Mapping) -> dict:
    """How much of the unconstrained optimum the plan's counties reach; counties added/dropped.

    `candidate_county` maps candidate id → county code (a dict or a Series indexed by id).
    """
    plan, opt = plan_result.summary, opt_result.summary
    if plan["threshold_min"] != opt["threshold_min"] or plan["n_settlements"] != opt["n_settlements"]:
        raise ValueError("plan and optimum were solved on different settlements or thresholds")
    county = dict(candidate_county)
    plan_c = [str(county[s]) for s in plan_result.site_ids]
    opt_c = [str(county[s]) for s in opt_result.site_ids]
    gain_plan = plan["coverage"]["new"]["population"]
    gain_opt = opt["coverage"]["new"]["population"]
    bound = opt.get("bound", float("nan"))
    return {
        "plan_new_population": gain_plan,
        "optimum_new_population": gain_opt,
        "share_of_optimum": gain_plan / gain_opt if gain_opt > 0 else 1.0,
        "optimum_status": opt["status"],
        "optimum_gap": opt["mip_gap"],
        "share_of_bound": gain_plan / bound if np.isfinite(bound) and bound > 0 else None,
        "plan_counties": sorted(set(plan_c)),
        "optimum_counties": sorted(set(opt_c)),
        "added_counties": sorted(set(opt_c) - set(plan_c)),
        "dropped_counties": sorted(set(plan_c) - set(opt_c)),
        "kept_counties": sorted(set(plan_c) & set(opt_c)),
        "optimum_multi_centre_counties": {c: opt_c.count(c) for c in sorted(set(opt_c)) if opt_c.count(c) > 1},
    }


# ---------------------------------------------------------------- project data and runners

def load_regional_centres(path: str | Path) -> pd.DataFrame:
    """The plan's county list (e.g. geoaccess/data/tibet_regional_centres.csv), codes as 6-digit strings."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "regional-centre list not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in CENTRE_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"missing columns: {', '.join(missing)}")
    for col in ("county_code_current", "county_code_2016"):
        bad = ~table[col].str.fullmatch(r"\d{6}")
        if bad.any():
            raise InputError(path, "not a 6-digit county code", row=int(np.flatnonzero(bad)[0]) + 1, column=col)
    dup = table["county_code_current"].duplicated()
    if dup.any():
        raise InputError(path, "county listed twice", row=int(np.flatnonzero(dup)[0]) + 1,
                         column="county_code_current")
    return table


def _population(settlements: pd.DataFrame) -> np.ndarray:
    pop = settlements["population"].to_numpy(dtype=float)
    if np.isnan(pop).any():
        log.warning("siting: %d settlements without population counted as 0 people", int(np.isnan(pop).sum()))
    return np.nan_to_num(pop, nan=0.0)


def run_propose_centres(cost: sp.spmatrix, settlements: pd.DataFrame, candidates: pd.DataFrame, existing_cover,
                        centres_csv: str | Path, *, threshold_min: float = 120.0, solver=DEFAULT_SOLVER,
                        time_limit: float | None = 60.0, mip_gap: float = 1e-4) -> dict:
    """The plan's centres, the unconstrained optimum with as many centres, and their comparison.

    `settlements` needs `settlement_id, population, county_code` (rows = cost rows);
    `candidates` needs `candidate_id, county_code` (rows = cost columns).
    Returns {"plan": SitingResult, "optimum": SitingResult, "comparison": dict, "counties": DataFrame}.
    """
    counties = load_regional_centres(centres_csv)
    common = dict(weights=_population(settlements), candidate_ids=candidates["candidate_id"].to_numpy(),
                  existing_cover=existing_cover, threshold_min=threshold_min,
                  settlement_ids=settlements["settlement_id"].to_numpy(),
                  settlement_county=settlements["county_code"].to_numpy(), solver=solver,
                  time_limit=time_limit, mip_gap=mip_gap)
    c_county = candidates["county_code"].astype(str).to_numpy()
    plan = site_regional_centres(cost, candidate_county=c_county,
                                 required_counties=counties["county_code_current"].tolist(), **common)
    opt = site_unconstrained(cost, p=len(counties), candidate_county=c_county, initial_sites=plan.site_ids, **common)
    comparison = compare_plan_to_optimum(plan, opt, dict(zip(candidates["candidate_id"], c_county)))
    return {"plan": plan, "optimum": opt, "comparison": comparison, "counties": counties}


def run_propose_clinics(cost: sp.spmatrix, settlements: pd.DataFrame, candidates: pd.DataFrame, existing_cover, *,
                        threshold_min: float, max_sites: int | None = None, priority_kind: str | None = "relocation",
                        priority_factor: float | None = None, solver=DEFAULT_SOLVER,
                        time_limit: float | None = 60.0, mip_gap: float = 1e-4,
                        capacity: float | None = None) -> SitingResult:
    """Temporary points: set covering without `max_sites`, maximal covering with it (``capacity``: people per point).

    `settlements` needs `settlement_id, population, kind, county_code`; `candidates` needs
    `candidate_id`. Settlements of `priority_kind` (relocation sites) come first.
    """
    priority = None if priority_kind is None else (settlements["kind"] == priority_kind).to_numpy()
    return propose_temporary_points(
        cost, _population(settlements), candidates["candidate_id"].to_numpy(), threshold_min=threshold_min,
        mode="cover" if max_sites is None else "max_cover", max_sites=max_sites, existing_cover=existing_cover,
        priority=priority, priority_factor=priority_factor, settlement_ids=settlements["settlement_id"].to_numpy(),
        settlement_county=settlements["county_code"].to_numpy(), solver=solver, time_limit=time_limit,
        mip_gap=mip_gap, capacity=capacity)


# ---------------------------------------------------------------- capacities on the covering models

def _capacitated(A: sp.csr_matrix, w: np.ndarray, capacity: float, max_sites: int | None, solver, time_limit,
                 mip_gap) -> tuple[np.ndarray, dict, np.ndarray, np.ndarray]:
    """Covering with a capacity: each open point serves at most ``capacity`` people.

    Variables x_j (open, binary) and y_p for each reach pair p = (i, j): the share of target i's people
    served by j (continuous; a settlement's people may be split between points). Rows:
    y_p ≤ x_j; Σ_i w_i y_ij ≤ capacity · x_j; and per target Σ_j y_ij = 1 (set covering: min Σ x) or
    Σ_j y_ij ≤ 1 with Σ x ≤ K (maximal covering: max Σ w_i y_ij). Returns (chosen columns, solve facts,
    people served per target, people served per column).
    """
    t, k = A.shape
    coo = A.tocoo()
    pi, pj = coo.row, coo.col
    P = pi.size
    link = sp.hstack([sp.csr_matrix((-np.ones(P), (np.arange(P), pj)), shape=(P, k)), sp.identity(P, format="csr")])
    load = sp.hstack([sp.csr_matrix((-np.full(k, float(capacity)), (np.arange(k), np.arange(k))), shape=(k, k)),
                      sp.csr_matrix((w[pi], (pj, np.arange(P))), shape=(k, P))])
    assign = sp.hstack([sp.csr_matrix((t, k)), sp.csr_matrix((np.ones(P), (pi, np.arange(P))), shape=(t, P))])
    blocks = [link, load, assign]
    lo = [np.full(P, -np.inf), np.full(k, -np.inf)]
    hi = [np.zeros(P), np.zeros(k)]
    if max_sites is None:
        lo.append(np.ones(t))
        hi.append(np.ones(t))
        c = np.r_[np.ones(k), np.zeros(P)]
        maximize = False
    else:
        lo.append(np.zeros(t))
        hi.append(np.ones(t))
        blocks.append(sp.hstack([sp.csr_matrix(np.ones((1, k))), sp.csr_matrix((1, P))]))
        lo.append([0.0])
        hi.append([float(max_sites)])
        c = np.r_[np.zeros(k), w[pi]]
        maximize = True
    mip = _Mip(c, sp.vstack(blocks, format="csr"), np.concatenate(lo).astype(float), np.concatenate(hi).astype(float),
               np.ones(k + P), k, maximize=maximize)
    sol = _solve(mip, solver, time_limit, mip_gap)
    x = sol.v[:k] > 0.5
    served = np.bincount(pi, weights=sol.v[k:] * w[pi], minlength=t)
    per_site = np.bincount(pj, weights=sol.v[k:] * w[pi], minlength=k)
    info = _combine([sol])
    info["objective"] = int(x.sum()) if max_sites is None else float(served.sum())
    return x, info, served, per_site


# ---------------------------------------------------------------- p-median and p-center

def _time_problem(cost, weights, candidate_ids, existing_time, limit_min, settlement_ids):
    """Rows with people, existing times capped at the limit, and the pairs that would shorten a trip."""
    pb = _prepare(cost, weights, candidate_ids, limit_min, None, settlement_ids)
    n = pb.weights.size
    e = np.full(n, float(limit_min)) if existing_time is None else np.asarray(existing_time, float)
    if e.shape != (n,):
        raise ValueError("existing_time must have one entry per settlement")
    e = np.minimum(np.where(np.isnan(e), np.inf, e), float(limit_min))
    coo = pb.times.tocoo()
    keep = coo.data < e[coo.row] - 1e-9
    return pb, e, coo.row[keep], coo.col[keep], coo.data[keep]


def _time_result(model: str, pb: _Problem, e: np.ndarray, chosen_cols: np.ndarray, info: dict,
                 pr: np.ndarray, pc: np.ndarray, pt: np.ndarray) -> SitingResult:
    """Each settlement's time after (nearest of existing and chosen points), per-site loads, the summary."""
    n, w = pb.weights.size, pb.weights
    is_open = np.zeros(pb.ids.size, bool)
    is_open[chosen_cols] = True
    best = e.copy()
    site = np.full(n, -1)
    sel = is_open[pc]
    for r, c, t in sorted(zip(pr[sel], pc[sel], pt[sel]), key=lambda x: (x[0], x[2], x[1])):
        if t < best[r] - 1e-9:
            best[r], site[r] = t, c
    chosen_cols = np.sort(chosen_cols)
    slot = np.full(pb.ids.size, -1)
    slot[chosen_cols] = np.arange(chosen_cols.size)
    got = site >= 0
    k = chosen_cols.size
    sites = pd.DataFrame({"site_id": pb.ids[chosen_cols],
                          "n_assigned": np.bincount(slot[site[got]], minlength=k),
                          "pop_assigned": np.bincount(slot[site[got]], weights=w[got], minlength=k),
                          "pop_minutes_saved": np.bincount(slot[site[got]], weights=(w * (e - best))[got],
                                                           minlength=k)})
    assignments = pd.DataFrame({"settlement_id": pb.settlement_ids,
                                "site_id": pd.Series(np.where(got, pb.ids[np.maximum(site, 0)], None), dtype=object),
                                "time_before_min": e, "time_after_min": best, "saved_min": e - best, "weight": w})
    people = w > 0
    summary = {"model": model, "limit_min": pb.threshold_min, "n_settlements": int(n),
               "n_candidates": int(pb.ids.size), "n_sites": int(k), "site_ids": [_py(s) for s in pb.ids[chosen_cols]],
               **info,
               "before": {"pop_weighted_mean_min": float(w @ e / w.sum()) if w.sum() > 0 else None,
                          "worst_min": float(e[people].max()) if people.any() else None},
               "after": {"pop_weighted_mean_min": float(w @ best / w.sum()) if w.sum() > 0 else None,
                         "worst_min": float(best[people].max()) if people.any() else None},
               "settlements_improved": int(got.sum()), "population_improved": float(w[got].sum()),
               "sites": [{key: _py(v) for key, v in row.items()} for row in sites.to_dict("records")]}
    return SitingResult(model, summary["site_ids"], sites, assignments, summary)


def site_p_median(cost: sp.spmatrix, weights, candidate_ids, p: int, *, existing_time=None, limit_min: float,
                  settlement_ids=None, solver=DEFAULT_SOLVER, time_limit: float | None = 60.0,
                  mip_gap: float = 1e-4) -> SitingResult:
    """p new points that minimise the population-weighted total time to the nearest facility, existing kept.

    Each settlement goes to the nearer of its existing facility (``existing_time``, minutes; capped at
    ``limit_min``, like every time beyond the cost matrix's limit) and the open points within the matrix.
    MIP: x_j binary, y_ij ≥ 0 only for pairs shorter than the existing time, y_i0 the existing facility;
    Σ_j y_ij + y_i0 = 1, y_ij ≤ x_j, Σ x_j ≤ p; min Σ w_i (t_ij y_ij + e_i y_i0). ``objective`` is in
    person-minutes; ``bound`` and ``mip_gap`` are HiGHS's.
    """
    if p < 0:
        raise ValueError("p must be ≥ 0")
    pb, e, pr, pc, pt = _time_problem(cost, weights, candidate_ids, existing_time, limit_min, settlement_ids)
    w = pb.weights
    all_pairs = (pr, pc, pt)
    use = w[pr] > 0
    pr, pc, pt = pr[use], pc[use], pt[use]
    cols, col_of = np.unique(pc, return_inverse=True)
    rows, row_of = np.unique(pr, return_inverse=True)
    k, P, t = cols.size, pr.size, rows.size
    const = float(w @ e - w[rows] @ e[rows])
    if k == 0 or p == 0:
        info = {"status": "optimal", "mip_gap": 0.0, "bound": float(w @ e), "solve_seconds": 0.0, "stages": 0,
                "objective": float(w @ e), "p": int(p)}
        return _time_result("p_median", pb, e, np.zeros(0, int), info, *all_pairs)
    link = sp.hstack([sp.csr_matrix((-np.ones(P), (np.arange(P), col_of)), shape=(P, k)),
                      sp.identity(P, format="csr"), sp.csr_matrix((P, t))])
    assign = sp.hstack([sp.csr_matrix((t, k)), sp.csr_matrix((np.ones(P), (row_of, np.arange(P))), shape=(t, P)),
                        sp.identity(t, format="csr")])
    count = sp.hstack([sp.csr_matrix(np.ones((1, k))), sp.csr_matrix((1, P + t))])
    A = sp.vstack([link, assign, count], format="csr")
    c = np.r_[np.zeros(k), w[pr] * pt, w[rows] * e[rows]]
    mip = _Mip(c, A, np.r_[np.full(P, -np.inf), np.ones(t), 0.0], np.r_[np.zeros(P), np.ones(t), float(p)],
               np.ones(k + P + t), k, maximize=False)
    greedy = _greedy_median(row_of, col_of, pt, w[rows], e[rows], k, p)
    mip.start = _median_start(greedy, row_of, col_of, pt, e[rows], k, P, t)
    sol = _solve(mip, solver, time_limit, mip_gap)
    chosen = cols[sol.v[:k] > 0.5]
    objective, bound = float(sol.objective + const), float(sol.bound + const)
    info = {**_combine([sol]), "objective": objective, "bound": bound, "p": int(p),
            "mip_gap": (objective - bound) / objective if objective > 0 else 0.0,
            "objective_unit": "person-minutes (population × minutes to the nearest facility, capped at the limit)"}
    log.info("siting p-median: %d points, %.4g person-minutes (%s, gap %.2g, %.1f s)", chosen.size, info["objective"],
             info["status"], info["mip_gap"], info["solve_seconds"])
    return _time_result("p_median", pb, e, chosen, info, *all_pairs)


def _greedy_median(row_of, col_of, pt, w, e, k, p) -> np.ndarray:
    """Warm start: add the point saving the most person-minutes, p times."""
    best = e.copy()
    chosen = np.zeros(k, bool)
    for _ in range(int(p)):
        saving = np.bincount(col_of, weights=w[row_of] * np.maximum(best[row_of] - pt, 0.0), minlength=k)
        saving[chosen] = -1
        j = int(np.argmax(saving))
        if saving[j] <= 0:
            break
        chosen[j] = True
        m = col_of == j
        np.minimum.at(best, row_of[m], pt[m])
    return chosen


def _median_start(chosen, row_of, col_of, pt, e, k, P, t) -> np.ndarray:
    """The full p-median variable vector of a set of open points (each row to its nearest)."""
    y = np.zeros(P)
    y0 = np.ones(t)
    best = e.copy()
    arg = np.full(t, -1)
    for p_ in np.flatnonzero(chosen[col_of]):
        r = row_of[p_]
        if pt[p_] < best[r]:
            best[r], arg[r] = pt[p_], p_
    y[arg[arg >= 0]] = 1.0
    y0[arg >= 0] = 0.0
    return np.r_[chosen.astype(float), y, y0]


def site_p_center(cost: sp.spmatrix, weights, candidate_ids, p: int, *, existing_time=None, limit_min: float,
                  settlement_ids=None, solver=DEFAULT_SOLVER, time_limit: float | None = 60.0,
                  mip_gap: float = 1e-4) -> SitingResult:
    """p new points that make the worst time (over settlements with people) as small as possible, existing kept.

    Solved exactly by bisection over the candidate times T: "is there a set of ≤ p points bringing every
    settlement whose existing time exceeds T within T?" is a set covering problem (HiGHS). Settlements
    that no candidate can bring below their existing time set a floor the points cannot lower; it is
    reported (``floor_min``) and the bisection starts there. ``mip_gap`` = (T − lower bound) / T, zero when
    every 'no' of the bisection was proven by HiGHS.
    """
    if p < 0:
        raise ValueError("p must be ≥ 0")
    pb, e, pr, pc, pt = _time_problem(cost, weights, candidate_ids, existing_time, limit_min, settlement_ids)
    w = pb.weights
    people = w > 0
    all_pairs = (pr, pc, pt)
    use = people[pr]
    pr, pc, pt = pr[use], pc[use], pt[use]
    can_improve = np.zeros(w.size, bool)
    can_improve[pr] = True
    floor = float(e[people & ~can_improve].max()) if (people & ~can_improve).any() else 0.0
    values = np.unique(np.r_[e[people], pt])
    values = values[values >= floor]
    t0 = time.perf_counter()
    stages, proven = [], True

    def feasible(T: float):
        nonlocal proven
        rows = np.flatnonzero(people & (e > T + 1e-9))
        if not rows.size:
            return np.zeros(0, int)
        ok = pt <= T + 1e-9
        row_pos = np.full(w.size, -1)
        row_pos[rows] = np.arange(rows.size)
        sel = ok & (row_pos[pr] >= 0)
        if np.unique(pr[sel]).size < rows.size:
            return None  # a settlement beyond T that no candidate brings within T
        cols, col_of = np.unique(pc[sel], return_inverse=True)
        A = sp.csr_matrix((np.ones(int(sel.sum())), (row_pos[pr[sel]], col_of)), shape=(rows.size, cols.size))
        A.sum_duplicates()
        A.data[:] = 1.0
        red, kept, _ = _reduce(A, np.arange(rows.size), np.arange(cols.size), None, drop_empty=True)
        x, info = _min_cover(red, solver, time_limit, mip_gap)
        stages.append(info)
        if x.sum() <= p:
            return cols[kept[x]]
        if info["bound"] <= p + 1e-9 and info["status"] != "optimal":
            proven = False
        return None

    lo, hi = 0, values.size - 1
    best_cols, best_T = None, float(values[-1]) if values.size else floor
    if values.size:
        top = feasible(float(values[-1]))
        best_cols = top if top is not None else np.zeros(0, int)
        while lo < hi:
            mid = (lo + hi) // 2
            got = feasible(float(values[mid]))
            if got is not None:
                hi, best_cols, best_T = mid, got, float(values[mid])
            else:
                lo = mid + 1
        best_T = float(values[hi])
        if best_cols is None:
            best_cols = np.zeros(0, int)
    lower = float(values[lo]) if values.size else floor
    info = {"status": "optimal" if proven else "feasible", "mip_gap": 0.0 if proven else float("nan"),
            "bound": lower if proven else float("nan"), "solve_seconds": time.perf_counter() - t0,
            "stages": len(stages), "objective": best_T, "p": int(p), "floor_min": floor,
            "objective_unit": "minutes: the worst time to the nearest facility over settlements with people",
            "method": "bisection over candidate times, a set covering solve (HiGHS) per step"}
    log.info("siting p-center: worst time %.1f min with %d points (floor %.1f min; %d covering solves, %.1f s)",
             best_T, len(best_cols), floor, len(stages), info["solve_seconds"])
    return _time_result("p_center", pb, e, np.asarray(best_cols, int), info, *all_pairs)


def evaluate_sites(cost: sp.spmatrix, weights, candidate_ids, *, model: str, info: dict, existing_time=None,
                   limit_min: float, settlement_ids=None) -> SitingResult:
    """The result table of a fixed set of open points (every column of ``cost``): each settlement to the nearer
    of its existing facility and the points, as `site_p_median` / `site_p_center` report it."""
    pb, e, pr, pc, pt = _time_problem(cost, weights, candidate_ids, existing_time, limit_min, settlement_ids)
    solver_keys = ("status", "mip_gap", "bound", "solve_seconds", "stages", "objective", "p", "floor_min",
                   "objective_unit", "method", "limit_widened_to_min")
    return _time_result(model, pb, e, np.arange(pb.ids.size), {k: info[k] for k in solver_keys if k in info},
                        pr, pc, pt)
