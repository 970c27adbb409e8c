"""Coverage: honest times for approximated positions, statuses, threshold gaps, shares and summaries."""
from __future__ import annotations

import numpy as np
import pandas as pd

GROUPS = ("clinic", "thc", "county", "pref")
TIME_COLS = [f"t_{g}_min" for g in GROUPS]


def classify(settlements: pd.DataFrame, times: pd.DataFrame, thresholds: dict, inside_region: np.ndarray | None = None) -> pd.DataFrame:
    """`status` (ok / unreachable / outside_region) and gap flags per threshold level."""
    t = times.copy()
    vals = t[TIME_COLS].to_numpy(dtype=float)
    status = np.where(np.isnan(vals).any(axis=1), "unreachable", "ok").astype(object)
    if inside_region is not None:
        status = np.where(~inside_region, "outside_region", status)
    t["status"] = status
    for flag, col, key in (("gap_clinic", "t_clinic_min", "clinic"), ("gap_thc", "t_thc_min", "thc"),
                           ("gap_county", "t_county_min", "county"), ("gap_severe", "t_county_min", "county_severe")):
        v = t[col].to_numpy(dtype=float)
        t[flag] = ~(v <= float(thresholds[key]))  # NaN (unreachable) counts as a gap
    return t


BOUNDS = ("", "_low", "_high")
"""Suffixes of a share and its range: the share at the estimates, at the high times (its low bound) and at the
low times (its high bound)."""

#: A unit whose share of settlements with their own coordinates is below this is flagged ``uncertain``.
UNCERTAIN_BELOW = 0.5


def minutes_key(minutes: float) -> str:
    """How a number of minutes appears in keys and column names: 15 → '15', 15.9 → '15.9'."""
    return f"{float(minutes):g}"


def share_column(level: str, minutes: float, *, population: bool = False) -> str:
    """Name of the share column of a level within ``minutes`` (e.g. share_county_60, pop_share_county_90)."""
    return f"{'pop_' if population else ''}share_{level}_{minutes_key(minutes)}"


def _times(table: pd.DataFrame, group: str, bound: str) -> np.ndarray:
    """The times a share bound is computed from: estimates, or the high times for the low bound and vice versa."""
    col = {"": f"t_{group}_min", "_low": f"t_{group}_high_min", "_high": f"t_{group}_low_min"}[bound]
    if col not in table.columns:
        col = f"t_{group}_min"
    return table[col].to_numpy(dtype=float)


def coverage_shares(table: pd.DataFrame, bands, *, weight: str | None = None,
                    bound: str = "") -> dict[str, dict[str, float]]:
    """Share of rows (or of `weight`) within each band of minutes, per facility level; NaN = not covered.

    ``bound`` "" uses the estimates, "_low" the high end of each row's range (the share's low bound), "_high"
    the low end.
    """
    out: dict[str, dict[str, float]] = {}
    w = None if weight is None else table[weight].fillna(0).to_numpy(dtype=float)
    for g in GROUPS:
        v = _times(table, g, bound)
        out[g] = {}
        for b in bands:
            inside = v <= b
            if w is None:
                out[g][minutes_key(b)] = float(inside.mean()) if len(v) else float("nan")
            else:
                tot = w.sum()
                out[g][minutes_key(b)] = float(w[inside].sum() / tot) if tot > 0 else float("nan")
    return out


def coverage_report(table: pd.DataFrame, bands) -> dict:
    """Coverage shares twice — over exactly located settlements and over all — by count and by population, each
    with its range (``by_count_low`` ≤ ``by_count`` ≤ ``by_count_high``)."""
    exact = table[table["loc_quality"].eq("exact")]
    has_pop = table["population"].notna().any()
    rep = {
        "all_settlements": {"n": int(len(table))},
        "exactly_located": {"n": int(len(exact))},
        "approximation": "settlements without their own coordinates take the median time over the habitable cells of "
                         "their township's area (else their county's), with the range of those cells; each share's "
                         "_low and _high take every row's high and low time (column time_basis says which rows)",
    }
    for key, frame in (("all_settlements", table), ("exactly_located", exact)):
        for b in BOUNDS:
            rep[key][f"by_count{b}"] = coverage_shares(frame, bands, bound=b)
            if has_pop:
                rep[key][f"by_population{b}"] = coverage_shares(frame, bands, weight="population", bound=b)
    return rep


