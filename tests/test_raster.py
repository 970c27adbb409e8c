"""Raster engine: friction surface and cost-distance, checked by hand arithmetic, peers and real data."""
from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from pyproj import Geod, Transformer
from shapely.geometry import LineString

from geoaccess import raster
from geoaccess.coords import gcj02_to_wgs84
from geoaccess.errors import InputError

CELL = 100.0  # metres, projected test grids
UTM = "EPSG:32645"
WALK = {"base": 5.0, "a": 0.0}  # uniform 5 km/h whatever the slope
MIN_PER_CELL = CELL / 1000 / 5.0 * 60  # 1.2 minutes to cross 100 m at 5 km/h


def grid(dem, *, tobler=WALK, roads=None, **kw) -> raster.Surface:
    """A projected 100 m grid with its top-left corner at (0, 0)."""
    return raster.friction_surface(np.asarray(dem, dtype=float), Affine(CELL, 0, 0, 0, -CELL, 0),
                                   tobler=tobler, roads=roads, crs=UTM, **kw)


def centre(r, c):
    return ((c + 0.5) * CELL, -(r + 0.5) * CELL)


def octile(dr, dc):
    lo, hi = np.minimum(abs(dr), abs(dc)), np.maximum(abs(dr), abs(dc))
    return hi - lo + math.sqrt(2) * lo


# --- hand arithmetic on flat and tilted grids -------------------------------------------------

def test_flat_uniform_costs_along_row_and_diagonal():
    minutes, nearest = raster.cost_distance(grid(np.zeros((12, 12))), [0], [0])
    k = np.arange(12)
    np.testing.assert_allclose(minutes[0, :], k * MIN_PER_CELL, rtol=1e-6)
    np.testing.assert_allclose(minutes[k, k], k * math.sqrt(2) * MIN_PER_CELL, rtol=1e-6)
    assert minutes[0, 0] == 0 and (nearest == 0).all()


def test_flat_uniform_matches_octile_distance_everywhere():
    minutes, _ = raster.cost_distance(grid(np.zeros((9, 14))), [4], [6], anisotropic=False)
    r, c = np.indices(minutes.shape)
    np.testing.assert_allclose(minutes, octile(r - 4, c - 6) * MIN_PER_CELL, rtol=1e-6)


def test_knight_moves_shorten_off_axis_paths():
    s = grid(np.zeros((5, 5)))
    m8, _ = raster.cost_distance(s, [0], [0])
    m16, _ = raster.cost_distance(s, [0], [0], knight_moves=True)
    assert m8[1, 2] == pytest.approx((1 + math.sqrt(2)) * MIN_PER_CELL, rel=1e-6)
    assert m16[1, 2] == pytest.approx(math.sqrt(5) * MIN_PER_CELL, rel=1e-6)


def test_knight_move_cannot_jump_a_barrier():
    dem = np.zeros((2, 3))
    dem[:, 1] = np.nan  # wall between the source and (1, 2): no way round
    m16, _ = raster.cost_distance(grid(dem), [0], [0], knight_moves=True)
    assert np.isinf(m16[1, 2])


TILT = 0.1  # rise / run of the test plane, rising eastward
TOBLER = raster.TOBLER_DEFAULTS


def tilted_row(n=11):
    return grid(np.arange(n, dtype=float)[None, :] * CELL * TILT, tobler=TOBLER)


def tobler_minutes(cells, slope):
    return cells * CELL / 1000 / (TOBLER["base"] * math.exp(-TOBLER["a"] * abs(slope + TOBLER["b"]))) * 60


def test_anisotropic_time_is_from_cell_to_source():
    s = tilted_row()
    to_east, _ = raster.cost_distance(s, [0], [10])  # from the west end the trip climbs
    to_west, _ = raster.cost_distance(s, [0], [0])  # from the east end it descends
    assert to_east[0, 0] == pytest.approx(tobler_minutes(10, +TILT), rel=1e-6)
    assert to_west[0, 10] == pytest.approx(tobler_minutes(10, -TILT), rel=1e-6)


