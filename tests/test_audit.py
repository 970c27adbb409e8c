"""The blank-spot rules of each region's standard, on small hand-made cases."""
import numpy as np
import pandas as pd

from geoaccess.audit import audit_blank_spots
from geoaccess.config import load_region

TH = {"clinic": 15, "thc": 30, "county": 60, "county_severe": 120, "pref": 240}


def _case(levels_by_unit, *, county_codes=("500101", "500102"), village_pop=(500, 1200, 300)):
    gaz = pd.DataFrame({
        "code": ["500101001000", "500101002000", "500102001000"],
        "name": ["甲镇", "乙乡", "丙街道办事处"], "level": ["town"] * 3, "lon": [106.0, np.nan, 106.5],
    })
    settlements = pd.DataFrame({
        "settlement_id": ["500101001000", "500101002000", "500102001000", "500101001201", "500101001202", "500101002203", "R1"],
        "name": ["甲镇", "乙乡", "丙街道", "一村", "二村", "三村", "安置点"],
        "kind": ["county_seat", "township_seat", "township_seat", "village", "village", "village", "relocation"],
        "admin_code": ["500101001000", "500101002000", "500102001000", "500101001201", "500101001202", "500101002203", "500101001000"],
        "ur_code": ["", "", "", "210", "220", "220", ""],
        "county_code": ["500101", "500101", "500102", "500101", "500101", "500101", "500101"],
        "loc_quality": ["exact"] * 7,
        "population": [0, 0, 0, *village_pop, 100],
        "t_clinic_min": [0, 5, 10, 3, 20, 40, 45], "t_thc_min": [0, 5, 10, 3, 20, 40, 45],
        "t_county_min": [0, 50, 70, 30, 40, 80, 60], "t_pref_min": [90, 100, 20, 90, 90, 120, 100],
    })
    rows = [(f"F{i}", lvl, unit, unit[:6]) for i, (unit, lvl) in enumerate(levels_by_unit)]
    fac = pd.DataFrame(rows, columns=["facility_id", "level", "admin_code", "county_code"])
    counties = pd.DataFrame({"county_code": list(county_codes), "county_name": ["万州区", "黔江区"]})
    cc = pd.DataFrame({"county_code": list(county_codes)}, index=list(county_codes))
    return dict(settlements=settlements, facilities=fac, counties=counties, gazetteer=gaz, county_codes=cc)


def test_tibet_one_county_hospital_per_county_with_prefecture_exemption():
    std = load_region("tibet").section("standards")
    case = _case([("500101000000", "county_hospital"), ("500101001000", "township_health_centre"),
                  ("500101002000", "township_health_centre")])
    res = audit_blank_spots(standards=std, thresholds=TH, **case)
    # county 500102 has no county hospital, but its seat-less county has t_pref 20 at 丙街道? It has no county_seat
    # row, so it is a blank spot; 500101 has one hospital: fine.
    county = res.blank_spots[res.blank_spots["unit_level"] == "county"]
    assert county["unit_code"].tolist() == ["500102"]


def test_tibet_county_near_its_prefecture_hospital_is_exempt_not_a_gap():
    std = load_region("tibet").section("standards")
    case = _case([("500101001000", "township_health_centre"), ("500101002000", "township_health_centre"),
                  ("500102000000", "county_hospital")])
    case["settlements"].loc[0, "t_pref_min"] = 30  # the county seat of 500101 is 30 min from a prefecture hospital
    res = audit_blank_spots(standards=std, thresholds=TH, **case)
    assert "500101" not in res.blank_spots["unit_code"].tolist()
    assert res.exemptions["unit_code"].tolist()[0] == "500101"


def test_chongqing_poor_counties_need_two_county_hospitals():
    std = load_region("chongqing").section("standards")
    case = _case([("500101000000", "county_hospital"), ("500102000000", "county_hospital"),
                  ("500102000000", "county_hospital")])
    res = audit_blank_spots(standards=std, thresholds=TH, **case)
    county = res.blank_spots[res.blank_spots["unit_level"] == "county"]
    assert county["unit_code"].tolist() == ["500101"]  # 万州 poor, one hospital; 黔江 poor with two: fine
    assert "standard requires 2" in county["detail"].iloc[0]


def test_township_without_a_health_centre_is_a_blank_spot_and_urban_subdistrict_served_is_exempt():
    std = load_region("tibet").section("standards")
    case = _case([("500101000000", "county_hospital"), ("500102000000", "county_hospital"),
                  ("500101001000", "township_health_centre")])
    res = audit_blank_spots(standards=std, thresholds=TH, **case)
    towns = res.blank_spots[res.blank_spots["unit_level"] == "township"]
    assert towns["unit_code"].tolist() == ["500101002000"]
    assert "unlocated" in towns["detail"].iloc[0]
    assert "500102001000" in res.exemptions["unit_code"].tolist()


def test_a_register_without_village_clinics_is_reported_once():
    std = load_region("tibet").section("standards")
    case = _case([("500101000000", "county_hospital"), ("500102000000", "county_hospital")])
    res = audit_blank_spots(standards=std, thresholds=TH, **case)
    scope = res.blank_spots[res.blank_spots["rule"].str.startswith("register_scope")]
    assert len(scope) == 1 and (res.blank_spots["unit_level"] != "village").all()
    assert any("no village clinics" in x for x in res.not_auditable)


