"""Accessibility measures beyond "how far is the nearest": the floating-catchment family (2SFCA, E2SFCA,
Gaussian 2SFCA, gravity), care within one's own county or township against the nearest care, referral
chains, and capacity-aware coverage (docs/access.md).

All of them work on one sparse travel-time matrix from :class:`geoaccess.travel.TravelModel`: settlements ×
facilities, minutes, pairs within a limit (explicit zeros kept). Population is the settlement's
(``population``; unknown counts as 0 people), supply a register column or one unit per facility.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, InputError
from .schema import LEVEL_GROUPS

METHODS = ("2sfca", "e2sfca", "g2sfca", "gravity")
PER = 10_000.0  # scores are reported per person and per 10,000 people


# ----------------------------------------------------------------------------- the matrix

@dataclass(frozen=True)
class Pairs:
    """A sparse settlements × facilities travel-time matrix in coordinate form: row i, column j, minutes."""

    i: np.ndarray  # settlement row (int64)
    j: np.ndarray  # facility row (int64)
    minutes: np.ndarray  # float64
    n_settlements: int
    n_facilities: int

    @classmethod
    def from_sparse(cls, matrix) -> "Pairs":
        """From a scipy sparse matrix whose stored entries (zeros included) are the pairs within the limit."""
        coo = matrix.tocoo()
        return cls(coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64), *coo.shape)

    def within(self, limit_min: float) -> "Pairs":
        keep = self.minutes <= limit_min
        return Pairs(self.i[keep], self.j[keep], self.minutes[keep], self.n_settlements, self.n_facilities)

    def nearest(self) -> tuple[np.ndarray, np.ndarray]:
        """Per settlement: minutes to its nearest facility in the matrix (inf when none) and that facility's row (-1)."""
        t = np.full(self.n_settlements, np.inf)
        j = np.full(self.n_settlements, -1, np.int64)
        if len(self.minutes):
            order = np.lexsort((self.j, self.minutes, self.i))  # per row: smallest minutes first, ties by column
            first = order[np.r_[True, self.i[order][1:] != self.i[order][:-1]]]
            t[self.i[first]] = self.minutes[first]
            j[self.i[first]] = self.j[first]
        return t, j


def level_facilities(facilities: pd.DataFrame, level: str) -> pd.DataFrame:
    """The facilities of a level group ("that level or higher", schema.LEVEL_GROUPS), in register order."""
    if level not in LEVEL_GROUPS:
        raise ConfigError(None, f"unknown level '{level}': use {', '.join(LEVEL_GROUPS)}")
    return facilities[facilities["level"].isin(LEVEL_GROUPS[level])].reset_index(drop=True)


def travel_pairs(model, settlements: pd.DataFrame, facilities: pd.DataFrame, limit_min: float) -> Pairs:
    """Every settlement–facility pair within ``limit_min`` minutes under the run's travel model."""
    if not len(facilities) or not len(settlements):
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), len(settlements), len(facilities))
    return Pairs.from_sparse(model.cost_matrix(settlements, facilities, float(limit_min)))


# ----------------------------------------------------------------------------- distance decay

@dataclass(frozen=True)
class Decay:
    """How a method weights a trip of ``t`` minutes inside the catchment (0 beyond it).

    - ``2sfca``: 1 within the catchment;
    - ``e2sfca``: step bands, weight ``band_weights[k]`` for ``bands_min[k-1] < t ≤ bands_min[k]``;
    - ``g2sfca``: Dai's Gaussian ``(exp(-½(t/t0)²) − exp(-½)) / (1 − exp(-½))`` with ``t0`` = the catchment;
    - ``gravity``: ``max(t, min_minutes) ** -beta``.
    """

    method: str
    catchment_min: float
    bands_min: tuple = ()
    band_weights: tuple = ()
    beta: float = 1.0
    min_minutes: float = 1.0

    def weights(self, minutes: np.ndarray) -> np.ndarray:
        t = np.asarray(minutes, dtype=np.float64)
        inside = t <= self.catchment_min
        if self.method == "2sfca":
            w = np.ones_like(t)
        elif self.method == "e2sfca":
            k = np.searchsorted(np.asarray(self.bands_min, float), t, side="left")  # first band with t ≤ upper
            table = np.r_[np.asarray(self.band_weights, float), 0.0]
            w = table[np.minimum(k, len(self.band_weights))]
        elif self.method == "g2sfca":
            e = np.exp(-0.5)
            w = (np.exp(-0.5 * (t / self.catchment_min) ** 2) - e) / (1.0 - e)
        elif self.method == "gravity":
            w = np.maximum(t, self.min_minutes) ** -self.beta
        else:
            raise ConfigError(None, f"unknown method '{self.method}': use {', '.join(METHODS)}")
        return np.where(inside, w, 0.0)

    def describe(self) -> dict:
        d = {"method": self.method, "catchment_min": self.catchment_min}
        if self.method == "e2sfca":
            d |= {"bands_min": list(self.bands_min), "band_weights": list(self.band_weights)}
        if self.method == "gravity":
            d |= {"beta": self.beta, "min_minutes": self.min_minutes}
        return d


