"""Coordinate conversion against published point pairs and exact round trips."""
import numpy as np
import pytest

from geoaccess.coords import (bd09_to_gcj02, bd09_to_wgs84, gcj02_to_bd09, gcj02_to_wgs84, normalise_system,
                              to_wgs84, wgs84_to_bd09, wgs84_to_gcj02)

# (wgs lat, wgs lon, gcj lat, gcj lon) published with googollee/eviltransform's tests
EVILTRANSFORM_PAIRS = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # Shanghai
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # Shenzhen
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # Beijing
]
M_PER_DEG = 111_320.0


@pytest.mark.parametrize("wlat,wlon,glat,glon", EVILTRANSFORM_PAIRS)
def test_wgs84_to_gcj02_matches_published_pairs(wlat, wlon, glat, glon):
    lon, lat = wgs84_to_gcj02(wlon, wlat)
    assert abs(lon - glon) * M_PER_DEG < 0.01 and abs(lat - glat) * M_PER_DEG < 0.01


@pytest.mark.parametrize("wlat,wlon,glat,glon", EVILTRANSFORM_PAIRS)
def test_gcj02_inverse_recovers_published_wgs84_within_a_centimetre(wlat, wlon, glat, glon):
    lon, lat = gcj02_to_wgs84(glon, glat)
    assert abs(lon - wlon) * M_PER_DEG < 0.01 and abs(lat - wlat) * M_PER_DEG < 0.01


def test_published_bd09_pair_from_coordtransform():
    # wandergis/coordtransform README: gcj02tobd09(116.404, 39.915) = [116.41036949371029, 39.92133699351021]
    lon, lat = gcj02_to_bd09(116.404, 39.915)
    assert lon == pytest.approx(116.41036949371029, abs=1e-9)
    assert lat == pytest.approx(39.92133699351021, abs=1e-9)
    glon, glat = bd09_to_gcj02(116.41036949371029, 39.92133699351021)
    assert abs(glon - 116.404) * M_PER_DEG < 0.01 and abs(glat - 39.915) * M_PER_DEG < 0.01


def test_wgs84_to_gcj02_second_published_pair():
    lon, lat = wgs84_to_gcj02(116.404, 39.915)
    assert lon == pytest.approx(116.41024449916938, abs=1e-9)
    assert lat == pytest.approx(39.91640428150164, abs=1e-9)


def test_round_trips_stay_under_a_millimetre_over_tibet():
    rng = np.random.default_rng(0)
    lon = rng.uniform(78, 99.5, 10_000)
    lat = rng.uniform(26.5, 36.7, 10_000)
    for fwd, inv in [(wgs84_to_gcj02, gcj02_to_wgs84), (wgs84_to_bd09, bd09_to_wgs84)]:
        back_lon, back_lat = inv(*fwd(lon, lat))
        err_m = np.hypot((back_lon - lon) * M_PER_DEG * np.cos(np.radians(lat)), (back_lat - lat) * M_PER_DEG)
        assert err_m.max() < 1e-3


def test_gcj02_shift_in_tibet_is_hundreds_of_metres():
    lon, lat = np.array([91.1175]), np.array([29.6475])  # Lhasa
    glon, glat = wgs84_to_gcj02(lon, lat)
    shift = np.hypot((glon - lon) * M_PER_DEG * np.cos(np.radians(lat)), (glat - lat) * M_PER_DEG)[0]
    assert 100 < shift < 700


def test_points_outside_china_are_not_shifted():
    lon, lat = wgs84_to_gcj02(np.array([24.94]), np.array([60.17]))  # Helsinki
    assert lon[0] == 24.94 and lat[0] == 60.17


def test_to_wgs84_dispatches_by_system_name():
    glon, glat = wgs84_to_gcj02(91.0, 29.6)
    lon, lat = to_wgs84(glon, glat, "GCJ-02")
    assert lon == pytest.approx(91.0, abs=1e-9) and lat == pytest.approx(29.6, abs=1e-9)
    assert to_wgs84(91.0, 29.6, "wgs84") == (91.0, 29.6)


def test_unknown_system_is_rejected():
    with pytest.raises(ValueError, match="unknown coordinate system"):
        normalise_system("utm")
