"""The blank-spot audit (空白点): each region's written standards as rules over its register and times."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

COUNTY_LEVELS = ("county_hospital", "county_regional_centre")
CLINIC_LEVELS = ("village_clinic", "temporary_point")

RULES = {
    "county_hospital": "每县至少{n}所县级公立医院 (county-level public hospital)",
    "township_health_centre": "每个乡镇1所政府办乡镇卫生院 (government township health centre)",
    "village_clinic": "每个行政村1个村卫生室 (village clinic)",
    "relocation_clinic": "易地搬迁安置点就医保障 / 临时医疗点 (relocation settlement access)",
    "register_scope": "登记表覆盖范围 (what the register can show)",
}
BLANK_COLUMNS = ["unit_code", "unit_name", "unit_level", "rule", "detail", "county_code"]


@dataclass
class AuditResult:
    """Blank spots found, exemptions applied (not gaps, but recorded), and rules the data cannot audit."""

    blank_spots: pd.DataFrame
    exemptions: pd.DataFrame
    not_auditable: list[str]

    def counts_by_rule(self) -> dict[str, int]:
        return self.blank_spots["rule"].str.split(" ").str[0].value_counts().to_dict() if len(self.blank_spots) else {}


def _row(code, name, level, rule, detail, county=""):
    return {"unit_code": code, "unit_name": name, "unit_level": level, "rule": rule, "detail": detail, "county_code": county}


def audit_blank_spots(*, standards: dict, settlements: pd.DataFrame, facilities: pd.DataFrame | None,
                      counties: pd.DataFrame, gazetteer: pd.DataFrame | None, county_codes: pd.DataFrame | None,
                      thresholds: dict, register_note: str = "") -> AuditResult:
    """Apply the region's standards (config [standards]) and return the blank spots with their evidence."""
    spots, exempt, cannot = [], [], []
    doc = standards.get("document", "")
    fac = facilities if facilities is not None else pd.DataFrame(columns=["facility_id", "level", "admin_code", "county_code"])
    note = f" ({register_note})" if register_note else ""

    # --- county hospitals
    n_req = int(standards.get("county_hospitals_required", 1))
    scope = standards.get("county_hospital_scope", "all")
    poor = set(map(str, standards.get("poor_counties", [])))
    per_county = fac[fac["level"].isin(COUNTY_LEVELS)].groupby("county_code").size()
    pref_in = set(fac.loc[fac["level"].eq("prefecture_hospital"), "county_code"])
    seat_times = settlements[settlements["kind"].eq("county_seat")].groupby("county_code")["t_pref_min"].min()
    rule = f"county_hospital {RULES['county_hospital'].format(n=n_req)} — {doc}"
    for code, name in zip(counties["county_code"], counties["county_name"]):
        if scope == "poor" and code not in poor:
            continue
        have = int(per_county.get(code, 0))
        if have >= n_req:
            continue
        if standards.get("county_may_rely_on_prefecture"):
            t_pref = seat_times.get(code, np.nan)
            if code in pref_in or t_pref <= thresholds["county"]:
                why = "a prefecture hospital stands in the county" if code in pref_in else \
                    f"its seat is {t_pref:.0f} min from a prefecture hospital"
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
        for code, name in zip(towns["code"], towns["name"]):
            if code in thc_codes:
                continue
            county = cc.get(code[:6], code[:6])
            urban = str(name).endswith(("街道办事处", "办事处", "街道"))
            t = town_t.get(code, np.nan)
            if standards.get("township_exempt_urban_districts") and urban and t <= thresholds["thc"]:
                exempt.append(_row(code, name, "township", rule, f"urban subdistrict served within {t:.0f} min", county))
                continue
            located = "its seat is unlocated in the gazetteer" if not np.isfinite(
                gazetteer.set_index("code").at[code, "lon"]) else "its seat is located"
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
    return AuditResult(bs, ex, cannot)


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
