"""Every output column: meaning, unit and its ≤10-character shapefile alias."""
from __future__ import annotations

import re
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
    ("time_basis", "time_basis", "", "measured (own coordinates) | township_area (no coordinates: median over the habitable cells of its township's area) | county_area (the same over its county: township seat not located) | host_position (relocation site at its host unit's seat) | position (no habitable cell found: its position's time)"),
    ("range_area", "range_area", "", "area the time range of an approximated row comes from: township | county (empty: measured)"),
    ("status", "status", "", "ok | unreachable | outside_region"),
    ("gap_clinic", "gap_clin", "", "True when beyond the clinic threshold"),
    ("gap_thc", "gap_thc", "", "True when beyond the township-health-centre threshold"),
    ("gap_county", "gap_cnty", "", "True when beyond the county-hospital threshold"),
    ("gap_severe", "gap_sev", "", "True when beyond the severe-gap county-hospital threshold"),
    ("program", "program", "", "relocation programme (relocation settlements; empty otherwise)"),
    ("year", "year", "", "year the relocation settlement was built (relocation settlements)"),
    ("snap_lon", "snap_lon", "degrees", "WGS84 longitude of the road point the off-road leg reaches"),
    ("snap_lat", "snap_lat", "degrees", "WGS84 latitude of the road point the off-road leg reaches"),
    ("n_measured", "n_measured", "count", "settlements whose times are measured at their own position"),
    ("uncertain", "uncertain", "", "True when fewer than half of the unit's settlements have their own coordinates: its "
                                   "figures rest mostly on approximated positions (see the _low/_high ranges); the map "
                                   "shades such units as uncertain"),
)

COUNTY_SUMMARY_COLUMNS = _cols(
    ("county_code", "cnty_code", "", "6-digit current county code"),
    ("county_name", "cnty_name", "", "county name"),
    ("prefecture_code", "pref_code", "", "6-digit prefecture code"),
    ("prefecture_name", "pref_name", "", "prefecture name"),
    ("n_settlements", "n_sett", "count", "settlements in the unit"),
    ("n_exact", "n_exact", "count", "settlements with their own coordinates"),
    ("n_unreachable", "n_unreach", "count", "settlements with no road path to a facility (status unreachable)"),
    ("population", "pop", "people", "population of the settlements"),
    ("median_t_county_min", "med_tcnty", "minutes", "median travel time to a county hospital"),
    ("median_t_county_low_min", "med_tcntyl", "minutes", "median of the low ends of the settlements' time ranges "
                                                          "to a county hospital"),
    ("median_t_county_high_min", "med_tcntyh", "minutes", "median of the high ends of the settlements' time ranges "
                                                           "to a county hospital"),
    ("max_t_county_min", "max_tcnty", "minutes", "maximum travel time to a county hospital"),
    ("n_blank_spots", "n_blank", "count", "institutional blank spots (空白点) found in the unit"),
)
# share_{level}_{minutes}, pop_share_…, share_exact_…: generated by column_info (any threshold).

BLANK_SPOT_COLUMNS = _cols(
    ("unit_code", "unit_code", "", "code of the unit with the gap"),
    ("unit_name", "unit_name", "", "name of the unit"),
    ("unit_level", "unit_lvl", "", "county | township | village | relocation"),
    ("rule", "rule", "", "rule key and the standard's Chinese name"),
    ("detail", "detail", "", "evidence"),
    ("county_code", "cnty_code", "", "6-digit current county code of the unit"),
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
    ("loc_quality", "loc_qual", "", "how the facility's position was located (exact, or its unit's seat)"),
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
    ("n_assigned", "n_assign", "count", "p-median / p-center: settlements for which this point is nearer than their facility"),
    ("pop_assigned", "pop_assign", "people", "p-median / p-center: people of those settlements"),
    ("pop_minutes_saved", "pop_min_sv", "person-minutes", "p-median / p-center: people × minutes saved by this point"),
    ("served_people", "served", "people", "with a capacity: people this point serves (settlement: people served)"),
    ("name", "name", "", "name of the candidate site (the settlement or facility it stands at)"),
    ("lon", "lon", "degrees", "WGS84 longitude of the site"),
    ("lat", "lat", "degrees", "WGS84 latitude of the site"),
    ("county_code", "cnty_code", "", "6-digit county code of the site"),
    ("county_name", "cnty_name", "", "county name of the site"),
)

