"""Terrain: DEM sampling, direction-specific grade/altitude speeds, Tobler off-road legs.

Synthetic DEMs are GeoTIFFs written to tmp_path. Roads are laid out in Web Mercator
(EPSG:3857, also the working CRS) and each edge's `length` is its Mercator length, so a DEM
that is linear in Mercator x (i.e. in longitude) gives grades and times that are exact by hand.
"""
import json
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import rasterio
from pyproj import Geod, Transformer
from rasterio.transform import from_origin
from shapely.geometry import LineString

from geoaccess.errors import ConfigError, DataCoverageError, InputError
from geoaccess.elevation import open_dem, sample_dem
from geoaccess.terrain import (TerrainParams, add_edge_travel_times, altitude_speed_factor, edge_time_to_fraction,
                               grade_speed_factor, offroad_leg_times, split_time, tobler_kph)

R = 6378137.0  # Web Mercator sphere radius
WORK = "EPSG:3857"
LON0, LAT0 = 91.0, 30.0
TO_LONLAT = Transformer.from_crs(WORK, "EPSG:4326", always_xy=True)
TO_MERC = Transformer.from_crs("EPSG:4326", WORK, always_xy=True)
X0, Y0 = TO_MERC.transform(LON0, LAT0)
KMH60 = 60 / 3.6  # 60 km/h in m/s


def merc_x(lon):
    return R * np.radians(lon)


def plane(grade, z0=1000.0):
    """Elevation rising `grade` metres per Mercator metre eastwards from LON0."""
    return lambda lon, lat: z0 + grade * (merc_x(lon) - merc_x(LON0))


def write_dem(path, func, bounds=(90.9, 29.9, 91.2, 30.1), res=0.01, crs="EPSG:4326", nodata=-32768.0,
              hole=None):
    """Write func(lon, lat) at cell centres as a float64 GeoTIFF; `hole(lon, lat)` marks nodata cells."""
    west, south, east, north = bounds
    cols, rows = round((east - west) / res), round((north - south) / res)
    transform = from_origin(west, north, res, res)
    cx = west + (np.arange(cols) + 0.5) * res
    cy = north - (np.arange(rows) + 0.5) * res
    gx, gy = np.meshgrid(cx, cy)
    if crs == "EPSG:4326":
        lon, lat = gx, gy
    else:
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(gx, gy)
    z = func(lon, lat) * np.ones_like(lon)
    if hole is not None:
        z[hole(lon, lat)] = nodata
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=1, dtype="float64", crs=crs,
                       transform=transform, nodata=nodata) as dst:
        dst.write(z, 1)
    return path


def road(xy_offsets, speed=60.0, twin=True):
    """A graph with one road (and its twin) through Mercator offsets (metres) from (X0, Y0)."""
    xs = X0 + np.array([p[0] for p in xy_offsets], dtype=float)
    ys = Y0 + np.array([p[1] for p in xy_offsets], dtype=float)
    lon, lat = TO_LONLAT.transform(xs, ys)
    line = LineString(np.column_stack([lon, lat]))
    length = LineString(np.column_stack([xs, ys])).length
    G = nx.MultiDiGraph(crs="EPSG:4326")
    G.add_node(0, x=lon[0], y=lat[0])
    G.add_node(1, x=lon[-1], y=lat[-1])
    G.add_edge(0, 1, 0, geometry=line, length=length, speed_kph=speed, road_class="national")
    if twin:
        G.add_edge(1, 0, 0, geometry=line.reverse(), length=length, speed_kph=speed, road_class="national")
    return G


def east_km(km=1.0):
    return road([(0.0, 0.0), (1000.0 * km, 0.0)])


# --------------------------------------------------------------------------------------------
# Speed functions
# --------------------------------------------------------------------------------------------
def test_tobler_flat_speed_is_5_036_kph():
    assert tobler_kph(0.0) == pytest.approx(6 * math.exp(-0.175)) and tobler_kph(0.0) == pytest.approx(5.0367, abs=1e-4)


def test_tobler_peaks_at_6_kph_on_minus_five_percent():
    slopes = np.linspace(-0.5, 0.5, 1001)
    assert tobler_kph(-0.05) == 6.0 and slopes[np.argmax(tobler_kph(slopes))] == pytest.approx(-0.05)


def test_grade_factor_uphill_and_downhill_differ():
    # defaults: uphill 1 − 5·(0.06 − 0.02) = 0.8; downhill 1 − 3·(0.06 − 0.04) = 0.94
    assert grade_speed_factor(0.06) == pytest.approx(0.8) and grade_speed_factor(-0.06) == pytest.approx(0.94)


def test_grade_factor_caps_the_grade():
    # cap 0.10: a 25 % DEM grade is driven as 10 % → 1 − 5·0.08 = 0.6
    assert grade_speed_factor(0.25) == pytest.approx(0.6)


def test_altitude_factor_linear_above_threshold_with_floor():
    # 1 − 0.05·(4500 − 3000)/1000 = 0.925; floor 0.8 from 7000 m
    assert altitude_speed_factor(np.array([2000.0, 4500.0, 9000.0])) == pytest.approx([1.0, 0.925, 0.8])


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
def test_params_from_dict_rejects_unknown_key_by_name():
    with pytest.raises(ConfigError, match="grade_windw_m"):
        TerrainParams.from_dict({"grade_windw_m": 500})


