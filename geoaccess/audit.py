"""The blank-spot audit (空白点): each region's written standards as rules over its register and times."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .schema import CLINIC_LEVELS, COUNTY_HOSPITAL_LEVELS as COUNTY_LEVELS

RULES = {
    "county_hospital": "每县至少{n}所县级公立医院 (county-level public hospital)",
    "township_health_centre": "每个乡镇1所政府办乡镇卫生院 (government township health centre)",
    "village_clinic": "每个行政村1个村卫生室 (village clinic)",
    "relocation_clinic": "易地搬迁安置点就医保障 / 临时医疗点 (relocation settlement access)",
    "register_scope": "登记表覆盖范围 (what the register can show)",
}
BLANK_COLUMNS = ["unit_code", "unit_name", "unit_level", "rule", "detail", "county_code"]
#: A settlement this close to a county's seat (its gazetteer position or its county hospital) stands for the seat.
SEAT_RADIUS_KM = 2.0
#: Why a rule could not be checked for a unit (the `detail` of a cannot-check row starts with it).
SEAT_NOT_LOCATED = "cannot be checked: seat not located"


@dataclass
class AuditResult:
    """Blank spots found, exemptions applied (not gaps, but recorded), rules the data cannot audit, and
    units a rule could not be checked for (`cannot_check`: never counted as gaps)."""

    blank_spots: pd.DataFrame
    exemptions: pd.DataFrame
    not_auditable: list[str]
    cannot_check: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BLANK_COLUMNS))

    def counts_by_rule(self) -> dict[str, int]:
        return _by_rule(self.blank_spots)

    def summary(self) -> dict:
        """The audit in the run summary: gaps by rule, exemptions, units that cannot be checked, rules not audited."""
        return {"total": int(len(self.blank_spots)), "by_rule": self.counts_by_rule(),
                "exemptions": int(len(self.exemptions)),
                "cannot_check": {"total": int(len(self.cannot_check)), "by_rule": _by_rule(self.cannot_check),
                                 "reason": SEAT_NOT_LOCATED + " (the register places facilities at located seats only)"
                                 if len(self.cannot_check) else ""},
                "not_auditable": self.not_auditable}


def _by_rule(table: pd.DataFrame) -> dict[str, int]:
    return table["rule"].str.split(" ").str[0].value_counts().to_dict() if len(table) else {}


def _row(code, name, level, rule, detail, county=""):
    return {"unit_code": code, "unit_name": name, "unit_level": level, "rule": rule, "detail": detail, "county_code": county}


def audit_blank_spots(*, standards: dict, settlements: pd.DataFrame, facilities: pd.DataFrame | None,
                      counties: pd.DataFrame, gazetteer: pd.DataFrame | None, county_codes: pd.DataFrame | None,
                      thresholds: dict, register_note: str = "", register_from_seats: bool = False,
                      county_seats: pd.DataFrame | None = None) -> AuditResult:
    """Apply the region's standards (config [standards]) and return the blank spots with their evidence.

    `register_from_seats`: the register holds one facility per *located* administrative seat (derived from
    the standards), so a township whose seat has no coordinates cannot show a centre: it goes to
    `cannot_check`, not to the blank spots. `county_seats` (county_code, lon, lat; WGS84): each county's
    seat by its admin code, used for the prefecture-reliance exemption where no settlement is of kind
    county_seat.
    """
    spots, exempt, cannot, unchecked = [], [], [], []
    doc = standards.get("document", "")
    fac = facilities if facilities is not None else pd.DataFrame(columns=["facility_id", "level", "admin_code", "county_code"])
    note = f" ({register_note})" if register_note else ""

    # --- county hospitals
    n_req = int(standards.get("county_hospitals_required", 1))
    scope = standards.get("county_hospital_scope", "all")
    poor = set(map(str, standards.get("poor_counties", [])))
    per_county = fac[fac["level"].isin(COUNTY_LEVELS)].groupby("county_code").size()
    pref_in = set(fac.loc[fac["level"].eq("prefecture_hospital"), "county_code"])
    seat_minutes = _seat_pref_minutes(settlements, fac, county_seats)
    rule = f"county_hospital {RULES['county_hospital'].format(n=n_req)} — {doc}"
    for code, name in zip(counties["county_code"], counties["county_name"]):
        if scope == "poor" and code not in poor:
            continue
        have = int(per_county.get(code, 0))
        if have >= n_req:
            continue
        if standards.get("county_may_rely_on_prefecture"):
            t_pref, seat = seat_minutes.get(code, (np.nan, ""))
            if code in pref_in or t_pref <= thresholds["county"]:
                why = "a prefecture hospital stands in the county" if code in pref_in else \
                    f"its seat ({seat}) is {t_pref:.0f} min from a prefecture hospital"
                exempt.append(_row(code, name, "county", rule, f"{have} county hospital(s); may rely on the prefecture "
                                                               f"hospital: {why}", code))
                continue
        extra = " (poor county)" if scope == "poor" else ""
        spots.append(_row(code, name, "county", rule, f"register lists {have} county-level hospital(s), "
                                                      f"standard requires {n_req}{extra}{note}", code))

    # --- township health centres
    if standards.get("township_health_centre_required", True) and gazetteer is not None:
        towns = gazetteer[gazetteer["level"].eq("town")]
        thc_codes = set(fac.loc[fac["level"].eq("township_health_centre"), "admin_code"].astype(str))
        town_t = settlements.set_index("settlement_id")["t_thc_min"]
        rule = f"township_health_centre {RULES['township_health_centre']} — {doc}"
        cc = county_codes["county_code"] if county_codes is not None else pd.Series(dtype=object)
        seat_lon = gazetteer.set_index("code")["lon"]  # once: re-indexing 679,000 rows per township took ~0.3 s each
        for code, name in zip(towns["code"], towns["name"]):
            if code in thc_codes:
                continue
            county = cc.get(code[:6], code[:6])
            urban = str(name).endswith(("街道办事处", "办事处", "街道"))
            t = town_t.get(code, np.nan)
            if standards.get("township_exempt_urban_districts") and urban and t <= thresholds["thc"]:
                exempt.append(_row(code, name, "township", rule, f"urban subdistrict served within {t:.0f} min", county))
                continue
            seat_located = bool(np.isfinite(seat_lon.at[code]))
            if register_from_seats and not seat_located:
                unchecked.append(_row(code, name, "township", rule, f"{SEAT_NOT_LOCATED}: the township seat has no "
                                                                    f"coordinates in the gazetteer and the register "
                                                                    f"places a centre only at located seats{note}",
                                      county))
                continue
            located = "its seat is located" if seat_located else "its seat is unlocated in the gazetteer"
            spots.append(_row(code, name, "township", rule, f"no township health centre with this township's code in "
                                                            f"the register; {located}; nearest THC-or-better "
                                                            f"{t:.0f} min{note}", county))

    # --- village clinics
    if standards.get("village_clinic_required", True):
        clinics = fac[fac["level"].isin(CLINIC_LEVELS)]
        if clinics.empty:
            cannot.append("village clinics: the facility register lists no village clinics (村卫生室), so the "
                          "one-clinic-per-village rule cannot be audited from it; reported once, not as thousands of gaps")
            spots.append(_row("", "register", "region", f"register_scope {RULES['register_scope']}",
                              "register has no village clinics: the village-clinic rule (每个行政村1个村卫生室) was not "
                              "audited village by village", ""))
        else:
            spots += _audit_villages(standards, settlements, clinics, doc, exempt)

    # --- relocation settlements
    lim = float(standards.get("relocation_clinic_within_min", thresholds["thc"]))
    rel = settlements[settlements["kind"].eq("relocation")]
    rule = f"relocation_clinic {RULES['relocation_clinic']} — {doc}"
    for _, r in rel.iterrows():
        t = r["t_clinic_min"]
        if not (t <= lim):
            spots.append(_row(r["settlement_id"], r["name"], "relocation", rule,
                              f"nearest clinic {t:.0f} min > {lim:.0f} min (position: {r['loc_quality']}); "
                              f"a temporary medical point (临时医疗点) may serve", r["county_code"]))
    cannot.append("staff rules (三合格: licensed doctors per department, centre and clinic) need staff registers")
    bs = pd.DataFrame(spots, columns=BLANK_COLUMNS)
    ex = pd.DataFrame(exempt, columns=BLANK_COLUMNS)
    return AuditResult(bs, ex, cannot, pd.DataFrame(unchecked, columns=BLANK_COLUMNS))


def _seat_pref_minutes(settlements: pd.DataFrame, facilities: pd.DataFrame,
                       county_seats: pd.DataFrame | None) -> dict[str, tuple[float, str]]:
    """County code → (minutes from its seat to a prefecture hospital, how the seat was found).

    The seat is the county's urban-core township (kind county_seat) where there is one; else the exactly
    located settlement within `SEAT_RADIUS_KM` of the county's seat position by admin code, or of one of
    its county-level hospitals.
    """
    out: dict[str, tuple[float, str]] = {}
    kind_seat = settlements[settlements["kind"].eq("county_seat")].groupby("county_code")["t_pref_min"].min()
    for code, t in kind_seat.items():
        if np.isfinite(t):
            out[code] = (float(t), "urban-core township")
    located = settlements[settlements["loc_quality"].eq("exact") & np.isfinite(settlements["t_pref_min"].astype(float))]
    if not {"lon", "lat"} <= set(located.columns) or located.empty:
        return out
    places = []
    if county_seats is not None and len(county_seats):
        places.append(county_seats[["county_code", "lon", "lat"]].assign(how="county seat by admin code"))
    hosp = facilities[facilities["level"].isin(COUNTY_LEVELS)]
    if {"lon", "lat"} <= set(hosp.columns) and len(hosp):
        places.append(hosp[["county_code", "lon", "lat"]].assign(how="at its county hospital"))
    if not places:
        return out
    places = pd.concat(places, ignore_index=True).dropna(subset=["lon", "lat"])
    by_county = located.groupby("county_code")
    for code, group in places.groupby("county_code"):
        if code in out or code not in by_county.groups:
            continue
        cand = by_county.get_group(code)
        best = (np.nan, "")
        for _, p in group.iterrows():
            km = _km(p["lon"], p["lat"], cand["lon"].to_numpy(float), cand["lat"].to_numpy(float))
            near = km <= SEAT_RADIUS_KM
            if near.any():
                t = float(cand["t_pref_min"].to_numpy(float)[near].min())
                if not t >= best[0]:
                    best = (t, f"{p['how']}, settlement within {SEAT_RADIUS_KM:g} km")
        if np.isfinite(best[0]):
            out[code] = best
    return out


def _km(lon0: float, lat0: float, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Great-circle kilometres from one point to many (WGS84 degrees)."""
    p0, p = np.radians(lat0), np.radians(lat)
    a = np.sin((p - p0) / 2) ** 2 + np.cos(p0) * np.cos(p) * np.sin(np.radians(lon - lon0) / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _audit_villages(standards, settlements, clinics, doc, exempt) -> list[dict]:
    """Administrative villages without a clinic, except the township-seat village and small sharing villages."""
    rule = f"village_clinic {RULES['village_clinic']} — {doc}"
    out = []
    have = set(clinics["admin_code"].astype(str))
    small = float(standards.get("village_share_population_below", 0) or 0)
    share_min = float(standards.get("village_share_within_min", 30))
    vil = settlements[settlements["kind"].eq("village")]
    for _, v in vil.iterrows():
        if v["admin_code"] in have:
            continue
        if standards.get("township_seat_village_exempt", True) and v.get("ur_code") == "210":
            exempt.append(_row(v["settlement_id"], v["name"], "village", rule, "township-seat village (乡镇卫生院所在村)",
                               v["county_code"]))
            continue
        pop = v.get("population", np.nan)
        if small and pop < small and v["t_clinic_min"] <= share_min:
            exempt.append(_row(v["settlement_id"], v["name"], "village", rule,
                               f"{pop:.0f} people < {small:.0f}: shares a clinic {v['t_clinic_min']:.0f} min away",
                               v["county_code"]))
            continue
        out.append(_row(v["settlement_id"], v["name"], "village", rule,
                        f"no village clinic with this village's code; nearest clinic {v['t_clinic_min']:.0f} min",
                        v["county_code"]))
    return out