ASSIGNMENT_COLUMNS = _cols(
    ("settlement_id", "sett_id", "", "settlement id (as in settlements.csv)"),
    ("site_id", "site_id", "", "the nearest chosen site within the threshold (empty when none)"),
    ("time_min", "time_min", "minutes", "time to the nearest chosen site (empty when none within the threshold)"),
    ("n_covering", "n_cover", "count", "chosen sites within the threshold"),
    ("cov_before", "cov_before", "", "within the threshold before (existing facilities)"),
    ("cov_after", "cov_after", "", "within the threshold after"),
    ("newly_cov", "newly_cov", "", "newly within the threshold"),
    ("uncoverable", "uncover", "", "no candidate within the threshold"),
    ("weight", "weight", "people", "population weight used by the model"),
    ("priority", "priority", "", "priority settlement (relocation)"),
    ("time_before_min", "t_before", "minutes", "p-median / p-center: minutes to the nearest existing facility (capped at "
                                                "the matrix limit)"),
    ("time_after_min", "t_after", "minutes", "p-median / p-center: minutes to the nearer of that and the new points"),
    ("saved_min", "saved_min", "minutes", "p-median / p-center: minutes saved by the new points"),
    ("population", "pop", "people", "people of the settlement (the model's weight)"),
)

ACCESS_COLUMNS = _cols(
    ("n_in_catch", "n_in_catch", "count", "facilities of the level within the catchment (with a positive weight)"),
    ("access_score", "acc_score", "supply per person", "floating-catchment accessibility: Σ over facilities in the "
                                                      "catchment of weight × supply / weighted demand (docs/access.md); "
                                                      "per county the population-weighted mean"),
    ("access_per_10k", "acc_10k", "supply per 10,000 people", "access_score × 10,000"),
    ("n_facilities", "n_fac", "count", "facilities of the level in the county"),
    ("supply", "supply", "supply units", "supply: the register column given by --supply, else 1 per facility "
                                         "(per county: the sum over its facilities)"),
    ("supply_per_10k", "sup_10k", "supply per 10,000 people", "the county's own supply per 10,000 of its people "
                                                             "(the crude ratio, no travel)"),
    ("demand_potential", "demand_pot", "people", "weighted demand in the facility's catchment: Σ weight × population"),
    ("supply_ratio", "sup_ratio", "supply per person", "supply / demand_potential (0 when no demand reaches it)"),
)

OWN_UNIT_COLUMNS = _cols(
    ("t_county_own_min", "t_cnty_own", "minutes", "travel time to the nearest county hospital (or better) of the "
                                                 "settlement's own county (就地就医); empty when none within "
                                                 "[access] own_county_limit_min"),
    ("t_thc_own_min", "t_thc_own", "minutes", "travel time to the nearest township health centre (or better) of the "
                                             "settlement's own township; empty when none within "
                                             "[access] own_township_limit_min"),
    ("own_county_id", "own_cnty", "", "facility_id of the own county's nearest county-level facility"),
    ("own_thc_id", "own_thc", "", "facility_id of the own township's nearest health centre"),
    ("own_county_status", "own_cnty_s", "", "own (the nearest is the county's own) | crossed (the nearest is across "
                                           "the county border) | beyond_limit | none_in_unit"),
    ("own_thc_status", "own_thc_s", "", "own | crossed (the nearest is across the township border) | beyond_limit | "
                                       "none_in_unit (the township has no health centre in the register)"),
    ("gain_county_min", "gain_cnty", "minutes", "minutes saved by going to the nearest county-level facility instead "
                                               "of the own county's (0 when it is the own)"),
    ("gain_thc_min", "gain_thc", "minutes", "minutes saved by going to the nearest health centre instead of the own "
                                           "township's"),
    ("n_cross_county", "n_x_cnty", "count", "settlements whose nearest county-level facility is in another county"),
    ("pop_cross_county", "pop_x_cnty", "people", "people whose nearest county-level facility is in another county"),
    ("n_cross_thc", "n_x_thc", "count", "settlements whose nearest health centre is in another township"),
    ("pop_cross_thc", "pop_x_thc", "people", "people whose nearest health centre is in another township"),
)