def test_params_from_dict_overrides_defaults():
    p = TerrainParams.from_dict({"grade_cap": 0.08, "sample_spacing_m": 100})
    assert (p.grade_cap, p.sample_spacing_m, p.grade_window_m) == (0.08, 100.0, 2000.0)


def test_params_reject_a_factor_above_one():
    with pytest.raises(ConfigError, match="uphill_min_factor"):
        TerrainParams(uphill_min_factor=1.5)


# --------------------------------------------------------------------------------------------
# Road edges on synthetic DEMs
# --------------------------------------------------------------------------------------------
def test_flat_dem_gives_length_over_speed(tmp_path):
    dem = open_dem(write_dem(tmp_path / "flat.tif", lambda lon, lat: 1200.0))
    G = add_edge_travel_times(east_km(1.0), dem, TerrainParams(), WORK)
    assert G.edges[0, 1, 0]["travel_time"] == pytest.approx(1000.0 / KMH60, rel=1e-12)  # 60 s


def test_uphill_edge_on_tilted_plane(tmp_path):
    dem = open_dem(write_dem(tmp_path / "tilt.tif", plane(0.06)))
    G = add_edge_travel_times(east_km(1.0), dem, TerrainParams(), WORK)
    # 6 % uphill: factor 0.8 → 1000 m / (16.667 m/s · 0.8) = 75 s
    assert G.edges[0, 1, 0]["travel_time"] == pytest.approx(75.0, rel=1e-9)


def test_downhill_twin_gets_its_own_time(tmp_path):
    dem = open_dem(write_dem(tmp_path / "tilt.tif", plane(0.06)))
    G = add_edge_travel_times(east_km(1.0), dem, TerrainParams(), WORK)
    # 6 % downhill: factor 0.94 → 60 s / 0.94 = 63.8298 s, not the uphill 75 s
    assert G.edges[1, 0, 0]["travel_time"] == pytest.approx(60.0 / 0.94, rel=1e-9)


def test_twin_edge_sees_the_negated_grade(tmp_path):
    dem = open_dem(write_dem(tmp_path / "tilt.tif", plane(0.06)))
    G = add_edge_travel_times(east_km(1.0), dem, TerrainParams(), WORK)
    assert (G.edges[0, 1, 0]["grade_mean"], G.edges[1, 0, 0]["grade_mean"]) == pytest.approx((0.06, -0.06))


def test_altitude_factor_on_a_4500_m_plateau(tmp_path):
    dem = open_dem(write_dem(tmp_path / "plateau.tif", lambda lon, lat: 4500.0))
    G = add_edge_travel_times(east_km(1.0), dem, TerrainParams(), WORK)
    e = G.edges[0, 1, 0]
    # factor 1 − 0.05·1.5 = 0.925 → 60 s / 0.925 = 64.865 s
    assert e["travel_time"] == pytest.approx(60.0 / 0.925, rel=1e-9) and e["terrain_factor"] == pytest.approx(1 / 0.925)


def test_switchback_profile_is_slower_than_its_endpoints_suggest(tmp_path):
    dem = open_dem(write_dem(tmp_path / "tilt.tif", plane(0.06)))
    # up 2000 m east, 200 m north, back 2000 m west: both ends at 1000 m, endpoint grade 0
    G = road([(0, 0), (2000, 0), (2000, 200), (0, 200)])
    params = TerrainParams(grade_window_m=200.0)  # no smoothing: segments are exactly the three legs
    add_edge_travel_times(G, dem, params, WORK)
    e = G.edges[0, 1, 0]
    # 2000/(16.667·0.8) + 200/16.667 + 2000/(16.667·0.94) = 150 + 12 + 127.6596 s; endpoints only: 252 s
    assert e["flat_time"] == pytest.approx(252.0)
    assert e["travel_time"] == pytest.approx(150.0 + 12.0 + 120.0 / 0.94, rel=1e-9)


def test_time_profile_splits_an_edge_exactly(tmp_path):
    dem = open_dem(write_dem(tmp_path / "tilt.tif", plane(0.06)))
    G = road([(0, 0), (2000, 0), (2000, 200), (0, 200)])
    add_edge_travel_times(G, dem, TerrainParams(grade_window_m=200.0), WORK)
    e = G.edges[0, 1, 0]
    # 2000 m uphill = 150 s; 100 m further on the flat link = +6 s
    assert split_time(e["time_profile"], 2000.0) == pytest.approx(150.0)
    assert edge_time_to_fraction(G, [(0, 1, 0)], [2100.0 / 4200.0])[0] == pytest.approx(156.0)


def test_grade_window_damps_cell_scale_dem_noise(tmp_path):
    # flat plain at 1000 m with a ±25 m checkerboard of cells: spurious grades along the road
    def noisy(lon, lat):
        return 1000.0 + 25.0 * np.where((np.floor(lon / 0.01 + 1e-9) + np.floor(lat / 0.01 + 1e-9)) % 2 == 0, 1, -1)

    dem = open_dem(write_dem(tmp_path / "noise.tif", noisy))
    raw = add_edge_travel_times(road([(0, 300), (6000, 300)]), dem, TerrainParams(grade_window_m=200.0), WORK)
    smooth = add_edge_travel_times(road([(0, 300), (6000, 300)]), dem, TerrainParams(grade_window_m=2000.0), WORK)
    assert smooth.edges[0, 1, 0]["terrain_factor"] < raw.edges[0, 1, 0]["terrain_factor"]


