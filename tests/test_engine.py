"""Network engine: exact minutes on a hand-computed graph, monotonicity, equivalence with networkx."""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from scipy.sparse.csgraph import dijkstra

from geoaccess.engine import (EngineGraph, build_engine_graph, compute_travel_times, cost_matrix,
                              nearest_facility_times, snap_points_to_edges)
from geoaccess.terrain import TerrainParams, tobler_kph

# Plate carrée on a sphere: metres are linear in degrees, so hand arithmetic is exact.
R = 6371000.0
EQC = f"+proj=eqc +lat_ts=0 +lon_0=0 +R={R} +units=m +no_defs"
WALK = 5000.0 / 60.0  # default off-road speed, metres per minute
DETOUR = 1.3
#: the off-road model these hand computations use: flat, 5 km/h × 1.3 detour
FLAT = TerrainParams(offroad_speed_factor=5.0 / tobler_kph(0.0), offroad_detour_factor=DETOUR)


def deg(m: float) -> float:
    return m / R * 180.0 / math.pi


def tiny_graph(profiles: bool = False) -> nx.MultiDiGraph:
    """A(0,0) — B(1000,0) — C(2000,0) in metres, B → D(1000,1000) one way, E — F apart.

    Seconds: A→B 100, B→A 200 (uphill/downhill), B→C 600, C→B 60, B→D 180, E↔F 10.
    """
    G = nx.MultiDiGraph(crs="EPSG:4326")
    xy = {"A": (0, 0), "B": (1000, 0), "C": (2000, 0), "D": (1000, 1000), "E": (5000, 5000), "F": (6000, 5000)}
    for n, (x, y) in xy.items():
        G.add_node(n, x=deg(x), y=deg(y))
    for u, v, t in [("A", "B", 100), ("B", "A", 200), ("B", "C", 600), ("C", "B", 60),
                    ("B", "D", 180), ("E", "F", 10), ("F", "E", 10)]:
        G.add_edge(u, v, travel_time=float(t), length=1000.0)
    if profiles:  # A→B: 80 s in the first half, 20 s in the second; B→A: 20 s then 180 s
        G.edges["A", "B", 0]["time_profile"] = (np.array([0, 500, 1000.0]), np.array([0, 80, 100.0]))
        G.edges["B", "A", 0]["time_profile"] = (np.array([0, 500, 1000.0]), np.array([0, 20, 200.0]))
    return G


def points(rows: list[tuple[str, float, float]], **cols) -> pd.DataFrame:
    ids, x, y = zip(*rows)
    return pd.DataFrame({"lon": [deg(v) for v in x], "lat": [deg(v) for v in y], **cols}, index=list(ids))


FACILITIES = points([("K", 500, 100), ("T", 0, 0), ("H", 1000, 1000), ("P", 2000, 0)],
                    facility_id=["K", "T", "H", "P"],
                    level=["village_clinic", "township_health_centre", "county_hospital", "prefecture_hospital"])
SETTLEMENTS = points([("s1", 250, 300), ("s2", 750, 0), ("s3", 1000, 1000), ("s4", 5500, 5050), ("s5", 1500, 0)])
LEG_K = 100 * DETOUR / WALK   # clinic K is 100 m off the road: 1.56 min
LEG_S1 = 300 * DETOUR / WALK  # s1 is 300 m off the road: 4.68 min


@pytest.fixture(scope="module")
def result() -> pd.DataFrame:
    return compute_travel_times(tiny_graph(), SETTLEMENTS, FACILITIES, working_crs=EQC, terrain=FLAT)


def test_snap_finds_nearest_point_on_edge_not_node():
    snap = snap_points_to_edges(tiny_graph(), [deg(250)], [deg(300)], EQC)
    assert {snap.edge_u[0], snap.edge_v[0]} == {"A", "B"}
    along_from_a = snap.fraction[0] if snap.edge_u[0] == "A" else 1 - snap.fraction[0]
    assert along_from_a == pytest.approx(0.25, abs=1e-12)
    assert snap.leg_m[0] == pytest.approx(300.0, abs=1e-6)
    assert snap.snap_lon[0] == pytest.approx(deg(250), abs=1e-12)
    assert snap.snap_lat[0] == pytest.approx(0.0, abs=1e-12)


def test_offroad_leg_from_length_detour_and_speed(result):
    assert result.loc["s1", "offroad_m"] == pytest.approx(300.0, abs=1e-6)
    assert result.loc["s1", "offroad_min"] == pytest.approx(4.68, abs=1e-9)


