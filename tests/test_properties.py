"""Invariants under random inputs (hypothesis, derandomized so CI is deterministic and bounded in time).

- network engine, on generated road graphs (osmnx format, one-way and asymmetric edges, bent geometry) with
  generated settlements and facilities: adding a facility never increases a time; t_clinic ≤ t_thc ≤
  t_county ≤ t_pref; no time beats the straight line at the top speed; every settlement comes out once, in
  order; two runs agree exactly;
- coordinates: WGS84 → GCJ-02 → WGS84 and → BD-09 → WGS84 within 1 m over China's extent;
- positions.honest_times: low ≤ estimate ≤ high, level order kept for each, measured rows unchanged;
- _atomic.atomic_output_dir: an exception at any point leaves the previous outputs byte-identical; a commit
  leaves exactly the new files and a manifest that verifies.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from geoaccess import _atomic
from geoaccess._atomic import atomic_output_dir
from geoaccess.coords import bd09_to_wgs84, gcj02_to_wgs84, wgs84_to_bd09, wgs84_to_gcj02
from geoaccess.coverage import TIME_COLS
from geoaccess.engine import compute_travel_times
from geoaccess.schema import FACILITY_LEVELS, LEVEL_GROUPS
from geoaccess.terrain import TerrainParams, tobler_kph

WORKING_CRS = "EPSG:32646"  # UTM 46N: metres around 91°E
TO_UTM = Transformer.from_crs("EPSG:4326", WORKING_CRS, always_xy=True)
LON0, LAT0 = 91.0, 29.6     # a small box near Lhasa
STEP = 0.002                # grid step of generated positions (≈ 200 m)
GROUPS = list(LEVEL_GROUPS)

# Derandomized: the same examples on every run, bounded in time (CI). For a deeper local hunt:
# GEOACCESS_PROPERTY_EXAMPLES=2000 GEOACCESS_PROPERTY_RANDOM=1 pytest tests/test_properties.py
N_ENGINE = int(os.environ.get("GEOACCESS_PROPERTY_EXAMPLES", "40"))
DERANDOMIZE = not os.environ.get("GEOACCESS_PROPERTY_RANDOM")
FAST = settings(max_examples=N_ENGINE, deadline=None, derandomize=DERANDOMIZE, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- generated networks

@st.composite
def road_networks(draw):
    """(G, settlements, facilities, extra facility, off-road speed, detour): a small osmnx-format world."""
    n = draw(st.integers(2, 7))
    cells = draw(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=n, max_size=n, unique=True))
    xy = [(LON0 + i * STEP, LAT0 + j * STEP) for i, j in cells]
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=min(len(pairs), 9), unique=True))
    G = nx.MultiDiGraph(crs="EPSG:4326")
    for k, (x, y) in enumerate(xy):
        G.add_node(100 + k, x=x, y=y)
    for a, b in chosen:
        bend = draw(st.one_of(st.none(), st.tuples(st.integers(-8, 8), st.integers(-8, 8))))
        coords = [xy[a]] if bend is None else [xy[a], ((xy[a][0] + xy[b][0]) / 2 + bend[0] * STEP / 4,
                                                    (xy[a][1] + xy[b][1]) / 2 + bend[1] * STEP / 4)]
        coords.append(xy[b])
        oneway = draw(st.booleans()) and draw(st.booleans())  # one road in four is one-way
        fwd_kph = draw(st.floats(10, 90))
        directions = [(a, b, coords, fwd_kph)]
        if not oneway:
            directions.append((b, a, coords[::-1], draw(st.floats(10, 90))))  # uphill/downhill: asymmetric
        for u, v, c, kph in directions:
            line = shapely.LineString(c)
            length = float(shapely.length(shapely.LineString(np.column_stack(TO_UTM.transform(*np.array(c).T)))))
            G.add_edge(100 + u, 100 + v, geometry=line, length=length, speed_kph=kph,
                       travel_time=length / (kph / 3.6), road_class="national")
    fac_pts = draw(st.lists(point_near(xy), min_size=1, max_size=5))
    levels = draw(st.lists(st.sampled_from(FACILITY_LEVELS), min_size=len(fac_pts), max_size=len(fac_pts)))
    facilities = pd.DataFrame({"facility_id": [f"F{i}" for i in range(len(fac_pts))], "level": levels,
                               "lon": [p[0] for p in fac_pts], "lat": [p[1] for p in fac_pts]})
    # Settlements: anywhere, some exactly at a facility (a clinic in its village), some without coordinates.
    s_pts = draw(st.lists(st.one_of(point_near(xy), st.sampled_from(fac_pts), st.just((math.nan, math.nan))),
                          min_size=1, max_size=6))
    order = draw(st.permutations(range(len(s_pts))))
    settlements = pd.DataFrame({"lon": [p[0] for p in s_pts], "lat": [p[1] for p in s_pts]},
                               index=pd.Index([f"s{k}" for k in order], name="sid"))
    extra = draw(point_near(xy))
    extra_level = draw(st.sampled_from(FACILITY_LEVELS))
    speed = draw(st.sampled_from([5.0, 20.0]))
    detour = draw(st.sampled_from([1.0, 1.4]))
    return G, settlements, facilities, (extra, extra_level), speed, detour


def point_near(xy):  # noqa: ARG001 - the box is fixed; kept for readability at call sites
    """A point on the grid around the nodes (on, beside or between roads)."""
    return st.tuples(st.integers(-5, 35), st.integers(-5, 35)).map(
        lambda ij: (LON0 + ij[0] * STEP, LAT0 + ij[1] * STEP))


def travel(G, settlements, facilities, speed, detour) -> pd.DataFrame:
    flat = TerrainParams(offroad_speed_factor=speed / tobler_kph(0.0), offroad_detour_factor=detour)
    return compute_travel_times(G, settlements, facilities, working_crs=WORKING_CRS, terrain=flat)


def as_inf(a) -> np.ndarray:
    a = np.array(a, dtype=float)
    return np.where(np.isnan(a), np.inf, a)


TOL = 1e-9  # minutes: splitting an edge at a new point may move a float sum in its last bits


def ordered(t: np.ndarray, tol: float = TOL) -> bool:
    """Each row non-decreasing across levels (unreachable = +inf)."""
    return bool((t[:, 1:] >= t[:, :-1] - tol).all())


@FAST
@given(road_networks())
def test_adding_a_facility_never_increases_a_travel_time(world):
    G, s, f, (extra, level), speed, detour = world
    before = travel(G, s, f, speed, detour)
    more = pd.concat([f, pd.DataFrame({"facility_id": ["NEW"], "level": [level], "lon": [extra[0]],
                                       "lat": [extra[1]]})], ignore_index=True)
    after = travel(G, s, more, speed, detour)
    for col in TIME_COLS:
        b, a = as_inf(before[col]), as_inf(after[col])
        assert (a <= b + TOL * (1 + np.where(np.isfinite(b), b, 0))).all(), (col, before[col].tolist(), after[col].tolist())


@FAST
@given(road_networks())
def test_level_times_are_ordered_clinic_thc_county_pref(world):
    G, s, f, _, speed, detour = world
    t = as_inf(travel(G, s, f, speed, detour)[TIME_COLS].to_numpy())
    assert ordered(t), t


@FAST
@given(road_networks())
def test_no_travel_time_beats_the_straight_line_at_top_speed(world):
    G, s, f, _, speed, detour = world
    res = travel(G, s, f, speed, detour)
    top_m_per_min = max(max(d["speed_kph"] for *_, d in G.edges(data=True)), speed) * 1000.0 / 60.0
    sx, sy = TO_UTM.transform(s["lon"].to_numpy(), s["lat"].to_numpy())
    fx, fy = TO_UTM.transform(f["lon"].to_numpy(), f["lat"].to_numpy())
    dist = np.hypot(sx[:, None] - fx[None, :], sy[:, None] - fy[None, :])  # settlements × facilities, metres
    for group, levels in LEVEL_GROUPS.items():
        member = f["level"].isin(levels).to_numpy()
        t = res[f"t_{group}_min"].to_numpy()
        reached = np.isfinite(t)
        if not member.any():
            assert not reached.any()
            continue
        nearest = dist[:, member].min(axis=1)
        bound = nearest / top_m_per_min
        assert (t[reached] >= bound[reached] * (1 - 1e-9) - 1e-9).all(), (group, t, bound)
        # The nearest facility named is one of the group, and not closer than the bound either.
        ids = res.loc[reached, f"nearest_{group}_id"]
        assert ids.isin(f.loc[member, "facility_id"]).all()


@FAST
@given(road_networks())
def test_every_settlement_comes_out_exactly_once_in_order(world):
    G, s, f, _, speed, detour = world
    res = travel(G, s, f, speed, detour)
    assert len(res) == len(s)
    assert res.index.equals(s.index)  # same labels, same order, no duplicates added or lost
    no_xy = s["lon"].isna().to_numpy()
    assert res.loc[no_xy, TIME_COLS].isna().all().all()  # kept, not dropped, and not given a time


def test_a_settlement_without_coordinates_is_kept_unrouted():
    """Regression: engine._direct_pairs once queried its STRtree with NaN points (GEOSException)."""
    G = nx.MultiDiGraph(crs="EPSG:4326")
    G.add_node(1, x=91.0, y=29.6)
    G.add_node(2, x=91.01, y=29.6)
    for u, v in ((1, 2), (2, 1)):
        G.add_edge(u, v, length=968.0, travel_time=60.0)
    f = pd.DataFrame({"facility_id": ["F0"], "level": ["village_clinic"], "lon": [91.0], "lat": [29.6]})
    s = pd.DataFrame({"lon": [91.005, math.nan], "lat": [29.601, math.nan]}, index=["a", "b"])
    res = compute_travel_times(G, s, f, working_crs=WORKING_CRS)
    assert res.index.tolist() == ["a", "b"] and np.isnan(res.loc["b", "t_clinic_min"])


@FAST
@given(road_networks())
def test_two_runs_on_the_same_input_are_identical(world):
    G, s, f, _, speed, detour = world
    a = travel(G, s, f, speed, detour)
    b = travel(G.copy(), s.copy(), f.copy(), speed, detour)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


# ----------------------------------------------------------------------------- coordinates

def metres_apart(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Local flat-earth distance: exact enough at the sub-metre scale checked here."""
    dy = (np.asarray(lat2) - lat1) * 110_574.0
    dx = (np.asarray(lon2) - lon1) * 111_320.0 * np.cos(np.radians(lat1))
    return np.hypot(dx, dy)