def _share(df: pd.DataFrame, group: str, minutes: float, bound: str, population: bool) -> float:
    v = _times(df, group, bound)
    if not len(v):
        return float("nan")
    if not population:
        return float((v <= minutes).mean())
    w = df["population"].fillna(0).to_numpy(dtype=float)
    tot = w.sum()
    return float(w[v <= minutes].sum() / tot) if tot > 0 else float("nan")


def share_columns(thresholds: dict) -> list[tuple[str, str, float, bool]]:
    """(column, level, minutes, by population) of every share in a unit summary, at the thresholds in use."""
    th = thresholds
    rows = [("clinic", th["clinic"], False), ("thc", th["thc"], False), ("county", th["county"], False),
            ("county", th["county_severe"], False), ("county", th["county"], True),
            ("county", th["county_severe"], True)]
    return [(share_column(lv, m, population=p), lv, float(m), p) for lv, m, p in rows]


def unit_summary(table: pd.DataFrame, key: str, names: dict[str, str] | None = None,
                 blank_counts: pd.Series | None = None, thresholds: dict | None = None) -> pd.DataFrame:
    """Per-unit (county or prefecture) coverage summary of the settlement table.

    Share columns carry the minutes actually used (``share_county_90`` under ``--threshold county=90``), each
    with its range ``_low`` / ``_high``; ``n_measured`` counts settlements with their own coordinates and
    ``uncertain`` flags units where they are fewer than half. Rows without a ``key`` are left out.
    """
    th = thresholds or {"clinic": 15, "thc": 30, "county": 60, "county_severe": 120}
    unit, codes = pd.factorize(table[key], sort=True)
    keep = unit >= 0
    t = table[keep]
    unit, m = unit[keep], len(codes)

    def per_unit(values) -> np.ndarray:
        return np.bincount(unit, weights=np.asarray(values, dtype=float), minlength=m)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    n = per_unit(np.ones(len(t)))
    exact = t["loc_quality"].eq("exact").to_numpy()
    n_exact = per_unit(exact)
    pop = t["population"].to_numpy(dtype=float)
    w = np.nan_to_num(pop, nan=0.0)
    w_tot = per_unit(w)
    out = pd.DataFrame({
        key: codes,
        f"{key.replace('_code', '')}_name": [(names or {}).get(c, "") for c in codes],
        "n_settlements": n.astype(int),
        "n_measured": n_exact.astype(int),
        "uncertain": n_exact < UNCERTAIN_BELOW * n,
        "n_unreachable": per_unit(t["status"].eq("unreachable")).astype(int) if "status" in t else 0,
    })
    by_unit = t.groupby(unit)
    # pandas' sum, not bincount's: its pairwise summation keeps whole-people totals whole (105,199 not …98.9999)
    out["population"] = by_unit["population"].sum(min_count=1).reindex(range(m)).to_numpy(dtype=float)
    for col, level, minutes, by_pop in share_columns(th):
        for b in BOUNDS:
            inside = _times(t, level, b) <= minutes
            out[col + b] = ratio(per_unit(w * inside), w_tot) if by_pop else ratio(per_unit(inside), n)
    for b, src in (("", "t_county_min"), ("_low", "t_county_low_min"), ("_high", "t_county_high_min")):
        src = src if src in t.columns else "t_county_min"
        out[f"median_t_county{b}_min"] = by_unit[src].median().reindex(range(m)).to_numpy(dtype=float)
    out["max_t_county_min"] = by_unit["t_county_min"].max().reindex(range(m)).to_numpy(dtype=float)
    inside = _times(t, "county", "") <= th["county"]
    out[share_column("county", th["county"]).replace("share_", "share_exact_", 1)] = \
        ratio(per_unit(inside & exact), n_exact)
    if blank_counts is not None and len(out):
        out["n_blank_spots"] = out[key].map(blank_counts).fillna(0).astype(int)
    elif len(out):
        out["n_blank_spots"] = 0
    return out