def test_mid_edge_settlement_splits_each_direction_by_fraction(result):
    # s1 at 0.25 of A–B: to T at A it rides 0.25 of B→A (200 s); to H it rides 0.75 of A→B
    # (100 s) then B→D (180 s).
    assert result.loc["s1", "t_thc_min"] == pytest.approx(LEG_S1 + 0.25 * 200 / 60, abs=1e-9)
    assert result.loc["s1", "t_county_min"] == pytest.approx(LEG_S1 + (0.75 * 100 + 180) / 60, abs=1e-9)
    assert result.loc["s1", "t_pref_min"] == pytest.approx(LEG_S1 + (0.75 * 100 + 600) / 60, abs=1e-9)


def test_settlement_and_facility_on_same_edge_route_along_it(result):
    # s2 at 0.75 of A–B, clinic K at 0.5: the trip uses 0.25 of B→A (200 s), not A→B.
    assert result.loc["s2", "t_clinic_min"] == pytest.approx(0.25 * 200 / 60 + LEG_K, abs=1e-9)
    assert result.loc["s2", "nearest_clinic_id"] == "K"
    assert result.loc["s2", "t_thc_min"] == pytest.approx(0.75 * 200 / 60, abs=1e-9)
    assert result.loc["s2", "t_county_min"] == pytest.approx((0.25 * 100 + 180) / 60, abs=1e-9)
    assert result.loc["s2", "t_pref_min"] == pytest.approx((0.25 * 100 + 600) / 60, abs=1e-9)


def test_nearest_facility_id_per_group(result):
    ids = result.loc["s1", ["nearest_clinic_id", "nearest_thc_id", "nearest_county_id", "nearest_pref_id"]]
    assert list(ids) == ["T", "T", "H", "P"]
    # s5 at the middle of B–C: C→B (60 s) is fast, so the county hospital beats the clinic.
    assert result.loc["s5", "t_clinic_min"] == pytest.approx((0.5 * 60 + 180) / 60, abs=1e-9)
    assert result.loc["s5", "nearest_clinic_id"] == "H"
    assert result.loc["s5", "t_pref_min"] == pytest.approx(0.5 * 600 / 60, abs=1e-9)


def test_one_way_edge_is_respected(result):
    # s3 sits on D, which B→D reaches but nothing leaves: only the county hospital at D.
    assert result.loc["s3", "t_county_min"] == pytest.approx(0.0, abs=1e-12)
    assert result.loc["s3", "nearest_county_id"] == "H"
    assert np.isnan(result.loc["s3", "t_pref_min"])
    assert pd.isna(result.loc["s3", "nearest_pref_id"])


def test_disconnected_settlement_kept_with_nan(result):
    row = result.loc["s4"]
    assert row[["t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min"]].isna().all()
    assert row["offroad_m"] == pytest.approx(50.0, abs=1e-6)


def test_settlement_without_coordinates_kept_with_nan():
    sett = pd.concat([SETTLEMENTS.loc[["s2"]], pd.DataFrame({"lon": [np.nan], "lat": [np.nan]}, index=["nowhere"])])
    res = compute_travel_times(tiny_graph(), sett, FACILITIES, working_crs=EQC, terrain=FLAT)
    assert list(res.index) == ["s2", "nowhere"]
    assert res.loc["nowhere"].drop(["nearest_clinic_id", "nearest_thc_id", "nearest_county_id",
                                    "nearest_pref_id"]).isna().all()
    assert res.loc["s2", "t_thc_min"] == pytest.approx(0.75 * 200 / 60, abs=1e-9)


def test_parallel_edges_use_the_fastest():
    G = tiny_graph()
    G.add_edge("B", "A", travel_time=40.0)  # a second, faster road from B to A (straight line too)
    res = compute_travel_times(G, SETTLEMENTS.loc[["s2"]], FACILITIES, working_crs=EQC, terrain=FLAT)
    # Both B→A roads share the straight geometry, so s2 sits on both: 0.75 × 40 s to T at A.
    assert res.loc["s2", "t_thc_min"] == pytest.approx(0.75 * 40 / 60, abs=1e-9)


def test_result_has_contract_columns_and_every_row_once(result):
    assert list(result.index) == list(SETTLEMENTS.index)
    assert list(result.columns) == [
        "t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min",
        "nearest_clinic_id", "nearest_thc_id", "nearest_county_id", "nearest_pref_id",
        "offroad_m", "offroad_min", "snap_lon", "snap_lat"]


def test_level_groups_are_monotone(result):
    t = result[["t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min"]].fillna(np.inf).to_numpy()
    assert (t[:, :-1] <= t[:, 1:]).all()