china = st.tuples(st.floats(73.0, 135.0, allow_nan=False), st.floats(18.0, 53.0, allow_nan=False))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(china, min_size=1, max_size=50))
def test_gcj02_round_trip_within_a_metre_over_china(points):
    lon, lat = np.array(points).T
    back = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    assert metres_apart(lon, lat, *back).max() < 1.0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(china, min_size=1, max_size=50))
def test_bd09_round_trip_within_a_metre_over_china(points):
    lon, lat = np.array(points).T
    back = bd09_to_wgs84(*wgs84_to_bd09(lon, lat))
    assert metres_apart(lon, lat, *back).max() < 1.0


# ----------------------------------------------------------------------------- honest approximated times

@st.composite
def area_worlds(draw):
    """Candidate cells in township and county areas with level-ordered minutes, and settlements placed in them."""
    n_cells = draw(st.integers(1, 40))
    n_towns, n_counties = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    town = np.array(draw(st.lists(st.integers(-1, n_towns - 1), min_size=n_cells, max_size=n_cells)))
    county = np.array(draw(st.lists(st.integers(0, n_counties - 1), min_size=n_cells, max_size=n_cells)))
    base = np.array(draw(st.lists(st.lists(st.floats(0, 600), min_size=4, max_size=4), min_size=n_cells,
                                  max_size=n_cells)))
    minutes = np.sort(base, axis=1)
    cut = np.array(draw(st.lists(st.integers(1, 4), min_size=n_cells, max_size=n_cells)))
    minutes[np.arange(4)[None, :] >= cut[:, None]] = np.inf   # higher levels unreachable from some cells
    nearest = np.array(draw(st.lists(st.lists(st.integers(0, 2), min_size=4, max_size=4), min_size=n_cells,
                                     max_size=n_cells)))
    n = draw(st.integers(1, 15))
    rows = []
    for _ in range(n):
        q = draw(st.sampled_from(["exact", "township", "county"]))
        kind = draw(st.sampled_from(["village", "village", "relocation"]))
        area = "" if q == "exact" else draw(st.sampled_from(["township", "county"]))
        group = -1 if not area else draw(st.integers(0, (n_towns if area == "township" else n_counties) - 1))
        own = sorted(draw(st.lists(st.floats(0, 600), min_size=4, max_size=4)))
        rows.append((q, kind, area, group, *own))
    s = pd.DataFrame(rows, columns=["loc_quality", "kind", "area", "group", *TIME_COLS])
    return town, county, minutes, nearest, s