REFERRAL_COLUMNS = _cols(
    ("t_referral_min", "t_referral", "minutes", "from the settlement's nearest township centre (or better) to that "
                                               "centre's nearest county hospital (or better); 0 when the centre is "
                                               "itself county level"),
    ("referral_county_id", "ref_cnty", "", "facility_id of the county-level facility the chain ends at"),
    ("t_chain_min", "t_chain", "minutes", "referral chain: settlement → its nearest township centre → that centre's "
                                         "nearest county hospital (t_thc_min + t_referral_min)"),
    ("chain_extra_min", "chain_xtra", "minutes", "t_chain_min − t_county_min: what the referral chain costs over "
                                                "the direct trip (a few minutes below 0 where the centre's own "
                                                "straight legs beat the direct search, docs/access.md)"),
)

REFERRAL_FACILITY_COLUMNS = _cols(
    ("facility_id", "fac_id", "", "facility id (as in the register)"),
    ("name", "name", "", "facility name"),
    ("level", "level", "", "facility level (schema.FACILITY_LEVELS)"),
    ("county_code", "cnty_code", "", "6-digit county code of the facility"),
    ("t_thc_min", "t_thc", "minutes", "travel time from the facility to the nearest township health centre or better "
                                     "(empty for a centre and above)"),
    ("nearest_thc_id", "near_thc", "", "facility_id of that township health centre or better"),
    ("t_county_min", "t_county", "minutes", "travel time from the facility to the nearest county hospital or better "
                                           "(empty for a county-level facility and above)"),
    ("nearest_county_id", "near_cnty", "", "facility_id of that county-level facility"),
    ("t_pref_min", "t_pref", "minutes", "travel time from the facility to the nearest prefecture hospital (empty for "
                                       "a prefecture hospital)"),
    ("nearest_pref_id", "near_pref", "", "facility_id of that prefecture hospital"),
    ("lon", "lon", "degrees", "WGS84 longitude of the facility"),
    ("lat", "lat", "degrees", "WGS84 latitude of the facility"),
)

COVERAGE_COLUMNS = _cols(
    ("people_covered", "ppl_cov", "people", "people of the settlement served by some facility within the time limit "
                                           "and its capacity (may be part of the settlement)"),
    ("covered_by", "cov_by", "", "facility_id of the facility that served most of the settlement's people"),
    ("t_covered_min", "t_cov", "minutes", "travel time to that facility"),
    ("uncovered_reason", "uncov_why", "", "empty when all are covered; capacity (a facility is within the limit but "
                                         "full) | distance (none within the limit)"),
    ("order_rank", "order", "", "the order in which the facility took its people (1 first)"),
    ("capacity", "capacity", "people", "people the facility can serve (--capacity)"),
    ("people_served", "pop_served", "people", "people the facility serves"),
    ("capacity_left", "cap_left", "people", "capacity − people_served"),
    ("n_served", "n_served", "count", "settlements the facility serves, in whole or in part"),
    ("served_max_min", "served_max", "minutes", "travel time to the farthest settlement it serves"),
    ("pop_covered", "pop_cov", "people", "people covered"),
    ("pop_uncov_capacity", "pop_nocap", "people", "people uncovered for want of capacity (some facility within the "
                                                  "limit, all full)"),
    ("pop_uncov_distance", "pop_far", "people", "people uncovered for distance (no facility within the limit)"),
    ("covered_share", "cov_share", "share", "pop_covered / population"),
)