def test_uphill_slower_than_downhill_by_toblers_ratio():
    s = tilted_row()
    up = raster.cost_distance(s, [0], [10])[0][0, 0]
    down = raster.cost_distance(s, [0], [0])[0][0, 10]
    a, b = TOBLER["a"], TOBLER["b"]
    assert up / down == pytest.approx(math.exp(a * (abs(TILT + b) - abs(-TILT + b))), rel=1e-6)


def test_isotropic_uses_slope_magnitude_both_ways():
    s = tilted_row()
    np.testing.assert_allclose(s.slope, TILT, rtol=1e-6)
    up = raster.cost_distance(s, [0], [10], anisotropic=False)[0][0, 0]
    down = raster.cost_distance(s, [0], [0], anisotropic=False)[0][0, 10]
    assert up == pytest.approx(down, rel=1e-6)
    assert up == pytest.approx(tobler_minutes(10, TILT), rel=1e-6)


def test_offroad_speed_cap():
    s = grid(np.zeros((1, 5)), tobler=TOBLER, offroad_max_kph=2.0)
    minutes, _ = raster.cost_distance(s, [0], [0])
    assert minutes[0, 4] == pytest.approx(4 * CELL / 1000 / 2.0 * 60, rel=1e-6)


def test_offroad_speed_floor():
    s = grid(np.arange(5, dtype=float)[None, :] * CELL, tobler=TOBLER, offroad_min_kph=1.5)  # 100 % grade
    minutes, _ = raster.cost_distance(s, [0], [4])
    assert minutes[0, 0] == pytest.approx(4 * CELL / 1000 / 1.5 * 60, rel=1e-6)


def test_cell_pace_is_the_inverse_of_offroad_speed():
    s = grid(np.random.default_rng(1).normal(0, 30, (20, 20)), tobler=TOBLER, offroad_max_kph=5.5, offroad_min_kph=0.5)
    np.testing.assert_allclose(raster.cell_pace(s), 0.06 / s.offroad_kph(s.slope), rtol=1e-6)


def test_friction_params_follow_the_network_engines_offroad_legs():
    from geoaccess.terrain import TerrainParams, tobler_kph

    params = TerrainParams(offroad_speed_factor=4.0, offroad_min_kph=1.0)
    s = grid(np.zeros((1, 2)), **raster.friction_params(params))
    for slope in (-0.3, -0.05, 0.0, 0.2, 0.8):
        assert float(s.offroad_kph(slope)) == pytest.approx(max(1.0, 4 * tobler_kph(slope, params)))


def test_barriers_are_routed_around():
    dem = np.zeros((5, 5))
    dem[0:4, 2] = np.nan  # a wall with a gap in the bottom row
    minutes, nearest = raster.cost_distance(grid(dem), [0], [0])
    assert minutes[0, 4] == pytest.approx((4 + 4 * math.sqrt(2)) * MIN_PER_CELL, rel=1e-6)
    assert np.isnan(minutes[0:4, 2]).all() and (nearest[0:4, 2] == -1).all()


def test_enclosed_cells_are_unreachable():
    dem = np.zeros((5, 5))
    dem[1:4, 1:4] = np.nan
    dem[2, 2] = 0.0
    minutes, nearest = raster.cost_distance(grid(dem), [0], [0])
    assert np.isinf(minutes[2, 2]) and nearest[2, 2] == -1


def test_nearest_source_labels():
    sources = np.array([[1, 1], [7, 12], [2, 10]])
    minutes, nearest = raster.cost_distance(grid(np.zeros((9, 14))), sources[:, 0], sources[:, 1])
    r, c = np.indices(minutes.shape)
    d = np.stack([octile(r - sr, c - sc) for sr, sc in sources])
    np.testing.assert_allclose(minutes, d.min(axis=0) * MIN_PER_CELL, rtol=1e-6)
    ordered = np.sort(d, axis=0)
    clear = ordered[1] - ordered[0] > 1e-6  # no tie between the two nearest
    assert (nearest[clear] == d.argmin(axis=0)[clear]).all()


def test_source_on_barrier_is_rejected():
    dem = np.zeros((3, 3))
    dem[1, 1] = np.nan
    with pytest.raises(ValueError, match="barrier"):
        raster.cost_distance(grid(dem), [1], [1])