@settings(max_examples=200, deadline=None, derandomize=True)
@given(area_worlds())
def test_honest_times_keep_low_le_estimate_le_high_and_level_order(world):
    from geoaccess.positions import Areas, honest_times

    town, county, minutes, nearest, s = world
    areas = Areas(np.arange(len(town)), town, county, s["area"].to_numpy(object), s["group"].to_numpy(), {})
    t = s[TIME_COLS].copy()
    for g in GROUPS:
        t[f"nearest_{g}_id"] = "own"
    out = honest_times(s, t, areas, minutes, nearest, np.array(["F0", "F1", "F2"]))
    est = as_inf(out[TIME_COLS].to_numpy())
    low = as_inf(out[[c.replace("_min", "_low_min") for c in TIME_COLS]].to_numpy())
    high = as_inf(out[[c.replace("_min", "_high_min") for c in TIME_COLS]].to_numpy())
    assert (low <= est).all() and (est <= high).all(), "low ≤ estimate ≤ high broken"
    for a in (est, low, high):
        assert ordered(a, tol=0.0), "level order broken"
    exact = s["loc_quality"].eq("exact").to_numpy()
    assert (est[exact] == as_inf(s[TIME_COLS].to_numpy())[exact]).all(), "a measured time changed"
    assert (low[exact] == est[exact]).all() and (high[exact] == est[exact]).all()
    reloc = s["kind"].eq("relocation").to_numpy()
    assert (est[reloc] == as_inf(s[TIME_COLS].to_numpy())[reloc]).all(), "a relocation site left its host seat's time"
    # an approximated village's estimate is the time of one of its area's cells
    for i in np.flatnonzero(~exact & ~reloc & (out["time_basis"].str.endswith("_area")).to_numpy()):
        groups = town if s.loc[i, "area"] == "township" else county
        cells = minutes[(groups == s.loc[i, "group"]) & np.isfinite(minutes[:, 0])]
        assert est[i, 0] in cells[:, 0]