def test_time_profile_splits_uphill_and_downhill_exactly():
    res = compute_travel_times(tiny_graph(profiles=True), SETTLEMENTS.loc[["s2"]], FACILITIES, working_crs=EQC, terrain=FLAT)
    # s2 at 750 m: on A→B the last 250 m take 100 − 90 = 10 s; on B→A the first 250 m take 10 s.
    assert res.loc["s2", "t_thc_min"] == pytest.approx((200 - 10) / 60, abs=1e-9)
    assert res.loc["s2", "t_pref_min"] == pytest.approx((10 + 600) / 60, abs=1e-9)


def test_offroad_model_callable_and_far_facility_warning():
    calls = []

    def model(flon, flat, tlon, tlat):
        calls.append(len(flon))
        return np.full(len(flon), 1000.0), np.full(len(flon), 2.0)  # (length_m, minutes)

    res = compute_travel_times(tiny_graph(), SETTLEMENTS.loc[["s2"]], FACILITIES, working_crs=EQC, terrain=FLAT,
                               offroad_minutes=model, max_offroad_m=50.0)
    assert res.loc["s2", "offroad_min"] == 2.0
    assert res.loc["s2", "t_clinic_min"] == pytest.approx(2.0 + 0.25 * 200 / 60 + 2.0, abs=1e-9)
    assert any("1 facilities" in w and "K" in w for w in res.attrs["warnings"])


def test_facility_in_the_settlement_is_zero_minutes_even_off_road():
    fac = points([("V", 500, 3000)], facility_id=["V"], level=["village_clinic"])
    sett = points([("v", 500, 3000)])
    res = compute_travel_times(tiny_graph(), sett, fac, working_crs=EQC, terrain=FLAT)
    assert res.loc["v", "t_clinic_min"] == 0.0
    assert res.loc["v", "offroad_m"] > 1000


def test_adding_a_facility_never_increases_a_time():
    rng = np.random.default_rng(7)
    for _ in range(5):
        G = nx.MultiDiGraph(crs="EPSG:4326")
        n = 30
        for i in range(n):
            G.add_node(i, x=deg(rng.uniform(0, 5000)), y=deg(rng.uniform(0, 5000)))
        for u, v in rng.integers(0, n, size=(70, 2)):
            if u != v:
                G.add_edge(int(u), int(v), travel_time=float(rng.uniform(10, 300)))
        sett = pd.DataFrame({"lon": [deg(x) for x in rng.uniform(0, 5000, 40)],
                             "lat": [deg(y) for y in rng.uniform(0, 5000, 40)]})
        fac = pd.DataFrame({"lon": [deg(x) for x in rng.uniform(0, 5000, 6)],
                            "lat": [deg(y) for y in rng.uniform(0, 5000, 6)],
                            "facility_id": [f"f{i}" for i in range(6)], "level": "county_hospital"})
        cols = ["t_clinic_min", "t_county_min"]
        before = compute_travel_times(G, sett, fac.iloc[:5], working_crs=EQC, terrain=FLAT)[cols].fillna(np.inf)
        after = compute_travel_times(G, sett, fac, working_crs=EQC, terrain=FLAT)[cols].fillna(np.inf)
        assert (after.to_numpy() <= before.to_numpy() + 1e-12).all()


@pytest.fixture(scope="module")
def osm_drive_graph() -> nx.MultiDiGraph:
    pyrosm = pytest.importorskip("pyrosm")
    osm = pyrosm.OSM(pyrosm.get_data("test_pbf"))
    nodes, edges = osm.get_network(network_type="driving", nodes=True)
    G = osm.to_graph(nodes, edges, graph_type="networkx")
    for _, _, d in G.edges(data=True):
        d["travel_time"] = d["length"] / (30 / 3.6)
    return G


def test_equal_to_networkx_per_settlement_dijkstra_on_real_osm(osm_drive_graph):
    G = osm_drive_graph
    rng = np.random.default_rng(3)
    nodes = np.array(list(G.nodes))
    fac_nodes = rng.choice(nodes, 12, replace=False)
    xy = lambda ns: ([G.nodes[n]["x"] for n in ns], [G.nodes[n]["y"] for n in ns])
    sett = pd.DataFrame(dict(zip(("lon", "lat"), xy(nodes))), index=nodes)
    fac = pd.DataFrame(dict(zip(("lon", "lat"), xy(fac_nodes))), index=fac_nodes)
    fac["facility_id"] = [f"F{n}" for n in fac_nodes]
    fac["level"] = ["county_hospital"] * 6 + ["prefecture_hospital"] * 6
    res = compute_travel_times(G, sett, fac, working_crs="EPSG:32635")
    assert (res["offroad_m"] < 1e-6).all()

    for group, members in {"county": fac_nodes, "pref": fac_nodes[6:]}.items():
        expected = np.full(len(nodes), np.nan)
        for i, s in enumerate(nodes):  # the plain osmnx way: one Dijkstra per settlement
            dist = nx.single_source_dijkstra_path_length(G, s, weight="travel_time")
            reach = [dist[f] for f in members if f in dist]
            expected[i] = min(reach) / 60 if reach else np.nan
        got = res[f"t_{group}_min"].to_numpy()
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        ok = ~np.isnan(expected)
        assert np.abs(got[ok] - expected[ok]).max() < 1e-6
        multi = nx.multi_source_dijkstra_path_length(G.reverse(copy=False), set(members), weight="travel_time")
        near = res[f"nearest_{group}_id"].to_numpy()
        for i in np.flatnonzero(ok):  # the reported facility is one at the minimum time
            f = int(near[i][1:])
            assert nx.shortest_path_length(G, nodes[i], f, weight="travel_time") / 60 == pytest.approx(got[i], abs=1e-6)
            assert multi[nodes[i]] / 60 == pytest.approx(got[i], abs=1e-6)