def test_dem_hole_under_road_is_filled_along_the_edge_and_counted(tmp_path):
    def hole(lon, lat):
        return (lon > 91.01) & (lon < 91.02)

    dem = open_dem(write_dem(tmp_path / "holey.tif", plane(0.06), hole=hole))
    G = add_edge_travel_times(road([(0, 0), (4000, 0)]), dem, TerrainParams(), WORK)
    k = np.arange(21)  # 20 segments of 200 m
    lon = LON0 + np.degrees(200.0 * k / R)
    in_hole = int(((lon >= 91.01) & (lon < 91.02)).sum())  # samples whose cell is nodata
    e = G.edges[0, 1, 0]
    assert in_hole > 0 and e["dem_filled"] == in_hole and G.graph["terrain"]["filled_along_edge"] == 2 * in_hole
    assert np.isfinite(e["travel_time"]) and e["travel_time"] == pytest.approx(300.0, rel=0.02)  # 4 km at 6 %


def test_edge_inside_small_hole_takes_nearest_valid_cells(tmp_path):
    def hole(lon, lat):
        return (lon > 91.0) & (lon < 91.02) & (lat > 30.0) & (lat < 30.01)

    dem = open_dem(write_dem(tmp_path / "pit.tif", lambda lon, lat: 2000.0, hole=hole))
    G = add_edge_travel_times(road([(400, 600), (1400, 600)]), dem, TerrainParams(), WORK)
    e = G.edges[0, 1, 0]
    assert not e["dem_void"] and e["elev_mean"] == pytest.approx(2000.0)
    assert G.graph["terrain"]["filled_nearest_cell"] > 0


def test_edge_without_any_elevation_is_flat_and_flagged(tmp_path):
    def hole(lon, lat):
        return (lon > 90.95) & (lon < 91.10)

    dem = open_dem(write_dem(tmp_path / "void.tif", plane(0.06), hole=hole))
    G = add_edge_travel_times(east_km(1.0), dem, TerrainParams(), WORK)
    e = G.edges[0, 1, 0]
    assert e["dem_void"] and e["travel_time"] == pytest.approx(60.0) and G.graph["terrain"]["void_edges"] == 2


def test_road_running_off_the_dem_is_counted_and_finite(tmp_path, caplog):
    dem = open_dem(write_dem(tmp_path / "tilt.tif", plane(0.06)))  # DEM ends at 91.2° E, ~22 km east of LON0
    G = add_edge_travel_times(road([(0, 0), (30_000, 0)]), dem, TerrainParams(), WORK)
    assert G.graph["terrain"]["off_grid_samples"] > 0 and np.isfinite(G.edges[0, 1, 0]["travel_time"])
    assert "outside the DEM grid" in caplog.text
    # the advice is something a user can do: a DEM reaching the clipped roads, or a smaller road buffer
    assert "clip_buffer_km" in caplog.text and "open the DEM with bounds" not in caplog.text


def test_dem_in_utm_gives_the_same_time(tmp_path):
    # the same plane written on a 1 km grid in UTM 46N: points are transformed into the DEM's CRS
    path = write_dem(tmp_path / "utm.tif", plane(0.06), bounds=(280_000, 3_290_000, 340_000, 3_350_000), res=1000.0,
                     crs="EPSG:32646")
    dem = open_dem(path, region_bounds=(90.99, 29.99, 91.02, 30.01))
    G = add_edge_travel_times(east_km(1.0), dem, TerrainParams(), WORK)
    assert G.edges[0, 1, 0]["travel_time"] == pytest.approx(75.0, rel=1e-3)


def test_dem_not_covering_region_names_the_file(tmp_path):
    path = write_dem(tmp_path / "small.tif", lambda lon, lat: 1000.0)
    with pytest.raises(DataCoverageError, match="small.tif.*DEM covers lon 90.900–91.200"):
        open_dem(path, region_bounds=(91.0, 30.0, 92.0, 30.05))


def test_no_dem_gives_flat_times():
    G = add_edge_travel_times(east_km(2.0), None)
    e = G.edges[1, 0, 0]
    assert e["travel_time"] == pytest.approx(120.0) and e["terrain_factor"] == 1.0
    assert split_time(e["time_profile"], 500.0) == pytest.approx(30.0)


# --------------------------------------------------------------------------------------------
# Off-road legs
# --------------------------------------------------------------------------------------------
def leg_1km_east():
    lon1, lat1, _ = Geod(ellps="WGS84").fwd(LON0, LAT0, 90.0, 1000.0)
    return lon1, lat1


def test_offroad_leg_without_dem_is_flat_tobler_times_detour():
    lon1, lat1 = leg_1km_east()
    length, minutes = offroad_leg_times([LON0], [LAT0], [lon1], [lat1], None)
    # 1000 m × 1.3 at 5.0367 km/h = 15.486 min
    assert length[0] == pytest.approx(1300.0) and minutes[0] == pytest.approx(1.3 / (6 * math.exp(-0.175)) * 60)


