"""Coverage arithmetic on hand-made tables: statuses, shares and their ranges, summaries."""
import numpy as np
import pandas as pd
import pytest

from geoaccess.coverage import classify, coverage_report, coverage_shares, unit_summary

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


def test_county_summary_counts_people_per_county_and_leaves_rows_without_a_county_out():
    s, t = _table()
    s = pd.concat([s, s.assign(settlement_id=lambda d: d["settlement_id"] + "b", county_code="540102")],
                  ignore_index=True)
    t = pd.concat([t, t + 50], ignore_index=True)
    s.loc[9, "county_code"] = None  # a row of no county: in no county's figures
    tab = classify(s, t, TH).join(s)
    out = unit_summary(tab, "county_code", thresholds=TH).set_index("county_code")
    assert out.index.tolist() == ["540101", "540102"]
    assert out.loc["540101", "population"] == 1000 and out.loc["540102", "population"] == 600
    # 540102 keeps T1b, V1b, V2b, V3b: county 80, 100, 140, 80 min
    assert out.loc["540102", "n_settlements"] == 4 and out.loc["540102", "share_county_120"] == pytest.approx(0.75)
    # by population: within 120 min are T1b (0 people), V1b (100) and V3b (300) of 600
    assert out.loc["540102", "pop_share_county_120"] == pytest.approx(400 / 600)
    assert out.loc["540102", "median_t_county_min"] == pytest.approx(90.0)


def _ranged():
    """The table above with ranges: V3 and V4 are approximated (V3: county 20–100, V4: 65–70)."""
    s, t = _table()
    tab = pd.concat([s, t], axis=1)
    for g in ("clinic", "thc", "county", "pref"):
        tab[f"t_{g}_low_min"] = tab[f"t_{g}_min"]
        tab[f"t_{g}_high_min"] = tab[f"t_{g}_min"]
    tab.loc[3, ["t_county_low_min", "t_county_high_min"]] = [20.0, 100.0]
    tab.loc[4, ["t_county_low_min", "t_county_high_min"]] = [65.0, 70.0]
    return tab


def test_share_ranges_take_each_rows_high_and_low_times():
    tab = _ranged()
    est = coverage_shares(tab, [60])["county"]["60"]
    low = coverage_shares(tab, [60], bound="_low")["county"]["60"]
    high = coverage_shares(tab, [60], bound="_high")["county"]["60"]
    # within 60 at the estimates: T1 30, V1 50, V3 30 → 3/5; at the high ends V3 (100) drops out → 2/5;
    # at the low ends V4 (65) still misses → 3/5
    assert (low, est, high) == (pytest.approx(2 / 5), pytest.approx(3 / 5), pytest.approx(3 / 5))
    rep = coverage_report(tab, [60])
    block = rep["all_settlements"]
    assert block["by_count_low"]["county"]["60"] <= block["by_count"]["county"]["60"] <= block["by_count_high"]["county"]["60"]
    assert block["by_population_low"]["county"]["60"] == pytest.approx(100 / 1000)  # T1 0 + V1 100


def test_band_keys_keep_fractional_minutes():
    tab = _ranged()
    shares = coverage_shares(tab, [15, 15.9, 30])["clinic"]
    assert list(shares) == ["15", "15.9", "30"]


def test_summary_columns_carry_the_minutes_used_and_their_ranges():
    tab = _ranged()
    tab["status"] = classify(tab, tab, {**TH, "county": 90})["status"]
    out = unit_summary(tab, "county_code", {}, None, {**TH, "county": 90})
    row = out.iloc[0]
    assert "share_county_60" not in out.columns
    # within 90: T1 30, V1 50, V2 90, V3 30, V4 70 → all 5; at the high ends V3 (100) misses → 4/5
    assert row["share_county_90"] == pytest.approx(1.0) and row["share_county_90_low"] == pytest.approx(0.8)
    assert row["n_measured"] == 3 and not row["uncertain"]
