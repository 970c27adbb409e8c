"""Loaders on the real Tibet data, and every kind of bad input ending in one clear error."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geoaccess.config import load_region
from geoaccess.coords import wgs84_to_gcj02
from geoaccess.errors import InputError
from geoaccess.loaders import (load_facilities, load_inputs, load_settlement_table, name_stem,
                               reconcile_county_codes)


@pytest.fixture(scope="module")
def tibet(data_dir):
    return load_inputs(load_region("tibet"), data_dir)


def test_every_gazetteer_village_and_township_comes_out_once(tibet):
    s = tibet.settlements
    gaz = s[s["kind"] != "relocation"]
    assert (gaz["kind"] == "village").sum() == 5467
    assert gaz["kind"].isin(["township_seat", "county_seat"]).sum() == 695
    assert s["settlement_id"].is_unique
    assert len(s) == 5467 + 695 + 20


def test_every_settlement_has_coordinates_and_a_location_quality(tibet):
    s = tibet.settlements
    assert np.isfinite(s[["lon", "lat"]].to_numpy()).all()
    assert s["loc_quality"].isin(["exact", "village", "township", "county", "prefecture"]).all()
    villages = s[s["kind"] == "village"]
    assert (villages["loc_quality"] == "exact").sum() == 2244  # the data README's located villages
    assert (villages["loc_quality"] != "exact").sum() == 3223


def test_unlocated_villages_sit_exactly_at_their_township_seat(tibet):
    s = tibet.settlements.set_index("settlement_id")
    v = s[(s["kind"] == "village") & (s["loc_quality"] == "township")]
    seats = s.loc[v["township_code"]]
    assert np.allclose(v["lon"].to_numpy(), seats["lon"].to_numpy()) and np.allclose(v["lat"].to_numpy(), seats["lat"].to_numpy())


def test_gcj02_is_converted_to_wgs84(tibet, data_dir):
    raw = pd.read_csv(data_dir / "gazetteer/adcode/540102.csv", header=None, dtype=str)
    row = raw[raw[0] == "540102002002"].iloc[0]  # 白林社区居委会, located
    s = tibet.settlements.set_index("settlement_id").loc["540102002002"]
    glon, glat = wgs84_to_gcj02(s["lon"], s["lat"])
    assert glon == pytest.approx(float(row[12]), abs=1e-8) and glat == pytest.approx(float(row[13]), abs=1e-8)
    assert abs(s["lon"] - float(row[12])) > 1e-3  # a real shift of hundreds of metres


def test_register_has_716_facilities_and_74_counties(tibet):
    assert len(tibet.facilities) == 716
    assert tibet.facilities["level"].value_counts().to_dict() == {
        "township_health_centre": 635, "county_hospital": 74, "prefecture_hospital": 7}
    assert len(tibet.counties) == 74


def test_recoded_counties_are_reconciled(tibet):
    cc = tibet.county_codes
    assert cc.loc["542427", "county_code"] == "540626"  # 索县, Nagqu recoded 2017
    assert cc.loc["540126", "county_code"] == "540104"  # 达孜县 → 达孜区
    assert cc.loc["542421", "county_code"] == "540602"  # 那曲县 → 色尼区, matched by location
    assert cc.loc["542421", "method"] == "location"
    assert set(tibet.settlements["county_code"]) <= set(tibet.counties["adcode"])


def test_census_split_preserves_county_totals(tibet):
    s = tibet.settlements[tibet.settlements["pop_source"] == "census_split"]
    pop = tibet.population
    got = s.groupby("county_code")["population"].sum()
    want = pop.loc[got.index, "population_2020"]
    assert np.allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9)


def test_relocation_sites_are_located_through_their_host_units(tibet):
    r = tibet.settlements[tibet.settlements["kind"] == "relocation"]
    assert len(r) == 20
    assert r["loc_quality"].isin(["village", "township", "county", "prefecture"]).all()
    senburi = r[r["settlement_id"] == "R01"].iloc[0]
    assert senburi["county_code"] == "540522" and senburi["loc_quality"] == "township" and senburi["population"] == 4058


def test_name_stem_drops_the_admin_suffix():
    assert name_stem("米林县") == name_stem("米林市") == "米林"
    assert name_stem("索县") == "索"


def test_reconcile_reports_unmatched_codes():
    import geopandas as gpd
    from shapely.geometry import box

    gaz = pd.DataFrame({"code": ["540101000000", "540102000000"], "name": ["市辖区", "城关区"],
                        "lon": [np.nan, 91.1], "lat": [np.nan, 29.6]})
    counties = gpd.GeoDataFrame({"adcode": ["540102"], "name": ["城关区"]}, geometry=[box(91, 29.5, 91.2, 29.7)], crs=4326)
    out = reconcile_county_codes(gaz, counties)
    assert out.loc["540102", "method"] == "code" and out.loc["540101", "method"] == "unmatched"


# ----------------------------------------------------------------------------- bad inputs

def _write(tmp_path: Path, text: str, name="s.csv", encoding="utf-8") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding=encoding)
    return p


def test_settlement_table_reads_gbk(tmp_path):
    p = _write(tmp_path, "id,name,lon,lat\n1,拉萨,91.1,29.6\n", encoding="gbk")
    s = load_settlement_table(p)
    assert s.loc[0, "name"] == "拉萨"


def test_settlement_table_with_bd09_and_custom_columns(tmp_path):
    p = _write(tmp_path, "编号,村名,经度,纬度,人口\nA,甲村,91.1,29.6,120\n")
    s = load_settlement_table(p, system="bd09", columns={"id": "编号", "name": "村名", "lon": "经度", "lat": "纬度",
                                                          "population": "人口"})
    assert s.loc[0, "population"] == 120 and s.loc[0, "pop_source"] == "data"
    assert s.loc[0, "lon"] < 91.1 and s.loc[0, "coord_source"].endswith("bd09→wgs84")


@pytest.mark.parametrize("text,message", [
    ("id,name,lat\n1,a,29.6\n", "lacks column\\(s\\) lon"),
    ("id,name,lon,lat\n1,a,east,29.6\n", "row 2, column 'lon': 'east' is not a number"),
    ("id,name,lon,lat\n1,a,91,29.6\n2,b,191,29.6\n", "row 3, column 'lon': 191.0 is above the allowed range"),
    ("id,name,lon,lat\n1,a,29.6,91.1\n", "row 2: lon/lat look swapped"),
    ("id,name,lon,lat\n1,a,91,29.6\n1,b,92,29.6\n", "row 2, column 'id': duplicate id '1' \\(also on line 3\\)"),
    ("id,name,lon,lat\n1,a,,29.6\n", "row 2, column 'lon': value is missing"),
    ("id,name,kind,lon,lat\n1,a,castle,91,29.6\n", "unknown kind 'castle'"),
    ("id,name,lon,lat\n", "no rows"),
    ('id,name,lon,lat\n1,"a,91,29.6\n', "malformed CSV"),
])
def test_bad_settlement_tables_name_file_row_and_problem(tmp_path, text, message):
    p = _write(tmp_path, text)
    with pytest.raises(InputError, match=message) as err:
        load_settlement_table(p)
    assert str(p) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_settlement_table(tmp_path / "nope.csv")


def test_unknown_facility_level(tmp_path):
    p = _write(tmp_path, "facility_id,name,level,lon,lat\nF1,a,hospital,91,29.6\n", name="f.csv")
    with pytest.raises(InputError, match="row 2, column 'level': unknown facility level 'hospital'"):
        load_facilities(p)


def test_facility_register_converts_per_row_coordinate_systems(tmp_path):
    p = _write(tmp_path, "facility_id,name,level,lon,lat,coord_sys\nF1,a,county_hospital,91,29.6,wgs84\n"
                         "F2,b,county_hospital,91,29.6,gcj02\nF3,c,county_hospital,91,29.6,bd09\n", name="f.csv")
    f = load_facilities(p)
    assert f.loc[0, "lon"] == 91 and f.loc[1, "lon"] < 91 and f.loc[2, "lon"] < f.loc[1, "lon"]


def test_facility_without_coordinates_is_placed_at_its_admin_seat(tibet, data_dir, tmp_path):
    p = _write(tmp_path, "facility_id,name,level,admin_code,lon,lat\nF1,a,county_hospital,540102000000,,\n", name="f.csv")
    f = load_facilities(p, default_system="gcj02", gazetteer=tibet.gazetteer)
    assert f.loc[0, "loc_quality"] == "admin_seat" and 91 < f.loc[0, "lon"] < 91.2


def test_row_provenance_travels_with_the_table_without_being_copied_row_by_row(tmp_path):
    # pandas deep-copies attrs on every operation: per-row tuples there cost seconds per run (issue #11)
    import copy

    good = tmp_path / "s.csv"
    good.write_text("id,name,lon,lat\nA,a,91.1,29.6\nB,b,91.2,29.7\nC,c,91.3,29.8\n", encoding="utf-8")
    s = load_settlement_table(good)
    prov = s.attrs["provenance"]
    assert list(prov.rows) == [2, 3, 4] and set(prov.files) == {str(good)}
    assert copy.deepcopy(s.attrs)["provenance"] is prov
    assert s[s["name"] != "b"].attrs["provenance"] is prov
    # and it still names the file and row of a bad row
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,lon,lat\nA,a,91.1,29.6\nA,b,91.2,29.7\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_settlement_table(bad)
    assert "bad.csv" in str(err.value) and "3" in str(err.value)
