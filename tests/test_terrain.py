"""Terrain: DEM sampling, direction-specific grade/altitude speeds, Tobler off-road legs.

Synthetic DEMs are GeoTIFFs written to tmp_path. Roads are laid out in Web Mercator
(EPSG:3857, also the working CRS) and each edge's `length` is its Mercator length, so a DEM
that is linear in Mercator x (i.e. in longitude) gives grades and times that are exact by hand.
"""
import math
import time

import networkx as nx
import numpy as np
import pytest
import rasterio
from pyproj import Geod, Transformer
from rasterio.transform import from_origin
from shapely.geometry import LineString

from geoaccess.errors import ConfigError, DataCoverageError
from geoaccess.terrain import (TerrainParams, add_edge_travel_times, altitude_speed_factor, edge_time_to_fraction,
                               grade_speed_factor, offroad_leg_times, open_dem, sample_dem, split_time,
                               tobler_kph)

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