def test_offroad_leg_uphill_and_downhill_on_tilted_plane(tmp_path):
    lon1, lat1 = leg_1km_east()
    dem = open_dem(write_dem(tmp_path / "tilt.tif", lambda lon, lat: 1000.0 + 60.0 * (lon - LON0) / (lon1 - LON0)))
    _, minutes = offroad_leg_times([LON0, lon1], [LAT0, lat1], [lon1, LON0], [lat1, LAT0], dem, TerrainParams(), WORK)
    up = 6 * math.exp(-3.5 * 0.11)  # 4.0836 km/h at +6 %
    down = 6 * math.exp(-3.5 * 0.01)  # 5.7936 km/h at −6 %
    assert minutes == pytest.approx([1.3 / up * 60, 1.3 / down * 60], rel=1e-6)


# --------------------------------------------------------------------------------------------
# Real DEM
# --------------------------------------------------------------------------------------------
# (name, lon, lat, figure from the data README, tolerance in metres). The README figures are
# point look-ups of one 30″ cell; bilinear interpolation mixes the four cells around the point.
# On Lhasa's valley floor and Nagqu's plain those four cells lie within 7 m and 8 m of each
# other, so 10 m; Medog sits in the Yarlung Tsangpo gorge where they span 848–1076 m, so 50 m.
SPOTS = [
    ("Lhasa", 91.1175, 29.6475, 3657.0, 10.0),
    ("Nagqu", 92.05, 31.48, 4506.0, 10.0),
    ("Medog", 95.33, 29.33, 1076.0, 50.0),
]


@pytest.mark.parametrize("name,lon,lat,expected,tol", SPOTS)
def test_tibet_dem_spot_elevations(data_dir, name, lon, lat, expected, tol):
    dem = open_dem(data_dir / "dem" / "tibet_dem_30s.tif", region_bounds=(lon - 0.1, lat - 0.1, lon + 0.1, lat + 0.1))
    z = sample_dem(dem, np.array([lon]), np.array([lat]))[0]
    assert abs(z - expected) <= tol


def test_tibet_dem_window_matches_full_read(data_dir):
    path = data_dir / "dem" / "tibet_dem_30s.tif"
    lon = np.array([91.1175, 92.05, 95.33])
    lat = np.array([29.6475, 31.48, 29.33])
    window = open_dem(path, region_bounds=(91.0, 29.0, 96.0, 32.0))
    assert window.array.size < open_dem(path).array.size
    assert sample_dem(window, lon, lat) == pytest.approx(sample_dem(open_dem(path), lon, lat), abs=1e-9)


@pytest.mark.slow
def test_twenty_thousand_edges_on_tibet_dem_take_under_five_seconds(data_dir):
    rng = np.random.default_rng(0)
    dem = open_dem(data_dir / "dem" / "tibet_dem_30s.tif", region_bounds=(88.0, 28.5, 95.0, 32.5))
    G = nx.MultiDiGraph(crs="EPSG:4326")
    n = 10_000
    lon0, lat0 = rng.uniform(88.5, 94.5, n), rng.uniform(29.0, 32.0, n)
    lon1, lat1 = lon0 + rng.normal(0, 0.02, n), lat0 + rng.normal(0, 0.02, n)
    for i in range(n):
        bend = ((lon0[i] + lon1[i]) / 2 + 0.003, (lat0[i] + lat1[i]) / 2)
        line = LineString([(lon0[i], lat0[i]), bend, (lon1[i], lat1[i])])
        G.add_node(2 * i, x=lon0[i], y=lat0[i])
        G.add_node(2 * i + 1, x=lon1[i], y=lat1[i])
        length = Geod(ellps="WGS84").geometry_length(line)
        G.add_edge(2 * i, 2 * i + 1, 0, geometry=line, length=length, speed_kph=50.0)
        G.add_edge(2 * i + 1, 2 * i, 0, geometry=line.reverse(), length=length, speed_kph=50.0)
    start = time.perf_counter()
    add_edge_travel_times(G, dem, TerrainParams(), "+proj=aea +lat_1=27 +lat_2=36 +lat_0=0 +lon_0=89 +datum=WGS84")
    elapsed = time.perf_counter() - start
    samples = G.graph["terrain"]["samples"]
    print(f"add_edge_travel_times: {G.number_of_edges()} edges, {samples} samples, {elapsed:.2f} s")
    assert elapsed < 5.0 and all(np.isfinite(d["travel_time"]) for _, _, d in G.edges(data=True))


# --------------------------------------------------------------------------------------------
# Large DEMs: windowed mode (max_cells exceeded) gives the in-memory answers tile by tile
# --------------------------------------------------------------------------------------------
def random_roads(rng, n, west, south, east, north, spread=0.01):
    """n bent roads (each with its twin) between random points of the box, lengths from the geodesic."""
    geod = Geod(ellps="WGS84")
    G = nx.MultiDiGraph(crs="EPSG:4326")
    lon0, lat0 = rng.uniform(west, east, n), rng.uniform(south, north, n)
    lon1, lat1 = lon0 + rng.normal(0, spread, n), lat0 + rng.normal(0, spread, n)
    for i in range(n):
        bend = ((lon0[i] + lon1[i]) / 2 + spread / 5, (lat0[i] + lat1[i]) / 2)
        line = LineString([(lon0[i], lat0[i]), bend, (lon1[i], lat1[i])])
        G.add_node(2 * i, x=lon0[i], y=lat0[i])
        G.add_node(2 * i + 1, x=lon1[i], y=lat1[i])
        length = geod.geometry_length(line)
        G.add_edge(2 * i, 2 * i + 1, 0, geometry=line, length=length, speed_kph=50.0)
        G.add_edge(2 * i + 1, 2 * i, 0, geometry=line.reverse(), length=length, speed_kph=50.0)
    return G