CATCHMENT_COLUMNS = _cols(
    ("band_from_min", "band_from", "minutes", "lower end of the travel-time band (exclusive; 0: inclusive)"),
    ("band_to_min", "band_to", "minutes", "upper end of the travel-time band (inclusive)"),
    ("n_settlements", "n_sett", "count", "settlements whose cell lies in the polygon"),
    ("population", "pop", "people", "people of those settlements"),
    ("area_km2", "area_km2", "km²", "area of the polygon"),
)

GRID_ZONAL_COLUMNS = _cols(
    ("level", "level", "", "facility level group (clinic | thc | county | pref: that level or higher)"),
    ("grid_population", "grid_pop", "people", "people of the population grid in the county"),
)
# pop_within_{minutes}: generated by column_info.

OD_COLUMNS = _cols(
    ("settlement_id", "sett_id", "", "settlement id (as in settlements.csv)"),
    ("facility_id", "fac_id", "", "facility id (as in the register)"),
    ("minutes", "minutes", "minutes", "travel time from the settlement's position to the facility (pairs within "
                                      "the catchment only)"),
)

LAYERS = {
    "settlements": SETTLEMENT_COLUMNS,
    "relocation": SETTLEMENT_COLUMNS,
    "county_summary": COUNTY_SUMMARY_COLUMNS,
    "prefecture_summary": COUNTY_SUMMARY_COLUMNS,
    "blank_spots": BLANK_SPOT_COLUMNS,
    "exemptions": BLANK_SPOT_COLUMNS,
    "cannot_check": BLANK_SPOT_COLUMNS,
    "facilities": FACILITY_COLUMNS,
    "proposed_sites": SITE_COLUMNS,
    "proposed_points": SITE_COLUMNS,
    "regional_centres": SITE_COLUMNS,
    "optimal_centres": SITE_COLUMNS,
    "assignments": ASSIGNMENT_COLUMNS,
    "proposed_assignments": ASSIGNMENT_COLUMNS,
    "centre_assignments": ASSIGNMENT_COLUMNS,
    "access": ACCESS_COLUMNS,
    "od": OD_COLUMNS,
    "own_unit": OWN_UNIT_COLUMNS,
    "referral": REFERRAL_FACILITY_COLUMNS,
    "referral_chains": REFERRAL_COLUMNS,
    "coverage": COVERAGE_COLUMNS,
    "catchments": CATCHMENT_COLUMNS,
    "grid_zonal": GRID_ZONAL_COLUMNS,
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

#: Levels that count as a county-level hospital for the "每县至少1所县级公立医院" rule, and as a village clinic.
COUNTY_HOSPITAL_LEVELS = ("county_hospital", "county_regional_centre")
CLINIC_LEVELS = ("village_clinic", "temporary_point")

#: The one level vocabulary: each level's Chinese and English name, then the other names a register's
#: `level` column may use for it (the names planners write). Matching ignores case, spaces, dashes and
#: underscores (`County_Hospital`, `county hospital`, `县 医院`); see `normalise_level`.
FACILITY_LEVEL_NAMES = {
    "village_clinic": ("村卫生室", "village clinic",
                       ("卫生室", "村卫生所", "村级卫生室", "村医务室", "社区卫生服务站")),
    "temporary_point": ("临时医疗点", "temporary point",
                        ("医疗点", "临时医疗站", "流动医疗点", "巡诊点", "temporary medical point")),
    "township_health_centre": ("乡镇卫生院", "township health centre",
                               ("卫生院", "乡卫生院", "镇卫生院", "中心卫生院", "乡镇中心卫生院", "社区卫生服务中心",
                                "township health center", "thc")),
    "county_hospital": ("县级医院", "county hospital",
                        ("县医院", "县人民医院", "县级公立医院", "县级人民医院", "县中医院", "县中医医院", "县藏医院",
                         "县级综合医院")),
    "county_regional_centre": ("县域医疗次中心", "county regional centre",
                               ("区域医疗中心", "县级区域医疗中心", "区域医疗次中心", "county regional center",
                                "regional centre", "regional center")),
    "prefecture_hospital": ("地市级医院", "prefecture hospital",
                            ("市级医院", "地区人民医院", "地区医院", "地级医院", "地市医院", "地区级医院", "州人民医院",
                             "prefecture-level hospital")),
}


def _level_key(name) -> str:
    return "".join(ch for ch in str(name).strip().lower() if ch not in " \t-_\u3000")


_LEVEL_LOOKUP = {_level_key(alias): level for level, (zh, en, others) in FACILITY_LEVEL_NAMES.items()
                 for alias in (level, zh, en, *others)}


def normalise_level(name) -> str:
    """The canonical facility level (one of FACILITY_LEVELS) for a name a register uses; ValueError if unknown."""
    level = _LEVEL_LOOKUP.get(_level_key(name))
    if level is None:
        raise ValueError(f"unknown facility level '{name}' (expected one of {', '.join(FACILITY_LEVELS)}, or a "
                         f"Chinese name such as {', '.join(zh for zh, _, _ in FACILITY_LEVEL_NAMES.values())}; "
                         "README lists every accepted name)")
    return level


SETTLEMENT_KINDS = ("village", "township_seat", "county_seat", "relocation")
LOC_QUALITIES = ("exact", "village", "township", "county")


#: Level groups in column names: (short name in shapefile aliases, shorter fallback, words).
_LEVEL_WORDS = {
    "clinic": ("clin", "cl", "a clinic (village clinic or better)"),
    "thc": ("thc", "th", "a township health centre or better"),
    "county": ("cnty", "co", "a county hospital or better"),
    "pref": ("pref", "pr", "a prefecture hospital"),
}
_SHARE = re.compile(r"^(?P<pop>pop_)?share_(?P<exact>exact_)?(?P<level>clinic|thc|county|pref)(?P<own>_own)?"
                    r"_(?P<min>\d+(?:\.\d+)?)$")
_WITHIN = re.compile(r"^pop_within_(?P<min>\d+(?:\.\d+)?)$")
_GAIN = re.compile(r"^(?P<what>n|pop)_gain_(?P<level>thc|county)_(?P<min>\d+(?:\.\d+)?)$")
_TIME_RANGE = re.compile(r"^t_(?P<level>clinic|thc|county|pref)_(?P<end>low|high)_min$")
_RANGE_END = {"low": ("l", "lower"), "high": ("h", "upper")}


def column_info(name: str, layer: str | None = None) -> Column | None:
    """The schema entry of an output column, or None when it has none.

    Exact entries first (the layer's own, then any layer's). Generated ones: coverage shares at any
    threshold (`share_{level}_{minutes}`, `pop_share_…`, `share_exact_…`), the time range ends
    `t_{level}_low_min` / `t_{level}_high_min`, and `X_low` / `X_high` for any documented column X
    (the ends of X's range).
    """
    own = LAYERS.get(layer or "", {})
    if name in own:
        return own[name]
    for cols in LAYERS.values():
        if name in cols:
            return cols[name]
    m = _SHARE.match(name)
    if m:
        return _share_column(name, m, 10)
    m = _WITHIN.match(name)
    if m:
        return Column(name, f"pop_w{m['min'].replace('.', '')}"[:10], "people",
                      f"people of the population grid in cells within {m['min']} min of the level's nearest facility")
    m = _GAIN.match(name)
    if m:
        short = _LEVEL_WORDS[m["level"]][0]
        unit = "county" if m["level"] == "county" else "township"
        return Column(name, f"{m['what'][0]}g_{short}{m['min'].replace('.', '')}"[:10],
                      "count" if m["what"] == "n" else "people",
                      f"{'settlements' if m['what'] == 'n' else 'people'} within {m['min']} min of "
                      f"{_LEVEL_WORDS[m['level']][2]} only by crossing the {unit} border (beyond it in their own {unit})")
    m = _TIME_RANGE.match(name)
    if m:
        short, _, words = _LEVEL_WORDS[m["level"]]
        letter, end = _RANGE_END[m["end"]]
        return Column(name, f"t_{short}_{letter}"[:10], "minutes",
                      f"{end} end of the travel-time range to {words} (approximated positions: the range their "
                      "true time may take; measured: equal to the time)")
    for suffix, (letter, end) in (("_low", _RANGE_END["low"]), ("_high", _RANGE_END["high"])):
        if name.endswith(suffix):
            base_name = name[: -len(suffix)]
            m = _SHARE.match(base_name)
            base = _share_column(base_name, m, 9) if m else column_info(base_name, layer)
            if base is None:
                return None
            alias = base.alias if len(base.alias) <= 9 else base.alias[:9]
            return Column(name, alias + letter, base.unit, f"{end} end of the range of: {base.description}")
    return None


def _share_column(name: str, m: re.Match, max_len: int) -> Column:
    """A coverage-share column's entry; its alias fits in `max_len` characters (e.g. sh_cnty60, psh_cnty60)."""
    own = m.groupdict().get("own")
    prefix = ("p" if m["pop"] else "") + "sh" + ("x" if m["exact"] else "") + ("o" if own else "")
    minutes = m["min"].replace(".", "")
    long, short, words = _LEVEL_WORDS[m["level"]]
    alias = next((a for abbr in (long, short) for a in (f"{prefix}_{abbr}{minutes}", f"{prefix}{abbr}{minutes}")
                  if len(a) <= max_len), f"{prefix}{short}{minutes}"[:max_len])
    who = ("population share" if m["pop"] else "share") + (" of exactly located settlements" if m["exact"] else
                                                           "" if m["pop"] else " of settlements")
    where = "" if not own else (" of the settlement's own county" if m["level"] == "county" else
                                " of the settlement's own township")
    return Column(name, alias, "share", f"{who} within {m['min']} min of {words}{where}")


def shapefile_aliases(columns, layer: str | None = None) -> dict[str, str]:
    """Map full column names to ≤10-character shapefile names; unknown columns are truncated uniquely."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for col in columns:
        if col == "geometry":
            continue
        info = column_info(col, layer)
        alias = info.alias if info is not None else col[:10]
        base, i = alias, 1
        while alias in used:
            suffix = str(i)
            alias = base[: 10 - len(suffix)] + suffix
            i += 1
        used.add(alias)
        out[col] = alias
    return out


def schema_markdown() -> str:
    """The field table for the docs: layer, column, shapefile alias, unit, meaning (generated columns by pattern)."""
    lines = ["| layer | column | shapefile | unit | meaning |", "|---|---|---|---|---|"]
    shown: set[int] = set()
    for layer, cols in LAYERS.items():
        if id(cols) in shown:
            continue
        shown.add(id(cols))
        names = [k for k, v in LAYERS.items() if v is cols]
        for c in cols.values():
            lines.append(f"| {', '.join(names)} | `{c.name}` | `{c.alias}` | {c.unit} | {_md(c.description)} |")
    for example in ("share_county_60", "pop_share_county_120", "share_exact_county_60", "t_county_low_min",
                    "share_county_60_low", "share_county_60_high"):
        c = column_info(example)
        lines.append(f"| (generated, any minutes) | `{c.name}` | `{c.alias}` | {c.unit} | {_md(c.description)} |")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")