def explicit_graph_minutes(surface, rows, cols, knight_moves):
    """Reference: scipy Dijkstra on the explicit reversed cell graph with the documented move cost."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    R, C = surface.shape
    z, valid = surface.elevation.astype(float), surface.valid
    t = surface.tobler
    road = np.where(surface.road_kph > 0, 0.06 / np.where(surface.road_kph > 0, surface.road_kph, 1), 0)
    moves = [(dr, dc) for dr in range(-2, 3) for dc in range(-2, 3)
             if max(abs(dr), abs(dc)) == 1 or (knight_moves and {abs(dr), abs(dc)} == {1, 2})]
    heads, tails, weights = [], [], []
    for dr, dc in moves:
        c_r, c_c = np.indices((R, C))
        n_r, n_c = c_r + dr, c_c + dc
        ok = (n_r >= 0) & (n_r < R) & (n_c >= 0) & (n_c < C)
        c_r, c_c, n_r, n_c = c_r[ok], c_c[ok], n_r[ok], n_c[ok]
        ok = valid[c_r, c_c] & valid[n_r, n_c]
        if abs(dr) + abs(dc) == 3:  # knight: the two cells it passes through
            m_r, m_c = (c_r + dr // 2, c_c) if abs(dr) == 2 else (c_r, c_c + dc // 2)
            m2_r, m2_c = (m_r, m_c + dc) if abs(dr) == 2 else (m_r + dr, m_c)
            ok &= valid[m_r, m_c] & valid[m2_r, m2_c]
        c_r, c_c, n_r, n_c = c_r[ok], c_c[ok], n_r[ok], n_c[ok]
        h = abs(dc) * 0.5 * (surface.dx_m[c_r] + surface.dx_m[n_r])
        v = abs(dr) * 0.5 * (surface.dy_m[c_r] + surface.dy_m[n_r])
        length = np.hypot(h, v)
        slope = (z[c_r, c_c] - z[n_r, n_c]) / length
        walk = np.maximum(0.06 / t["base"] * np.exp(t["a"] * np.abs(slope + t["b"])), 0.06 / surface.offroad_max_kph)
        p_n = np.where(road[n_r, n_c] > 0, road[n_r, n_c], walk)
        p_c = np.where(road[c_r, c_c] > 0, road[c_r, c_c], walk)
        heads.append(c_r * C + c_c)
        tails.append(n_r * C + n_c)
        weights.append(length * 0.5 * (p_n + p_c))
    graph = coo_matrix((np.concatenate(weights), (np.concatenate(heads), np.concatenate(tails))),
                       shape=(R * C, R * C)).tocsr()
    dist = dijkstra(graph, indices=np.asarray(rows) * C + np.asarray(cols), min_only=True)
    return np.where(valid, dist.reshape(R, C), np.nan)


@pytest.mark.parametrize("knight_moves", [False, True])
def test_anisotropic_kernel_equals_explicit_graph_dijkstra(data_dir, knight_moves):
    with rasterio.open(data_dir / "dem" / "tibet_dem_30s.tif") as src:
        window = rasterio.windows.Window(360, 735, 90, 70)  # Himalayan border: rugged, part no-data
        dem, nodata = src.read(1, window=window), src.nodata
        transform = src.transform @ Affine.translation(window.col_off, window.row_off)
    assert (dem == nodata).any() and (dem != nodata).sum() > 3000
    road = LineString([transform @ (5, 60), transform @ (85, 20)])
    roads = gpd.GeoDataFrame({"speed_kph": [40.0]}, geometry=[road], crs="EPSG:4326")
    s = raster.friction_surface(dem, transform, nodata=nodata, roads=roads, offroad_max_kph=5.0)
    rows, cols = np.nonzero(s.valid)
    pick = np.random.default_rng(3).choice(rows.size, 4, replace=False)
    ours, _ = raster.cost_distance(s, rows[pick], cols[pick], knight_moves=knight_moves)
    reference = explicit_graph_minutes(s, rows[pick], cols[pick], knight_moves)
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(reference))
    finite = np.isfinite(reference)
    np.testing.assert_allclose(ours[finite], reference[finite], rtol=1e-5)


# --- roads ------------------------------------------------------------------------------------

def roads_gdf(lines, speeds):
    return gpd.GeoDataFrame({"speed_kph": speeds}, geometry=lines, crs=UTM)


def test_burned_road_speeds_travel_along_it():
    road = LineString([centre(2, 0), centre(2, 20)])
    s = grid(np.zeros((5, 21)), roads=roads_gdf([road], [60.0]))
    assert (s.road_kph[2] == 60).all() and (s.road_kph[[0, 1, 3, 4]] == 0).all()
    minutes, _ = raster.cost_distance(s, [2], [0])
    assert minutes[2, 20] == pytest.approx(20 * CELL / 1000 / 60 * 60, rel=1e-6)
    # one step off the road costs half a cell at road pace and half at walking pace
    assert minutes[1, 20] == pytest.approx(minutes[2, 20] + 0.5 * (MIN_PER_CELL + CELL / 1000 / 60 * 60), rel=1e-6)


def test_fastest_road_wins_a_shared_cell():
    a = LineString([centre(0, 2), centre(4, 2)])
    b = LineString([centre(2, 0), centre(2, 4)])
    s = grid(np.zeros((5, 5)), roads=roads_gdf([a, b], [80.0, 30.0]))
    assert s.road_kph[2, 2] == 80 and s.road_kph[2, 0] == 30 and s.road_kph[0, 2] == 80


def test_roads_do_not_cross_barriers():
    dem = np.zeros((3, 5))
    dem[1, 2] = np.nan
    s = grid(dem, roads=roads_gdf([LineString([centre(1, 0), centre(1, 4)])], [60.0]))
    assert s.road_kph[1, 2] == 0


def test_road_raster_agrees_with_network_engine():
    """A straight road burned into the 30" grid vs the same road as a graph edge at the same speed."""
    import networkx as nx

    from geoaccess.engine import compute_travel_times

    transform = Affine(1 / 120, 0, 90.0, 0, -1 / 120, 31.0)
    rows, cols, speed = 5, 201, 60.0
    lat = 31.0 - 2.5 / 120  # centre of row 2
    lon0, lon1 = 90.0 + 0.5 / 120, 90.0 + (cols - 0.5) / 120  # centres of columns 0 and 200
    line = LineString([(lon0, lat), (lon1, lat)])
    roads = gpd.GeoDataFrame({"speed_kph": [speed]}, geometry=[line], crs="EPSG:4326")
    s = raster.friction_surface(np.zeros((rows, cols)), transform, roads=roads)
    minutes, _ = raster.cost_distance(s, [2], [0])

    length_m = Geod(ellps="WGS84").inv(lon0, lat, lon1, lat)[2]
    G = nx.MultiDiGraph(crs="EPSG:4326")
    G.add_node("a", x=lon0, y=lat)
    G.add_node("b", x=lon1, y=lat)
    for u, v, geom in [("a", "b", line), ("b", "a", line.reverse())]:
        G.add_edge(u, v, geometry=geom, length=length_m, speed_kph=speed, travel_time=length_m / (speed / 3.6))
    facility = pd.DataFrame({"facility_id": ["H"], "level": ["county_hospital"], "lon": [lon0], "lat": [lat]})
    settlement = pd.DataFrame({"lon": [lon1], "lat": [lat]})
    network = compute_travel_times(G, settlement, facility, working_crs="EPSG:32646",
                                   groups={"county": ("county_hospital",)})["t_county_min"].iloc[0]

    assert network == pytest.approx(length_m / 1000 / speed * 60, rel=1e-6)
    one_cell_min = s.dx_m[2] / 1000 / speed * 60
    assert abs(minutes[2, cols - 1] - network) < one_cell_min
    assert minutes[2, cols - 1] == pytest.approx(network, rel=1e-4)  # in fact far closer than a cell


