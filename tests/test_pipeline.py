"""The planners' command on the real Tibet data, and the CLI's behaviour on bad input."""
import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geoaccess.cli import main

OUTPUTS = ["settlements.csv", "county_summary.csv", "prefecture_summary.csv", "blank_spots.csv", "relocation.csv",
           "exemptions.csv", "summary.json", "manifest.json", "geoaccess.gpkg", "settlements.shp", "settlements.cpg"]


@pytest.fixture(scope="module")
def tibet_run(tibet_gaps):
    return tibet_gaps[0]


@pytest.fixture(scope="module")
def tibet_network_gaps(data_dir, tmp_path_factory):
    """The same run on the road-only engine (17 settlements of 江达县 snap onto road fragments there)."""
    out = tmp_path_factory.mktemp("tibet_network")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["-q", "gaps", "--region", "tibet", "--data", str(data_dir), "--out", str(out),
                     "--engine", "network"])
    assert code == 0
    return out, printed.getvalue()


def test_gaps_writes_every_output(tibet_run):
    for name in OUTPUTS:
        assert (tibet_run / name).exists(), name


def test_every_settlement_comes_out_exactly_once(tibet_run):
    s = pd.read_csv(tibet_run / "settlements.csv", dtype={"settlement_id": str})
    assert len(s) == 5467 + 695 + 20 and s["settlement_id"].is_unique


def test_levels_are_ordered_for_every_row(tibet_run):
    s = pd.read_csv(tibet_run / "settlements.csv")
    v = s[["t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min"]].to_numpy()
    v = np.where(np.isnan(v), np.inf, v)
    assert (v[:, :-1] <= v[:, 1:] + 1e-9).all()


def test_unreachable_rows_are_kept_with_empty_times(tibet_run):
    s = pd.read_csv(tibet_run / "settlements.csv")
    assert set(s["status"]) <= {"ok", "unreachable", "outside_region"}
    unreachable = s[s["status"] == "unreachable"]
    assert unreachable[["t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min"]].isna().any(axis=1).all()


def test_county_summary_has_all_74_counties(tibet_run):
    c = pd.read_csv(tibet_run / "county_summary.csv", dtype={"county_code": str})
    assert len(c) == 74 and c["county_code"].is_unique
    for col in ("share_thc_30", "share_county_60", "share_county_120"):
        assert c[col].dropna().between(0, 1).all()
        assert (c[col + "_low"] <= c[col] + 1e-12).dropna().all() and (c[col] <= c[col + "_high"] + 1e-12).dropna().all()
    assert (c["share_county_60"] <= c["share_county_120"]).dropna().all()


def test_coverage_shares_are_monotone_in_the_threshold(tibet_run):
    summary = json.loads((tibet_run / "summary.json").read_text())
    for scope in ("all_settlements", "exactly_located"):
        for level, row in summary["coverage"][scope]["by_count"].items():
            shares = [row[b] for b in ("15", "30", "60", "120", "240")]
            assert shares == sorted(shares) and all(0 <= x <= 1 for x in shares), (scope, level)


def test_summary_states_county_hospital_access_and_assumptions(tibet_run):
    summary = json.loads((tibet_run / "summary.json").read_text())
    access = summary["county_hospital_access"]
    assert 0 < access["share_within_60_min"] <= access["share_within_120_min"] <= 1
    text = " ".join(summary["assumptions"])
    assert "township seat" in text and "derived from the standards" in text and "off-road" in text
    assert summary["software"]["numpy"] and summary["wall_time_s"] > 0


def test_register_without_village_clinics_is_reported_once(tibet_run):
    b = pd.read_csv(tibet_run / "blank_spots.csv")
    assert (b["rule"].str.startswith("register_scope")).sum() == 1
    assert not (b["unit_level"] == "village").any()