def decay_from_config(section: dict, method: str, catchment_min: float, *, bands=None, weights=None,
                      beta=None, min_minutes=None) -> Decay:
    """The decay of ``method`` from the config's [access] section, command-line values taking precedence."""
    if method not in METHODS:
        raise ConfigError(None, f"--method {method}: use {', '.join(METHODS)}")
    if not (isinstance(catchment_min, (int, float)) and catchment_min > 0 and np.isfinite(catchment_min)):
        raise ConfigError(None, f"--catchment {catchment_min!r}: must be a positive number of minutes")
    w = tuple(float(x) for x in (weights if weights is not None else section["e2sfca_weights"]))
    b = bands if bands is not None else section["e2sfca_bands_min"]
    b = tuple(float(x) for x in b) if b else tuple(catchment_min * (k + 1) / len(w) for k in range(len(w)))
    check_e2sfca_bands(b, w, None, names=("--bands" if bands is not None else "[access] e2sfca_bands_min",
                                   "--weights" if weights is not None else "[access] e2sfca_weights"))
    beta_from = "--beta" if beta is not None else "[access] gravity_beta"
    mm_from = "--min-minutes" if min_minutes is not None else "[access] gravity_min_minutes"
    beta = float(section["gravity_beta"] if beta is None else beta)
    mm = float(section["gravity_min_minutes"] if min_minutes is None else min_minutes)
    if not beta > 0:
        raise ConfigError(None, f"{beta_from} {beta:g}: must be positive")
    if not mm > 0:
        raise ConfigError(None, f"{mm_from} {mm:g}: must be positive (a 0-minute trip would weigh infinitely)")
    return Decay(method, float(catchment_min), b, w, beta, mm)


def check_e2sfca_bands(bands, weights, path: Path | None,
                names: tuple[str, str] = ("[access] e2sfca_bands_min", "[access] e2sfca_weights")) -> None:
    """E2SFCA bands: increasing positive minutes, one non-negative weight each (``names``: where each came from)."""
    show = (lambda v: "[" + ", ".join(f"{float(x):g}" for x in v) + "]")
    if len(bands) != len(weights) or not len(weights):
        raise ConfigError(path, f"{names[0]} {show(bands)} and {names[1]} {show(weights)}: one weight per band needed")
    if any(not b > 0 for b in bands) or any(b1 <= b0 for b0, b1 in zip(bands, bands[1:])):
        raise ConfigError(path, f"{names[0]} {show(bands)}: must be increasing positive minutes")
    if any(not (0 <= x) for x in weights):
        raise ConfigError(path, f"{names[1]} {show(weights)}: must be non-negative")


# ----------------------------------------------------------------------------- floating catchments

@dataclass
class FcaResult:
    """Scores of a floating-catchment method: per settlement (supply per person), per facility."""

    score: np.ndarray  # per settlement: Σ_j w_ij R_j (supply per person)
    n_reach: np.ndarray  # per settlement: facilities with a positive weight
    demand_potential: np.ndarray  # per facility: V_j = Σ_i w_ij P_i (people)
    ratio: np.ndarray  # per facility: R_j = S_j / V_j (0 when V_j = 0)
    decay: Decay = field(default=None)


def floating_catchment(pairs: Pairs, demand: np.ndarray, supply: np.ndarray, decay: Decay) -> FcaResult:
    """The two steps of every method: R_j = S_j / Σ_i w_ij P_i, then A_i = Σ_j w_ij R_j.

    Gravity (Joseph & Bantock / Wang's form) is the same two steps with the power weight. A facility no
    demand reaches keeps its supply unused (R_j = 0); Σ_i P_i A_i = Σ_j S_j over the facilities reached.
    """
    demand = np.nan_to_num(np.asarray(demand, float), nan=0.0)
    supply = np.asarray(supply, float)
    w = decay.weights(pairs.minutes)
    pos = w > 0
    i, j, w = pairs.i[pos], pairs.j[pos], w[pos]
    v = np.bincount(j, weights=w * demand[i], minlength=pairs.n_facilities)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(v > 0, supply / np.where(v > 0, v, 1.0), 0.0)
    a = np.bincount(i, weights=w * r[j], minlength=pairs.n_settlements)
    n = np.bincount(i, minlength=pairs.n_settlements)
    return FcaResult(a, n, v, r, decay)


