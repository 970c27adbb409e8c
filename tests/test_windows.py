"""Windows of the combined graph (the partitioned runs): a window's certified times are the whole graph's, and
the windowed search as a whole gives every cell and origin exactly the single search's minutes and nearest."""
from __future__ import annotations

import numpy as np
import pytest
import shapely

from geoaccess import combined, windows
from test_combined import LAT0, LON0, PARAMS, WCRS, dem, road, small_world

# four quadrants of the 20 × 20 km test world (0.2° × 0.2°), as partition polygons
QUADRANTS = [shapely.box(LON0 + 0.1 * i, LAT0 + 0.1 * j, LON0 + 0.1 * (i + 1), LAT0 + 0.1 * (j + 1))
             for i in (0, 1) for j in (0, 1)]


def world(seed: int = 3):
    G, elevation, s, f = small_world(seed)
    road(G, (LON0 + 0.02, LAT0 + 0.18), (LON0 + 0.18, LAT0 + 0.03), kph=50.0)  # a diagonal across the quadrants
    d = dem(elevation)
    grid = combined.terrain_grid(d, moves=16)
    g = combined.build_combined_graph(G, grid, PARAMS, d, working_crs=WCRS, origin_lon=s["lon"], origin_lat=s["lat"],
                                      dest_lon=f["lon"], dest_lat=f["lat"])
    return g, f


def level_sources(g):
    """Two 'levels': every facility, and the first two only."""
    return [g.dest_nodes, g.dest_nodes[:2]]


def timed_nodes(g) -> np.ndarray:
    return np.r_[np.flatnonzero(g.move_weights[2] >= 0), g.origin_nodes[g.origin_nodes >= 0]]


@pytest.mark.parametrize("buffer_km, rounds", [(0.5, 0), (0.5, 1), (2.0, 2), (30.0, 1)])
def test_windowed_search_gives_every_cell_and_origin_the_single_searchs_minutes_and_nearest(buffer_km, rounds):
    g, _ = world()
    search = windows.WindowedSearch(QUADRANTS, buffer_km=buffer_km, rounds=rounds)
    got = search(g, level_sources(g))
    nodes = timed_nodes(g)
    passable = np.isfinite(g.grid.elevation.ravel())
    for found, src in zip(got, level_sources(g)):
        expected = combined.at_nodes(g, *g.search(src))   # origins' minutes and nearest, every cell's
        for a, b in zip(found, expected):
            a, b = (a[passable], b[passable]) if len(a) == g.grid.n_cells else (a, b)
            assert np.array_equal(a, b, equal_nan=True)     # bit for bit
    whole = search.log[-1]
    assert whole["buffer_km"] is None
    if rounds and buffer_km >= 30:
        assert whole["node_levels"] == 0 and search.log[0]["certified"] == 2 * len(nodes)  # all inside the windows
    if rounds and buffer_km == 0.5:
        # a 500 m buffer certifies some times and leaves others to the whole graph
        assert 0 < search.log[0]["certified"] < 2 * len(nodes) and whole["node_levels"] > 0


def test_a_window_certifies_only_times_no_route_leaving_it_could_beat():
    """Search one quadrant's window (500 m buffer) alone: every certified time equals the whole graph's; among
    the times it does not certify are ones the window got wrong (a route leaving it was shorter)."""
    g, _ = world()
    index = windows.WindowIndex(g)
    rows, cols = g.grid.shape
    r0, r1, c0, c1 = rows // 2 - 1, rows, 0, cols // 2 + 1  # the south-west quadrant and a cell around it
    win, explicit_map = windows.cut_window(index, r0, r1, c0, c1)
    nodes = timed_nodes(g)
    local = index.to_local(nodes, r0, r1, c0, c1, explicit_map)
    inside = local >= 0
    (per_level, leave) = windows.search_window(win, [index.to_local(g.dest_nodes, r0, r1, c0, c1, explicit_map)],
                                               local[inside])
    minutes, _ = per_level[0]
    truth = g.search(g.dest_nodes)[0][nodes[inside]]
    ok = windows.certified(minutes, leave)
    assert ok.any() and (~ok).any()
    assert np.array_equal(minutes[ok], truth[ok])
    assert (minutes[~ok] > truth[~ok]).any()        # the window's own answer was wrong there: rightly rejected
    assert (minutes >= truth).all()                 # a window never finds a route the whole graph lacks


def test_the_whole_grid_as_one_window_has_no_boundary_and_is_the_graph_itself():
    g, _ = world(5)
    index = windows.WindowIndex(g)
    rows, cols = g.grid.shape
    win, explicit_map = windows.cut_window(index, 0, rows, 0, cols)
    assert win.n_nodes == g.n_nodes and len(win.boundary) == 0
    nodes = timed_nodes(g)
    local = index.to_local(nodes, 0, rows, 0, cols, explicit_map)
    per_level, leave = windows.search_window(win, [index.to_local(g.dest_nodes, 0, rows, 0, cols, explicit_map)],
                                             local)
    assert np.isinf(leave).all()
    d, lab = g.search(g.dest_nodes)
    assert np.array_equal(per_level[0][0], d[nodes]) and np.array_equal(per_level[0][1], lab[nodes])


def test_every_node_is_placed_on_a_cell():
    """Settlements, facilities, access points and road nodes all find their cell (no node is left out of every
    window); a settlement's cell is the one it stands in or next to it."""
    g, _ = world()
    cells = windows.node_cells(g)
    assert (cells >= 0).all()
    r, c = g.grid.cell_of(*g.origin_lonlat)
    cr, cc = np.divmod(cells[g.origin_nodes], g.grid.shape[1])
    assert (np.abs(cr - r) <= 1).all() and (np.abs(cc - c) <= 1).all()


def test_cells_outside_every_polygon_belong_to_the_nearest_one():
    g, _ = world()
    west = [QUADRANTS[0], QUADRANTS[1]]            # the two western quadrants only
    owner = windows.cell_owners(g, west)
    passable = np.isfinite(g.grid.elevation)
    assert (owner[passable] >= 0).all() and (owner[~passable] == -1).all()
    cols = g.grid.shape[1]
    south, north = owner[-1, cols - 1], owner[0, cols - 1]   # far east: nearest is the western quadrant beside it
    assert (south, north) == (0, 1) or not (passable[-1, cols - 1] and passable[0, cols - 1])