def test_townships_unlocated_under_a_derived_register_are_not_gaps_but_cannot_be_checked(tibet_gaps):
    out, printed = tibet_gaps
    summary = json.loads((out / "summary.json").read_text())
    b = pd.read_csv(out / "blank_spots.csv", dtype=str)
    unchecked = pd.read_csv(out / "cannot_check.csv", dtype=str)
    assert not b["detail"].str.contains("unlocated|not located").any()
    assert len(unchecked) == summary["blank_spots"]["cannot_check"]["total"] > 0
    assert unchecked["detail"].str.startswith("cannot be checked: seat not located").all()
    assert summary["blank_spots"]["total"] == len(b)
    assert "township_health_centre" not in summary["blank_spots"]["by_rule"]
    assert f"cannot be checked (not counted as gaps): {len(unchecked)}" in printed
    county = pd.read_csv(out / "county_summary.csv", dtype={"county_code": str})
    assert county["n_blank_spots"].sum() == b["county_code"].notna().sum()


def test_planners_table_says_the_clinic_level_is_absent_instead_of_borrowing_figures(tibet_gaps):
    _, printed = tibet_gaps
    rows = [line for line in printed.splitlines() if line.strip().startswith("clinic 卫生室+")]
    assert rows and all("%" not in line for line in rows)
    assert "level absent from the register" in printed and "village_clinic" in printed
    assert sum(line.strip().startswith("township HC") and "%" in line for line in printed.splitlines()) == 2


def test_planners_table_mentions_the_unreachable_settlements(tibet_network_gaps):
    out, printed = tibet_network_gaps
    n = int((pd.read_csv(out / "settlements.csv")["status"] == "unreachable").sum())
    assert n > 0 and f"{n} settlements have no travel time" in printed and "江达县" in printed


def test_planners_table_columns_line_up_in_display_width(tibet_gaps):
    """Every row of a printed table is as wide (in terminal columns) as its header, Chinese names included,
    and no name is cut inside a bracket."""
    from geoaccess.tables import display_width

    _, printed = tibet_gaps
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("id ") and "host unit" in line)
    block = []
    for line in lines[header + 1:]:
        if not line.strip():
            break
        block.append(line)
    assert len(block) == 20
    # the last column ("host unit") starts at the same terminal column on every row, after Chinese names
    start = display_width(lines[header][:lines[header].index("host unit")])
    for line in block:
        last = line.split()[-1]
        assert display_width(line[:line.rindex(last)]) == start, line
    assert "森布日极高海拔生态搬迁安置区（二期，计划）" in printed


def test_every_output_column_is_in_the_schema(tibet_run):
    from conftest import assert_every_column_documented

    assert assert_every_column_documented(tibet_run) >= 14  # 7 CSV files, 7 GeoPackage layers


