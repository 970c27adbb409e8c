"""Every output column: meaning, unit and its ≤10-character shapefile alias."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One output column: its full name, shapefile alias (≤10 chars), unit and meaning."""

    name: str
    alias: str
    unit: str
    description: str


def _cols(*rows: tuple[str, str, str, str]) -> dict[str, Column]:
    return {r[0]: Column(*r) for r in rows}


SETTLEMENT_COLUMNS = _cols(
    ("settlement_id", "sett_id", "", "unique settlement id (12-digit statistical code for gazetteer rows)"),
    ("name", "name", "", "name (Chinese)"),
    ("kind", "kind", "", "village | township_seat | county_seat | relocation"),
    ("admin_code", "admin_code", "", "12-digit statistical code of the unit or of its host unit"),
    ("township_code", "town_code", "", "12-digit code of the parent township"),
    ("county_code", "cnty_code", "", "6-digit current county code (reconciled to the boundaries)"),
    ("county_name", "cnty_name", "", "county name (current)"),
    ("prefecture_code", "pref_code", "", "6-digit prefecture code"),
    ("ur_code", "ur_code", "", "城乡分类代码 urban-rural class (111/112/121/122/210/220)"),
    ("lon", "lon", "degrees", "WGS84 longitude of the position used"),
    ("lat", "lat", "degrees", "WGS84 latitude of the position used"),
    ("loc_quality", "loc_qual", "", "exact | village | township | county: how the position was located"),
    ("coord_source", "coord_src", "", "coordinate system of the input and conversion applied"),
    ("population", "pop", "people", "resident population (NaN when unknown)"),
    ("pop_source", "pop_src", "", "data | census_split | missing"),
    ("t_clinic_min", "t_clinic", "minutes", "travel time to the nearest primary-care facility (village clinic or better)"),
    ("t_thc_min", "t_thc", "minutes", "travel time to the nearest township health centre or better"),
    ("t_county_min", "t_county", "minutes", "travel time to the nearest county hospital or better"),
    ("t_pref_min", "t_pref", "minutes", "travel time to the nearest prefecture hospital"),
    ("nearest_clinic_id", "near_clin", "", "facility_id of the nearest primary-care facility"),
    ("nearest_thc_id", "near_thc", "", "facility_id of the nearest township health centre or better"),
    ("nearest_county_id", "near_cnty", "", "facility_id of the nearest county hospital or better"),
    ("nearest_pref_id", "near_pref", "", "facility_id of the nearest prefecture hospital"),
    ("offroad_m", "offroad_m", "metres", "straight-line length of the off-road leg to the road"),
    ("offroad_min", "offroad_mn", "minutes", "time of the off-road leg (terrain-adjusted walking/off-road speed)"),
    ("time_basis", "time_basis", "", "measured (own position) | township_worst (approximated: worst exactly-located time in the township) | ..."),
    ("status", "status", "", "ok | unreachable | outside_region"),
    ("gap_clinic", "gap_clin", "", "True when beyond the clinic threshold"),
    ("gap_thc", "gap_thc", "", "True when beyond the township-health-centre threshold"),
    ("gap_county", "gap_cnty", "", "True when beyond the county-hospital threshold"),
    ("gap_severe", "gap_sev", "", "True when beyond the severe-gap county-hospital threshold"),
)

COUNTY_SUMMARY_COLUMNS = _cols(
    ("county_code", "cnty_code", "", "6-digit current county code"),
    ("county_name", "cnty_name", "", "county name"),
    ("prefecture_code", "pref_code", "", "6-digit prefecture code"),
    ("n_settlements", "n_sett", "count", "settlements in the county"),
    ("n_exact", "n_exact", "count", "settlements with their own coordinates"),
    ("population", "pop", "people", "population of the settlements"),
    ("share_clinic_30", "sh_clin30", "share", "share of settlements within 30 min of a clinic"),
    ("share_county_60", "sh_cnty60", "share", "share of settlements within 60 min of a county hospital"),
    ("share_county_120", "sh_cnty120", "share", "share of settlements within 120 min of a county hospital"),
    ("pop_share_county_60", "psh_cnty60", "share", "population share within 60 min of a county hospital"),
    ("median_t_county_min", "med_tcnty", "minutes", "median travel time to a county hospital"),
    ("max_t_county_min", "max_tcnty", "minutes", "maximum travel time to a county hospital"),
    ("n_blank_spots", "n_blank", "count", "institutional blank spots (空白点) found in the county"),
)

BLANK_SPOT_COLUMNS = _cols(
    ("unit_code", "unit_code", "", "code of the unit with the gap"),
    ("unit_name", "unit_name", "", "name of the unit"),
    ("unit_level", "unit_lvl", "", "county | township | village | relocation"),
    ("rule", "rule", "", "rule key and the standard's Chinese name"),
    ("detail", "detail", "", "evidence"),
)

