"""Distributed runs on Dask: several regions, and one region in buffered partitions, equal the serial runs."""
from __future__ import annotations

import pickle

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import shapely

pytest.importorskip("distributed")

from geoaccess import distributed as dd  # noqa: E402
from geoaccess.config import load_region  # noqa: E402
from geoaccess.engine import compute_travel_times  # noqa: E402
from geoaccess.errors import ConfigError, InputError  # noqa: E402
from geoaccess.pipeline import compute_region_times  # noqa: E402
from geoaccess.terrain import TerrainParams, offroad_leg_times  # noqa: E402

TIME_COLS = ["t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min"]
ID_COLS = ["nearest_clinic_id", "nearest_thc_id", "nearest_county_id", "nearest_pref_id"]


@pytest.fixture(scope="module")
def client():
    """One LocalCluster of 2 worker processes for the module (its start-up takes a few seconds)."""
    with dd.cluster_client(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def serial(data_dir):
    """The single-process settlement table of a region (or with ``run=True`` the whole Run), computed once."""
    runs = {}

    def table(region: str, engine: str = "combined", run: bool = False):
        if (region, engine) not in runs:
            runs[region, engine] = compute_region_times(load_region(region), data_dir, engine=engine)
        return runs[region, engine] if run else runs[region, engine].table

    return table


def assert_same_table(got, expected) -> None:
    """Same rows in the same order, same columns and types, identical times and nearest ids."""
    assert list(got.columns) == list(expected.columns)
    assert got["settlement_id"].tolist() == expected["settlement_id"].tolist()
    pd.testing.assert_frame_equal(got.drop(columns="geometry"), expected.drop(columns="geometry"),
                                  check_exact=True)
    diff = np.abs(got[TIME_COLS].to_numpy(float) - expected[TIME_COLS].to_numpy(float))
    assert np.array_equal(np.isnan(diff), np.isnan(expected[TIME_COLS].to_numpy(float)))
    assert np.nanmax(diff) == 0.0
    for col in ID_COLS:
        assert got[col].fillna("∅").tolist() == expected[col].fillna("∅").tolist(), col
    assert got.geometry.geom_equals_exact(expected.geometry, 0).all()


def test_two_regions_on_a_local_cluster_equal_the_serial_runs(client, serial, data_dir):
    tables = dd.run_regions(["tibet", "chongqing"], data_dir, client=client)
    assert set(tables) == {"tibet", "chongqing"}
    for region, table in tables.items():
        assert_same_table(table, serial(region))


def test_tibet_by_prefecture_in_windows_of_the_combined_graph_equals_the_serial_run(client, serial, data_dir):
    """The default engine on the cluster: each prefecture's window of the grid and roads searched on a worker."""
    run = dd.partitioned_run(load_region("tibet"), data_dir, by="prefecture", buffer_km=100.0, client=client)
    single = serial("tibet", "combined", run=True)
    assert_same_table(run.table, single.table)
    for level in single.rasters.minutes:  # every cell of every level's travel-time raster, and its nearest
        assert np.array_equal(run.rasters.minutes[level], single.rasters.minutes[level], equal_nan=True), level
        assert np.array_equal(run.rasters.nearest[level], single.rasters.nearest[level]), level
    pd.testing.assert_frame_equal(run.facility_times, single.facility_times)  # the referral table's origins too
    parts = run.engine["partitions"]
    assert parts["engine"] == "combined" and parts["workers"] == 2
    first, whole = parts["rounds"][0], parts["rounds"][-1]
    assert first["windows"] == single.table["prefecture_code"].nunique()
    assert first["certified"] + whole["node_levels"] == first["node_levels"]  # each node-level once
    assert first["certified"] > 0.8 * first["node_levels"]  # most are settled inside their window
    assert first["max_window_cells"] < single.rasters.minutes["pref"].size  # a worker holds part of the grid
    from geoaccess.pipeline import engine_assumptions

    said = [a for a in engine_assumptions(run) if a.startswith("run on Dask")]  # the report says how it ran
    assert len(said) == 1 and "prefecture's window" in said[0] and "certified" in said[0]


def test_tibet_by_prefecture_on_the_road_network_equals_the_serial_run(client, serial, data_dir):
    run = dd.partitioned_run(load_region("tibet"), data_dir, by="prefecture", buffer_km=100.0, client=client,
                             engine="network")
    expected = serial("tibet", "network")  # partitions route on the road network
    assert_same_table(run.table, expected)
    rounds = run.engine["partitions"]["rounds"]
    assert rounds[0]["partitions"] == expected["prefecture_code"].nunique()
    assert sum(r["certified"] for r in rounds) == len(expected)  # every settlement exactly once
    assert rounds[0]["certified"] > 0.8 * len(expected)  # most are settled inside their partition
    assert rounds[0]["max_road_edges"] < run.graph.number_of_edges()  # partitions hold part of the roads


# --------------------------------------------------------------------------- the certificate, by hand
WCRS = "EPSG:32646"


def _road_graph() -> nx.MultiDiGraph:
    """A slow road A–B (5 km/h) with a fast detour A–C–D–B (100 km/h) 55 km to the north."""
    xy = {"A": (91.0, 30.0), "B": (91.2, 30.0), "C": (91.0, 30.5), "D": (91.2, 30.5)}
    G = nx.MultiDiGraph(crs="EPSG:4326")
    for n, (x, y) in xy.items():
        G.add_node(n, x=x, y=y)
    for u, v, kph in (("A", "B", 5.0), ("A", "C", 100.0), ("C", "D", 100.0), ("D", "B", 100.0)):
        line = shapely.LineString([xy[u], xy[v]])
        length = _metres(line)
        for a, b, geom in ((u, v, line), (v, u, shapely.reverse(line))):
            G.add_edge(a, b, geometry=geom, length=length, travel_time=length / (kph / 3.6))
    return G


def _metres(line) -> float:
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", WCRS, always_xy=True)
    return float(shapely.length(shapely.transform(line, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))))