def weighted_mean_by(keys: pd.Series, values: np.ndarray, weights: np.ndarray) -> pd.Series:
    """Population-weighted mean of ``values`` per key (NaN where a key has no people)."""
    w = np.nan_to_num(np.asarray(weights, float), nan=0.0)
    df = pd.DataFrame({"k": keys.to_numpy(), "wv": w * values, "w": w})
    g = df.groupby("k", sort=True)[["wv", "w"]].sum()
    return (g["wv"] / g["w"].where(g["w"] > 0)).rename(None)


# ----------------------------------------------------------------------------- supply from the register

def register_values(config, data_dir: Path, facilities: pd.DataFrame, column: str, what: str) -> np.ndarray:
    """A numeric register column (beds, doctors, capacity) for ``facilities``, by facility_id; one clear error
    naming the file, row and column for a missing column, a bad or negative number, or an empty cell."""
    from ._io import data_row, numeric_column, read_table, require_columns

    path = config.input_path("facilities", data_dir)
    df = read_table(path)
    require_columns(df, ["facility_id", column], path, "facility register")
    values = numeric_column(df, column, path, lo=0)
    empty = np.flatnonzero(~np.isfinite(values))
    if empty.size:
        raise InputError(path, f"no {what} given (empty cell)", row=data_row(df, empty[0]), column=column)
    by_id = pd.Series(values, index=df["facility_id"].astype(str).str.strip().to_numpy())
    by_id = by_id[~by_id.index.duplicated()]
    ids = facilities["facility_id"].astype(str).to_numpy()
    got = by_id.reindex(ids).to_numpy(float)
    if np.isnan(got).any():
        raise InputError(path, f"facility {ids[np.isnan(got)][0]} is not in the register: no {what} for it",
                         column=column)
    return got


# ----------------------------------------------------------------------------- the supply–demand run

@dataclass
class AccessRun:
    """What `access` computed: the three tables and the matrix it used."""

    settlements: pd.DataFrame
    counties: pd.DataFrame
    facilities: pd.DataFrame
    od: pd.DataFrame
    summary: dict


def supply_demand_access(model, settlements: pd.DataFrame, facilities: pd.DataFrame, level: str, decay: Decay,
                         supply: np.ndarray | None = None, supply_name: str = "one per facility",
                         county_names: dict | None = None) -> AccessRun:
    """Score every settlement and county for ``level`` under ``decay`` (see :func:`floating_catchment`).

    ``facilities`` is the full register (the level's group is taken from it); ``supply`` is aligned with it
    (None: one unit per facility).
    """
    keep = facilities["level"].isin(LEVEL_GROUPS[level]).to_numpy()
    fac = facilities[keep].reset_index(drop=True)
    sup = np.ones(len(fac)) if supply is None else np.asarray(supply, float)[keep]
    pairs = travel_pairs(model, settlements, fac, decay.catchment_min).within(decay.catchment_min)
    pop = settlements["population"].to_numpy(float) if "population" in settlements else np.zeros(len(settlements))
    res = floating_catchment(pairs, pop, sup, decay)
    people = np.nan_to_num(pop, nan=0.0)
    s = settlements
    out = pd.DataFrame({
        "settlement_id": s["settlement_id"].astype(str).to_numpy(), "name": s["name"].to_numpy(),
        "kind": s["kind"].to_numpy(), "county_code": s["county_code"].astype(str).to_numpy(),
        "county_name": s["county_name"].to_numpy(), "population": pop,
        "n_in_catch": res.n_reach, "access_score": res.score, "access_per_10k": res.score * PER})
    names = county_names or {}
    by_county = weighted_mean_by(out["county_code"], res.score, pop)
    grp = out.groupby("county_code", sort=True)
    fac_county = fac["county_code"].astype(str)
    counties = pd.DataFrame({
        "county_code": by_county.index.astype(str),
        "county_name": [names.get(c) or grp.get_group(c)["county_name"].iloc[0] for c in by_county.index],
        "n_settlements": grp.size().to_numpy(),
        "population": grp["population"].sum().to_numpy(),
        "access_score": by_county.to_numpy(),
        "access_per_10k": by_county.to_numpy() * PER,
        "n_facilities": fac_county.value_counts().reindex(by_county.index, fill_value=0).to_numpy(),
        "supply": pd.Series(sup).groupby(fac_county.to_numpy()).sum().reindex(by_county.index, fill_value=0.0).to_numpy(),
    })
    with np.errstate(divide="ignore", invalid="ignore"):
        counties["supply_per_10k"] = np.where(counties["population"] > 0,
                                              counties["supply"] / counties["population"] * PER, np.nan)
    facs = pd.DataFrame({"facility_id": fac["facility_id"].astype(str).to_numpy(), "name": fac["name"].to_numpy(),
                         "level": fac["level"].to_numpy(), "county_code": fac["county_code"].astype(str).to_numpy(),
                         "supply": sup, "demand_potential": res.demand_potential, "supply_ratio": res.ratio})
    od = pd.DataFrame({"settlement_id": out["settlement_id"].to_numpy()[pairs.i],
                       "facility_id": facs["facility_id"].to_numpy()[pairs.j], "minutes": pairs.minutes})
    od = od.sort_values(["settlement_id", "minutes", "facility_id"], kind="stable").reset_index(drop=True)
    total_pop = float(people.sum())
    summary = {"level": level, "decay": decay.describe(), "supply": supply_name,
               "settlements": len(out), "facilities": len(facs), "pairs_within_catchment": int(len(pairs.minutes)),
               "population": total_pop,
               "population_with_no_facility_in_catchment": float(people[res.n_reach == 0].sum()),
               "supply_total": float(sup.sum()),
               "supply_reached_by_demand": float(sup[res.demand_potential > 0].sum()),
               "region_score_per_10k": float((people * res.score).sum() / total_pop * PER) if total_pop > 0 else None}
    return AccessRun(out, counties, facs, od, summary)