def test_gaps_writes_the_referral_table_with_every_facility_once(tibet_run, data_dir):
    """referral.csv: every register facility exactly once, times to each higher level only; referral_chains.csv:
    every settlement once, the chain = first leg + referral leg, the direct trip = the engine's at its position."""
    import pyogrio

    ref = pd.read_csv(tibet_run / "referral.csv", dtype={"facility_id": str, "county_code": str})
    register = pd.read_csv(data_dir / "facilities" / "tibet_facilities.csv", dtype=str)
    assert ref["facility_id"].is_unique and sorted(ref["facility_id"]) == sorted(register["facility_id"])
    assert "referral.csv" in json.loads((tibet_run / "manifest.json").read_text())["outputs"]
    level = ref.set_index("facility_id")["level"]
    r = ref.set_index("facility_id")
    thc = level.eq("township_health_centre")
    county = level.isin(["county_hospital", "county_regional_centre"])
    assert r["t_thc_min"].isna().all()  # no village clinics in the register: nobody refers to a centre
    assert r.loc[thc, ["t_county_min", "t_pref_min"]].notna().all().all()
    assert r.loc[county, "t_county_min"].isna().all() and r.loc[county, "t_pref_min"].notna().all()
    assert r.loc[level.eq("prefecture_hospital"), ["t_county_min", "t_pref_min"]].isna().all().all()
    # the nearest county-level facility of a centre is county level, and no farther than its prefecture hospital
    assert level.reindex(r.loc[thc, "nearest_county_id"]).isin(
        ["county_hospital", "county_regional_centre", "prefecture_hospital"]).all()
    assert (r.loc[thc, "t_county_min"] <= r.loc[thc, "t_pref_min"] + 1e-9).all()
    assert len(pyogrio.read_dataframe(tibet_run / "geoaccess.gpkg", layer="referral")) == len(ref)
    c = pd.read_csv(tibet_run / "referral_chains.csv", dtype={"settlement_id": str})
    s = pd.read_csv(tibet_run / "settlements.csv", dtype={"settlement_id": str})
    assert c["settlement_id"].tolist() == s["settlement_id"].tolist()
    np.testing.assert_allclose(c["t_chain_min"], c["t_thc_min"] + c["t_referral_min"], rtol=1e-12)
    own = s["time_basis"].eq("measured").to_numpy()
    np.testing.assert_allclose(c.loc[own, "t_county_min"], s.loc[own, "t_county_min"], rtol=1e-9)
    first = c["nearest_thc_id"].map(r["level"]).eq("township_health_centre")
    np.testing.assert_allclose(c.loc[first, "t_referral_min"],
                               c.loc[first, "nearest_thc_id"].map(r["t_county_min"]), rtol=1e-12)
    summary = json.loads((tibet_run / "summary.json").read_text())["referral"]
    assert summary["facilities"] == len(ref) and 0 < summary["median_referral_thc_to_county_min"] < 240


def test_shapefile_field_descriptions_carry_the_minutes_in_the_column_name():
    from geoaccess.schema import column_info

    assert "within 90 min" in column_info("share_county_90").description
    assert column_info("share_county_90").alias == "sh_cnty90"
    low, high = column_info("share_county_90_low"), column_info("share_county_90_high")
    assert low.alias != high.alias and "lower end" in low.description and "90 min" in high.description
    assert column_info("t_thc_high_min").unit == "minutes"


def test_relocation_settlements_have_their_own_rows(tibet_run):
    r = pd.read_csv(tibet_run / "relocation.csv")
    assert len(r) == 20 and r["t_clinic_min"].notna().all()


# ------------------------------------------------------------------ cases a person can check by hand

def _settlements(out):
    return pd.read_csv(out / "settlements.csv", dtype={"settlement_id": str, "county_code": str})


def test_a_county_seat_reaches_its_own_hospital_600_m_away(tibet_run):
    s = _settlements(tibet_run).set_index("settlement_id")
    seat = s.loc["540121100000"]  # 甘丹曲果镇, seat of 林周县; its county hospital stands ~600 m away
    assert seat["name"] == "甘丹曲果镇" and seat["loc_quality"] == "exact"
    assert seat["t_county_min"] <= 15 and seat["nearest_county_id"] == "F540121000000"
    village = s.loc["540121100204"]  # 江角村委会, exactly located ~1.7 km from its township health centre
    assert village["t_thc_min"] <= 20


def test_no_located_settlement_near_a_facility_shows_a_long_trip(tibet_run):
    import geopandas as gpd
    from scipy.spatial import cKDTree

    s = _settlements(tibet_run)
    s = s[s["loc_quality"] == "exact"]
    f = gpd.read_file(tibet_run / "geoaccess.gpkg", layer="facilities")
    to_m = lambda lon, lat: np.column_stack([np.asarray(lon) * 111_320 * np.cos(np.radians(30)), np.asarray(lat) * 110_574])
    pairs = cKDTree(to_m(s["lon"], s["lat"])).query_ball_tree(cKDTree(to_m(f.geometry.x, f.geometry.y)), 1000.0)
    groups = {"clinic": None, "thc": ("township_health_centre", "county_hospital", "county_regional_centre",
                                      "prefecture_hospital"),
              "county": ("county_hospital", "county_regional_centre", "prefecture_hospital"),
              "pref": ("prefecture_hospital",)}
    checked = 0
    for i, near in enumerate(pairs):
        for j in near:
            for g, levels in groups.items():
                if levels is None or f["level"].iloc[j] in levels:
                    assert s[f"t_{g}_min"].iloc[i] <= 20, (s["name"].iloc[i], g, f["name"].iloc[j])
                    checked += 1
    assert checked > 1000  # ~950 settlements lie within 1 km of a facility