EDGE_KEYS = ("travel_time", "flat_time", "terrain_factor", "grade_mean", "grade_abs_max", "elev_mean", "elev_max",
             "dem_filled", "dem_void")


def assert_same_edges(G_mem, G_win):
    """Every terrain attribute of every edge equal (1e-9) in the two graphs, and the same summary."""
    for u, v, k, d in G_mem.edges(keys=True, data=True):
        w = G_win.edges[u, v, k]
        for key in EDGE_KEYS:
            assert w[key] == pytest.approx(d[key], abs=1e-9, nan_ok=True), (u, v, key)
        for a, b in zip(d["time_profile"], w["time_profile"]):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-9)
    sm, sw = dict(G_mem.graph["terrain"]), dict(G_win.graph["terrain"])
    assert sm.pop("terrain_factor_mean") == pytest.approx(sw.pop("terrain_factor_mean"), abs=1e-12)
    assert sm == sw


def random_legs(rng, n, west, south, east, north, spread=0.02):
    lon0, lat0 = rng.uniform(west, east, n), rng.uniform(south, north, n)
    return lon0, lat0, lon0 + rng.normal(0, spread, n), lat0 + rng.normal(0, spread, n)


def assert_same_legs(legs, mem, win, working_crs):
    """offroad_leg_times: the same walked lengths and minutes (1e-9) on the two DEMs."""
    for a, b in zip(offroad_leg_times(*legs, mem, TerrainParams(), working_crs),
                    offroad_leg_times(*legs, win, TerrainParams(), working_crs)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-9)


def points_near_tile_borders(dem, tile, rng, per_border=3):
    """Lon/lat of points within ±1 cell of every tile border (and corner) of a windowed Dem's grid."""
    rows, cols = dem.shape
    orow, ocol = dem.offset
    bc = np.arange(tile, ocol + cols, tile) - ocol  # tile borders in grid columns
    br = np.arange(tile, orow + rows, tile) - orow
    bc, br = bc[(bc > 0) & (bc < cols)], br[(br > 0) & (br < rows)]
    dc = rng.uniform(-1.0, 1.0, (bc.size, per_border))
    dr = rng.uniform(-1.0, 1.0, (br.size, per_border))
    cc = np.r_[(bc[:, None] + dc).ravel(), rng.uniform(0, cols, br.size * per_border),
               np.repeat(bc, br.size) + rng.uniform(-0.6, 0.6, bc.size * br.size)]
    rr = np.r_[rng.uniform(0, rows, bc.size * per_border), (br[:, None] + dr).ravel(),
               np.tile(br, bc.size) + rng.uniform(-0.6, 0.6, bc.size * br.size)]
    cc = np.r_[cc, bc.astype(float), 0.0, cols, 0.5, cols - 0.5]  # exactly on borders and the grid's edges
    rr = np.r_[rr, np.full(bc.size, rows / 2), 0.0, rows, rows - 0.5, 0.5]
    return dem.transform @ (cc, rr)


def test_windowed_tibet_dem_samples_equal_in_memory(data_dir):
    path = data_dir / "dem" / "tibet_dem_30s.tif"
    box = (88.0, 28.5, 95.0, 32.5)
    mem = open_dem(path, region_bounds=box)
    win = open_dem(path, region_bounds=box, max_cells=mem.shape[0] * mem.shape[1] - 1, tile_size=64)
    assert not mem.windowed and win.windowed and win.shape == mem.shape and win.transform == mem.transform
    assert win.offset != (0, 0)  # the region's window inside the file: tiles align to the file's grid
    rng = np.random.default_rng(7)
    lon, lat = points_near_tile_borders(win, 64, rng)
    lon = np.r_[lon, rng.uniform(87.5, 95.5, 20_000), 180.0, np.nan]  # some off the window read, one NaN
    lat = np.r_[lat, rng.uniform(28.0, 33.0, 20_000), 30.0, 30.0]
    z_mem, z_win = sample_dem(mem, lon, lat), sample_dem(win, lon, lat)
    assert np.isnan(z_mem).sum() > 2 and np.isfinite(z_mem).sum() > 10_000
    np.testing.assert_allclose(z_win, z_mem, rtol=0, atol=1e-9)  # NaN where NaN
    grid = sample_dem(win, lon.reshape(2, -1)[:, :100], lat.reshape(2, -1)[:, :100])
    assert grid.shape == (2, 100)


def test_windowed_tibet_dem_edge_and_leg_times_equal_in_memory(data_dir):
    path = data_dir / "dem" / "tibet_dem_30s.tif"
    box = (88.0, 28.5, 95.0, 32.5)
    mem = open_dem(path, region_bounds=box)
    win = open_dem(path, region_bounds=box, max_cells=1000, tile_size=128)
    rng = np.random.default_rng(3)
    wcrs = "+proj=aea +lat_1=27 +lat_2=36 +lat_0=0 +lon_0=89 +datum=WGS84"
    G = random_roads(rng, 300, 88.5, 29.0, 94.5, 32.0, spread=0.05)
    G_win = add_edge_travel_times(nx.MultiDiGraph(G), win, TerrainParams(), wcrs)  # a copy, before any times
    G_mem = add_edge_travel_times(G, mem, TerrainParams(), wcrs)
    assert_same_edges(G_mem, G_win)
    legs = random_legs(rng, 500, 88.5, 29.0, 94.5, 32.0)
    assert_same_legs(legs, mem, win, wcrs)


