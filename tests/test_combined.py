"""The combined engine: roads and terrain in one search, on small worlds a person can reason about."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine
from scipy.sparse.csgraph import dijkstra

from geoaccess import combined
from geoaccess.engine import compute_travel_times as road_only
from geoaccess.elevation import Dem
from geoaccess.terrain import TerrainParams, offroad_leg_times, tobler_kph

WCRS = "EPSG:32646"
LON0, LAT0 = 91.0, 29.6
STEP = 0.01                      # ≈ 1 km cells
PARAMS = TerrainParams(offroad_speed_factor=4.0, offroad_detour_factor=1.4)
FLAT_KPH = tobler_kph(0.0) * 4.0  # 20.2 km/h on level ground


def dem(elevation: np.ndarray) -> Dem:
    """A geographic DEM whose top-left corner is (LON0, LAT0 + rows·STEP)."""
    rows = elevation.shape[0]
    return Dem(np.asarray(elevation, float), Affine(STEP, 0, LON0, 0, -STEP, LAT0 + rows * STEP), "EPSG:4326", None,
               "(test)")


def road(G: nx.MultiDiGraph, a, b, kph: float = 60.0) -> None:
    """A two-way straight road between (lon, lat) points a and b at ``kph``."""
    for p in (a, b):
        G.add_node(p, x=p[0], y=p[1])
    line = shapely.LineString([a, b])
    length = offroad_leg_times([a[0]], [a[1]], [b[0]], [b[1]], None, TerrainParams(offroad_detour_factor=1.0))[0][0]
    for u, v, g in ((a, b, line), (b, a, line.reverse())):
        G.add_edge(u, v, geometry=g, length=length, speed_kph=kph, travel_time=length / (kph / 3.6))


def table(points, **cols) -> pd.DataFrame:
    return pd.DataFrame({"lon": [p[0] for p in points], "lat": [p[1] for p in points], **cols})


def run(G, elevation, settlements, facilities, **kw):
    d = dem(elevation)
    out, (res, grid) = combined.compute_travel_times(G, d, settlements, facilities, params=PARAMS, working_crs=WCRS,
                                                     groups={"county": ("county_hospital",)}, **kw)
    return out, res, grid


def leg(a, b, d=None) -> float:
    return float(offroad_leg_times([a[0]], [a[1]], [b[0]], [b[1]], d, PARAMS, WCRS)[1][0])


# a 20 × 20 km world: a fast trunk road along the southern edge
FLAT = np.zeros((20, 20))
TRUNK = ((LON0 + 0.005, LAT0 + 0.005), (LON0 + 0.195, LAT0 + 0.005))


def trunk_graph() -> nx.MultiDiGraph:
    G = nx.MultiDiGraph(crs="EPSG:4326")
    road(G, *TRUNK, kph=60.0)
    return G


def test_neighbours_go_across_the_land_not_out_to_the_trunk_road_and_back():
    seat = (LON0 + 0.100, LAT0 + 0.150)      # 14.5 km north of the trunk road
    hospital = (LON0 + 0.106, LAT0 + 0.150)  # ~580 m east of the seat
    s, f = table([seat]), table([hospital], facility_id=["H"], level=["county_hospital"])
    out, _, _ = run(trunk_graph(), FLAT, s, f)
    straight = leg(seat, hospital)           # 580 m × 1.4 at 20 km/h ≈ 2.4 min
    assert out["t_county_min"].iloc[0] == pytest.approx(straight, rel=1e-9)
    assert out["nearest_county_id"].iloc[0] == "H"
    roads_only = road_only(trunk_graph(), s, f, working_crs=WCRS, terrain=PARAMS,
                           groups={"county": ("county_hospital",)})["t_county_min"].iloc[0]
    assert roads_only > 10 * straight        # the road-only engine drives out to the trunk road and back


def test_a_village_on_an_isolated_road_fragment_still_reaches_care_over_land():
    G = trunk_graph()
    fragment = ((LON0 + 0.100, LAT0 + 0.120), (LON0 + 0.102, LAT0 + 0.120))  # 200 m, joined to nothing
    road(G, *fragment, kph=30.0)
    village = (LON0 + 0.101, LAT0 + 0.1201)
    hospital = (LON0 + 0.150, LAT0 + 0.006)   # beside the trunk road
    s, f = table([village]), table([hospital], facility_id=["H"], level=["county_hospital"])
    roads_only = road_only(G, s, f, working_crs=WCRS, terrain=PARAMS, groups={"county": ("county_hospital",)})
    assert np.isnan(roads_only["t_county_min"].iloc[0])   # snapped onto the fragment: unreachable by road
    out, _, _ = run(G, FLAT, s, f)
    t = out["t_county_min"].iloc[0]
    assert np.isfinite(t) and t <= leg(village, hospital) + 1e-9


def test_long_trips_take_the_road_when_it_is_faster():
    a = (LON0 + 0.010, LAT0 + 0.010)          # beside the trunk road, 18 km apart
    b = (LON0 + 0.190, LAT0 + 0.010)
    s, f = table([a]), table([b], facility_id=["H"], level=["county_hospital"])
    out, _, _ = run(trunk_graph(), FLAT, s, f)
    t = out["t_county_min"].iloc[0]
    assert t < 0.5 * leg(a, b)                 # 60 km/h road vs 20 km/h × 1.4 across the land
    assert t > 18.0 / 60.0 * 60.0 * 0.95       # and not faster than the road itself (≈ 18 min)


def test_uphill_is_slower_than_downhill_across_the_land():
    ramp = np.tile(np.arange(20)[::-1, None] * 60.0, (1, 20))  # rises 60 m per km northwards (6 %)
    low, high = (LON0 + 0.100, LAT0 + 0.025), (LON0 + 0.100, LAT0 + 0.175)
    G = nx.MultiDiGraph(crs="EPSG:4326")
    up, _, _ = run(G, ramp, table([low]), table([high], facility_id=["H"], level=["county_hospital"]), direct_km=0)
    down, _, _ = run(G, ramp, table([high]), table([low], facility_id=["H"], level=["county_hospital"]), direct_km=0)
    assert up["t_county_min"].iloc[0] > 1.3 * down["t_county_min"].iloc[0]


def test_cells_without_elevation_are_barriers():
    wall = FLAT.copy()
    wall[:, 10] = np.nan                       # a north-south void across the whole grid
    west, east = (LON0 + 0.050, LAT0 + 0.150), (LON0 + 0.150, LAT0 + 0.150)
    G = nx.MultiDiGraph(crs="EPSG:4326")
    out, res, _ = run(G, wall, table([west]), table([east], facility_id=["H"], level=["county_hospital"]),
                      direct_km=0)
    assert np.isnan(out["t_county_min"].iloc[0])
    assert np.isnan(res["county"].cell_minutes[:, 10]).all()


# ----------------------------------------------------------------------------- the search itself

def small_world(seed: int = 3):
    rng = np.random.default_rng(seed)
    elevation = 3500 + np.cumsum(rng.normal(0, 40, (20, 20)), axis=0)
    elevation[rng.random((20, 20)) < 0.04] = np.nan
    G = trunk_graph()
    road(G, (LON0 + 0.105, LAT0 + 0.005), (LON0 + 0.105, LAT0 + 0.185), kph=40.0)  # crosses the trunk road
    pts = [(LON0 + 0.01 + 0.18 * x, LAT0 + 0.01 + 0.18 * y) for x, y in rng.random((25, 2))]
    fac = [(LON0 + 0.01 + 0.18 * x, LAT0 + 0.01 + 0.18 * y) for x, y in rng.random((4, 2))]
    return G, elevation, table(pts), table(fac, facility_id=[f"F{i}" for i in range(4)],
                                           level=["county_hospital"] * 4)


def test_the_compiled_search_equals_scipy_dijkstra_on_the_same_graph():
    G, elevation, s, f = small_world()
    d = dem(elevation)
    grid = combined.terrain_grid(d, moves=16)
    g = combined.build_combined_graph(G, grid, PARAMS, d, working_crs=WCRS, origin_lon=s["lon"], origin_lat=s["lat"],
                                      dest_lon=f["lon"], dest_lat=f["lat"])
    sources = g.dest_nodes
    ours, label = g.search(sources)
    explicit = g.explicit_forward()
    theirs = dijkstra(explicit.T.tocsr(), directed=True, indices=sources, min_only=True)
    assert np.array_equal(np.isfinite(ours), np.isfinite(theirs))
    assert np.array_equal(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)])  # bit for bit
    assert (label[np.isfinite(ours)] >= 0).all()
    # the label names a facility at exactly that distance (one search per facility, scipy)
    each = dijkstra(explicit.T.tocsr(), directed=True, indices=sources)
    reached = np.flatnonzero(np.isfinite(ours))
    assert np.array_equal(each[label[reached], reached], ours[reached])


def test_adding_a_road_or_a_facility_never_lengthens_a_time():
    G, elevation, s, f = small_world(5)
    before, _, _ = run(G, elevation, s, f.iloc[:3])
    G2 = G.copy()
    road(G2, (LON0 + 0.02, LAT0 + 0.18), (LON0 + 0.18, LAT0 + 0.02), kph=50.0)
    more_road, _, _ = run(G2, elevation, s, f.iloc[:3])
    more_fac, _, _ = run(G, elevation, s, f)
    t0 = before["t_county_min"].fillna(np.inf).to_numpy()
    assert (more_road["t_county_min"].fillna(np.inf).to_numpy() <= t0 + 1e-9).all()
    assert (more_fac["t_county_min"].fillna(np.inf).to_numpy() <= t0 + 1e-9).all()
    assert (more_road["t_county_min"].to_numpy() < t0 - 1e-6).any()  # the new road helps someone


def test_a_nearer_dead_end_road_never_takes_away_the_way_to_the_trunk_road():
    """A road added nearer to a village than the trunk road must not cost it its way to the trunk road.

    With one leg to "the nearest road", the village 5 km north of the trunk lost its leg to the trunk when a
    dead-end track was built 1 km away, and reached the trunk over the grid instead: a road made it slower.
    """
    village = (LON0 + 0.050, LAT0 + 0.050)
    hospital = (LON0 + 0.190, LAT0 + 0.007)  # beside the trunk road, 15 km east
    s, f = table([village]), table([hospital], facility_id=["H"], level=["county_hospital"])
    before, _, _ = run(trunk_graph(), FLAT, s, f)
    G = trunk_graph()
    road(G, (LON0 + 0.030, LAT0 + 0.060), (LON0 + 0.070, LAT0 + 0.060), kph=15.0)  # a spur leading nowhere
    after, _, _ = run(G, FLAT, s, f)
    assert np.isfinite(before["t_county_min"].iloc[0])
    assert after["t_county_min"].iloc[0] <= before["t_county_min"].iloc[0] + 1e-9
    assert after["offroad_m"].iloc[0] < 1200  # the spur is now its nearest road, as reported


def test_straight_trips_as_graph_edges_or_checked_after_the_search_give_the_same_times():
    # direct_km only decides where the straight trips are taken (edges in the search, or the check after it)
    for seed in (3, 7, 11):
        G, elevation, s, f = small_world(seed)
        checked, _, _ = run(G, elevation, s, f, direct_km=0)
        as_edges, _, _ = run(G, elevation, s, f, direct_km=30.0)  # every pair in the 20 km world is an edge
        assert as_edges.attrs["engine"]["direct_pairs"] > 50 and checked.attrs["engine"]["direct_pairs"] == 0
        np.testing.assert_allclose(checked["t_county_min"].to_numpy(), as_edges["t_county_min"].to_numpy(), rtol=1e-12)
        same_time = np.isclose(checked["t_county_min"], as_edges["t_county_min"], rtol=1e-12)
        assert (checked["nearest_county_id"] == as_edges["nearest_county_id"])[same_time].all()


def test_no_time_exceeds_the_straight_off_road_trip_to_any_facility():
    G, elevation, s, f = small_world(7)
    d = dem(elevation)
    out, _, _ = run(G, elevation, s, f, direct_km=2.0)  # most pairs beyond the direct radius
    i, j = np.divmod(np.arange(len(s) * len(f)), len(f))
    straight = offroad_leg_times(s["lon"].to_numpy()[i], s["lat"].to_numpy()[i], f["lon"].to_numpy()[j],
                                 f["lat"].to_numpy()[j], d, PARAMS, WCRS)[1].reshape(len(s), len(f))
    # a straight trip across a cell without elevation is no trip: sample each line finely and drop those
    u = np.linspace(0, 1, 2001)
    lon = s["lon"].to_numpy()[i, None] + (f["lon"].to_numpy()[j] - s["lon"].to_numpy()[i])[:, None] * u
    lat = s["lat"].to_numpy()[i, None] + (f["lat"].to_numpy()[j] - s["lat"].to_numpy()[i])[:, None] * u
    col = np.floor((lon - LON0) / STEP).astype(int)
    row = np.floor((LAT0 + 20 * STEP - lat) / STEP).astype(int)
    blocked = np.isnan(elevation[row, col]).any(axis=1).reshape(len(s), len(f))
    straight[blocked] = np.inf
    assert blocked.any() and (~blocked).sum() > 50
    t = out["t_county_min"].fillna(np.inf).to_numpy()
    assert (t <= straight.min(axis=1) + 1e-9).all()


def test_bounded_cost_matrix_equals_each_facilitys_own_search():
    G, elevation, s, f = small_world(11)
    d = dem(elevation)
    grid = combined.terrain_grid(d, moves=16)
    g = combined.build_combined_graph(G, grid, PARAMS, d, working_crs=WCRS, origin_lon=s["lon"], origin_lat=s["lat"],
                                      dest_lon=f["lon"], dest_lat=f["lat"])
    # the reference: every straight trip as a graph edge (the cost matrix merges them after its searches)
    with_edges = combined.build_combined_graph(G, grid, PARAMS, d, working_crs=WCRS, origin_lon=s["lon"],
                                               origin_lat=s["lat"], dest_lon=f["lon"], dest_lat=f["lat"], direct_km=30.0)
    limit = 40.0
    m = g.cost_matrix(limit).toarray()
    present = np.zeros_like(m, bool)
    coo = g.cost_matrix(limit).tocoo()
    present[coo.row, coo.col] = True
    for j, node in enumerate(with_edges.dest_nodes):
        dist, _ = with_edges.search(np.array([node]))
        t = dist[with_edges.origin_nodes]
        assert np.array_equal(present[:, j], t <= limit)
        assert np.allclose(m[present[:, j], j], t[t <= limit], rtol=0, atol=1e-9)


def test_the_engine_on_flat_ground_without_a_dem_runs_and_agrees_with_its_straight_legs():
    seat, hospital = (LON0 + 0.100, LAT0 + 0.150), (LON0 + 0.130, LAT0 + 0.150)
    s, f = table([seat]), table([hospital], facility_id=["H"], level=["county_hospital"])
    d = dem(FLAT)
    grid = combined.terrain_grid(d, moves=16)
    out, _ = combined.compute_on_grid(nx.MultiDiGraph(crs="EPSG:4326"), grid, None, s, f, params=PARAMS,
                                      working_crs=WCRS, groups={"county": ("county_hospital",)})
    assert out["t_county_min"].iloc[0] == pytest.approx(leg(seat, hospital), rel=1e-9)  # within direct_km


def test_where_roads_serve_every_trip_the_combined_and_road_only_engines_agree():
    """A dense grid of fast roads (every 2 km, 80 km/h) with settlements and hospitals on them: the road is
    always the best way, so the combined engine gives the road-only engine's minutes."""
    G = nx.MultiDiGraph(crs="EPSG:4326")
    ticks = [LON0 + 0.005 + 0.02 * k for k in range(10)]
    lats = [LAT0 + 0.005 + 0.02 * k for k in range(10)]
    for k in range(10):
        for a, b in zip(ticks[:-1], ticks[1:]):
            road(G, (a, lats[k]), (b, lats[k]), kph=80.0)
        for a, b in zip(lats[:-1], lats[1:]):
            road(G, (ticks[k], a), (ticks[k], b), kph=80.0)
    rng = np.random.default_rng(1)
    on_road = [(ticks[i], lats[j]) for i, j in rng.integers(0, 10, (15, 2))]
    s = table(on_road)
    f = table([(ticks[1], lats[8]), (ticks[8], lats[2])], facility_id=["H1", "H2"], level=["county_hospital"] * 2)
    out, _, _ = run(G, FLAT, s, f, direct_km=0)
    roads_only = road_only(G, s, f, working_crs=WCRS, terrain=PARAMS, groups={"county": ("county_hospital",)})
    far = roads_only["t_county_min"].to_numpy() > 3.0  # beyond the first cells, where crossing a corner may win
    assert far.sum() >= 10
    np.testing.assert_allclose(out["t_county_min"].to_numpy()[far], roads_only["t_county_min"].to_numpy()[far],
                               rtol=1e-9)
    assert (out["t_county_min"].to_numpy() <= roads_only["t_county_min"].to_numpy() + 1e-9).all()


