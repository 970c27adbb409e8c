"""The national config (`--region china`) on a three-province piece of the national bundle (Beijing 11,
Tianjin 12 and Hainan 46: ~17,000 settlements; Hainan holds a prefecture-level city without counties, the
islands south of the DEM and a facility at sea): what a national loader meets, row conservation, level
ordering, and the Dask run by province equal to the single-process run. The whole-country run is measured by
bench/bench_national.py (docs/distributed.md), not here."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
from bench_national import make_bundle  # noqa: E402  (one bundle builder for the tests and the benchmark)

PROVINCES = ("11", "12", "46")
TIME_COLS = ["t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min"]


def _gaps(*args, timeout=900):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "cli.py"), "gaps", "--region", "china", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT)


@pytest.fixture(scope="module")
def bundle(data_dir, tmp_path_factory):
    return make_bundle(data_dir, tmp_path_factory.mktemp("national") / "data", PROVINCES)


@pytest.fixture(scope="module")
def serial_network(bundle, tmp_path_factory):
    """The single-process road-network run of the two-province bundle: (out folder, stderr)."""
    out = tmp_path_factory.mktemp("serial") / "out"
    r = _gaps("--data", str(bundle), "--out", str(out), "--engine", "network")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stderr


def _gazetteer_units(bundle) -> list[str]:
    """Town and village codes of the bundle's gazetteer files, read here with the csv module."""
    codes = []
    for f in sorted((bundle / "gazetteer" / "adcode").glob("*.csv")):
        with open(f, encoding="utf-8", newline="") as fh:
            codes += [row[0] for row in csv.reader(fh) if row and row[3] in ("town", "village")]
    return codes


def test_every_gazetteer_unit_comes_out_once_with_ordered_levels(bundle, serial_network):
    out, _ = serial_network
    s = pd.read_csv(out / "settlements.csv", dtype={"settlement_id": str, "county_code": str})
    assert sorted(s["settlement_id"]) == sorted(_gazetteer_units(bundle))
    v = s[TIME_COLS].to_numpy(float)
    v = np.where(np.isnan(v), np.inf, v)
    assert (v[:, :-1] <= v[:, 1:] + 1e-9).all()
    assert set(s["county_code"].str[:2]) == set(PROVINCES)


def test_summary_states_wall_time_peak_memory_steps_and_load(serial_network):
    out, stderr = serial_network
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["wall_time_s"] > 0 and summary["peak_memory_mb"] > 100
    steps = {s["step"]: s for s in summary["steps"]}
    assert {"gazetteer", "road network", "blank-spot audit", "write GeoPackage"} <= set(steps)
    assert all(s["seconds"] >= 0 and s["peak_mb"] > 0 for s in summary["steps"])
    assert summary["peak_memory_mb"] >= max(s["peak_mb"] for s in summary["steps"])
    assert len(summary["machine"]["load_average_1_5_15_min"]) == 3
    # the progress lines a person sees: one for every step that took a second or more (a fast host may run them all
    # quicker; tests/test_progress.py holds the rule itself)
    from geoaccess.progress import QUIET_BELOW_S
    for s in summary["steps"]:
        line = f"{s['step']}: {s['seconds']:.1f} s"
        assert (line in stderr) == (s["seconds"] >= QUIET_BELOW_S), line


def test_national_mismatches_are_counted_in_the_summary(serial_network):
    """What the national bundle holds that regional files do not: each is counted, with its people, and reported."""
    out, _ = serial_network
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    pop = summary["inputs"]["layers"]["population"]
    # 儋州 460400, a prefecture-level city without counties, is in the census under its 00 code only and the
    # gazetteer holds no township of it: 954,259 people counted as unmatched, not silently left out
    assert "460400" in pop["census_units_without_settlements"]
    assert pop["people_in_unmatched_units"] >= 954_259
    assert any("460400" in w and "people" in w for w in summary["warnings"])
    # the Nansha polygons reach south of the DEM: the DEM is read over its own extent, and that is said
    assert any("reaches beyond the DEM" in w for w in summary["warnings"])
    # the 南沙群岛 county hospital is registered at a point at sea outside every polygon: left out, named
    assert any("F460322000000" in w and "outside the region" in w for w in summary["warnings"])


def test_partitioned_by_province_on_dask_equals_the_single_process_run(bundle, serial_network, tmp_path):
    pytest.importorskip("distributed")
    serial, _ = serial_network
    out = tmp_path / "part"
    r = _gaps("--data", str(bundle), "--out", str(out), "--engine", "network", "--partition", "province",
              "--workers", "2", "--buffer-km", "50")
    assert r.returncode == 0, r.stderr[-3000:]
    a = pd.read_csv(out / "settlements.csv", dtype=str)
    b = pd.read_csv(serial / "settlements.csv", dtype=str)
    assert a.equals(b)
    for name in ("county_summary.csv", "blank_spots.csv"):
        assert pd.read_csv(out / name, dtype=str).equals(pd.read_csv(serial / name, dtype=str)), name
    parts = json.loads((out / "summary.json").read_text(encoding="utf-8"))["engine"]["partitions"]
    assert parts["by"] == "province" and parts["rounds"][0]["partitions"] == len(PROVINCES)


