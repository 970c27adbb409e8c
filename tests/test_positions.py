"""Honest positions on a grid a person can check by hand: areas, median and range, relocation, fallbacks."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from geoaccess.positions import GROUPS, AreaGrid, honest_times, unit_areas

STEP = 0.01
WEST, NORTH = 91.0, 29.04
GRID = Affine(STEP, 0, WEST, 0, -STEP, NORTH)  # 4 × 4 cells, row 0 at the top


def centre(row: int, col: int) -> tuple[float, float]:
    return WEST + (col + 0.5) * STEP, NORTH - (row + 0.5) * STEP


def world():
    """One county over the 4×4 grid; township seats T1 at cell (1, 0) and T2 at (1, 3): their Voronoi areas are
    columns 0–1 and 2–3. Cell (3, 3) lies at 6,000 m and is not habitable. Minutes to a clinic from cell (r, c)
    are 10·c + r; each higher level adds 100; cells in columns 0–1 are nearest facility 0, the others facility 1."""
    elevation = np.full((4, 4), 3000.0)
    elevation[3, 3] = 6000.0
    grid = AreaGrid(GRID, (4, 4), "EPSG:4326", elevation)
    county = gpd.GeoDataFrame({"adcode": ["540101"], "name": ["测试县"]},
                              geometry=[shapely.box(WEST, NORTH - 4 * STEP, WEST + 4 * STEP, NORTH)], crs=4326)
    rows = [  # id, kind, loc_quality, township, (row, col) of the position used
        ("T1", "township_seat", "exact", "T1", (1, 0)),
        ("T2", "township_seat", "exact", "T2", (1, 3)),
        ("V1", "village", "township", "T1", (1, 0)),     # placed at T1's seat
        ("V2", "village", "township", "T2", (1, 3)),
        ("V3", "village", "county", "T9", (0, 0)),       # township seat not located: at the county seat
        ("R1", "relocation", "township", "T2", (1, 3)),  # a relocation site hosted by township T2
        ("V4", "village", "exact", "T1", (2, 1)),
    ]
    s = pd.DataFrame({"settlement_id": [r[0] for r in rows], "kind": [r[1] for r in rows],
                      "loc_quality": [r[2] for r in rows], "township_code": [r[3] for r in rows],
                      "county_code": "540101", "lon": [centre(*r[4])[0] for r in rows],
                      "lat": [centre(*r[4])[1] for r in rows]})
    r, c = np.divmod(np.arange(16), 4)
    clinic = 10.0 * c + r
    cell_minutes = np.column_stack([clinic + 100 * k for k in range(4)])
    cell_nearest = np.column_stack([(c >= 2).astype(int)] * 4)
    own = pd.DataFrame({f"t_{g}_min": [5.0 + 100 * k] * len(s) for k, g in enumerate(GROUPS)})
    for g in GROUPS:
        own[f"nearest_{g}_id"] = "AT-POSITION"
    return s, county, grid, cell_minutes, cell_nearest, own


CFG = {"habitable_max_altitude_m": 5000.0, "habitable_max_slope": 10.0, "habitable_quantile": 0.99}


@pytest.fixture(scope="module")
def result():
    s, county, grid, minutes, nearest, own = world()
    areas = unit_areas(s, county, grid, CFG)
    out = honest_times(s, own, areas, minutes[areas.cells], nearest[areas.cells], np.array(["F0", "F1"]),
                       quantiles=(0.1, 0.9))
    return areas, out.set_axis(s["settlement_id"])


def test_habitable_cells_leave_out_the_high_cell(result):
    areas, _ = result
    assert len(areas.cells) == 15 and 15 not in areas.cells  # cell (3, 3) = index 15


def test_township_areas_are_the_voronoi_halves(result):
    areas, _ = result
    cols = areas.cells % 4
    town = areas.town_group
    assert set(town[cols <= 1]) == {town[cols <= 1][0]} and set(town[cols >= 2]) == {town[cols >= 2][0]}
    assert town[cols <= 1][0] != town[cols >= 2][0]


def test_a_village_at_its_township_seat_gets_the_median_and_range_of_its_townships_cells(result):
    _, out = result
    # T1's 8 cells: 0 1 2 3 10 11 12 13 → nearest rank 10 % = 0, 50 % = 3, 90 % = 13
    v1 = out.loc["V1"]
    assert (v1["t_clinic_low_min"], v1["t_clinic_min"], v1["t_clinic_high_min"]) == (0, 3, 13)
    assert v1["t_county_min"] == 203 and v1["time_basis"] == "township_area"
    # T2's 7 habitable cells: 20 21 22 23 30 31 32 → 20, 23, 32; and the median cell's facility
    v2 = out.loc["V2"]
    assert (v2["t_clinic_low_min"], v2["t_clinic_min"], v2["t_clinic_high_min"]) == (20, 23, 32)
    assert v2["nearest_clinic_id"] == "F1"


def test_a_village_of_an_unlocated_township_takes_its_county(result):
    _, out = result
    v3 = out.loc["V3"]  # 15 cells: 0 1 2 3 10 11 12 13 20 21 22 23 30 31 32 → ranks 1, 7, 13
    assert (v3["t_clinic_low_min"], v3["t_clinic_min"], v3["t_clinic_high_min"]) == (1, 13, 31)
    assert v3["time_basis"] == "county_area" and v3["nearest_clinic_id"] == "F0"


def test_a_relocation_site_keeps_its_host_seats_time_with_the_areas_range(result):
    _, out = result
    r1 = out.loc["R1"]
    assert r1["t_clinic_min"] == 5 and r1["t_clinic_low_min"] == 5 and r1["t_clinic_high_min"] == 32
    assert r1["time_basis"] == "host_position" and r1["nearest_clinic_id"] == "AT-POSITION"


def test_exactly_located_rows_are_unchanged_with_a_nil_range(result):
    _, out = result
    for sid in ("T1", "T2", "V4"):
        row = out.loc[sid]
        assert row["time_basis"] == "measured"
        assert row["t_clinic_low_min"] == row["t_clinic_min"] == row["t_clinic_high_min"] == 5


def test_limits_learned_from_located_settlements_when_not_configured():
    s, county, grid, *_ = world()
    areas = unit_areas(s, county, grid, {"habitable_quantile": 0.99, "habitable_max_altitude_m": 0.0,
                                         "habitable_max_slope": 0.0})
    # too few located settlements (3) to learn from: every cell of the unit counts, and it says so
    assert len(areas.cells) == 16 and "too few" in areas.limits["source"]


def test_order_statistics_pick_the_nearest_rank_cell_and_break_ties_by_cell_order():
    from geoaccess.positions import _order_stats

    # group 0: minutes 5, 1, 3, 3 (cells 0-3); group 1: 7, 2 (cells 4, 5); cell 6 has no group, cell 7 is unreachable
    groups = np.array([0, 0, 0, 0, 1, 1, -1, 1])
    minutes = np.array([[5.0], [1.0], [3.0], [3.0], [7.0], [2.0], [0.0], [np.inf]])
    nearest = np.array([[50], [10], [30], [31], [70], [20], [99], [88]])
    has, vals, idxs = _order_stats(groups, np.isfinite(minutes[:, 0]), minutes, nearest, (0.1, 0.5, 0.9))
    assert has.tolist() == [True, True]
    # group 0 sorted: 1 (cell 1), 3 (cell 2), 3 (cell 3), 5; ranks ceil(q·4)-1 = 0, 1, 3 → the first 3 is cell 2's
    assert [v[0, 0] for v in vals] == [1.0, 3.0, 5.0] and [i[0, 0] for i in idxs] == [10, 30, 50]
    # group 1 (cell 7 unreachable, left out): 2, 7; ranks ceil(q·2)-1 = 0, 0, 1
    assert [v[1, 0] for v in vals] == [2.0, 2.0, 7.0] and [i[1, 0] for i in idxs] == [20, 20, 70]


def test_habitable_limits_are_learnt_per_province_so_a_province_is_the_same_alone_and_in_a_national_run():
    """Two provinces side by side: a low one (villages at ~1,000 m) and a high one (villages at ~4,000 m). Run
    together, each keeps the limit its own located settlements give; a single national quantile would cut the
    high province's land at the low province's altitude."""
    rows, cols = 12, 24
    rng = np.random.default_rng(1)
    elevation = np.where(np.arange(cols)[None, :] < 12, 1000.0, 4000.0) + rng.uniform(0, 400, (rows, cols))
    grid = AreaGrid(GRID, (rows, cols), "EPSG:4326", elevation)
    boxes = [shapely.box(WEST, NORTH - rows * STEP, WEST + 12 * STEP, NORTH),
             shapely.box(WEST + 12 * STEP, NORTH - rows * STEP, WEST + cols * STEP, NORTH)]
    counties = gpd.GeoDataFrame({"adcode": ["110101", "540101"], "name": ["低", "高"]}, geometry=boxes, crs=4326)
    pts = [(r, c) for r in range(0, rows, 2) for c in range(0, cols, 2)]
    s = pd.DataFrame({"settlement_id": [f"S{i}" for i in range(len(pts))], "kind": "village", "loc_quality": "exact",
                      "township_code": "", "county_code": ["110101" if c < 12 else "540101" for _, c in pts],
                      "lon": [centre(r, c)[0] for r, c in pts], "lat": [centre(r, c)[1] for r, c in pts]})
    cfg = {"habitable_quantile": 0.5, "habitable_max_altitude_m": 0.0, "habitable_max_slope": 0.0}
    both = unit_areas(s, counties, grid, cfg)
    for code in ("110101", "540101"):
        mine = s["county_code"] == code
        alone = unit_areas(s[mine], counties[counties["adcode"] == code], grid, cfg)
        assert both.limits["by_province"][code[:2]]["max_altitude_m"] == alone.limits["max_altitude_m"]
        in_both = both.cells[both.county_group == counties.index[counties["adcode"] == code][0]]
        assert np.array_equal(np.sort(in_both), np.sort(alone.cells))
    assert both.limits["by_province"]["11"]["max_altitude_m"] < 1400 < 4000 < both.limits["by_province"]["54"]["max_altitude_m"]
    assert "per province" in both.limits["source"]