def random_engine_graph(seed: int, n: int = 40, m: int = 120) -> tuple[EngineGraph, nx.DiGraph]:
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    w = rng.uniform(5, 200, m).round()
    w[:5] = 0.0  # zero-time edges must count as edges
    ref = nx.DiGraph()
    ref.add_nodes_from(range(n))
    for a, b, t in zip(src, dst, w):
        if a != b and (not ref.has_edge(a, b) or ref[a][b]["w"] > t):
            ref.add_edge(int(a), int(b), w=t)
    keep = src != dst
    return EngineGraph.from_edges(src[keep], dst[keep], w[keep], n), ref


def test_cost_matrix_equals_brute_force_and_omits_pairs_beyond_limit():
    net, ref = random_engine_graph(11)
    settlements = np.arange(0, 40, 2)
    candidates = np.array([0, 3, 8, 15, 22, 39])
    limit = 4.0  # minutes
    full = dict(nx.all_pairs_dijkstra_path_length(ref, weight="w"))
    expected = np.full((len(settlements), len(candidates)), np.inf)
    for i, s in enumerate(settlements):
        for j, c in enumerate(candidates):
            expected[i, j] = full[s].get(c, np.inf) / 60
    m = cost_matrix(net, settlements, candidates, limit, chunk_mb=1e-4)  # force one-candidate chunks
    coo = m.tocoo()
    got = np.full(expected.shape, np.inf)
    got[coo.row, coo.col] = coo.data
    within = expected <= limit
    assert within.sum() > 5 and (~within & np.isfinite(expected)).sum() > 5
    assert np.array_equal(np.isfinite(got), within)
    assert np.allclose(got[within], expected[within], atol=1e-9)
    assert m[0, 0] == 0 and (coo.row == 0).any() and ((coo.row == 0) & (coo.col == 0)).any()  # kept zero


def test_nearest_facility_times_equal_dense_scipy_on_random_graph():
    net, _ = random_engine_graph(5)
    fac = np.array([1, 7, 30])
    dense = dijkstra(net.forward, directed=True)  # all pairs, travel direction
    res = nearest_facility_times(net, np.arange(40), {"all": fac},
                                 pd.Series(["a", "b", "c"], index=fac))
    expected = dense[:, fac].min(axis=1) / 60
    expected[~np.isfinite(expected)] = np.nan
    np.testing.assert_allclose(res["t_all_min"], expected, atol=1e-9)
    ok = ~np.isnan(expected)
    pick = res["nearest_all_id"].map({"a": 1, "b": 7, "c": 30}).to_numpy()
    np.testing.assert_allclose(dense[np.arange(40)[ok], pick[ok].astype(int)] / 60, expected[ok], atol=1e-9)


def test_one_graph_serves_repeated_passes_and_the_cost_matrix():
    G = tiny_graph()
    lon, lat = SETTLEMENTS["lon"], SETTLEMENTS["lat"]
    net = build_engine_graph(G, lon, lat, FACILITIES["lon"], FACILITIES["lat"], working_crs=EQC, terrain=FLAT)
    ids = pd.Series(FACILITIES["facility_id"].to_numpy(), index=net.dest_nodes)
    a = nearest_facility_times(net, net.origin_nodes, {"x": net.dest_nodes[:2]}, ids)
    b = nearest_facility_times(net, net.origin_nodes, {"x": net.dest_nodes[:2]}, ids)
    pd.testing.assert_frame_equal(a, b)
    # The cost matrix's row minimum over the same facilities (K, T) gives the same minutes.
    coo = cost_matrix(net, net.origin_nodes, net.dest_nodes, 1e6).tocoo()
    best = np.full(len(a), np.inf)
    first_two = coo.col < 2
    np.minimum.at(best, coo.row[first_two], coo.data[first_two])
    np.testing.assert_allclose(np.where(np.isinf(best), np.nan, best), a["t_x_min"], atol=1e-9)