def test_no_tibet_settlement_is_unreachable_over_land(tibet_run):
    s = _settlements(tibet_run)
    assert (s["status"] == "ok").all()
    jiangda = s[s["county_code"] == "540321"]  # 江达县: its villages once snapped onto two road fragments
    assert jiangda["t_county_min"].notna().all()


def test_approximated_rows_carry_ranges_and_say_how(tibet_run):
    s = _settlements(tibet_run)
    approx = s["loc_quality"] != "exact"
    assert set(s.loc[approx, "time_basis"]) <= {"township_area", "county_area", "host_position", "position"}
    assert (s.loc[~approx, "time_basis"] == "measured").all()
    for g in ("clinic", "thc", "county", "pref"):
        lo, est, hi = (s[f"t_{g}{b}_min"] for b in ("_low", "", "_high"))
        assert ((lo <= est + 1e-9) & (est <= hi + 1e-9)).all()
        assert (s.loc[~approx, f"t_{g}_low_min"] == s.loc[~approx, f"t_{g}_min"]).all()
    # 错那市: one settlement with its own coordinates, the rest stacked on its seat: flagged, not "best covered"
    c = pd.read_csv(tibet_run / "county_summary.csv", dtype={"county_code": str}).set_index("county_code")
    assert c.loc["540530", "uncertain"] and c.loc["540530", "n_measured"] == 1
    assert c.loc["540530", "median_t_county_min"] > 60


def test_relocation_sites_keep_their_host_seats_time(tibet_run):
    r = pd.read_csv(tibet_run / "relocation.csv").set_index("settlement_id")
    # 森布日 (30,362 people) sits at its township seat beside the township health centre
    assert r.loc["R01", "t_clinic_min"] <= 5 and r.loc["R02", "t_clinic_min"] <= 5
    assert r.loc["R15", "t_county_min"] <= 15  # 那曲市城北, at the county seat
    assert (r["time_basis"] == "host_position").all()
    assert (r["t_clinic_low_min"] <= r["t_clinic_min"]).all() and (r["t_clinic_min"] <= r["t_clinic_high_min"]).all()
    b = pd.read_csv(tibet_run / "blank_spots.csv", dtype=str)
    assert not b["unit_code"].isin(["R01", "R02"]).any()


# ------------------------------------------------------------------ bad input through the CLI

def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def test_unknown_region_is_one_line_and_exit_2(capsys):
    assert main(["gaps", "--region", "atlantis"]) == 2
    assert "unknown region 'atlantis'" in _one_line_error(capsys)


def test_bad_threshold_is_one_line(capsys, data_dir, tmp_path):
    assert main(["gaps", "--region", "tibet", "--data", str(data_dir), "--threshold", "country=9"]) == 2
    assert "unknown level 'country'" in _one_line_error(capsys)


def _copy_region(tmp_path, data_dir, *, drop=(), dem_from=None):
    d = tmp_path / "data"
    for sub in ("gazetteer", "roads", "facilities", "boundaries", "facts", "dem"):
        shutil.copytree(data_dir / sub, d / sub, symlinks=False)
    for rel in drop:
        p = d / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if dem_from:
        (d / "dem/tibet_dem_30s.tif").unlink()
        shutil.copy(data_dir / dem_from, d / "dem/tibet_dem_30s.tif")
    return d


