"""No silent wrong answers (issues 13 and 18): every input the tool cannot use as given is refused on one
line (file, row, problem; exit 2) or reported in the load report, the printed report and summary.json.

Each test puts one plausible-but-wrong input into a copy of the real Tibet data (symbolic links to the
shared files, the changed file written anew) and checks the refusal or the warning. docs/reliability.md
has the table of cases.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geoaccess.cli import main
from geoaccess.config import REGIONS_DIR, load_region
from geoaccess.errors import ConfigError, DataCoverageError, InputError
from geoaccess.loaders import load_facilities, load_inputs

TIBET_TOML = (REGIONS_DIR / "tibet.toml").read_text(encoding="utf-8")


def linked_data(tmp_path: Path, data_dir: Path) -> Path:
    """A data folder of links to the real Tibet inputs (files written into it replace the links)."""
    d = tmp_path / "data"
    for sub in ("facilities", "boundaries", "facts", "dem", "roads"):
        for f in (data_dir / sub).rglob("*"):
            if f.is_file():
                target = d / f.relative_to(data_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(f, target)
    gaz = d / "gazetteer" / "adcode"
    gaz.mkdir(parents=True)
    for f in (data_dir / "gazetteer" / "adcode").glob("54*.csv"):
        os.symlink(f, gaz / f.name)
    return d


def replace_file(d: Path, rel: str, text: str) -> Path:
    p = d / rel
    p.unlink()
    p.write_text(text, encoding="utf-8")
    return p


def tibet_config(tmp_path: Path, replace: dict[str, str] | None = None, extra: str = "") -> Path:
    text = TIBET_TOML
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    cfg = tmp_path / "tibet.toml"
    cfg.write_text(text + extra, encoding="utf-8")
    return cfg


def one_error_line(capsys) -> str:
    err = [l for l in capsys.readouterr().err.strip().splitlines() if not l[9:].startswith(("INFO", "WARNING"))]
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture()
def data(tmp_path, data_dir) -> Path:
    return linked_data(tmp_path, data_dir)


# ------------------------------------------------------------------------------------------- DEM

def _write_dem(path: Path, values: np.ndarray, *, nodata=None, bottom_up: bool = False, dtype="int16") -> Path:
    """A lon/lat GeoTIFF over Lhasa (90.5–91.5°E, 29.3–30.0°N), 0.01° cells, rows north to south unless bottom_up."""
    import rasterio
    from affine import Affine

    rows, cols = values.shape
    if bottom_up:
        transform, values = Affine(0.01, 0, 90.5, 0, 0.01, 30.0 - 0.01 * rows), values[::-1]
    else:
        transform = Affine(0.01, 0, 90.5, 0, -0.01, 30.0)
    with rasterio.open(path, "w", driver="GTiff", height=rows, width=cols, count=1, dtype=dtype, crs="EPSG:4326",
                       transform=transform, nodata=nodata) as dst:
        dst.write(values.astype(dtype), 1)
    return path


def _terrain(rows: int = 70, cols: int = 100) -> np.ndarray:
    r, c = np.mgrid[0:rows, 0:cols]
    return 3600.0 + 8.0 * r + 5.0 * c  # a plane: 3,600 m in the north-west corner, rising south and east


def test_a_bottom_up_geotiff_is_read_not_rejected(tmp_path):
    from geoaccess.elevation import open_dem, sample_dem

    z = _terrain()
    up = open_dem(_write_dem(tmp_path / "up.tif", z), region_bounds=(90.7, 29.5, 91.2, 29.8), margin_m=0)
    down_path = _write_dem(tmp_path / "down.tif", z, bottom_up=True)
    lon, lat = np.array([90.8, 91.0, 91.15]), np.array([29.55, 29.7, 29.75])
    for kwargs in ({}, {"max_cells": 100, "tile_size": 16}):  # in memory and tile by tile
        down = open_dem(down_path, region_bounds=(90.7, 29.5, 91.2, 29.8), margin_m=0, **kwargs)
        np.testing.assert_allclose(sample_dem(down, lon, lat), sample_dem(up, lon, lat), atol=1e-6)
    assert not down.warnings


def test_a_dem_of_no_data_only_is_refused(tmp_path):
    from geoaccess.elevation import open_dem

    path = _write_dem(tmp_path / "void.tif", np.full((70, 100), -32768), nodata=-32768)
    with pytest.raises(DataCoverageError, match="holds no elevation over the region: all .* no-data") as err:
        open_dem(path, region_bounds=(90.7, 29.5, 91.2, 29.8))
    assert err.value.path == str(path)


def test_undeclared_no_data_fill_is_read_as_no_data_with_a_warning(tmp_path):
    from geoaccess.elevation import open_dem, sample_dem

    z = _terrain()
    z[30:40, 40:60] = -32768  # voids, and no nodata tag in the file
    dem = open_dem(_write_dem(tmp_path / "voids.tif", z), region_bounds=(90.7, 29.5, 91.2, 29.8))
    assert np.isnan(sample_dem(dem, np.array([91.0]), np.array([29.65]))[0])  # was read as -32,768 m
    assert len(dem.warnings) == 1 and "declares no nodata value" in dem.warnings[0] and "-32768" in dem.warnings[0]
    assert "200 of" in dem.warnings[0]


def test_elevations_in_decimetres_are_refused(tmp_path):
    from geoaccess.elevation import open_dem

    path = _write_dem(tmp_path / "dm.tif", _terrain() * 10, dtype="int32")  # 36,000–44,330 "m"
    with pytest.raises(InputError, match=r"elevations reach 44,330, above the highest point on Earth.*not in metres"):
        open_dem(path, region_bounds=(90.7, 29.5, 91.2, 29.8))


def test_settlements_on_no_data_are_reported_and_refused_when_most_are(tmp_path):
    from geoaccess.elevation import check_dem_at, open_dem

    z = _terrain()
    z[:, 50:] = -32768  # the east half has no elevation
    dem = open_dem(_write_dem(tmp_path / "half.tif", z, nodata=-32768), region_bounds=(90.6, 29.4, 91.4, 29.9))
    lon_w, lat = np.full(10, 90.8), np.linspace(29.4, 29.9, 10)
    warn = check_dem_at(dem, np.r_[lon_w, 91.2, 91.3], np.r_[lat, 29.6, 29.7])
    assert len(warn) == 1 and "no elevation (no-data) at 2 of 12 settlements" in warn[0]
    with pytest.raises(DataCoverageError, match="no-data\\) at 10 of 12 settlements"):
        check_dem_at(dem, np.r_[np.full(10, 91.2), 90.8, 90.8], np.r_[lat, 29.6, 29.7])


def test_a_dem_without_nodata_tag_is_reported_by_the_run(capsys, data, tmp_path):
    """End to end: the real Tibet DEM with its nodata tag removed — the voids are not driven at −32,768 m."""
    import rasterio

    src = data / "dem/tibet_dem_30s.tif"
    with rasterio.open(src) as s:
        values, profile = s.read(1), s.profile
    profile.pop("nodata")
    src.unlink()
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(values, 1)
    assert main(["-q", "data", "check", "--region", "tibet", "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert any("declares no nodata value" in w and "-32768" in w for w in report["warnings"])


# ------------------------------------------------------------------------------------------- registers

def _register(data: Path) -> pd.DataFrame:
    return pd.read_csv(data / "facilities/tibet_facilities.csv", dtype=str, keep_default_na=False)


def _write_register(data: Path, df: pd.DataFrame) -> Path:
    p = data / "facilities/tibet_facilities.csv"
    p.unlink()
    df.to_csv(p, index=False, encoding="utf-8")
    return p


def test_empty_facility_id_is_refused_naming_the_row(tmp_path):
    p = tmp_path / "f.csv"
    p.write_text("facility_id,name,level,lon,lat\nF1,a,county_hospital,91,29.6\n ,b,county_hospital,91.1,29.6\n",
                 encoding="utf-8")
    with pytest.raises(InputError, match=r"row 3, column 'facility_id': facility_id is empty"):
        load_facilities(p)


def test_chinese_and_mixed_case_level_names_map_through_the_schema_table(tmp_path):
    p = tmp_path / "f.csv"
    p.write_text("facility_id,name,level,lon,lat\n"
                 "F1,a,县医院,91,29.6\nF2,b,县人民医院,91,29.6\nF3,c,乡镇卫生院,91,29.6\nF4,d,卫生院,91,29.6\n"
                 "F5,e,村卫生室,91,29.6\nF6,f,地市级医院,91,29.6\nF7,g,County_Hospital,91,29.6\n"
                 "F8,h,地区人民医院,91,29.6\nF9,i, township health center ,91,29.6\n", encoding="utf-8")
    f = load_facilities(p)
    assert f["level"].tolist() == ["county_hospital", "county_hospital", "township_health_centre",
                                   "township_health_centre", "village_clinic", "prefecture_hospital",
                                   "county_hospital", "prefecture_hospital", "township_health_centre"]
    assert f.attrs["level_names"]["县医院"] == "county_hospital"


def test_level_vocabulary_is_defined_once():
    """audit, mapping and proposals take their level lists from schema (one vocabulary)."""
    from geoaccess import audit, mapping, schema

    assert audit.COUNTY_LEVELS is schema.COUNTY_HOSPITAL_LEVELS and audit.CLINIC_LEVELS is schema.CLINIC_LEVELS
    assert set(mapping.FACILITY_NAMES) == set(schema.FACILITY_LEVELS) == set(schema.FACILITY_LEVEL_NAMES)
    assert mapping.FACILITY_NAMES["county_hospital"].startswith(schema.FACILITY_LEVEL_NAMES["county_hospital"][0])


@pytest.mark.parametrize("name,system", [("GCJ-02", "gcj02"), ("gcj 02", "gcj02"), ("BD09", "bd09"),
                                         ("wgs-84", "wgs84"), ("WGS 84", "wgs84"), ("bd-09", "bd09")])
def test_coordinate_system_names_tolerate_spacing_case_and_dashes(name, system, tmp_path):
    from geoaccess.coords import normalise_system

    assert normalise_system(name) == system
    p = tmp_path / "f.csv"
    p.write_text(f"facility_id,name,level,lon,lat,coord_sys\nF1,a,county_hospital,91,29.6,{name}\n", encoding="utf-8")
    assert load_facilities(p)["coord_sys"].iloc[0] == system


def test_facility_far_outside_the_region_is_left_out_and_named(data, tmp_path):
    df = _register(data)
    df.loc[5, ["lon", "lat"]] = ["116.397", "39.909"]  # Beijing, in a Tibet register
    _write_register(data, df)
    inputs = load_inputs(load_region("tibet"), data)
    assert len(inputs.facilities) == len(df) - 1 and df.loc[5, "facility_id"] not in set(inputs.facilities["facility_id"])
    w = [w for w in inputs.report.warnings if "outside the region" in w]
    assert len(w) == 1 and "tibet_facilities.csv" in w[0] and f"row 7 {df.loc[5, 'facility_id']}" in w[0]
    assert inputs.report.layers["facilities"]["outside_region_left_out"] == 1


def test_missing_admin_code_of_a_hospital_is_located_by_position(data):
    df = _register(data)
    hosp = df.index[df["level"].eq("county_hospital")][:3]
    expected = df.loc[hosp, "admin_code"].str[:6].tolist()
    df.loc[hosp, "admin_code"] = ""
    _write_register(data, df)
    inputs = load_inputs(load_region("tibet"), data)
    got = inputs.facilities.set_index("facility_id").loc[df.loc[hosp, "facility_id"], "county_code"].tolist()
    assert got == expected  # the county polygon holding each hospital, not an empty code
    w = [w for w in inputs.report.warnings if "no admin_code" in w]
    assert len(w) == 1 and "3 facilities" in w[0] and f"row {hosp[0] + 2} → {expected[0]}" in w[0]


def test_missing_admin_code_of_a_township_health_centre_is_refused(capsys, data):
    df = _register(data)
    i = df.index[df["level"].eq("township_health_centre")][0]
    df.loc[i, "admin_code"] = ""
    _write_register(data, df)
    assert main(["-q", "data", "check", "--region", "tibet", "--data", str(data)]) == 2
    line = one_error_line(capsys)
    assert f"tibet_facilities.csv, row {i + 2}, column 'admin_code': admin_code is empty" in line
    assert "township cannot be told from its position" in line


# ------------------------------------------------------------------------------------------- gazetteer

def _gazetteer_file(data: Path, name: str = "540121.csv") -> list[str]:
    return (data / "gazetteer/adcode" / name).read_text(encoding="utf-8").splitlines()


def test_a_gazetteer_row_outside_its_file_is_refused_not_dropped(capsys, data):
    lines = _gazetteer_file(data)
    lines[5] = "55" + lines[5][2:]  # a one-digit typo takes the village out of the region's prefix
    replace_file(data, "gazetteer/adcode/540121.csv", "\n".join(lines) + "\n")
    assert main(["-q", "data", "check", "--region", "tibet", "--data", str(data)]) == 2
    line = one_error_line(capsys)
    assert "540121.csv, row 6: code 55" in line and "does not belong to this file" in line


def test_a_gazetteer_point_at_zero_zero_is_named_by_file_and_row(capsys, data):
    lines = _gazetteer_file(data)
    cells = lines[7].split(",")
    cells[12], cells[13] = "0", "0"
    lines[7] = ",".join(cells)
    replace_file(data, "gazetteer/adcode/540121.csv", "\n".join(lines) + "\n")
    assert main(["-q", "gaps", "--region", "tibet", "--data", str(data), "--out", str(data.parent / "out")]) == 2
    line = one_error_line(capsys)
    assert "540121.csv, row 8, column 'lon'" in line and "lon 0, lat 0" in line and "DEM" not in line
    assert not (data.parent / "out").exists()


def test_a_settlement_table_point_at_zero_zero_is_refused(tmp_path):
    from geoaccess.loaders import load_settlement_table

    p = tmp_path / "s.csv"
    p.write_text("id,name,lon,lat\n1,a,91,29.6\n2,b,0,0\n", encoding="utf-8")
    with pytest.raises(InputError, match="row 3, column 'lon': lon 0, lat 0 is not a real position"):
        load_settlement_table(p)


# ------------------------------------------------------------------------------------------- census

def _census(data: Path) -> pd.DataFrame:
    return pd.read_csv(data / "facts/tibet_county_population_2020.csv", dtype=str, keep_default_na=False)


def _write_census(data: Path, df: pd.DataFrame) -> None:
    p = data / "facts/tibet_county_population_2020.csv"
    p.unlink()
    df.to_csv(p, index=False, encoding="utf-8")


def test_census_codes_that_match_no_county_are_refused(capsys, data):
    df = _census(data)
    county = ~df["adcode"].str.endswith("00")
    df.loc[county, "adcode"] = (df.loc[county, "adcode"].astype(int) + 50).astype(str)  # every county code shifted
    _write_census(data, df)
    assert main(["-q", "data", "check", "--region", "tibet", "--data", str(data)]) == 2
    line = one_error_line(capsys)
    assert "tibet_county_population_2020.csv" in line and "the census matches too little of the region" in line
    assert "settlements find no census row" in line


def test_census_units_without_settlements_are_reported_with_their_people(capsys, data, tmp_path):
    df = _census(data)
    i = df.index[df["adcode"].eq("540121")][0]
    people = int(df.loc[i, "population_2020"])
    df.loc[i, "adcode"] = "540191"  # one typo'd code: 林周县's people and villages lose each other
    _write_census(data, df)
    out = tmp_path / "out"
    assert main(["-q", "gaps", "--region", "tibet", "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    warnings = json.loads((out / "summary.json").read_text(encoding="utf-8"))["warnings"]
    unmatched = [w for w in warnings if "match no county" in w]
    lacking = [w for w in warnings if "have no census row" in w]
    assert len(unmatched) == 1 and "540191" in unmatched[0] and f"{people + 16493:,} people" in unmatched[0]
    assert len(lacking) == 1 and "540121" in lacking[0] and "no population" in lacking[0]
    assert unmatched[0] in printed and lacking[0] in printed  # the printed report repeats them


# ------------------------------------------------------------------------------------------- relocation

def test_relocation_sites_whose_host_unit_is_not_in_the_gazetteer_are_reported_per_site(data):
    text = (data / "facts/tibet_relocation_sites.csv").read_text(encoding="utf-8")
    assert ",贡嘎县,岗堆镇," in text
    replace_file(data, "facts/tibet_relocation_sites.csv", text.replace(",贡嘎县,岗堆镇,", ",贡嘎县,无此镇,", 1))
    inputs = load_inputs(load_region("tibet"), data)
    w = [w for w in inputs.report.warnings if "relocation site R01 " in w]
    assert len(w) == 1 and "row 2" in w[0] and "host township '无此镇'" in w[0] and "county seat" in w[0]
    assert "4,058 people" in w[0]
    r01 = inputs.settlements.set_index("settlement_id").loc["R01"]
    assert r01["loc_quality"] == "county"
    # the real data: 噶冲村 is not among 古荣乡's villages, and the site says so
    assert any("relocation site R03 " in w and "host village '噶冲村'" in w for w in inputs.report.warnings)


# ------------------------------------------------------------------------------------------- config

def test_a_configured_input_that_is_missing_is_an_error_naming_key_and_path(capsys, data, tmp_path):
    cfg = tibet_config(tmp_path, {'counties = "boundaries/tibet_counties.geojson"':
                                  'counties = "boundaries/tibet_countys.geojson"'})
    assert main(["-q", "data", "check", "--region", str(cfg), "--data", str(data)]) == 2
    line = one_error_line(capsys)
    assert "[inputs] counties = 'boundaries/tibet_countys.geojson': file not found" in line and str(cfg) in line


def test_windows_back_slash_paths_are_normalised(data, tmp_path):
    cfg = tibet_config(tmp_path, {'relocation = "facts/tibet_relocation_sites.csv"':
                                  "relocation = 'facts\\tibet_relocation_sites.csv'"})
    config = load_region(cfg)
    assert config.raw["inputs"]["relocation"] == "facts/tibet_relocation_sites.csv"
    inputs = load_inputs(config, data)
    assert inputs.settlements["kind"].eq("relocation").sum() == 20


def test_a_back_slash_escape_in_a_double_quoted_path_is_explained(tmp_path):
    cfg = tibet_config(tmp_path, {'relocation = "facts/tibet_relocation_sites.csv"':
                                  'relocation = "facts\\tibet_relocation_sites.csv"'})  # TOML reads \t as a tab
    with pytest.raises(ConfigError, match=r"\[inputs\] relocation = .*control character.*single quotes"):
        load_region(cfg)


@pytest.mark.parametrize("replace,message", [
    ({"bands = [15, 30, 60, 120, 240]": "bands = [15, 30, inf]"}, r"bands: inf is not a number of minutes"),
    ({"bands = [15, 30, 60, 120, 240]": "bands = [15, 30, 30]"}, r"bands: 30.0 appears twice"),
    ({"bands = [15, 30, 60, 120, 240]": "bands = [15, 10000.2, 10000.25]"},
     r"bands: 10000.2 and 10000.25 would both be reported as '10000.2 min'"),
    ({"snap_tolerance_m = 50.0": "snap_tolerance_m = 50000"}, r"snap_tolerance_m = 50000: at most 1000"),
    ({"county = 60.0": "county = inf"}, r"\[thresholds\] county = inf: must be a finite positive number"),
    ({"county = 60.0": "county = 1e300"}, r"\[thresholds\] county = 1e\+300: at most 10080"),
    ({"clinic = 15.0": "clinic = 45.0"}, r"clinic = 45 min is above thc = 30 min: thresholds must rise"),
    ({"county_severe = 120.0": "county_severe = 50.0"}, r"county = 60 min is above county_severe = 50 min"),
    ({"+units=m": "+units=km"}, r"working_crs is in kilometre, not metres"),
    ({"time_limit_s = 60.0": "time_limit_s = 0.0"}, r"\[siting\] time_limit_s = 0.0: must be a finite positive"),
])
def test_config_values_the_model_cannot_take_are_refused_up_front(tmp_path, replace, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_region(tibet_config(tmp_path, replace))
    assert "\n" not in err.value.message


@pytest.mark.parametrize("override,message", [
    ("county=inf", "must be a finite positive number"),
    ("clinic=90", "clinic = 90 min is above thc = 30 min"),
])
def test_threshold_overrides_are_checked_like_the_config(capsys, override, message):
    assert main(["gaps", "--region", "tibet", "--threshold", override]) == 2
    assert message in one_error_line(capsys)


def test_a_fractional_band_gets_its_own_key():
    """Bands [15, 15.9, 30] wrote the 15.9 share under "15" (coverage now keys by coverage.minutes_key)."""
    from geoaccess.coverage import coverage_report

    t = pd.DataFrame({f"t_{g}_min": [10.0, 15.5, 40.0] for g in ("clinic", "thc", "county", "pref")})
    t["loc_quality"], t["population"] = "exact", np.nan
    shares = coverage_report(t, [15, 15.9, 30])["all_settlements"]["by_count"]["clinic"]
    assert shares == {"15": pytest.approx(1 / 3), "15.9": pytest.approx(2 / 3), "30": pytest.approx(2 / 3)}


# ------------------------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("argv,message", [
    (["propose", "clinics", "--region", "tibet", "--time-limit", "0"], "--time-limit 0: seconds must be a positive number"),
    (["propose", "centres", "--region", "tibet", "--time-limit", "-5"], "--time-limit -5: seconds must be a positive"),
    (["propose", "clinics", "--region", "tibet", "--threshold", "0"], "--threshold 0: minutes must be a positive number"),
    (["gaps", "--region", "tibet", "--workers", "0"], "--workers 0: need at least one worker"),
])
def test_cli_zero_means_zero_not_the_default(capsys, tmp_path, argv, message):
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_settlement_id_clash_names_both_files_and_rows(capsys, data, tmp_path):
    table = data / "mine.csv"
    table.write_text("id,name,lon,lat\nX1,a,91.1,29.6\n540121203201,卡孜村,91.17,29.9\n", encoding="utf-8")
    cfg = tibet_config(tmp_path, {'relocation = "facts/tibet_relocation_sites.csv"':
                                  'relocation = "facts/tibet_relocation_sites.csv"\n'
                                  'settlement_tables = [{ path = "mine.csv" }]'})
    assert main(["-q", "data", "check", "--region", str(cfg), "--data", str(data)]) == 2
    line = one_error_line(capsys)
    assert "gazetteer/adcode/540121.csv, row" in line and "settlement id '540121203201' appears twice" in line
    assert "mine.csv, row 3" in line
