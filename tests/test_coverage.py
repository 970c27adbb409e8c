"""Coverage arithmetic on hand-made tables: approximated positions, statuses, shares."""
import numpy as np
import pandas as pd
import pytest

from geoaccess.coverage import apply_location_quality, classify, coverage_report, coverage_shares, unit_summary

TH = {"clinic": 15, "thc": 30, "county": 60, "county_severe": 120, "pref": 240}


def _table():
    s = pd.DataFrame({
        "settlement_id": ["T1", "V1", "V2", "V3", "V4"],
        "kind": ["township_seat", "village", "village", "village", "village"],
        "loc_quality": ["exact", "exact", "exact", "township", "township"],
        "township_code": ["T1", "T1", "T1", "T1", "T9"],
        "county_code": ["540101"] * 5,
        "population": [0, 100, 200, 300, 400],
    })
    t = pd.DataFrame({
        "t_clinic_min": [0.0, 10, 20, 0, 5], "t_thc_min": [0.0, 12, 40, 0, 5],
        "t_county_min": [30.0, 50, 90, 30, 70], "t_pref_min": [100.0, 120, 200, 100, 150],
    })
    return s, t


def test_a_village_at_its_township_seat_takes_the_townships_worst_measured_time():
    s, t = _table()
    out = apply_location_quality(s, t)
    assert out.loc[2, "time_basis"] == "measured"
    assert out.loc[3, "time_basis"] == "township_worst"
    assert out.loc[3, ["t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min"]].tolist() == [20, 40, 90, 200]


def test_without_measured_neighbours_the_county_median_is_used_not_zero():
    s, t = _table()
    out = apply_location_quality(s, t)
    # V4's township T9 has no exactly located village: max(own, county median of the villages V1, V2)
    assert out.loc[4, "time_basis"] == "county_median"
    assert out.loc[4, "t_clinic_min"] == 15 and out.loc[4, "t_county_min"] == 70


def test_a_township_seat_alone_is_no_reference_for_its_villages():
    s, t = _table()
    s.loc[1:2, "loc_quality"] = "township"  # only the seat T1 is exactly located in township T1
    out = apply_location_quality(s, t)
    assert out.loc[3, "time_basis"] == "position_lower_bound" and out.loc[3, "t_clinic_min"] == 0


def test_order_of_levels_survives_the_approximation():
    s, t = _table()
    v = apply_location_quality(s, t)[["t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min"]].to_numpy()
    assert (np.diff(v, axis=1) >= 0).all()


def test_unreachable_rows_stay_and_count_as_gaps():
    s, t = _table()
    t.loc[1, :] = np.nan
    out = classify(s, t, TH)
    assert out.loc[1, "status"] == "unreachable" and out.loc[1, "gap_county"]
    assert len(out) == 5


def test_outside_region_status():
    s, t = _table()
    out = classify(s, t, TH, inside_region=np.array([True, True, False, True, True]))
    assert out["status"].tolist() == ["ok", "ok", "outside_region", "ok", "ok"]


def test_shares_by_count_and_population_are_hand_checkable():
    s, t = _table()
    tab = pd.concat([s, t], axis=1)
    by_count = coverage_shares(tab, [60])
    assert by_count["county"]["60"] == pytest.approx(3 / 5)
    by_pop = coverage_shares(tab, [60], weight="population")
    assert by_pop["county"]["60"] == pytest.approx((0 + 100 + 300) / 1000)


def test_report_gives_shares_over_exact_and_over_all():
    s, t = _table()
    tab = pd.concat([s, t], axis=1)
    rep = coverage_report(tab, [15, 30, 60, 120, 240])
    assert rep["exactly_located"]["n"] == 3 and rep["all_settlements"]["n"] == 5
    shares = [rep["all_settlements"]["by_count"]["county"][b] for b in ("15", "30", "60", "120", "240")]
    assert shares == sorted(shares) and all(0 <= x <= 1 for x in shares)


def test_county_summary_columns():
    s, t = _table()
    tab = classify(s, t, TH).join(s)
    out = unit_summary(tab, "county_code", {"540101": "城关区"}, pd.Series({"540101": 2}), TH)
    row = out.iloc[0]
    assert row["county_name"] == "城关区" and row["n_settlements"] == 5 and row["n_blank_spots"] == 2
    assert row["share_county_60"] == pytest.approx(0.6) and row["max_t_county_min"] == 90