def test_dem_that_does_not_cover_the_region(capsys, data_dir, tmp_path):
    d = _copy_region(tmp_path, data_dir, dem_from="dem/chongqing_dem_30s.tif")
    assert main(["data", "check", "--region", "tibet", "--data", str(d)]) == 2
    assert "tibet_dem_30s.tif" in _one_line_error(capsys)


def test_empty_settlement_input_is_an_error_not_an_empty_report(capsys, data_dir, tmp_path):
    d = _copy_region(tmp_path, data_dir, drop=["facts/tibet_relocation_sites.csv"])
    for f in (d / "gazetteer/adcode").glob("54*.csv"):
        f.write_text("")
    out = tmp_path / "out"
    assert main(["gaps", "--region", "tibet", "--data", str(d), "--out", str(out)]) == 2
    assert "empty" in _one_line_error(capsys)
    assert not out.exists()


def _tibet_config(tmp_path, *, drop_keys=(), replace=None) -> Path:
    """tibet.toml copied to tmp_path, without the [inputs] lines of `drop_keys` and with text replaced."""
    from geoaccess.config import REGIONS_DIR

    lines = (REGIONS_DIR / "tibet.toml").read_text(encoding="utf-8").splitlines()
    text = "\n".join(l for l in lines if not any(l.startswith(f"{k} = ") for k in drop_keys)) + "\n"
    for old, new in (replace or {}).items():
        assert old in text
        text = text.replace(old, new)
    cfg = tmp_path / "tibet.toml"
    cfg.write_text(text, encoding="utf-8")
    return cfg