# ----------------------------------------------------------------------------- own unit vs nearest

#: Level → (settlement column naming its unit, facility column naming the facility's unit, unit's name).
OWN_UNITS = {"county": ("county_code", "county_code", "county"), "thc": ("township_code", "admin_code", "township")}


def own_unit_times(model, settlements: pd.DataFrame, facilities: pd.DataFrame, level: str, nearest_min: np.ndarray,
                   nearest_id: np.ndarray, limit_min: float) -> pd.DataFrame:
    """Per settlement: minutes to the nearest facility of ``level`` *in its own unit* (county hospital of its own
    county; township health centre of its own township), beside the nearest one anywhere.

    Where the nearest facility is in the settlement's own unit the two are the same trip; for the others one
    bounded cost matrix (``limit_min``) from the facilities of their units only. Columns ``t_{level}_own_min``
    (NaN when the unit has no such facility or it is beyond the limit), ``own_{level}_id`` and
    ``own_{level}_status``: ``own`` (nearest is the unit's own), ``crossed`` (nearest across the border),
    ``beyond_limit``, ``none_in_unit``.
    """
    s_col, f_col, _ = OWN_UNITS[level]
    fac = level_facilities(facilities, level)
    fac_ids = fac["facility_id"].astype(str).to_numpy()
    fac_unit = fac[f_col].astype(str).to_numpy()
    unit = settlements[s_col].astype(str).to_numpy()
    unit_of_fac = pd.Series(fac_unit, index=fac_ids)
    unit_of_fac = unit_of_fac[~unit_of_fac.index.duplicated()]
    near_id = pd.Series(nearest_id).astype(object).where(pd.notna(nearest_id), None).astype(str).to_numpy()
    near_unit = unit_of_fac.reindex(near_id).to_numpy(dtype=object)
    nearest_min = np.asarray(nearest_min, float)
    own = (near_unit == unit) & np.isfinite(nearest_min)
    t_own = np.where(own, nearest_min, np.nan)
    own_id = np.where(own, near_id, None).astype(object)
    has_unit_fac = pd.Index(unit).isin(pd.Index(fac_unit))
    need = np.flatnonzero(~own & has_unit_fac)
    if len(need):
        sub_f = np.flatnonzero(pd.Index(fac_unit).isin(pd.Index(unit[need])))
        pairs = travel_pairs(model, settlements.iloc[need], fac.iloc[sub_f], limit_min)
        same = fac_unit[sub_f][pairs.j] == unit[need][pairs.i]
        pairs = Pairs(pairs.i[same], pairs.j[same], pairs.minutes[same], pairs.n_settlements, pairs.n_facilities)
        t, j = pairs.nearest()
        found = j >= 0
        # a trip to one of the unit's facilities is never shorter than the nearest trip to any (same model)
        t_own[need[found]] = np.maximum(t[found], np.nan_to_num(nearest_min[need[found]], nan=0.0))
        own_id[need[found]] = fac_ids[sub_f][j[found]]
    status = np.where(own, "own", np.where(~has_unit_fac, "none_in_unit",
                                           np.where(np.isnan(t_own), "beyond_limit", "crossed")))
    return pd.DataFrame({f"t_{level}_own_min": t_own, f"own_{level}_id": own_id, f"own_{level}_status": status})