# --- geographic grids --------------------------------------------------------------------------

def test_geographic_cell_sizes_follow_latitude():
    transform = Affine(1 / 120, 0, 78.0, 0, -1 / 120, 36.7)
    dx, dy = raster.cell_sizes(transform, (1224, 2580))
    lat = 36.7 - (np.arange(1224) + 0.5) / 120
    np.testing.assert_allclose(dx, 30 / 3600 * np.cos(np.radians(lat)) * 111320, rtol=3e-3)
    assert ((dy > 922) & (dy < 926)).all()
    geod = Geod(ellps="WGS84")
    assert dx[600] == pytest.approx(geod.inv(90, lat[600], 90 + 1 / 120, lat[600])[2], rel=1e-5)
    assert dy[600] == pytest.approx(geod.inv(90, lat[600] - 1 / 240, 90, lat[600] + 1 / 240)[2], rel=1e-5)


# --- agreement with scikit-image MCP_Geometric -------------------------------------------------

def mcp_minutes(surface, rows, cols, sampling):
    graph = pytest.importorskip("skimage.graph")
    costs = np.where(surface.valid, raster.cell_pace(surface), np.inf)
    mcp = graph.MCP_Geometric(costs, sampling=sampling, fully_connected=True)
    cum, _ = mcp.find_costs(list(zip(rows, cols)))
    return np.where(surface.valid, cum, np.nan)