FACILITY_COLUMNS = _cols(
    ("facility_id", "fac_id", "", "facility id"),
    ("name", "name", "", "name"),
    ("level", "level", "", "village_clinic | temporary_point | township_health_centre | county_hospital | county_regional_centre | prefecture_hospital"),
    ("admin_code", "admin_code", "", "12-digit code of its unit"),
    ("county_code", "cnty_code", "", "6-digit current county code"),
    ("lon", "lon", "degrees", "WGS84 longitude"),
    ("lat", "lat", "degrees", "WGS84 latitude"),
    ("coord_sys", "coord_sys", "", "coordinate system the register gave"),
    ("basis", "basis", "", "how the facility's existence and position are known"),
)

SITE_COLUMNS = _cols(
    ("site_id", "site_id", "", "candidate id of the chosen site (S: settlement, F: facility, road: junction)"),
    ("candidate_id", "cand_id", "", "candidate id"),
    ("facility_id", "fac_id", "", "id the proposed facility takes when added to the register"),
    ("source", "source", "", "where the candidate came from"),
    ("n_reach", "n_reach", "count", "settlements within the threshold of the site"),
    ("n_new", "n_new", "count", "settlements within the threshold that were not before"),
    ("pop_new", "pop_new", "people", "people within the threshold who were not before"),
    ("n_only", "n_only", "count", "settlements only this site brings within the threshold"),
    ("pop_only", "pop_only", "people", "people only this site brings within the threshold (remove-one)"),
    ("n_catch", "n_catch", "count", "settlements for which this site is the nearest chosen site"),
    ("pop_catch", "pop_catch", "people", "people in the site's catchment"),
    ("n_prio_new", "n_prio_new", "count", "priority (relocation) settlements newly covered"),
    ("new_counties", "new_cnty", "", "counties where the site's gain lies (codes, ;-separated)"),
)

ASSIGNMENT_COLUMNS = _cols(
    ("time_min", "time_min", "minutes", "time to the nearest chosen site (empty when none within the threshold)"),
    ("n_covering", "n_cover", "count", "chosen sites within the threshold"),
    ("cov_before", "cov_before", "", "within the threshold before (existing facilities)"),
    ("cov_after", "cov_after", "", "within the threshold after"),
    ("newly_cov", "newly_cov", "", "newly within the threshold"),
    ("uncoverable", "uncover", "", "no candidate within the threshold"),
    ("weight", "weight", "people", "population weight used by the model"),
    ("priority", "priority", "", "priority settlement (relocation)"),
)

LAYERS = {
    "settlements": SETTLEMENT_COLUMNS,
    "county_summary": COUNTY_SUMMARY_COLUMNS,
    "blank_spots": BLANK_SPOT_COLUMNS,
    "facilities": FACILITY_COLUMNS,
    "proposed_sites": SITE_COLUMNS,
    "assignments": ASSIGNMENT_COLUMNS,
}

#: Facility levels from lowest to highest (standards.md).
FACILITY_LEVELS = (
    "village_clinic",
    "temporary_point",
    "township_health_centre",
    "county_hospital",
    "county_regional_centre",
    "prefecture_hospital",
)

#: Level groups: the nearest facility "of that level or higher".
LEVEL_GROUPS = {
    "clinic": FACILITY_LEVELS,
    "thc": ("township_health_centre", "county_hospital", "county_regional_centre", "prefecture_hospital"),
    "county": ("county_hospital", "county_regional_centre", "prefecture_hospital"),
    "pref": ("prefecture_hospital",),
}

SETTLEMENT_KINDS = ("village", "township_seat", "county_seat", "relocation")
LOC_QUALITIES = ("exact", "village", "township", "county")


def shapefile_aliases(columns) -> dict[str, str]:
    """Map full column names to ≤10-character shapefile names; unknown columns are truncated uniquely."""
    known = {c.name: c.alias for layer in LAYERS.values() for c in layer.values()}
    out: dict[str, str] = {}
    used: set[str] = set()
    for col in columns:
        if col == "geometry":
            continue
        alias = known.get(col, col[:10])
        base, i = alias, 1
        while alias in used:
            suffix = str(i)
            alias = base[: 10 - len(suffix)] + suffix
            i += 1
        used.add(alias)
        out[col] = alias
    return out


def schema_markdown() -> str:
    """The field table for the docs: layer, column, shapefile alias, unit, meaning."""
    lines = ["| layer | column | shapefile | unit | meaning |", "|---|---|---|---|---|"]
    for layer, cols in LAYERS.items():
        for c in cols.values():
            lines.append(f"| {layer} | `{c.name}` | `{c.alias}` | {c.unit} | {c.description} |")
    return "\n".join(lines)