def own_unit_table(model, settlements: pd.DataFrame, facilities: pd.DataFrame, *, county_limit_min: float,
                   township_limit_min: float) -> pd.DataFrame:
    """The settlement table of own unit vs nearest for county hospitals (own county) and township centres
    (own township): nearest times from one level pass, own times from :func:`own_unit_times`."""
    groups = {g: LEVEL_GROUPS[g] for g in OWN_UNITS}
    times, _ = model.times(settlements, facilities, groups=groups)
    s = settlements
    out = pd.DataFrame({c: s[c].to_numpy() for c in ("settlement_id", "name", "kind", "county_code", "county_name",
                                                     "township_code", "population") if c in s.columns})
    for level, limit in (("county", county_limit_min), ("thc", township_limit_min)):
        t = times[f"t_{level}_min"].to_numpy(float)
        nid = times[f"nearest_{level}_id"].to_numpy(dtype=object)
        own = own_unit_times(model, s, facilities, level, t, nid, limit)
        out[f"t_{level}_min"] = t
        out[f"nearest_{level}_id"] = nid
        for c in own.columns:
            out[c] = own[c].to_numpy()
        out[f"gain_{level}_min"] = own[f"t_{level}_own_min"].to_numpy() - t
    return out


def own_unit_summary(table: pd.DataFrame, thresholds: dict) -> pd.DataFrame:
    """Per county: shares within the thresholds under both rules (nearest anywhere, own unit only), by
    settlements and by people, and who gains by crossing a border (nearest is across it; within the threshold
    only by crossing)."""
    from .coverage import share_column

    rows = []
    for code, df in table.groupby("county_code", sort=True):
        p = np.nan_to_num(df["population"].to_numpy(float), nan=0.0)
        row = {"county_code": code, "county_name": df["county_name"].iloc[0], "n_settlements": len(df),
               "population": float(p.sum())}
        for level in OWN_UNITS:
            m = float(thresholds[level])
            near = df[f"t_{level}_min"].to_numpy(float) <= m
            own = df[f"t_{level}_own_min"].to_numpy(float) <= m
            crossed = df[f"own_{level}_status"].isin(["crossed", "beyond_limit", "none_in_unit"]).to_numpy() \
                & np.isfinite(df[f"t_{level}_min"].to_numpy(float))
            tot = p.sum()
            for rule, inside in (("", near), ("_own", own)):
                col = share_column(level, m).replace(f"share_{level}_", f"share_{level}{rule}_", 1)
                row[col] = float(inside.mean())
                row["pop_" + col] = float(p[inside].sum() / tot) if tot > 0 else np.nan
            k = f"{level}_{m:g}"
            row[f"n_cross_{level}"] = int(crossed.sum())
            row[f"pop_cross_{level}"] = float(p[crossed].sum())
            row[f"n_gain_{k}"] = int((near & ~own).sum())
            row[f"pop_gain_{k}"] = float(p[near & ~own].sum())
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- referral

#: Each facility level's own group, lowest first (schema.LEVEL_GROUPS: a group is "that level or higher").
GROUP_ORDER = ("clinic", "thc", "county", "pref")
FACILITY_GROUP = {"village_clinic": "clinic", "temporary_point": "clinic", "township_health_centre": "thc",
                  "county_hospital": "county", "county_regional_centre": "county", "prefecture_hospital": "pref"}


def facility_origins(facilities: pd.DataFrame) -> pd.DataFrame:
    """The facilities as trip origins (``settlement_id`` = ``facility_id``, WGS84 ``lon``/``lat``)."""
    return pd.DataFrame({"settlement_id": facilities["facility_id"].astype(str).to_numpy(),
                         "lon": facilities["lon"].to_numpy(float), "lat": facilities["lat"].to_numpy(float)})


def referral_groups(facilities: pd.DataFrame) -> dict:
    """The higher level groups some facility of the register refers to (a group none lies below needs no search)."""
    rank = facilities["level"].map(FACILITY_GROUP).map(GROUP_ORDER.index)
    return {g: LEVEL_GROUPS[g] for g in GROUP_ORDER[1:] if (rank < GROUP_ORDER.index(g)).any()}