def test_isotropic_equals_mcp_geometric_on_projected_grid():
    """MCP_Geometric's move cost is length * (cost_a + cost_b) / 2 — the convention used here."""
    rng = np.random.default_rng(8)
    dem = rng.normal(0, 40, (60, 80)).cumsum(axis=1)
    dem[rng.random(dem.shape) < 0.1] = np.nan
    s = grid(dem, tobler=TOBLER)
    rows, cols = np.nonzero(s.valid)
    pick = rng.choice(rows.size, 6, replace=False)
    ours, _ = raster.cost_distance(s, rows[pick], cols[pick], anisotropic=False)
    theirs = mcp_minutes(s, rows[pick], cols[pick], (CELL, CELL))
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs))
    finite = np.isfinite(ours)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=2e-5, atol=1e-4)


def test_isotropic_vs_mcp_on_real_dem_differs_only_by_row_cell_size(data_dir):
    """On the 30" grid MCP_Geometric has one cell size; ours follows latitude row by row."""
    with rasterio.open(data_dir / "dem" / "tibet_dem_30s.tif") as src:
        window = rasterio.windows.Window(1500, 550, 120, 60)  # around Lhasa
        dem, nodata = src.read(1, window=window), src.nodata
        transform = src.transform @ Affine.translation(window.col_off, window.row_off)
    s = raster.friction_surface(dem, transform, nodata=nodata)
    ours, _ = raster.cost_distance(s, [30], [60], anisotropic=False)
    theirs = mcp_minutes(s, [30], [60], (s.dy_m[30], s.dx_m[30]))
    spread = max(s.dx_m.max() / s.dx_m[30] - 1, 1 - s.dx_m.min() / s.dx_m[30])
    rel = np.abs(ours - theirs) / np.where(theirs > 0, theirs, 1)
    assert 0 < np.nanmax(rel) <= spread + 1e-5
    # on the source row the two grids are identical, so a due-east path costs the same
    np.testing.assert_allclose(ours[30, 60:70], theirs[30, 60:70], rtol=1e-5)


# --- sources, sampling, GeoTIFFs ---------------------------------------------------------------

def test_source_on_nodata_moves_to_nearest_valid_cell():
    dem = np.zeros((5, 5))
    dem[0:3, 0:3] = np.nan
    rows, cols = raster.source_cells(grid(dem), [centre(1, 1)[0]], [centre(1, 1)[1]], radius_cells=2)
    assert (rows[0], cols[0]) in {(1, 3), (3, 1)}


def test_source_far_from_valid_cells_names_the_facility():
    dem = np.zeros((7, 7))
    dem[0:5, 0:5] = np.nan
    with pytest.raises(InputError, match="F42"):
        raster.source_cells(grid(dem), [centre(0, 0)[0]], [centre(0, 0)[1]], names=["F42"], radius_cells=2)


def test_source_outside_grid_names_the_facility():
    with pytest.raises(InputError, match="F7.*outside"):
        raster.source_cells(grid(np.zeros((3, 3))), [-50.0], [50.0], names=["F7"])


def test_sample_raster_takes_the_cell_holding_the_point():
    values = np.array([[1.0, 2.0], [np.inf, np.nan]], dtype=np.float32)
    transform = Affine(CELL, 0, 0, 0, -CELL, 0)
    got = raster.sample_raster(values, transform, [10, 190, 10, 190, 500], [-10, -99, -110, -190, -10])
    np.testing.assert_array_equal(got, [1.0, 2.0, np.nan, np.nan, np.nan])