def test_certificate_rejects_a_route_that_leaves_the_partition():
    G = _road_graph()
    params = TerrainParams()
    s = pd.DataFrame({"lon": [91.02, 91.17], "lat": [30.001, 30.001], "county_code": ["u", "u"]})
    f = pd.DataFrame({"facility_id": ["F1"], "level": ["prefecture_hospital"], "lon": [91.18], "lat": [30.001]})
    legs = lambda a, b, c, d: offroad_leg_times(a, b, c, d, None, params, WCRS)[1]  # noqa: E731
    full = compute_travel_times(G, s, f, working_crs=WCRS, offroad_minutes=legs)

    points = dd._Points(s, f, G, WCRS)
    ok = np.isfinite(points.ends).all(axis=1)
    points.leg_min[ok] = dd._leg_minutes(points.ends[ok], None, params, WCRS)
    unit = np.array(["u", "u"], dtype=object)
    # 5 km around the two settlements keeps A–B, A–C and D–B, not C–D: C and D are the boundary.
    job = dd._partition_job(np.arange(2), 5.0, unit, {}, points, WCRS)
    assert sorted(job["boundary"]) == ["C", "D"]
    res = dd._route_partition(G, None, params, WCRS, job)
    t = res["times"]["t_pref_min"].to_numpy()
    # The first settlement's shortest route leaves by C: inside the partition it only finds the slow road.
    assert t[0] > full["t_pref_min"].iloc[0] + 60
    assert res["certified"].tolist() == [False, True]
    assert t[1] == pytest.approx(full["t_pref_min"].iloc[1], abs=1e-9)
    # On the whole graph every settlement is certified and equals the single-process engine.
    whole = dd._route_partition(G, None, params, WCRS, dd._partition_job(np.arange(2), None, unit, {}, points, WCRS))
    assert whole["certified"].all()
    assert np.allclose(whole["times"]["t_pref_min"], full["t_pref_min"], rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- small parts
def test_input_errors_survive_the_trip_from_a_worker():
    for exc in (InputError("a.csv", "bad value", row=3, column="lon"), ConfigError(None, "bad key")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.row == exc.row


def test_input_errors_from_a_worker_reach_the_client_as_themselves(client):
    with pytest.raises(ConfigError, match="unknown region 'atlantis'"):
        client.submit(load_region, "atlantis", pure=False).result()


def test_partition_arguments_are_checked(data_dir):
    cfg = load_region("tibet")
    with pytest.raises(ConfigError, match="partition by"):
        dd.partitioned_run(cfg, data_dir, by="township")
    with pytest.raises(ConfigError, match="buffer"):
        dd.partitioned_run(cfg, data_dir, buffer_km=0)


def test_worker_data_dir(tmp_path, monkeypatch):
    assert dd.worker_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("GEOACCESS_DATA", str(tmp_path))
    assert dd.worker_data_dir(tmp_path / "elsewhere") == tmp_path
    monkeypatch.delenv("GEOACCESS_DATA")
    with pytest.raises(ConfigError, match="GEOACCESS_DATA"):
        dd.worker_data_dir(tmp_path / "elsewhere")


@pytest.mark.slow
def test_gaps_for_two_regions_write_their_outputs(client, data_dir, tmp_path):
    summaries = dd.gaps_regions(["tibet", "chongqing"], data_dir, tmp_path, client=client)
    for region, summary in summaries.items():
        assert (tmp_path / region / "settlements.csv").is_file()
        assert summary["region"] == region


def _lhasa(tmp_path, data_dir):
    """A small region (Lhasa prefecture, 5401) on the shared data, with only its own 71 facilities, so the
    raster engine's window stays small: a config and a data folder of links plus one filtered register."""
    d = tmp_path / "data"
    (d / "facilities").mkdir(parents=True)
    for sub in ("dem", "roads", "boundaries", "gazetteer", "facts"):
        (d / sub).symlink_to(data_dir / sub)
    lines = (data_dir / "facilities" / "tibet_facilities.csv").read_text(encoding="utf-8").splitlines()
    (d / "facilities" / "tibet_facilities.csv").write_text(
        "\n".join([lines[0]] + [x for x in lines[1:] if x.startswith("F5401")]) + "\n", encoding="utf-8")
    cfg = tmp_path / "lhasa.toml"
    cfg.write_text('[region]\nkey = "lhasa"\nname = "拉萨市 Lhasa (test)"\nadmin_prefix = "5401"\n'
                   'working_crs = "EPSG:32646"\n[inputs]\ndem = "dem/tibet_dem_30s.tif"\n'
                   'facilities = "facilities/tibet_facilities.csv"\ncounties = "boundaries/tibet_counties.geojson"\n'
                   'prefectures = "boundaries/tibet_prefectures.geojson"\n'
                   'population = "facts/tibet_county_population_2020.csv"\nrelocation = ""\n', encoding="utf-8")
    return cfg, d


def test_engine_travels_to_the_workers_of_a_local_cluster(tmp_path, data_dir):
    """`gaps --workers 2 --engine raster` runs the raster engine on the cluster and writes into --out itself."""
    import json
    import subprocess
    import sys

    from conftest import PROJECT_ROOT

    cfg, d = _lhasa(tmp_path, data_dir)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(PROJECT_ROOT / "cli.py"), "-q", "gaps", "--region", str(cfg), "--data",
                        str(d), "--out", str(out), "--engine", "raster", "--workers", "2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["engine"]["engine"] == "raster"
    assert sorted(p.name for p in out.glob("traveltime_*.tif")) == [f"traveltime_{g}.tif" for g in
                                                                     ("clinic", "county", "pref", "thc")]


def test_engine_reaches_each_region_task(client, tmp_path, data_dir):
    cfg, d = _lhasa(tmp_path, data_dir)
    summaries = dd.gaps_regions([load_region(cfg)], d, tmp_path / "out", client=client, engine="raster")
    assert summaries["lhasa"]["engine"]["engine"] == "raster"
    tables = dd.run_regions([load_region(cfg)], d, client=client, engine="raster")
    assert tables["lhasa"]["offroad_m"].isna().all()  # the raster engine has no off-road legs


def test_a_cluster_that_fails_under_the_run_is_one_clear_line_not_an_internal_error():
    from geoaccess.distributed import _cluster_failures
    from geoaccess.errors import ClusterError, InputError

    class FutureCancelledError(Exception):  # as distributed raises it
        pass

    FutureCancelledError.__module__ = "distributed.client"

    class Client:  # a scheduler that answers with one worker
        def scheduler_info(self, n_workers=-1):
            return {"workers": {"tcp://w1": {"memory_limit": 6 * 2 ** 30}}}

    with pytest.raises(ClusterError) as err:
        with _cluster_failures(Client()):
            raise FutureCancelledError("_route_partition-3f2 cancelled for reason: already forgotten")
    text = str(err.value)
    assert "already forgotten" in text and "1 worker(s) alive, memory limit 6.0 GB each" in text
    assert "memory" in text and "\n" not in text and err.value.exit_code == 1
    with pytest.raises(InputError):  # the user's own errors pass unchanged
        with _cluster_failures(Client()):
            raise InputError("x.csv", "bad row", row=3)
    with pytest.raises(ZeroDivisionError):  # and so do the program's
        with _cluster_failures(Client()):
            raise ZeroDivisionError("1/0")