def times_with_facility_origins(model, settlements: pd.DataFrame, facilities: pd.DataFrame, groups=None):
    """One travel-model pass for the settlements and, as extra origins, the facilities themselves.

    Origins do not change one another's times (a trip starts at its origin's node), so the settlements' result is
    the one ``model.times(settlements, facilities, groups)`` gives, and the facilities' rows are what
    :func:`referral_times` needs, at the cost of a few hundred more origins instead of a second search.
    Returns (settlement times, cell field or None, facility times aligned with ``facilities``). The road-only
    engine, whose own pass is cheap and whose warnings count the origins far from roads, makes a second pass.
    """
    if model.engine == "network":
        times, cells = model.times(settlements, facilities, groups=groups)
        fac, _ = model.times(facility_origins(facilities), facilities, groups=referral_groups(facilities))
        return times, cells, fac
    origins = pd.concat([settlements[["settlement_id", "lon", "lat"]].reset_index(drop=True),
                         facility_origins(facilities)], ignore_index=True)
    times, cells = model.times(origins, facilities, groups=groups)
    n = len(settlements)
    own = times.iloc[:n].copy()
    own.index = settlements.index
    own.attrs = dict(times.attrs)
    fac = times.iloc[n:].reset_index(drop=True)
    return own, cells, fac


def referral_times(model, facilities: pd.DataFrame, origin_times: pd.DataFrame | None = None) -> pd.DataFrame:
    """For every facility: minutes from it to the nearest facility of each higher level (clinic → township
    centre → county hospital → prefecture), and which; empty for its own level and below.

    ``origin_times``: the travel-model result with the facilities as origins, aligned with ``facilities`` (the
    gaps run takes it from its one pass, :func:`times_with_facility_origins`); None: one pass is made here.
    """
    higher = referral_groups(facilities)
    if origin_times is None:
        origin_times, _ = model.times(facility_origins(facilities), facilities, groups=higher)
    times = origin_times
    rank = facilities["level"].map(FACILITY_GROUP).map(GROUP_ORDER.index).to_numpy()
    out = pd.DataFrame({c: facilities[c].to_numpy() for c in ("facility_id", "name", "level", "county_code")})
    for g in GROUP_ORDER[1:]:
        below = rank >= GROUP_ORDER.index(g)
        if g in higher:
            t = times[f"t_{g}_min"].to_numpy(float)
            near = times[f"nearest_{g}_id"].to_numpy(dtype=object)
        else:
            t, near = np.full(len(out), np.nan), np.full(len(out), None, dtype=object)
        out[f"t_{g}_min"] = np.where(below, np.nan, t)
        out[f"nearest_{g}_id"] = np.where(below, None, near)
    return out


def referral_chains(settlements: pd.DataFrame, times: pd.DataFrame, referral: pd.DataFrame) -> pd.DataFrame:
    """Per settlement: the chain settlement → its nearest township centre (or better) → that centre's nearest
    county hospital (or better), beside the direct trip to the nearest county hospital.

    ``times`` holds ``t_thc_min``, ``nearest_thc_id``, ``t_county_min``, ``nearest_county_id`` aligned with the
    settlements; ``referral`` is :func:`referral_times`. When the nearest centre is itself county level, the
    referral leg is 0.
    """
    ref = referral.set_index(referral["facility_id"].astype(str))
    first = times["nearest_thc_id"].to_numpy(dtype=object)
    first_s = pd.Series(first).astype(str).to_numpy()
    level = ref["level"].reindex(first_s).map(FACILITY_GROUP).to_numpy(dtype=object)
    county_level = pd.Series(level).isin(["county", "pref"]).to_numpy()
    leg = np.where(county_level, 0.0, ref["t_county_min"].reindex(first_s).to_numpy(float))
    second = np.where(county_level, first, ref["nearest_county_id"].reindex(first_s).to_numpy(dtype=object))
    t_thc = times["t_thc_min"].to_numpy(float)
    chain = t_thc + leg
    direct = times["t_county_min"].to_numpy(float)
    s = settlements
    out = pd.DataFrame({c: s[c].to_numpy() for c in ("settlement_id", "name", "kind", "county_code", "county_name",
                                                     "population") if c in s.columns})
    out["t_thc_min"] = t_thc
    out["nearest_thc_id"] = first
    out["t_referral_min"] = leg
    out["referral_county_id"] = second
    out["t_chain_min"] = chain
    out["t_county_min"] = direct
    out["nearest_county_id"] = times["nearest_county_id"].to_numpy(dtype=object)
    out["chain_extra_min"] = chain - direct
    return out