def test_travel_time_raster_writes_level_geotiffs_and_settlement_times(tmp_path):
    s = grid(np.zeros((6, 8)))
    facilities = gpd.GeoDataFrame({"facility_id": ["A", "B"], "level": ["county_hospital", "township_health_centre"]},
                                  geometry=gpd.points_from_xy(*zip(centre(0, 0), centre(5, 7))), crs=UTM)
    groups = {"thc": ("township_health_centre", "county_hospital"), "county": ("county_hospital",),
              "pref": ("prefecture_hospital",)}
    out = raster.travel_time_raster(s, facilities, tmp_path, groups=groups)
    with rasterio.open(out["county"].path) as src:
        assert src.dtypes[0] == "float32" and src.nodata == raster.OUT_NODATA
        assert src.compression.name == "lzw" and src.transform == s.transform
        np.testing.assert_allclose(src.read(1), out["county"].minutes)
    with rasterio.open(out["pref"].path) as src:  # no prefecture hospital: nodata everywhere
        assert (src.read(1) == raster.OUT_NODATA).all()
    settlements = gpd.GeoDataFrame(geometry=gpd.points_from_xy(*zip(centre(0, 3), centre(5, 6))), crs=UTM)
    times = raster.settlement_times(out, settlements, s)
    assert times["t_county_min"].tolist() == pytest.approx([3 * MIN_PER_CELL, octile(5, 6) * MIN_PER_CELL])
    assert times["nearest_thc_id"].tolist() == ["A", "B"]
    assert times["t_pref_min"].isna().all() and times["nearest_pref_id"].isna().all()


# --- the real Tibet DEM ------------------------------------------------------------------------

def test_full_tibet_dem_one_level(data_dir, tmp_path):
    dem, transform, crs, nodata = raster.read_dem(data_dir / "dem" / "tibet_dem_30s.tif")
    s = raster.friction_surface(dem, transform, nodata=nodata, crs=crs)
    fac = pd.read_csv(data_dir / "facilities" / "tibet_facilities.csv")
    fac = fac[fac["level"].isin(["county_hospital", "prefecture_hospital"])].copy()
    fac["lon"], fac["lat"] = gcj02_to_wgs84(fac["lon"].to_numpy(), fac["lat"].to_numpy())
    out = raster.travel_time_raster(s, fac, tmp_path, groups={"county": ("county_hospital", "prefecture_hospital")})
    res = out["county"]
    valid = dem != nodata
    assert len(res.facility_ids) == 81
    assert np.isnan(res.minutes[~valid]).all() and (res.nearest[~valid] == -1).all()
    reached = res.nearest >= 0
    assert np.isfinite(res.minutes[reached]).all() and (res.minutes[reached] >= 0).all()
    assert reached.sum() > 0.99 * valid.sum()  # only islands cut off by no-data stay unreached
    rows, cols = raster.source_cells(s, fac["lon"].to_numpy(), fac["lat"].to_numpy())
    assert (res.minutes[rows, cols] == 0).all()
    with rasterio.open(res.path) as src:
        written = src.read(1)
    assert ((written == raster.OUT_NODATA) == ~np.isfinite(res.minutes)).all()
    lhasa = raster.sample_raster(res.minutes, transform, [91.1], [29.65])[0]  # near the prefecture hospital
    assert lhasa < 60


def test_wgs84_lonlat_tables_on_a_projected_grid_and_facilities_without_coordinates():
    s = grid(np.zeros((3, 4)))
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(*centre(0, 0))
    facilities = pd.DataFrame({"facility_id": ["A", "B"], "level": ["county_hospital"] * 2,
                               "lon": [lon, np.nan], "lat": [lat, np.nan]})
    out = raster.travel_time_raster(s, facilities, groups={"county": ("county_hospital",)})
    assert out["county"].facility_ids.tolist() == ["A"] and out["county"].path is None
    assert out["county"].minutes[0, 3] == pytest.approx(3 * MIN_PER_CELL, rel=1e-6)
    assert raster.settlement_times(out, facilities.iloc[:1], s)["t_county_min"].iloc[0] == 0