# ----------------------------------------------------------------------------- atomic outputs

names = st.sampled_from(["settlements.csv", "summary.json", "a/b.csv", "a/c.gpkg", "maps/m.html", "x.txt"])
file_sets = st.dictionaries(names, st.binary(max_size=200), max_size=5)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Boom(Exception):
    pass


def write_previous(target: Path, files: dict[str, bytes]) -> None:
    """A previous output set (written by geoaccess, so listed in its manifest)."""
    with atomic_output_dir(target) as tmp:
        for name, content in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(content)


RUN = itertools.count()  # a fresh folder per hypothesis example (tmp_path is shared by all of them)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(previous=file_sets, writes=st.lists(st.tuples(names, st.binary(max_size=300)), min_size=1, max_size=6),
       fail_at=st.integers(0, 6), interrupt=st.booleans())
def test_an_exception_while_writing_leaves_the_previous_outputs_byte_identical(tmp_path, previous, writes, fail_at,
                                                                               interrupt):
    root = tmp_path / f"run{next(RUN)}"
    target = root / "out"
    write_previous(target, previous)
    before = snapshot(target)
    exc = KeyboardInterrupt if interrupt else Boom
    with pytest.raises(exc):
        with atomic_output_dir(target) as tmp:
            for k, (name, content) in enumerate(writes):
                p = tmp / name
                p.parent.mkdir(parents=True, exist_ok=True)
                if k == fail_at:
                    p.write_bytes(content[: len(content) // 2])  # half-written, then the failure
                    raise exc()
                p.write_bytes(content)
            raise exc()  # failure after the last write, before the swap
    assert snapshot(target) == before
    assert sorted(p.name for p in root.iterdir()) == ["out"], "temporary folders left behind"
    shutil.rmtree(root)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(previous=file_sets, writes=file_sets, data=st.data())
def test_a_failure_inside_the_commit_leaves_the_previous_outputs_byte_identical(tmp_path, monkeypatch, previous,
                                                                                writes, data):
    """Failures injected into the machinery itself: checksums, the manifest, carrying old files over."""
    root = tmp_path / f"run{next(RUN)}"
    target = root / "out"
    write_previous(target, previous)
    before = snapshot(target)
    where = data.draw(st.sampled_from(["sha256_file", "rename", "write_text"]))
    after_calls = data.draw(st.integers(0, 4))
    calls = {"n": 0}

    def failing(real, once=False):
        def wrapper(*a, **k):
            calls["n"] += 1
            if calls["n"] > after_calls and not (once and calls["n"] > after_calls + 1):
                raise Boom(f"{where} failed")
            return real(*a, **k)
        return wrapper

    with monkeypatch.context() as m:
        if where == "sha256_file":
            m.setattr(_atomic, "sha256_file", failing(_atomic.sha256_file))
        elif where == "rename":  # either rename of the swap (the second one must put the previous folder back)
            m.setattr(_atomic.os, "rename", failing(os.rename, once=True))  # a transient refusal
        else:
            m.setattr(Path, "write_text", failing(Path.write_text))
        try:
            with atomic_output_dir(target) as tmp:
                for name, content in writes.items():
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / name).write_bytes(content)
            failed = False
        except Boom:
            failed = True
    if failed:
        assert snapshot(target) == before
    else:  # it committed: exactly the new files (no old one survives) and a manifest that checks out
        now = snapshot(target)
        manifest = json.loads(now.pop("manifest.json"))
        assert now == writes
        assert set(manifest["outputs"]) == set(writes)
        assert _atomic.verify_set(target) == []
    assert sorted(p.name for p in root.iterdir()) == ["out"], "temporary folders left behind"
    shutil.rmtree(root)


def test_a_failed_swap_keeps_the_previous_outputs(tmp_path, monkeypatch):
    target = tmp_path / "out"
    write_previous(target, {"settlements.csv": b"good\n"})
    real = os.rename
    calls = {"n": 0}

    def rename(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # the new folder cannot be moved in (e.g. a locked folder on Windows, a full quota)
            raise PermissionError("rename refused")
        return real(src, dst)

    monkeypatch.setattr(_atomic.os, "rename", rename)
    with pytest.raises(PermissionError):
        with atomic_output_dir(target) as tmp:
            (tmp / "settlements.csv").write_text("new\n")
    assert (target / "settlements.csv").read_text() == "good\n"