def referral_tables(model, settlements: pd.DataFrame, facilities: pd.DataFrame, *,
                    settlement_times: pd.DataFrame | None = None, origin_times: pd.DataFrame | None = None):
    """The two referral tables, ``referral`` (:func:`referral_times`) and ``referral_chains``
    (:func:`referral_chains`), as the `referral` command and the gaps run write them.

    ``settlement_times`` / ``origin_times``: the model's times at the settlements' own positions and from the
    facilities, when a pass already made them (the gaps run); None: passes are made here.
    """
    referral = referral_times(model, facilities, origin_times)
    if settlement_times is None:
        settlement_times, _ = model.times(settlements, facilities,
                                          groups={g: LEVEL_GROUPS[g] for g in ("thc", "county")})
    return referral, referral_chains(settlements, settlement_times, referral)


def referral_summary(referral: pd.DataFrame, chains: pd.DataFrame, severe_min: float) -> dict:
    """Medians and the people within ``severe_min`` minutes directly and by the chain (minutes; shares 0–1)."""
    pop = chains["population"].fillna(0).to_numpy(float) if "population" in chains else np.zeros(len(chains))
    total = pop.sum()
    extra = chains["chain_extra_min"].to_numpy(float)
    thc = referral.loc[referral["level"].eq("township_health_centre"), "t_county_min"].to_numpy(float)

    def median(v):
        v = np.asarray(v, float)
        return float(np.nanmedian(v)) if np.isfinite(v).any() else None

    def share(t):
        return float(pop[np.asarray(t, float) <= severe_min].sum() / total) if total > 0 else None

    return {"facilities": len(referral), "median_referral_thc_to_county_min": median(thc),
            "median_chain_min": median(chains["t_chain_min"]), "median_direct_min": median(chains["t_county_min"]),
            f"pop_share_direct_within_{severe_min:g}_min": share(chains["t_county_min"]),
            f"pop_share_chain_within_{severe_min:g}_min": share(chains["t_chain_min"]),
            "settlements_where_the_chain_is_longer_by_over_30_min": int((extra > 30).sum()),
            "positions": "each settlement's own position (approximated positions: their seat's)"}


# ----------------------------------------------------------------------------- capacity-aware coverage

ORDERS = ("register", "population")


@dataclass
class CoverageRun:
    """What `coverage` computed: per settlement, facility and county, and the totals."""

    settlements: pd.DataFrame
    facilities: pd.DataFrame
    counties: pd.DataFrame
    summary: dict


def capacity_coverage(pairs: Pairs, population: np.ndarray, capacity: np.ndarray, order: np.ndarray) -> dict:
    """AccessMod's geographic coverage on a settlement matrix: facilities in ``order``, each serves the nearest
    people not yet served (by minutes, ties by settlement row) until its capacity or the matrix's time limit is
    reached; the settlement where its capacity runs out is served in part.

    Returns arrays: ``covered`` (people per settlement), ``served`` (people per facility), ``n_served``
    (settlements per facility, in part or whole), ``farthest`` (minutes to the farthest served, per facility),
    ``by`` / ``by_minutes`` (per settlement: the facility that served most of it, and its minutes).
    """
    pop = np.nan_to_num(np.asarray(population, float), nan=0.0)
    remaining = pop.copy()
    n_s, n_f = pairs.n_settlements, pairs.n_facilities
    served, n_served, farthest = np.zeros(n_f), np.zeros(n_f, np.int64), np.full(n_f, np.nan)
    by, by_people, by_minutes = np.full(n_s, -1, np.int64), np.zeros(n_s), np.full(n_s, np.nan)
    sort = np.lexsort((pairs.i, pairs.minutes, pairs.j))  # by facility, then minutes, then settlement
    j_sorted = pairs.j[sort]
    starts = np.searchsorted(j_sorted, np.arange(n_f + 1))
    for j in order:
        idx = sort[starts[j]:starts[j + 1]]
        if not len(idx):
            continue
        rows = pairs.i[idx]
        r = remaining[rows]
        before = np.cumsum(r) - r
        take = np.clip(float(capacity[j]) - before, 0.0, r) if np.isfinite(capacity[j]) else r
        took = take > 0
        remaining[rows] -= take
        served[j] = take.sum()
        n_served[j] = int(took.sum())
        if took.any():
            farthest[j] = float(pairs.minutes[idx][took].max())
        better = took & (take > by_people[rows])
        by[rows[better]], by_people[rows[better]] = j, take[better]
        by_minutes[rows[better]] = pairs.minutes[idx][better]
    return {"covered": pop - remaining, "served": served, "n_served": n_served, "farthest": farthest, "by": by,
            "by_minutes": by_minutes}