def test_straight_lines_are_blocked_exactly_where_they_cross_cells_without_elevation():
    elevation = FLAT.copy()
    elevation[5:15, 8:10] = np.nan  # a wall of cells without elevation, columns 8–9, rows 5–14
    grid = combined.terrain_grid(dem(elevation), moves=16)

    def line(a, b):  # from the centre of cell a to the centre of cell b, (row, col); b may lie off the grid
        (r0, c0), (r1, c1) = a, b
        x0, y0 = grid.transform @ (c0 + 0.5, r0 + 0.5)
        x1, y1 = grid.transform @ (c1 + 0.5, r1 + 0.5)
        return combined.clear_of_barriers(grid, np.array([x0]), np.array([y0]), np.array([x1]), np.array([y1]))[0]

    assert not line((10, 2), (10, 16))   # straight through the wall
    assert line((2, 2), (2, 16))         # above it
    assert line((17, 2), (17, 16))       # below it
    assert line((6, 2), (6, 7))          # up to the cell before it
    assert not line((3, 2), (17, 16))    # diagonally across it
    assert line((2, 2), (4, 16))         # diagonally, above it
    assert not line((2, 2), (2, 25))     # to a point off the grid
    # a point without coordinates has no clear line
    nan = np.array([np.nan])
    assert combined.clear_of_barriers(grid, nan, np.array([LAT0]), np.array([LON0]), np.array([LAT0])).tolist() == [False]