def test_villages_without_clinics_except_seat_village_and_small_sharing_villages_chongqing():
    std = load_region("chongqing").section("standards")
    # one clinic in 一村 only; 二村 1200 people no clinic -> gap; 三村 300 people but 40 min away -> gap
    case = _case([("500101001201", "village_clinic")], village_pop=(500, 1200, 300))
    res = audit_blank_spots(standards=std, thresholds=TH, **case)
    v = res.blank_spots[res.blank_spots["unit_level"] == "village"]
    assert v["unit_code"].tolist() == ["500101001202", "500101002203"]
    # make 三村 close to a neighbour's clinic: a small village may share
    case["settlements"].loc[5, "t_clinic_min"] = 10
    res = audit_blank_spots(standards=std, thresholds=TH, **case)
    assert res.blank_spots[res.blank_spots["unit_level"] == "village"]["unit_code"].tolist() == ["500101001202"]
    assert "shares a clinic" in res.exemptions.set_index("unit_code").loc["500101002203", "detail"]


def test_liaoning_village_rule_has_no_small_village_exemption():
    std = load_region("liaoning").section("standards")
    case = _case([("500101001201", "village_clinic")], village_pop=(500, 1200, 300))
    case["settlements"].loc[5, "t_clinic_min"] = 10
    res = audit_blank_spots(standards=std, thresholds=TH, **case)
    v = res.blank_spots[res.blank_spots["unit_level"] == "village"]
    assert v["unit_code"].tolist() == ["500101001202", "500101002203"]


def test_relocation_settlement_beyond_the_clinic_limit_xishuangbanna():
    std = load_region("xishuangbanna").section("standards")
    case = _case([("500101001201", "village_clinic")])
    res = audit_blank_spots(standards=std, thresholds=TH, **case)
    r = res.blank_spots[res.blank_spots["unit_level"] == "relocation"]
    assert r["unit_code"].tolist() == ["R1"] and "45 min > 30 min" in r["detail"].iloc[0]


def test_a_township_whose_seat_is_unlocated_cannot_be_checked_against_a_seat_derived_register():
    """The register places a centre at every *located* seat: 乙乡's seat has no coordinates, so the register
    could not show its centre — that is not a gap, it is a unit the data cannot check."""
    std = load_region("tibet").section("standards")
    case = _case([("500101000000", "county_hospital"), ("500102000000", "county_hospital"),
                  ("500101001000", "township_health_centre")])
    res = audit_blank_spots(standards=std, thresholds=TH, register_from_seats=True, **case)
    assert "500101002000" not in res.blank_spots["unit_code"].tolist()
    assert res.cannot_check["unit_code"].tolist() == ["500101002000"]
    assert res.cannot_check["detail"].iloc[0].startswith("cannot be checked: seat not located")
    s = res.summary()
    assert s["total"] == len(res.blank_spots) and "township_health_centre" not in s["by_rule"]
    assert s["cannot_check"]["total"] == 1 and s["cannot_check"]["by_rule"] == {"township_health_centre": 1}
    # a surveyed register (not derived from seats) still shows the missing centre as a blank spot
    res = audit_blank_spots(standards=std, thresholds=TH, register_from_seats=False, **case)
    assert "500101002000" in res.blank_spots["unit_code"].tolist() and res.cannot_check.empty


def _located(case):
    """The hand-made case with WGS84 positions: 丙街道 (500102's township seat) at the county's seat."""
    s = case["settlements"]
    s["lon"] = [106.0, 106.2, 106.5, 106.01, 106.02, 106.21, 106.0]
    s["lat"] = [30.0, 30.2, 30.5, 30.01, 30.02, 30.21, 30.0]
    return case


def test_a_county_without_a_county_seat_row_can_rely_on_the_prefecture_by_its_seat_position():
    """500102 has no county hospital and no settlement of kind county_seat; its seat (by admin code, from the
    gazetteer's county row) is where 丙街道 lies, 20 min from a prefecture hospital: exempt, not a gap."""
    std = load_region("tibet").section("standards")
    case = _located(_case([("500101000000", "county_hospital"), ("500101001000", "township_health_centre")]))
    seats = pd.DataFrame({"county_code": ["500101", "500102"], "lon": [106.0, 106.5005], "lat": [30.0, 30.5005]})
    res = audit_blank_spots(standards=std, thresholds=TH, county_seats=seats, **case)
    assert "500102" not in res.blank_spots.loc[res.blank_spots["unit_level"] == "county", "unit_code"].tolist()
    detail = res.exemptions.set_index("unit_code").loc["500102", "detail"]
    assert "county seat by admin code" in detail and "20 min from a prefecture hospital" in detail
    # a seat far from every located settlement proves nothing: the county stays a blank spot
    far = seats.assign(lon=[106.0, 107.5], lat=[30.0, 31.5])
    res = audit_blank_spots(standards=std, thresholds=TH, county_seats=far, **case)
    assert "500102" in res.blank_spots.loc[res.blank_spots["unit_level"] == "county", "unit_code"].tolist()


def test_a_county_hospital_position_stands_for_the_seat_when_more_hospitals_are_required():
    """A county short of its required hospitals may still rely on the prefecture: its existing county hospital
    marks the seat."""
    std = load_region("tibet").section("standards") | {"county_hospitals_required": 2}
    case = _located(_case([("500101000000", "county_hospital"), ("500102000000", "county_hospital")]))
    case["facilities"]["lon"] = [106.0, 106.5]
    case["facilities"]["lat"] = [30.0, 30.5]
    res = audit_blank_spots(standards=std, thresholds=TH, **case)
    ex = res.exemptions.set_index("unit_code")
    assert "500102" in ex.index and "at its county hospital" in ex.loc["500102", "detail"]