def facility_order(pairs: Pairs, population: np.ndarray, how: str) -> np.ndarray:
    """Facility rows in the order they take their people: the register's, or most people within the limit first."""
    if how not in ORDERS:
        raise ConfigError(None, f"--order {how}: use {' or '.join(ORDERS)}")
    if how == "register":
        return np.arange(pairs.n_facilities)
    pop = np.nan_to_num(np.asarray(population, float), nan=0.0)
    within = np.bincount(pairs.j, weights=pop[pairs.i], minlength=pairs.n_facilities)
    return np.lexsort((np.arange(pairs.n_facilities), -within))


def coverage_with_capacity(model, settlements: pd.DataFrame, facilities: pd.DataFrame, level: str,
                           capacity: np.ndarray, max_minutes: float, order: str = "register") -> CoverageRun:
    """Capacity-aware coverage of ``level`` within ``max_minutes`` (see :func:`capacity_coverage`).

    ``capacity`` is aligned with the full register (people per facility; inf = no limit). Per county the people
    covered, uncovered for want of capacity (some facility within the limit, all full) and uncovered for distance.
    """
    keep = facilities["level"].isin(LEVEL_GROUPS[level]).to_numpy()
    fac = facilities[keep].reset_index(drop=True)
    cap = np.asarray(capacity, float)[keep]
    pairs = travel_pairs(model, settlements, fac, max_minutes).within(max_minutes)
    pop = np.nan_to_num(settlements["population"].to_numpy(float), nan=0.0)
    rank = facility_order(pairs, pop, order)
    res = capacity_coverage(pairs, pop, cap, rank)
    reach = np.bincount(pairs.i, minlength=len(settlements)) > 0
    uncovered = pop - res["covered"]
    ids = fac["facility_id"].astype(str).to_numpy()
    s = settlements
    out = pd.DataFrame({c: s[c].to_numpy() for c in ("settlement_id", "name", "kind", "county_code", "county_name")})
    out["population"] = s["population"].to_numpy(float)
    out["people_covered"] = res["covered"]
    out["covered_by"] = np.where(res["by"] >= 0, ids[np.maximum(res["by"], 0)], None)
    out["t_covered_min"] = res["by_minutes"]
    out["uncovered_reason"] = np.where(uncovered <= 1e-9, "", np.where(reach, "capacity", "distance"))
    position = np.empty(len(fac), np.int64)
    position[rank] = np.arange(1, len(fac) + 1)
    facs = pd.DataFrame({c: fac[c].to_numpy() for c in ("facility_id", "name", "level", "county_code")})
    facs["order_rank"] = position
    facs["capacity"] = cap
    facs["people_served"] = res["served"]
    facs["capacity_left"] = cap - res["served"]
    facs["n_served"] = res["n_served"]
    facs["served_max_min"] = res["farthest"]
    df = pd.DataFrame({"county_code": out["county_code"], "county_name": out["county_name"], "population": pop,
                       "pop_covered": res["covered"], "pop_uncov_capacity": np.where(reach, uncovered, 0.0),
                       "pop_uncov_distance": np.where(reach, 0.0, uncovered)})
    counties = df.groupby("county_code", sort=True).agg(
        county_name=("county_name", "first"), population=("population", "sum"), pop_covered=("pop_covered", "sum"),
        pop_uncov_capacity=("pop_uncov_capacity", "sum"), pop_uncov_distance=("pop_uncov_distance", "sum")).reset_index()
    counties["covered_share"] = counties["pop_covered"] / counties["population"].where(counties["population"] > 0)
    total = float(pop.sum())
    summary = {"level": level, "max_minutes": float(max_minutes), "order": order, "facilities": len(fac),
               "population": total, "covered": float(res["covered"].sum()),
               "uncovered_for_capacity": float(df["pop_uncov_capacity"].sum()),
               "uncovered_for_distance": float(df["pop_uncov_distance"].sum()),
               "covered_share": float(res["covered"].sum() / total) if total > 0 else None,
               "share_within_reach": float(pop[reach].sum() / total) if total > 0 else None,
               "facilities_full": int((facs["capacity_left"] <= 1e-9).sum())}
    return CoverageRun(out, facs, counties, summary)


def parse_capacity(value: str, config, data_dir: Path, facilities: pd.DataFrame) -> tuple[np.ndarray, str]:
    """``--capacity``: a number of people per facility (``inf`` for no limit), else a register column."""
    try:
        people = float(value)
    except ValueError:
        return register_values(config, data_dir, facilities, value, "capacity"), f"register column '{value}'"
    if not people > 0:
        raise ConfigError(None, f"--capacity {value}: must be a positive number of people or a register column")
    return np.full(len(facilities), people), ("no limit" if np.isinf(people) else f"{people:g} people per facility")