def test_partitioned_combined_run_by_province_on_dask_equals_the_single_process_run(bundle, tmp_path):
    """The default engine: each province's window of the national grid and roads on a worker; every output the
    single process writes, byte for byte (Beijing and Tianjin share a border: trips cross it)."""
    pytest.importorskip("distributed")
    single, part = tmp_path / "single", tmp_path / "part"
    r = _gaps("--data", str(bundle), "--out", str(single))
    assert r.returncode == 0, r.stderr[-3000:]
    r = _gaps("--data", str(bundle), "--out", str(part), "--partition", "province", "--workers", "2",
              "--buffer-km", "50")
    assert r.returncode == 0, r.stderr[-3000:]
    csvs = sorted(p.name for p in single.glob("*.csv"))
    assert {"settlements.csv", "county_summary.csv", "blank_spots.csv", "referral.csv"} <= set(csvs)
    for name in csvs:
        assert (part / name).read_bytes() == (single / name).read_bytes(), name
    import rasterio

    for tif in sorted(single.glob("traveltime_*.tif")):
        with rasterio.open(tif) as a, rasterio.open(part / tif.name) as b:
            assert np.array_equal(a.read(), b.read(), equal_nan=True), tif.name
    parts = json.loads((part / "summary.json").read_text(encoding="utf-8"))["engine"]["partitions"]
    assert parts["by"] == "province" and parts["engine"] == "combined"
    assert parts["rounds"][0]["windows"] == len(PROVINCES)


def test_childless_prefecture_cities_are_county_level_census_units(data_dir):
    """东莞, 中山, 儋州, 嘉峪关 and 三沙 appear in the national census only under XXXX00 codes."""
    from geoaccess.loaders import county_level_units, load_population

    pop = load_population(data_dir / "facts" / "china_county_population_2020.csv")
    units = pop.index[county_level_units(pop.index)]
    childless = sorted(c for c in units if c.endswith("00"))
    assert childless == ["441900", "442000", "460300", "460400", "620200"]
    assert pop.loc[childless, "population_2020"].sum() > 16e6
    # a province's total and a prefecture with counties are not county-level units
    assert "110000" not in units and "110100" not in units and "110101" in units


# --------------------------------------------------------------------------- loader rules, on small tables
def _gaz(rows):
    from geoaccess.loaders import GAZETTEER_COLUMNS

    cols = [c for c in GAZETTEER_COLUMNS if c != "wkb"]
    df = pd.DataFrame([dict(zip(["code", "parent", "name", "level", "lon", "lat", "ur_code"], r)) for r in rows],
                      columns=cols).astype(object)
    df["lon"], df["lat"] = pd.to_numeric(df["lon"]), pd.to_numeric(df["lat"])
    df["ur_code"] = df["ur_code"].fillna("")
    df["_file"], df["_line"] = "130400.csv", np.arange(1, len(df) + 1)
    return df


def test_units_without_any_seat_below_the_prefecture_take_the_prefecture_seat():
    """130421 邯郸县: neither the town, nor the county seat has coordinates; the prefecture seat has."""
    from geoaccess.loaders import LoadReport, settlements_from_gazetteer

    gaz = _gaz([("130400000000", "130000000000", "邯郸市", "city", 114.5, 36.6, None),
                ("130421000000", "130400000000", "邯郸县", "county", None, None, None),
                ("130421100000", "130421000000", "尚璧镇", "town", None, None, None),
                ("130421100201", "130421100000", "某村", "village", None, None, "220"),
                ("130422100000", "130422000000", "甲镇", "town", 114.0, 36.0, None)])
    report = LoadReport()
    cc = pd.DataFrame(columns=["gaz_name", "county_code", "county_name", "method"])
    s = settlements_from_gazetteer(gaz, "wgs84", cc, report=report)
    assert len(s) == 3  # every town and village row, once
    assert s.set_index("settlement_id").loc[["130421100000", "130421100201"], "loc_quality"].tolist() == \
        ["prefecture", "prefecture"]
    assert s.set_index("settlement_id").loc["130421100000", "lon"] == pytest.approx(114.5)
    assert any("2 gazetteer settlements" in w and "prefecture (2)" in w for w in report.warnings)


def test_special_area_villages_share_the_urban_population():
    """城乡分类代码 123 (特殊区域) is urban: its villages share the county's urban population, not none."""
    import geopandas as gpd

    from geoaccess.loaders import assign_population

    s = gpd.GeoDataFrame({"settlement_id": ["a", "b", "c"], "kind": ["village"] * 3,
                          "admin_code": ["110105001001", "110105001002", "110105001003"],
                          "county_code": ["110105"] * 3, "ur_code": ["111", "123", "220"],
                          "pop_source": ["missing"] * 3, "population": [np.nan] * 3})
    pop = pd.DataFrame({"population_2020": [300.0], "urban_population_2020": [200.0],
                        "rural_population_2020": [100.0]}, index=pd.Index(["110105"], name="adcode"))
    out = assign_population(s, pop)
    assert out["population"].tolist() == [100.0, 100.0, 100.0]
    assert out["pop_source"].eq("census_split").all()


def test_a_national_config_takes_every_code(tmp_path):
    from geoaccess.config import load_region
    from geoaccess.errors import ConfigError

    cfg = load_region("china")
    assert cfg.admin_prefix == "" and cfg.key == "china"
    p = tmp_path / "bad.toml"
    p.write_text((PROJECT_ROOT / "geoaccess" / "regions" / "china.toml").read_text(encoding="utf-8")
                 .replace('admin_prefix = ""', 'admin_prefix = "5x"'), encoding="utf-8")
    with pytest.raises(ConfigError, match="admin_prefix must be digits"):
        load_region(p)