def test_barrier_kernel_samples_each_line_every_half_cell_as_the_array_version_did():
    # the array formulation the compiled kernel replaced: every line sampled at k/n, n = max(ceil(2·length), 1)
    elevation = FLAT.copy()
    elevation[5:15, 8:10] = np.nan
    elevation[2, 3] = np.nan
    grid = combined.terrain_grid(dem(elevation), moves=16)
    rng = np.random.default_rng(2)
    flon, flat = LON0 + rng.uniform(-0.02, 0.2, 2000), LAT0 + rng.uniform(-0.02, 0.2, 2000)
    tlon, tlat = LON0 + rng.uniform(-0.02, 0.2, 2000), LAT0 + rng.uniform(-0.02, 0.2, 2000)
    inv = ~grid.transform
    c0, r0 = inv @ (flon, flat)
    c1, r1 = inv @ (tlon, tlat)
    steps = np.maximum(np.ceil(2 * np.hypot(c1 - c0, r1 - r0)).astype(np.int64), 1)
    line = np.repeat(np.arange(len(flon)), steps + 1)
    k = np.arange(int((steps + 1).sum())) - np.repeat(np.cumsum(steps + 1) - (steps + 1), steps + 1)
    t = k / steps[line]
    r = np.floor(r0[line] + (r1 - r0)[line] * t).astype(np.int64)
    c = np.floor(c0[line] + (c1 - c0)[line] * t).astype(np.int64)
    inside = (r >= 0) & (r < 20) & (c >= 0) & (c < 20)
    bad = ~inside
    bad[inside] = np.isnan(elevation[r[inside], c[inside]])
    reference = np.bincount(line, weights=bad, minlength=len(flon)) == 0
    got = combined.clear_of_barriers(grid, flon, flat, tlon, tlat)
    assert np.array_equal(got, reference)
    assert 0.2 < got.mean() < 0.8