def test_missing_optional_layer_runs_and_says_what_it_skipped(capsys, data_dir, tmp_path):
    """A layer the config leaves at its default path may be absent (skipped, said so); one it names may not."""
    d = _copy_region(tmp_path, data_dir, drop=["facts/tibet_relocation_sites.csv", "facts/tibet_county_population_2020.csv"])
    cfg = _tibet_config(tmp_path, drop_keys=("relocation", "population"))
    out = tmp_path / "out"
    assert main(["-q", "gaps", "--region", str(cfg), "--data", str(d), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert any("relocation" in s for s in summary["skipped"]) and any("population" in s for s in summary["skipped"])
    assert "relocation" not in summary["inputs"]["by_kind"]


def test_map_command_writes_an_offline_map_and_figures(tibet_run, data_dir, tmp_path):
    assert main(["-q", "map", "--region", "tibet", "--data", str(data_dir), "--out", str(tibet_run),
                 "--maps-dir", str(tmp_path)]) == 0
    html = (tmp_path / "tibet_coverage.html").read_text(encoding="utf-8")
    assert "<script src=\"http" not in html and "leaflet" in html.lower()
    from test_mapping import control_layers

    # the gaps run's referral layer (its 709 facilities below the prefecture level), off at start
    assert "转诊 referral: 机构到上一级机构的时间 facility → next level (709)" in control_layers(html)
    assert (tmp_path / "tibet_bands_county.png").stat().st_size > 0
    assert (tmp_path / "tibet_county_coverage.png").stat().st_size > 0


def test_export_command_writes_shapefiles_with_utf8_and_a_field_map(tibet_run, data_dir, tmp_path):
    assert main(["-q", "export", "--region", "tibet", "--data", str(data_dir), "--out", str(tibet_run),
                 "--format", "shp", "--dest", str(tmp_path)]) == 0
    assert (tmp_path / "settlements.cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
    fields = pd.read_csv(tmp_path / "settlements_fields.csv")
    assert fields.iloc[:, 0].str.len().max() <= 10


def test_data_check_prints_every_layer(capsys, data_dir):
    assert main(["-q", "data", "check", "--region", "tibet", "--data", str(data_dir)]) == 0
    out = capsys.readouterr().out
    for layer in ("[gazetteer]", "[facilities]", "[counties]", "[relocation]", "[dem]", "[roads]"):
        assert layer in out
    assert "village/township=2942" in out and "county_codes_recoded" in out


def test_data_check_prints_each_assumption_once_and_says_how_the_dem_was_read(data_dir):
    import subprocess
    import sys

    from conftest import PROJECT_ROOT

    cli = [sys.executable, str(PROJECT_ROOT / "cli.py"), "data", "check", "--region", "tibet", "--data", str(data_dir)]
    r = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(subprocess.run(cli + ["--json"], capture_output=True, text=True, timeout=300).stdout)
    assert report["assumptions"]
    for text in report["assumptions"]:
        assert (r.stdout + r.stderr).count(text) == 1, text
    assert "windowed" not in r.stdout and "read into memory" in r.stdout


def test_altitude_derating_is_stated_only_where_roads_climb_above_its_threshold(tibet_run):
    from types import SimpleNamespace

    import networkx as nx

    from geoaccess.pipeline import engine_assumptions
    from geoaccess.terrain import TerrainParams

    def run_with(elevations):
        G = nx.MultiDiGraph()
        for i, z in enumerate(elevations):
            G.add_edge(i, i + 1, length=1000.0, elev_max=z)
            G.add_edge(i + 1, i, length=1000.0, elev_max=z)
        return SimpleNamespace(terrain_params=TerrainParams(), engine={}, dem=object(), graph=G)

    low = " ".join(engine_assumptions(run_with([300.0, 2790.0])))  # Chongqing's roads: below 3,000 m
    assert "grade sampled" in low and "altitude" not in low
    high = " ".join(engine_assumptions(run_with([2900.0, 3600.0, 4500.0])))
    assert "altitude derating above 3000 m (2 km of road lie above it)" in high
    summary = json.loads((tibet_run / "summary.json").read_text())
    assert any("altitude derating above 3000 m" in a for a in summary["assumptions"])


def test_raster_engine_runs_the_whole_pipeline_and_writes_a_surface_per_level(data_dir, tmp_path):
    out = tmp_path / "raster"
    assert main(["-q", "gaps", "--region", "tibet", "--data", str(data_dir), "--out", str(out), "--engine", "raster"]) == 0
    for g in ("clinic", "thc", "county", "pref"):
        assert (out / f"traveltime_{g}.tif").exists()
    s = pd.read_csv(out / "settlements.csv", dtype={"settlement_id": str})
    assert len(s) == 6182 and s["settlement_id"].is_unique
    v = s[["t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min"]].to_numpy()
    v = np.where(np.isnan(v), np.inf, v)
    assert (v[:, :-1] <= v[:, 1:] + 1e-6).all()
    assert json.loads((out / "summary.json").read_text())["engine"]["engine"] == "raster"


def test_partitioned_dask_run_writes_the_same_settlement_table(data_dir, tmp_path, tibet_network_gaps):
    """Partitioned runs route on the road network: the same table as the single-process road-network run."""
    pytest.importorskip("distributed")
    out = tmp_path / "part"
    assert main(["-q", "gaps", "--region", "tibet", "--data", str(data_dir), "--out", str(out),
                 "--partition", "prefecture", "--workers", "2", "--engine", "network"]) == 0
    serial = tibet_network_gaps[0]
    a = pd.read_csv(out / "settlements.csv", dtype=str)
    b = pd.read_csv(serial / "settlements.csv", dtype=str)
    assert a.equals(b)
    # the referral table: the same road-only model for the facilities' pass
    a = pd.read_csv(out / "referral.csv", dtype={"facility_id": str})
    b = pd.read_csv(serial / "referral.csv", dtype={"facility_id": str})
    pd.testing.assert_frame_equal(a, b, rtol=1e-9)


def test_partition_keeps_the_engine_of_the_single_process_run(capsys, tmp_path):
    """Same flags, same engine: --partition takes the combined engine by default (windows of its graph, tested
    in test_national / test_distributed); the raster engine, which is not partitioned, is refused in one line
    naming the option, not silently switched to another engine."""
    pytest.importorskip("distributed")
    assert main(["gaps", "--region", "tibet", "--out", str(tmp_path / "o"), "--partition", "province",
                 "--workers", "1", "--engine", "raster"]) == 2
    line = _one_line_error(capsys)
    assert "--engine raster" in line and "combined" in line and "network" in line
    assert not (tmp_path / "o").exists()


def test_partition_with_several_regions_is_refused(capsys):
    assert main(["gaps", "--region", "tibet", "--region", "chongqing", "--partition", "county"]) == 2
    assert "--partition splits one region" in _one_line_error(capsys)


def test_a_prefecture_level_region_is_one_more_config_file(data_dir, tmp_path):
    """A 4-digit admin prefix (like Xishuangbanna's 5328) on data in the shared layout: Chongqing's 县 block."""
    cfg = tmp_path / "cq_counties.toml"
    cfg.write_text("""
[region]
key = "cq_counties"
name = "重庆市辖县 test region"
admin_prefix = "5002"
working_crs = "EPSG:32648"
[inputs]
dem = "dem/chongqing_dem_30s.tif"
facilities = "facilities/chongqing_facilities.csv"
counties = "boundaries/chongqing_counties.geojson"
prefectures = "boundaries/chongqing_prefectures.geojson"
population = "facts/chongqing_county_population_2020.csv"
""", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["-q", "gaps", "--region", str(cfg), "--data", str(data_dir), "--out", str(out)]) == 0
    s = pd.read_csv(out / "settlements.csv", dtype=str)
    assert s["settlement_id"].str.startswith("5002").all()
    c = pd.read_csv(out / "county_summary.csv", dtype={"county_code": str})
    # 14 counties of the 2016 block, two of them recoded since (梁平县 → 500155, 武隆县 → 500156)
    assert len(c) == 14 and {"500155", "500156"} <= set(c["county_code"])


def test_offline_osm_download_with_an_empty_cache_is_a_clear_error(capsys, data_dir, tmp_path):
    cfg = tmp_path / "osm_offline.toml"
    cfg.write_text(f"""
[region]
key = "tibet"
name = "Tibet, roads from OSM (offline)"
admin_prefix = "54"
working_crs = "+proj=aea +lat_1=27 +lat_2=36 +lat_0=0 +lon_0=89 +datum=WGS84 +units=m +no_defs"
[roads]
source = "osm_online"
offline = true
cache_dir = "{tmp_path / 'cache'}"
""", encoding="utf-8")
    assert main(["gaps", "--region", str(cfg), "--data", str(data_dir), "--out", str(tmp_path / "out")]) == 2
    line = _one_line_error(capsys)
    assert "offline" in line.lower() or "cache" in line.lower()
    assert not (tmp_path / "out").exists()


def test_the_grid_and_areas_drawn_while_the_roads_are_built_are_the_engines_own(data_dir, monkeypatch):
    """The grid, its move minutes and the units' areas are drawn in a thread while the road graph is built: the
    engine uses that one move table (also for later graphs of the same model), and the positions drawn from the
    areas are those the engine's own grid gives when they are drawn after the searches."""
    from geoaccess import combined
    from geoaccess.config import load_region
    from geoaccess.pipeline import compute_region_times, finish_table

    made = []
    real = combined._in_move_weights

    def counted(*args):
        made.append(1)
        return real(*args)

    monkeypatch.setattr(combined, "_in_move_weights", counted)
    run = compute_region_times(load_region("tibet"), data_dir)
    assert len(made) == 1
    model = run.model
    s = run.inputs.settlements
    some = s[s["loc_quality"].eq("exact")].head(3)
    model.cost_matrix(some, run.facilities.head(5), 60.0)  # another graph of the same model: the same move table
    assert len(made) == 1
    again, _ = finish_table(model.prep, run.raw_times, run.thresholds, model=model, cells=run.rasters)
    pd.testing.assert_frame_equal(pd.DataFrame(again).drop(columns="geometry"),
                                  pd.DataFrame(run.table).drop(columns="geometry"))