def holey_surface(lon, lat):
    """A tilted, rippled surface (bilinear weights matter everywhere)."""
    return 1000.0 + 0.04 * (merc_x(lon) - merc_x(LON0)) + 30.0 * np.sin(lon * 300.0) * np.cos(lat * 200.0)


def holes_across_tile_borders(tile, res=0.001, west=90.9, north=30.1):
    """Nodata: 3×3-cell holes centred on tile corners, a 15-cell square (roads inside it need the
    nearest valid cell, ~0.8 km away, across several tiles) and a 110×120-cell block (roads in its
    middle have nothing within fill_radius_m: void)."""
    def hole(lon, lat):
        col = np.floor((lon - west) / res).astype(int)
        row = np.floor((north - lat) / res).astype(int)
        near_corner = ((np.abs((col + tile // 2) % tile - tile // 2) <= 1)
                       & (np.abs((row + tile // 2) % tile - tile // 2) <= 1))
        medium = (col >= 37) & (col < 52) & (row >= 61) & (row < 76)
        big = (col >= 150) & (col < 260) & (row >= 40) & (row < 160)
        return (near_corner & (col % (3 * tile) < tile)) | medium | big
    return hole


@pytest.mark.parametrize("tile", [6, 16])
def test_windowed_synthetic_dem_with_holes_on_tile_borders_equals_in_memory(tmp_path, tile):
    path = write_dem(tmp_path / "holes.tif", holey_surface, res=0.001, hole=holes_across_tile_borders(tile))
    mem = open_dem(path)
    win = open_dem(path, max_cells=0, tile_size=tile)
    assert win.windowed and win.shape == (200, 300)
    rng = np.random.default_rng(tile)
    lon, lat = points_near_tile_borders(win, tile, rng)
    z_mem, z_win = sample_dem(mem, lon, lat), sample_dem(win, lon, lat)
    assert np.isnan(z_mem).sum() > 50  # points in the holes
    np.testing.assert_allclose(z_win, z_mem, rtol=0, atol=1e-9)

    G = random_roads(rng, 150, 90.92, 29.92, 91.18, 30.08, spread=0.01)
    # roads wholly inside the medium hole (nearest valid cell), inside the big one (void), running
    # off the grid, and wholly off it within fill_radius_m of each of its four sides (nearest cell)
    for i, (a, b) in enumerate([((90.9405, 30.0320), (90.9495, 30.0290)), ((91.1000, 30.0000), (91.1100, 30.0050)),
                                ((91.1900, 30.0500), (91.2400, 30.0600)), ((91.0500, 30.1040), (91.0600, 30.1080)),
                                ((90.8950, 30.0200), (90.8900, 30.0300)), ((91.0200, 29.8960), (91.0300, 29.8920)),
                                ((91.2040, 29.9500), (91.2080, 29.9600))]):
        line = LineString([a, b])
        G.add_node(f"h{i}a", x=a[0], y=a[1])
        G.add_node(f"h{i}b", x=b[0], y=b[1])
        G.add_edge(f"h{i}a", f"h{i}b", 0, geometry=line, length=Geod(ellps="WGS84").geometry_length(line),
                   speed_kph=40.0)
    G_win = add_edge_travel_times(nx.MultiDiGraph(G), win, TerrainParams(), WORK)  # a copy, before any times
    G_mem = add_edge_travel_times(G, mem, TerrainParams(), WORK)
    summary = G_mem.graph["terrain"]
    assert summary["filled_along_edge"] > 0 and summary["filled_nearest_cell"] > 0
    assert summary["void_edges"] >= 1 and summary["off_grid_samples"] > 0
    assert_same_edges(G_mem, G_win)

    legs = random_legs(rng, 300, 90.92, 29.92, 91.18, 30.08, spread=0.01)
    legs = tuple(np.r_[x, extra] for x, extra in zip(legs, (90.9410, 30.0320, 90.9480, 30.0300)))  # inside a hole
    assert_same_legs(legs, mem, win, WORK)


def test_windowed_region_window_of_synthetic_dem_equals_in_memory(tmp_path):
    path = write_dem(tmp_path / "holes.tif", holey_surface, res=0.001, hole=holes_across_tile_borders(8))
    box = (90.95, 29.96, 91.12, 30.05)
    mem = open_dem(path, region_bounds=box, margin_m=1000.0)
    win = open_dem(path, region_bounds=box, margin_m=1000.0, max_cells=10, tile_size=8)
    assert win.windowed
    assert win.shape == mem.shape and win.offset[0] > 0 and win.offset[1] > 0
    G = random_roads(np.random.default_rng(5), 100, *box, spread=0.01)
    G_win = add_edge_travel_times(nx.MultiDiGraph(G), win, TerrainParams(), WORK)
    G_mem = add_edge_travel_times(G, mem, TerrainParams(), WORK)
    assert_same_edges(G_mem, G_win)


def test_windowed_dem_array_is_a_clear_error_naming_the_file(tmp_path):
    path = write_dem(tmp_path / "national_1s.tif", lambda lon, lat: 1200.0)
    dem = open_dem(path, max_cells=100)
    assert dem.windowed and dem.shape == (20, 30)
    with pytest.raises(InputError, match=r"national_1s\.tif: the DEM window needed \(30 columns × 20 rows.*"
                                         r"--engine network"):
        _ = dem.array
    assert open_dem(path, max_cells=600).array.shape == (20, 30)  # 600 cells fit: in memory


def test_max_cells_from_environment(tmp_path, monkeypatch):
    path = write_dem(tmp_path / "flat.tif", lambda lon, lat: 1200.0)
    monkeypatch.setenv("GEOACCESS_DEM_MAX_CELLS", "599")
    assert open_dem(path).windowed and not open_dem(path, max_cells=600).windowed
    monkeypatch.setenv("GEOACCESS_DEM_MAX_CELLS", "lots")
    with pytest.raises(ConfigError, match="GEOACCESS_DEM_MAX_CELLS = 'lots'"):
        open_dem(path)
    with pytest.raises(ConfigError, match="max_cells"):
        open_dem(path, max_cells=-1)
    with pytest.raises(ConfigError, match="tile_size"):
        open_dem(path, max_cells=0, tile_size=0)


def test_windowed_dem_pickles_small_and_samples_after(tmp_path):
    path = write_dem(tmp_path / "tilt.tif", plane(0.06))
    dem = open_dem(path, max_cells=0, tile_size=4)
    blob = pickle.dumps(dem)
    again = pickle.loads(blob)
    lon, lat = np.array([91.0, 91.05, 91.13]), np.array([30.0, 29.95, 30.07])
    assert len(blob) < 5000 and again.windowed
    assert sample_dem(again, lon, lat) == pytest.approx(sample_dem(open_dem(path), lon, lat), abs=1e-9)


def test_windowed_dem_file_gone_is_a_clear_error(tmp_path):
    path = write_dem(tmp_path / "gone.tif", lambda lon, lat: 1200.0)
    dem = open_dem(path, max_cells=0)
    Path(path).unlink()
    with pytest.raises(InputError, match="gone.tif: cannot read DEM rows"):
        sample_dem(dem, np.array([91.0]), np.array([30.0]))


# Memory: a DEM far larger than the limit is sampled with RSS growth bounded by one tile.
# Measured with /proc/self/status (VmHWM after resetting it through /proc/self/clear_refs), not
# ru_maxrss: a child's ru_maxrss starts at its parent's RSS (the pre-exec memory of the fork is
# folded in), so under a big pytest process it would hide the child's own growth.
_RSS_PROBE = r"""
import json, sys, time
import numpy as np
import rasterio
from geoaccess.elevation import _same_crs, open_dem, sample_dem

def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB

path, n, npts, max_cells = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with rasterio.open(path) as src:  # warm up GDAL and PROJ before the baseline
    transform = src.transform
_same_crs("EPSG:4326", "EPSG:4326")
rng = np.random.default_rng(0)
col, row = rng.integers(0, n, npts), rng.integers(0, n, npts)  # cell centres all over the grid
lon, lat = (np.asarray(v) for v in transform @ (col + 0.5, row + 0.5))
expected = (3000 + row // 7 + col // 11).astype(np.float64)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status_mb("VmRSS")
t = time.perf_counter()
dem = open_dem(path, max_cells=max_cells)
z = sample_dem(dem, lon, lat)
elapsed = time.perf_counter() - t
print(json.dumps({"growth_mb": status_mb("VmHWM") - before, "before_mb": before, "seconds": elapsed, "windowed": dem.windowed,
                  "exact": bool(np.allclose(z, expected, rtol=0, atol=1e-6)), "points": npts}))
"""


def write_big_dem(path, n):
    """An n×n int16 DEM (1″ cells), tiled and deflate-compressed, written strip by strip:
    z = 3000 + row // 7 + col // 11."""
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": "int16", "crs": "EPSG:4326",
               "nodata": -32768, "transform": from_origin(80.0, 40.0, 1 / 3600, 1 / 3600), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "predictor": 2, "BIGTIFF": "IF_SAFER"}
    cols = np.arange(n, dtype=np.int32) // 11
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, n, 512):
            rows = np.arange(r0, min(n, r0 + 512), dtype=np.int32)[:, None] // 7
            dst.write((3000 + rows + cols[None, :]).astype(np.int16), 1, window=Window(0, r0, n, rows.shape[0]))
    return path


def rss_probe(path, n, npts, max_cells):
    """Peak RSS growth (MB) of open_dem + sample_dem at npts cell centres, measured in a fresh process."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak RSS is measured through Linux /proc")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(path), str(n), str(npts), str(max_cells)], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_windowed_sampling_memory_is_bounded_by_a_tile(tmp_path):
    # 8000² int16 = 128 MB uncompressed, 512 MB as float64: open_dem in memory adds ≈ 670 MB;
    # windowed, with 2048² tiles, one tile (32 MB float64 + 8 MB raw + blocks) at a time
    n = 8000
    res = rss_probe(write_big_dem(tmp_path / "big.tif", n), n, 200_000, max_cells=n * n - 1)
    print(f"windowed {n}×{n} DEM, {res['points']:,} points: peak RSS +{res['growth_mb']:.0f} MB, "
          f"{res['seconds']:.2f} s")
    assert res["windowed"] and res["exact"] and res["growth_mb"] < 150


@pytest.mark.slow
def test_windowed_sampling_of_a_20000_square_dem_stays_under_150_mb(tmp_path):
    # 20,000² int16: 800 MB uncompressed, 3.2 GB as float64 — above the default max_cells (50 M)
    n = 20_000
    t = time.perf_counter()
    path = write_big_dem(tmp_path / "big.tif", n)
    written = time.perf_counter() - t
    res = rss_probe(path, n, 1_000_000, max_cells=50_000_000)  # the default limit
    print(f"windowed {n}×{n} DEM ({Path(path).stat().st_size / 1e6:.1f} MB on disk, written in {written:.1f} s), "
          f"{res['points']:,} points: peak RSS +{res['growth_mb']:.0f} MB, {res['seconds']:.2f} s")
    assert res["windowed"] and res["exact"] and res["growth_mb"] < 150


# --------------------------------------------------------------------------- compiled sampling (issue #11 speed)
def test_the_compiled_bilinear_sampler_gives_the_numpy_samplers_values_and_holes():
    from geoaccess.elevation import _bilinear, _bilinear_kernel

    rng = np.random.default_rng(7)
    arr = rng.uniform(3000, 5000, (40, 60))
    arr[rng.random(arr.shape) < 0.1] = np.nan  # holes: a NaN own cell gives NaN, NaN neighbours drop out
    col = np.r_[rng.uniform(-2, 62, 5000), 0.0, 60.0, 0.5, np.nan]
    row = np.r_[rng.uniform(-2, 42, 5000), 0.0, 40.0, 0.5, 3.0]
    want, got = _bilinear(arr, col, row), _bilinear_kernel(arr, col, row)
    assert np.array_equal(np.isnan(want), np.isnan(got))
    assert np.allclose(want[~np.isnan(want)], got[~np.isnan(got)], rtol=0, atol=1e-9)
    assert np.isnan(got[-1]) and not np.isnan(want[:-1]).all()


def test_leg_samples_placed_by_knots_lie_within_half_a_metre_of_their_exact_projection():
    from geoaccess.elevation import _check_working_crs, _crs_key, _to_pixels, _transformer
    from geoaccess.terrain import _leg_pixels, _segment_counts

    from affine import Affine

    from geoaccess.elevation import Dem

    dem = Dem(np.zeros((600, 900)), Affine(1 / 60, 0, 80.0, 0, -1 / 60, 37.0), "EPSG:4326", None, "(test grid)")
    wkt = _check_working_crs("+proj=aea +lat_1=25 +lat_2=47 +lat_0=0 +lon_0=105 +datum=WGS84 +units=m")
    rng = np.random.default_rng(3)
    flon, flat = rng.uniform(82, 92, 300), rng.uniform(29, 35, 300)
    ang, reach = rng.uniform(0, 2 * np.pi, 300), rng.uniform(0.01, 1.0, 300)  # legs of ~1 to ~110 km
    tr = _transformer(_crs_key("EPSG:4326"), wkt)
    fx, fy = (np.asarray(a) for a in tr.transform(flon, flat))
    tx, ty = (np.asarray(a) for a in tr.transform(flon + reach * np.cos(ang), flat + reach * np.sin(ang)))
    n = _segment_counts(np.hypot(tx - fx, ty - fy), 200.0)
    leg = np.repeat(np.arange(300), n + 1)
    t = (np.arange(int((n + 1).sum())) - np.concatenate(([0], np.cumsum(n + 1)[:-1]))[leg]) / n[leg]
    exact_c, exact_r = _to_pixels(dem, fx[leg] + (tx - fx)[leg] * t, fy[leg] + (ty - fy)[leg] * t, wkt)
    knot_c, knot_r = _leg_pixels(dem, wkt, fx, fy, tx, ty, leg, t)
    cell_m = 1852.0  # a 1′ cell is ~1.85 km north-south
    assert np.abs(knot_r - exact_r).max() * cell_m < 0.5
    assert np.abs(knot_c - exact_c).max() * cell_m < 0.5
    ends = np.r_[0, np.cumsum(n + 1)[:-1]]
    assert np.allclose(knot_c[ends], exact_c[ends], atol=1e-9)  # every leg starts exactly where it should


def test_legs_sampled_in_chunks_give_the_same_minutes(monkeypatch):
    """National runs sample ~40 M leg samples: they go a few million at a time, with the same answers."""
    from affine import Affine

    from geoaccess import terrain
    from geoaccess.elevation import Dem

    rng = np.random.default_rng(5)
    z = rng.uniform(3000, 5000, (300, 300))
    z[100:120, 50:250] = np.nan  # a hole: legs over it go the hole-filling way
    dem = Dem(z, Affine(0.01, 0, 88.0, 0, -0.01, 32.0), rasterio.crs.CRS.from_epsg(4326), None, "(test)")
    flon, flat = rng.uniform(88.2, 90.8, 2000), rng.uniform(29.2, 31.8, 2000)
    tlon, tlat = flon + rng.normal(0, 0.1, 2000), flat + rng.normal(0, 0.1, 2000)
    wcrs = "+proj=aea +lat_1=25 +lat_2=47 +lat_0=0 +lon_0=90 +datum=WGS84 +units=m"
    whole = offroad_leg_times(flon, flat, tlon, tlat, dem, TerrainParams(), wcrs)
    monkeypatch.setattr(terrain, "LEG_CHUNK_SAMPLES", 997)
    chunked = offroad_leg_times(flon, flat, tlon, tlat, dem, TerrainParams(), wcrs)
    assert np.array_equal(whole[0], chunked[0]) and np.array_equal(whole[1], chunked[1])
