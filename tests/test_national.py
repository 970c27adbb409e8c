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
    assert "road network:" in stderr  # the progress line a person sees


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
