"""Coverage: honest times for approximated positions, statuses, threshold gaps, shares and summaries."""
from __future__ import annotations

import numpy as np
import pandas as pd

GROUPS = ("clinic", "thc", "county", "pref")
TIME_COLS = [f"t_{g}_min" for g in GROUPS]


def apply_location_quality(settlements: pd.DataFrame, times: pd.DataFrame) -> pd.DataFrame:
    """Times for settlements without their own position, never passed off as measured.

    A village placed at its township seat is not "0 minutes from its township health centre". Each
    approximated settlement takes, per level, the larger of its position's time and the worst time among
    the exactly located villages of its township (`township_worst`), else the median of the exactly
    located villages of its county (`county_median`), else its position's time as a lower bound
    (`position_lower_bound`). Exactly located rows keep `measured`. Per-level max and median keep
    t_clinic ≤ t_thc ≤ t_county ≤ t_pref.
    """
    t = times.copy()
    exact = settlements["loc_quality"].eq("exact").to_numpy()
    basis = np.where(exact, "measured", "position_lower_bound").astype(object)
    # Reference times come from exactly located villages only: a township seat's own time says nothing
    # about how far its villages lie from it.
    ref = exact & settlements["kind"].isin(["village", "relocation"]).to_numpy() if "kind" in settlements else exact
    town = settlements["township_code"].fillna("").astype(str).to_numpy()
    county = settlements["county_code"].fillna("").astype(str).to_numpy()
    vals = np.array(t[TIME_COLS], dtype=float)
    ref = ref & np.isfinite(vals).all(axis=1)  # per-level max/median keep the level order only over complete rows
    ex = pd.DataFrame(vals[ref], columns=TIME_COLS)
    ex["town"], ex["county"] = town[ref], county[ref]
    ex = ex[ex["town"] != ""]
    town_worst = ex.groupby("town")[TIME_COLS].max()
    county_med = pd.DataFrame(vals[ref], columns=TIME_COLS).assign(county=county[ref]).groupby("county")[TIME_COLS].median()
    approx = ~exact
    tw = town_worst.reindex(town[approx]).to_numpy(dtype=float)
    cm = county_med.reindex(county[approx]).to_numpy(dtype=float)
    own = vals[approx]
    has_tw = np.isfinite(tw).all(axis=1) & np.isfinite(own).all(axis=1)
    has_cm = np.isfinite(cm).all(axis=1) & np.isfinite(own).all(axis=1) & ~has_tw
    new = own.copy()
    new[has_tw] = np.maximum(own[has_tw], tw[has_tw])
    new[has_cm] = np.maximum(own[has_cm], cm[has_cm])
    vals[approx] = new
    sub = basis[approx]
    sub[has_tw], sub[has_cm] = "township_worst", "county_median"
    basis[approx] = sub
    t[TIME_COLS] = vals
    t["time_basis"] = basis
    return t


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


def coverage_shares(table: pd.DataFrame, bands, *, weight: str | None = None) -> dict[str, dict[str, float]]:
    """Share of rows (or of `weight`) within each band of minutes, per facility level; NaN = not covered."""
    out: dict[str, dict[str, float]] = {}
    w = None if weight is None else table[weight].fillna(0).to_numpy(dtype=float)
    for g in GROUPS:
        v = table[f"t_{g}_min"].to_numpy(dtype=float)
        out[g] = {}
        for b in bands:
            inside = v <= b
            if w is None:
                out[g][f"{int(b)}"] = float(inside.mean()) if len(v) else float("nan")
            else:
                tot = w.sum()
                out[g][f"{int(b)}"] = float(w[inside].sum() / tot) if tot > 0 else float("nan")
    return out


def coverage_report(table: pd.DataFrame, bands) -> dict:
    """Coverage shares twice — over exactly located settlements and over all — by count and by population."""
    exact = table[table["loc_quality"].eq("exact")]
    has_pop = table["population"].notna().any()
    rep = {
        "all_settlements": {"n": int(len(table)), "by_count": coverage_shares(table, bands)},
        "exactly_located": {"n": int(len(exact)), "by_count": coverage_shares(exact, bands)},
        "approximation": "settlements without their own coordinates take the worst time of the exactly located "
                         "settlements of their township (else their county's median, else their position's time as "
                         "a lower bound); column time_basis says which",
    }
    if has_pop:
        rep["all_settlements"]["by_population"] = coverage_shares(table, bands, weight="population")
        rep["exactly_located"]["by_population"] = coverage_shares(exact, bands, weight="population")
    return rep


def _share_within(v: pd.Series, minutes: float) -> float:
    a = v.to_numpy(dtype=float)
    return float((a <= minutes).mean()) if len(a) else float("nan")


def _pop_share_within(df: pd.DataFrame, col: str, minutes: float) -> float:
    w = df["population"].fillna(0).to_numpy(dtype=float)
    tot = w.sum()
    return float(w[df[col].to_numpy(dtype=float) <= minutes].sum() / tot) if tot > 0 else float("nan")


def unit_summary(table: pd.DataFrame, key: str, names: dict[str, str] | None = None,
                 blank_counts: pd.Series | None = None, thresholds: dict | None = None) -> pd.DataFrame:
    """Per-unit (county or prefecture) coverage summary of the settlement table."""
    th = thresholds or {"clinic": 15, "thc": 30, "county": 60, "county_severe": 120}
    rows = []
    for code, df in table.groupby(key, sort=True):
        tc = df["t_county_min"]
        rows.append({
            key: code,
            f"{key.replace('_code', '')}_name": (names or {}).get(code, ""),
            "n_settlements": len(df),
            "n_exact": int(df["loc_quality"].eq("exact").sum()),
            "n_unreachable": int(df["status"].eq("unreachable").sum()) if "status" in df else 0,
            "population": float(df["population"].sum(min_count=1)) if df["population"].notna().any() else np.nan,
            "share_clinic_15": _share_within(df["t_clinic_min"], th["clinic"]),
            "share_clinic_30": _share_within(df["t_clinic_min"], 30),
            "share_thc_30": _share_within(df["t_thc_min"], th["thc"]),
            "share_county_60": _share_within(tc, th["county"]),
            "share_county_120": _share_within(tc, th["county_severe"]),
            "pop_share_county_60": _pop_share_within(df, "t_county_min", th["county"]),
            "pop_share_county_120": _pop_share_within(df, "t_county_min", th["county_severe"]),
            "median_t_county_min": float(np.nanmedian(tc)) if tc.notna().any() else np.nan,
            "max_t_county_min": float(np.nanmax(tc)) if tc.notna().any() else np.nan,
            "share_exact_county_60": _share_within(df.loc[df["loc_quality"].eq("exact"), "t_county_min"], th["county"]),
        })
    out = pd.DataFrame(rows)
    if blank_counts is not None and len(out):
        out["n_blank_spots"] = out[key].map(blank_counts).fillna(0).astype(int)
    elif len(out):
        out["n_blank_spots"] = 0
    return out
