"""The combined engine: one search over the road graph and the terrain grid together.

A trip may use roads and off-road movement in any combination; the reported time is the best over all
of them. The graph has three parts, joined into one node numbering:

* **cells** ``0 .. n_cells-1``: the DEM grid of the region (plus a buffer); 8 or 16 moves per cell,
  anisotropic Tobler pace × the off-road speed factor × the detour factor — the same off-road model
  as every off-road leg (:func:`geoaccess.terrain.offroad_leg_times`). Cells without elevation, and
  cells outside the region's buffer, are barriers.
* **roads** (offset by ``n_cells``): the road graph of :mod:`geoaccess.engine` with its true lengths,
  class speeds and direction-specific grade profiles, split where points meet it and at one
  *access point* per road and cell it passes through, each joined to that cell's centre by an
  off-road leg both ways (a trip can leave or join a road anywhere).
* **points**: every settlement (origin) and facility (destination) at its exact position, joined to
  the 3×3 cells around it, to the nearest road point, and — within ``direct_km`` — straight to every
  facility, all by off-road legs of the one model.

One multi-source Dijkstra per facility level runs in compiled code (numba) over the implicit grid and
the explicit edges at once, on the reversed graph, so it gives the time from every node (settlement
or cell) to the nearest facility of the level, and which facility that is.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import shapely
from numba import njit, prange

from . import engine as road_engine
from .errors import InputError
from .raster import _move_table, cell_sizes, knight_blocked
from .schema import LEVEL_GROUPS
from .elevation import Dem
from .terrain import TerrainParams, _points_along, _vertex_distances, offroad_leg_times

log = logging.getLogger("geoaccess")

_MIN_PER_M_AT_1_KPH = 0.06  # minutes to cover one metre at 1 km/h


# --------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class TerrainGrid:
    """The DEM cells a combined search may cross.

    Attributes
    ----------
    elevation : float64 (rows, cols) metres; NaN = barrier (no data, or outside the region's buffer).
    transform : affine transform of the grid (cell corners) in ``crs``.
    crs : the DEM's CRS as a string (geographic or projected).
    move_dr, move_dc : int64 row / column offset of each move (8 or 16).
    move_len : float64 (rows, n_moves) horizontal length in metres of each move from each row.
    """

    elevation: np.ndarray
    transform: object
    crs: str
    move_dr: np.ndarray
    move_dc: np.ndarray
    move_len: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.elevation.shape

    @property
    def n_cells(self) -> int:
        return int(self.elevation.size)

    def cell_of(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the cell holding each WGS84 point (may fall outside the grid)."""
        x, y = _to_grid_crs(self.crs, lon, lat)
        col, row = ~self.transform @ (np.asarray(x, float), np.asarray(y, float))
        return np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)

    def centre_lonlat(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 position of cell centres."""
        x, y = self.transform @ (np.asarray(col, float) + 0.5, np.asarray(row, float) + 0.5)
        return _from_grid_crs(self.crs, np.asarray(x), np.asarray(y))


def terrain_grid(dem: Dem, *, region=None, buffer_m: float = 0.0, working_crs: str | None = None,
                 moves: int = 16) -> TerrainGrid:
    """The grid of a DEM held in memory, cells outside ``region`` buffered by ``buffer_m`` as barriers.

    Parameters
    ----------
    dem : an in-memory DEM (``elevation.open_dem``); a windowed DEM is refused with a clear error.
    region : shapely (Multi)Polygon in WGS84, or None for the whole window.
    buffer_m : buffer around the region in metres (measured in ``working_crs``).
    working_crs : projected CRS in metres used for the buffer.
    moves : 8 (king's moves) or 16 (with knight's moves: straight-line lengths within 2.7 %).
    """
    if dem.windowed:
        raise InputError(dem.path, "the combined engine needs the region's DEM window in memory and this one exceeds "
                                   "GEOACCESS_DEM_MAX_CELLS: use --engine network, a coarser DEM, or raise the limit")
    if moves not in (8, 16):
        raise InputError(None, f"grid moves = {moves}: must be 8 or 16")
    z = np.array(dem.array, dtype=np.float64, copy=True)
    crs = dem.crs.to_string() if hasattr(dem.crs, "to_string") else str(dem.crs)
    if region is not None:
        from rasterio import features

        area = region
        if buffer_m > 0 and working_crs is not None:
            fwd = road_engine._transformer("EPSG:4326", working_crs)
            back = road_engine._transformer(working_crs, "EPSG:4326")
            proj = shapely.transform(region, lambda c: np.column_stack(fwd.transform(c[:, 0], c[:, 1])))
            proj = shapely.simplify(proj, min(buffer_m / 10.0, 500.0)).buffer(buffer_m)
            area = shapely.transform(proj, lambda c: np.column_stack(back.transform(c[:, 0], c[:, 1])))
        if not _is_geographic(crs):
            tr = road_engine._transformer("EPSG:4326", crs)
            area = shapely.transform(area, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
        outside = features.geometry_mask([area], out_shape=z.shape, transform=dem.transform, all_touched=True)
        z[outside] = np.nan
    dx, dy = cell_sizes(dem.transform, z.shape, crs)
    dr, dc, length = _move_table(dx, dy, moves == 16)
    return TerrainGrid(z, dem.transform, crs, dr, dc, length)


def _is_geographic(crs: str) -> bool:
    from pyproj import CRS

    return CRS.from_user_input(crs).is_geographic


def _to_grid_crs(crs: str, lon, lat):
    if _is_geographic(crs):
        return np.asarray(lon, float), np.asarray(lat, float)
    return road_engine._transformer("EPSG:4326", crs).transform(np.asarray(lon, float), np.asarray(lat, float))


def _from_grid_crs(crs: str, x, y):
    if _is_geographic(crs):
        return np.asarray(x, float), np.asarray(y, float)
    lon, lat = road_engine._transformer(crs, "EPSG:4326").transform(x, y)
    return np.asarray(lon), np.asarray(lat)


# --------------------------------------------------------------------------- compiled core
@njit(cache=True, inline="always")
def _move_minutes(z_from, z_to, length, pace_k, tob_a, tob_b, kph_max, kph_min):
    """Minutes of one grid move: Tobler pace on the move's slope, the off-road speed factor and detour."""
    kph = kph_max * math.exp(-tob_a * abs((z_to - z_from) / length + tob_b))
    if kph < kph_min:
        kph = kph_min
    return length * pace_k / kph


# The search state lives in two int32 buffers, each read also as float64 (``.view``), so that what one step
# touches sits side by side in memory (on a 3 M-cell grid most of a search's time is cache misses):
#   node state ``st``: 4 int32 per node — minutes (float64, ``dist[2 * n]``), heap slot (``st[4n+2]``: -1 never
#   queued, -2 settled), label (``st[4n+3]``: index of its nearest source, -1 none);
#   heap ``hn``: 4 int32 per slot — key (float64, ``hkey[2 * i]``) and node (``hn[4i+2]``); a 4-ary min-heap.

@njit(cache=True)
def _new_state(n_nodes):
    """Node state for a search: every node at inf minutes, never queued, unlabelled; and its float64 view."""
    st = np.empty(4 * n_nodes, np.int32)
    dist = st.view(np.float64)
    for n in range(n_nodes):
        dist[2 * n] = np.inf
        st[4 * n + 2] = -1
        st[4 * n + 3] = -1
    return st, dist


@njit(cache=True)
def _new_heap(cap):
    """An empty heap of ``cap`` slots (int32 buffer) and its float64 view."""
    hn = np.empty(4 * cap, np.int32)
    return hn, hn.view(np.float64)


@njit(cache=True)
def _grow_heap(hn, size, need, n_nodes):
    """A heap with room for at least ``need`` items, the first ``size`` kept (at least doubling)."""
    grown = min(n_nodes, max(hn.shape[0] // 2, need))
    hn = np.concatenate((hn[:4 * size], np.empty(4 * (grown - size), np.int32)))
    return hn, hn.view(np.float64)


@njit(cache=True, inline="always")
def _sift_up(hkey, hn, st, i, key, node):
    """Place ``node`` with ``key`` at heap slot ``i`` (a new last slot, or its own slot after its key fell)."""
    while i > 0:
        parent = (i - 1) >> 2
        pk = hkey[2 * parent]
        if pk <= key:
            break
        hkey[2 * i] = pk
        m = hn[4 * parent + 2]
        hn[4 * i + 2] = m
        st[4 * m + 2] = i
        i = parent
    hkey[2 * i] = key
    hn[4 * i + 2] = node
    st[4 * node + 2] = i


@njit(cache=True, inline="always")
def _relax(dist, st, hkey, hn, size, n, cand):
    """Lower node ``n`` to ``cand`` minutes if that is shorter (queue or re-key it); returns the heap size and
    whether ``n`` was lowered. A settled node is never lowered: its minutes are at most the current node's."""
    if cand < dist[2 * n]:
        dist[2 * n] = cand
        p = st[4 * n + 2]
        if p == -1:
            _sift_up(hkey, hn, st, size, cand, n)
            return size + 1, True
        _sift_up(hkey, hn, st, p, cand, n)
        return size, True
    return size, False


@njit(cache=True, inline="always")
def _heap_pop_fix(hkey, hn, st, size):
    """Move the last item to the root and sift it down (size = items left after removing the root)."""
    key = hkey[2 * size]
    node = hn[4 * size + 2]
    i = 0
    while True:
        first = 4 * i + 1
        if first >= size:
            break
        best = first
        bk = hkey[2 * first]
        for ch in range(first + 1, min(first + 4, size)):
            ck = hkey[2 * ch]
            if ck < bk:
                best = ch
                bk = ck
        if bk >= key:
            break
        hkey[2 * i] = bk
        bn = hn[4 * best + 2]
        hn[4 * i + 2] = bn
        st[4 * bn + 2] = i
        i = best
    hkey[2 * i] = key
    hn[4 * i + 2] = node
    st[4 * node + 2] = i


@njit(cache=True, nogil=True, parallel=True)
def _in_move_weights(cols, z, dr, dc, move_len, pace_k, tob_a, tob_b, kph_max, kph_min, passable):
    """Minutes of every grid move *into* each passable cell: ``w[i, k]`` for the move from ``c + offset[k]`` to
    ``c = passable[i]``; ``row_of[c]`` is that row ``i`` (-1 for a barrier cell, which has no moves in).

    inf where there is no such move (off the grid, a barrier at either end, a knight's move between two
    barriers). Computed once per graph (float32) and shared by every search, so a search only adds and
    compares. Rows for the passable cells only: at national size two thirds of the grid are barriers, and a
    row for every cell would take 2.7 GB instead of 0.85 GB.
    """
    rows = z.shape[0]
    zf = z.ravel()
    nmoves = dr.shape[0]
    w = np.full((passable.shape[0], nmoves), np.inf, np.float32)
    row_of = np.full(zf.size, -1, np.int32)
    offset = np.empty(nmoves, np.int64)
    for k in range(nmoves):
        offset[k] = dr[k] * cols + dc[k]
    for i in range(passable.shape[0]):
        row_of[passable[i]] = i
    for i in prange(passable.shape[0]):  # passable cells have an elevation
        c = np.int64(passable[i])
        zc = zf[c]
        r = c // cols
        col = c - r * cols
        for k in range(nmoves):
            rr = r + dr[k]
            cc = col + dc[k]
            if rr < 0 or rr >= rows or cc < 0 or cc >= cols:
                continue
            n = rr * cols + cc
            zn = zf[n]
            if math.isnan(zn):
                continue
            if k >= 8 and knight_blocked(zf, r, col, cols, dr[k], dc[k]):
                continue
            w[i, k] = _move_minutes(zn, zc, move_len[r, k], pace_k, tob_a, tob_b, kph_max, kph_min)
    return w, offset, row_of


@njit(cache=True, nogil=True)
def _search_kernel(n_nodes, weights, offset, row_of, rev_indptr, rev_indices, rev_minutes, sources):
    """Multi-source Dijkstra on the reversed combined graph: minutes from every node to its nearest source.

    Nodes ``0 .. len(row_of)-1`` are grid cells, whose in-moves are ``weights[row_of[c]]`` (:func:`_in_move_weights`);
    every node may also have explicit in-edges (CSR of the reversed graph).
    Returns (minutes, index of the nearest source; -1 unreachable).
    """
    n_cells = row_of.shape[0]
    nmoves = weights.shape[1]
    st, dist = _new_state(n_nodes)
    # the heap holds the search front only (a few % of the nodes on a grid): it starts small and doubles
    hn, hkey = _new_heap(min(n_nodes, max(sources.shape[0] + 1024, n_nodes // 64)))
    size = 0
    for s in range(sources.shape[0]):
        node = sources[s]
        if st[4 * node + 3] < 0:
            dist[2 * node] = 0.0
            st[4 * node + 3] = s
            _sift_up(hkey, hn, st, size, 0.0, node)
            size += 1
    while size > 0:
        c = hn[2]
        d = hkey[0]
        st[4 * c + 2] = -2
        size -= 1
        if size > 0:
            _heap_pop_fix(hkey, hn, st, size)
        lab = st[4 * c + 3]
        need = size + nmoves + rev_indptr[c + 1] - rev_indptr[c]  # at most this many queued after c's edges
        if 4 * need > hn.shape[0]:
            hn, hkey = _grow_heap(hn, size, need, n_nodes)
        row = row_of[c] if c < n_cells else -1
        if row >= 0:
            for k in range(nmoves):
                w = weights[row, k]
                if w == np.inf:
                    continue
                n = c + offset[k]
                size, lowered = _relax(dist, st, hkey, hn, size, n, d + w)
                if lowered:
                    st[4 * n + 3] = lab
        for j in range(rev_indptr[c], rev_indptr[c + 1]):
            n = rev_indices[j]
            size, lowered = _relax(dist, st, hkey, hn, size, n, d + rev_minutes[j])
            if lowered:
                st[4 * n + 3] = lab
    return dist[0::2].copy(), st[3::4].copy()


@njit(cache=True, inline="always")
def _relax_bounded(dist, st, hkey, hn, size, touched, n_touched, n, cand, limit):
    """:func:`_relax` within ``limit``, recording each node reached for the first time in ``touched``."""
    if cand > limit:
        return size, n_touched
    if dist[2 * n] == np.inf and cand < np.inf:
        touched[n_touched] = n
        n_touched += 1
    size, _ = _relax(dist, st, hkey, hn, size, n, cand)
    return size, n_touched


@njit(cache=True, nogil=True)
def _bounded_kernel(n_nodes, weights, offset, row_of, rev_indptr, rev_indices, rev_minutes, sources, target_of, limit):
    """One bounded single-source search per source (reversed graph): (target, source, minutes) within ``limit``.

    Arrays are allocated once and only the nodes a search touched are reset, so a search costs what it
    reaches, not the size of the grid. ``target_of[node]`` is the target index of a node, -1 otherwise.
    """
    n_cells = row_of.shape[0]
    nmoves = weights.shape[1]
    st, dist = _new_state(n_nodes)
    hn, hkey = _new_heap(n_nodes)
    touched = np.empty(n_nodes, np.int32)
    cap = 1024
    out_t = np.empty(cap, np.int64)
    out_s = np.empty(cap, np.int64)
    out_m = np.empty(cap, np.float64)
    m = 0
    for si in range(sources.shape[0]):
        n_touched = 0
        src = sources[si]
        dist[2 * src] = 0.0
        touched[n_touched] = src
        n_touched += 1
        size = 0
        _sift_up(hkey, hn, st, size, 0.0, src)
        size += 1
        while size > 0:
            c = hn[2]
            d = hkey[0]
            if d > limit:
                break
            st[4 * c + 2] = -2
            size -= 1
            if size > 0:
                _heap_pop_fix(hkey, hn, st, size)
            t = target_of[c]
            if t >= 0:
                if m == cap:
                    cap *= 2
                    out_t = np.concatenate((out_t, np.empty(cap - m, np.int64)))
                    out_s = np.concatenate((out_s, np.empty(cap - m, np.int64)))
                    out_m = np.concatenate((out_m, np.empty(cap - m, np.float64)))
                out_t[m] = t
                out_s[m] = si
                out_m[m] = d
                m += 1
            row = row_of[c] if c < n_cells else -1
            if row >= 0:
                for k in range(nmoves):
                    w = weights[row, k]
                    if w == np.inf:
                        continue
                    size, n_touched = _relax_bounded(dist, st, hkey, hn, size, touched, n_touched, c + offset[k],
                                                     d + w, limit)
            for j in range(rev_indptr[c], rev_indptr[c + 1]):
                size, n_touched = _relax_bounded(dist, st, hkey, hn, size, touched, n_touched, rev_indices[j],
                                                 d + rev_minutes[j], limit)
        for i in range(n_touched):
            node = touched[i]
            dist[2 * node] = np.inf
            st[4 * node + 2] = -1
    return out_t[:m], out_s[:m], out_m[:m]


@njit(cache=True)
def _grid_edge_arrays(weights, offset, row_of):
    """Every grid move as an explicit forward edge (from cell, to cell, minutes): for cross-checks only."""
    nmoves = weights.shape[1]
    n_cells = row_of.shape[0]
    cap = weights.shape[0] * nmoves
    src = np.empty(cap, np.int64)
    dst = np.empty(cap, np.int64)
    w = np.empty(cap, np.float64)
    m = 0
    for c in range(n_cells):
        row = row_of[c]
        if row < 0:
            continue
        for k in range(nmoves):
            if weights[row, k] == np.inf:
                continue
            src[m] = c + offset[k]   # forward move neighbour → c, as the kernel relaxes it
            dst[m] = c
            w[m] = weights[row, k]
            m += 1
    return src[:m], dst[:m], w[:m]


# --------------------------------------------------------------------------- the combined graph
@dataclass(frozen=True)
class CombinedGraph:
    """Roads + grid + points in one numbering, ready for any number of level passes.

    ``reverse`` holds the explicit edges of the reversed graph (minutes); grid moves are implicit.
    ``origin_nodes`` / ``dest_nodes``: node of each settlement / facility (-1: no coordinates).
    """

    grid: TerrainGrid
    params: TerrainParams
    reverse: sp.csr_matrix
    n_nodes: int
    origin_nodes: np.ndarray
    dest_nodes: np.ndarray
    road: road_engine.EngineGraph
    facts: dict
    origin_lonlat: tuple = ()     # WGS84 arrays of the origins and destinations, for the straight-line check
    dest_lonlat: tuple = ()
    working_crs: str = ""
    dem: object = None
    move_weights: tuple = ()      # (float32 [passable cells, n_moves] minutes of each move into a cell, offsets,
    #                               int32 [n_cells] row of each cell, -1 barrier)

    def search(self, source_nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Minutes from every node to the nearest of ``source_nodes``, and the index of that source."""
        return _search_kernel(*self._kernel_args(), np.asarray(source_nodes, np.int64))

    def _kernel_args(self) -> tuple:
        r = self.reverse
        weights, offset, row_of = self.move_weights
        # the CSR's own index arrays, whatever their integer type: a copy per search costs 0.4 GB at national size
        return (self.n_nodes, weights, offset, row_of, r.indptr, r.indices, r.data)

    def cost_matrix(self, limit_minutes: float, origin_rows: np.ndarray | None = None) -> sp.csr_matrix:
        """Sparse origins × destinations minutes, only pairs within ``limit_minutes`` (explicit zeros kept).

        One bounded search from each destination on the reversed graph; ``origin_rows`` selects origins.
        """
        rows = np.arange(len(self.origin_nodes)) if origin_rows is None else np.flatnonzero(origin_rows)
        nodes = self.origin_nodes[rows]
        target_of = np.full(self.n_nodes, -1, np.int64)
        ok = nodes >= 0
        target_of[nodes[ok]] = np.flatnonzero(ok)
        dests = np.flatnonzero(self.dest_nodes >= 0)
        t, si, minutes = _bounded_kernel(*self._kernel_args(), self.dest_nodes[dests].astype(np.int64), target_of,
                                         float(limit_minutes))
        # straight trips within the limit (as the level passes take them): the smaller of the two per pair
        legs = _StraightLegs(self)
        oi, fi, straight = legs.pairs(rows, dests, np.full(len(rows), float(limit_minutes)))
        keep = straight <= limit_minutes
        row_of = np.full(len(self.origin_nodes), -1, np.int64)
        row_of[rows] = np.arange(len(rows))
        r_all = np.r_[t, row_of[oi[keep]]]
        c_all = np.r_[dests[si], fi[keep]]
        m_all = np.r_[minutes, straight[keep]]
        shape = (len(rows), len(self.dest_nodes))
        if not len(m_all):
            return sp.csr_matrix(shape)
        key = r_all * shape[1] + c_all
        order = np.lexsort((m_all, key))
        first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
        return sp.coo_matrix((m_all[first], (r_all[first], c_all[first])), shape=shape).tocsr()

    def explicit_forward(self) -> sp.csr_matrix:
        """The whole graph, grid moves included, as one explicit forward CSR in minutes (cross-checks)."""
        s, d, w = _grid_edge_arrays(*self.move_weights)
        fwd = self.reverse.T.tocoo()
        src = np.r_[s, fwd.row]
        dst = np.r_[d, fwd.col]
        return road_engine._csr(src, dst, np.r_[w, fwd.data], self.n_nodes)


def build_combined_graph(G, grid: TerrainGrid, params: TerrainParams, dem: Dem | None, *, working_crs: str,
                         origin_lon, origin_lat, dest_lon, dest_lat, direct_km: float = 0.0,
                         road_legs_km: float = 2.0, access_spacing_m: float | None = None,
                         move_weights: tuple | None = None) -> CombinedGraph:
    """Join the road graph ``G`` (edges with ``travel_time`` s and optional ``time_profile``) to ``grid``.

    Parameters
    ----------
    G : road graph as :mod:`geoaccess.network` builds it; may have no edges (grid only).
    grid, params, dem : the terrain grid, the off-road model, and the DEM its legs sample.
    origin_lon, origin_lat : WGS84 settlements (NaN: no coordinates, left unconnected).
    dest_lon, dest_lat : WGS84 facilities.
    direct_km : the straight off-road trips to facilities within this distance become graph edges (default 0: none).
        The level passes check every straight trip that could beat a searched time after the search
        (:class:`_StraightLegs`), and cost matrices merge them, so the times are the same either way: edges only
        cost build time and memory (4.2 M pairs within 10 km at national size).
    road_legs_km : each point has a straight leg to the nearest point of every road within this distance;
        farther roads are reached over the grid. (A leg to "the nearest road" however far would vanish when a
        nearer road is added, and could make a time longer: these legs only ever grow in number.)
    access_spacing_m : spacing of candidate access points along roads (default: a third of the smaller side of
        the cells where each road is, :func:`_access_spacing`).
    move_weights : :func:`grid_move_weights` of ``grid`` and ``params`` when already computed (else computed here).
    """
    t0 = time.perf_counter()
    o_lon, o_lat, d_lon, d_lat = (np.asarray(a, float) for a in (origin_lon, origin_lat, dest_lon, dest_lat))
    n_o, n_d = len(o_lon), len(d_lon)
    nc = grid.n_cells

    def legs(flon, flat, tlon, tlat):
        if len(flon) == 0:
            return np.zeros(0)
        return offroad_leg_times(flon, flat, tlon, tlat, dem, params, working_crs)[1]

    has_roads = G is not None and G.number_of_edges() > 0
    if has_roads:
        edges = road_engine._edge_table(G)
        p_lon, p_lat = np.r_[o_lon, d_lon], np.r_[o_lat, d_lat]
        snap = road_engine._snap(edges, p_lon, p_lat, working_crs)  # the nearest road point: reported
        o_snap, d_snap = snap.take(slice(0, n_o)), snap.take(slice(n_o, None))
        o_min = _nan_legs(legs, o_lon, o_lat, o_snap.snap_lon, o_snap.snap_lat, o_snap.valid)
        d_near = d_snap.valid & (d_snap.leg_m <= road_legs_km * 1000.0)
        d_min = _nan_legs(legs, d_snap.snap_lon, d_snap.snap_lat, d_lon, d_lat, d_near)
        o_near = o_snap.valid & (o_snap.leg_m <= road_legs_km * 1000.0)
        # ... and a leg only within road_legs_km, as to every other road that near (other_snap)
        other_point, other_snap = _other_roads_within(edges, p_lon, p_lat, snap, working_crs, road_legs_km * 1000.0)
        via, via_cell = _access_points(edges, grid, working_crs, access_spacing_m)
        direct = _clear_pairs(grid, o_lon, o_lat, d_lon, d_lat, working_crs, direct_km, legs)
        road = road_engine._assemble(edges, _only(o_snap, o_near), np.where(o_near, o_min, np.nan),
                                     _only(d_snap, d_near), d_min, direct, via_snap=_concat_snaps(via, other_snap))
        road = replace(road, origin_snap=o_snap, origin_leg_min=o_min)  # what the table reports
        rf = road.forward.tocoo()
        src, dst, w = [rf.row + nc], [rf.col + nc], [rf.data / 60.0]
        origin_nodes = road.origin_nodes + nc
        dest_nodes = road.dest_nodes + nc
        n_nodes = nc + road.n_nodes
        # legs to the other roads within reach: settlement → road, road → facility
        ov = road.via_nodes[len(via):]
        is_o = other_point < n_o
        oo, od = other_point[is_o], other_point[~is_o] - n_o
        src += [origin_nodes[oo], ov[~is_o] + nc]
        dst += [ov[is_o] + nc, dest_nodes[od]]
        w += [legs(o_lon[oo], o_lat[oo], other_snap.snap_lon[is_o], other_snap.snap_lat[is_o]),
              legs(other_snap.snap_lon[~is_o], other_snap.snap_lat[~is_o], d_lon[od], d_lat[od])]
        # access point ↔ its cell centre, both directions (uphill and downhill differ)
        vn = road.via_nodes[:len(via)]
        okv = vn >= 0
        vlon, vlat = via.snap_lon[okv], via.snap_lat[okv]
        clon, clat = grid.centre_lonlat(*np.divmod(via_cell[okv], grid.shape[1]))
        src += [vn[okv] + nc, via_cell[okv]]
        dst += [via_cell[okv], vn[okv] + nc]
        w += [legs(vlon, vlat, clon, clat), legs(clon, clat, vlon, vlat)]
        n_access = int(okv.sum())
    else:
        direct = _clear_pairs(grid, o_lon, o_lat, d_lon, d_lat, working_crs, direct_km, legs)
        road = None
        origin_nodes = nc + np.arange(n_o)
        dest_nodes = nc + n_o + np.arange(n_d)
        n_nodes = nc + n_o + n_d
        oi, di, dm = direct
        src, dst, w = [origin_nodes[oi]], [dest_nodes[di]], [np.asarray(dm, float)]
        n_access = 0
    origin_nodes = np.where(np.isfinite(o_lon) & np.isfinite(o_lat), origin_nodes, -1)
    dest_nodes = np.where(np.isfinite(d_lon) & np.isfinite(d_lat), dest_nodes, -1)

    # points ↔ the 3×3 cells around them
    for lon, lat, nodes, outward in ((o_lon, o_lat, origin_nodes, True), (d_lon, d_lat, dest_nodes, False)):
        pi, cell = _cells_around(grid, lon, lat, nodes >= 0)
        clon, clat = grid.centre_lonlat(*np.divmod(cell, grid.shape[1]))
        if outward:  # settlement → cell
            src.append(nodes[pi])
            dst.append(cell)
            w.append(legs(lon[pi], lat[pi], clon, clat))
        else:        # cell → facility
            src.append(cell)
            dst.append(nodes[pi])
            w.append(legs(clon, clat, lon[pi], lat[pi]))
    src, dst, w = (np.concatenate(x) for x in (src, dst, w))
    good = np.isfinite(w) & (w >= 0)
    src, dst, w = src[good], dst[good], w[good]
    fwd = road_engine._csr(src.astype(np.int64), dst.astype(np.int64), w, n_nodes)
    rev = road_engine._transpose(fwd)
    facts = {"cells": nc, "passable_cells": int(np.isfinite(grid.elevation).sum()), "grid": "×".join(map(str, grid.shape)),
             "grid_moves": int(len(grid.move_dr)), "road_nodes": int(road.n_nodes) if road is not None else 0,
             "access_points": n_access, "direct_pairs": int(len(direct[0])), "explicit_edges": int(fwd.nnz),
             "build_s": round(time.perf_counter() - t0, 3)}
    log.info("combined graph: %s cells (%s passable, %d moves each), %d road nodes, %d road access points, "
             "%d direct off-road pairs within %.0f km, %d explicit edges; built in %.2f s",
             f"{nc:,}", f"{facts['passable_cells']:,}", facts["grid_moves"], facts["road_nodes"], n_access,
             facts["direct_pairs"], direct_km, facts["explicit_edges"], facts["build_s"])
    weights = move_weights if move_weights is not None else grid_move_weights(grid, params)
    facts["build_s"] = round(time.perf_counter() - t0, 3)
    return CombinedGraph(grid, params, rev, n_nodes, origin_nodes, dest_nodes, road, facts, (o_lon, o_lat),
                         (d_lon, d_lat), working_crs, dem, weights)


def grid_move_weights(grid: TerrainGrid, params: TerrainParams) -> tuple:
    """The minutes of every grid move of ``grid`` under the off-road model ``params`` (:func:`_in_move_weights`):
    (float32 [passable cells, moves], move offsets, int32 row of each cell). They depend on the grid and the model
    only, so one table serves every graph built on that grid."""
    return _in_move_weights(grid.shape[1], grid.elevation, grid.move_dr, grid.move_dc, grid.move_len,
                            _MIN_PER_M_AT_1_KPH * params.offroad_detour_factor, params.tobler_decay,
                            params.tobler_slope_offset, params.tobler_max_kph * params.offroad_speed_factor,
                            params.offroad_min_kph, np.flatnonzero(np.isfinite(grid.elevation.ravel())))


def _only(snap, keep: np.ndarray):
    """``snap`` with the rows not in ``keep`` unsnapped (no leg)."""
    fields_ = {f: getattr(snap, f).copy() for f in snap.__dataclass_fields__}
    drop = ~np.asarray(keep, bool)
    for f, fill in (("edge_row", -1), ("edge_u", None), ("edge_v", None), ("edge_key", None)):
        fields_[f][drop] = fill
    for f in ("fraction", "along_m", "snap_lon", "snap_lat", "leg_m"):
        fields_[f][drop] = np.nan
    return type(snap)(**fields_)


def _concat_snaps(*snaps):
    return type(snaps[0])(**{f: np.concatenate([getattr(s, f) for s in snaps]) for f in snaps[0].__dataclass_fields__})


def _other_roads_within(edges, lon, lat, nearest, working_crs: str, within_m: float):
    """(point index, Snap) of the nearest point of every road within ``within_m`` of each point but its nearest.

    Exact: shapely's nearest point on each road line (working CRS); a road crossing the radius twice is one
    road, one leg. Roads are the canonical edges, as :func:`engine._snap` takes them.
    """
    lines = road_engine._project(edges.geometry[edges.canon], road_engine._transformer(edges.crs, working_crs))
    ok = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
    empty = (np.zeros(0, np.int64), _only(nearest.take(slice(0, 0)), np.zeros(0, bool)))
    if not len(ok) or within_m <= 0:
        return empty
    x, y = road_engine._transformer("EPSG:4326", working_crs).transform(lon[ok], lat[ok])
    pts = shapely.points(np.asarray(x), np.asarray(y))
    pi, li = shapely.STRtree(lines).query(pts, predicate="dwithin", distance=within_m)
    own = edges.road[np.maximum(nearest.edge_row[ok[pi]], 0)]
    keep = edges.road[edges.canon[li]] != own
    pi, li = pi[keep], li[keep]
    if not len(pi):
        return empty
    along = shapely.line_locate_point(lines[li], pts[pi])
    foot = shapely.line_interpolate_point(lines[li], along)
    length = shapely.length(lines[li])
    frac = np.divide(along, length, out=np.zeros_like(along), where=length > 0).clip(0.0, 1.0)
    frac[frac < 1e-12] = 0.0
    frac[frac > 1 - 1e-12] = 1.0
    slon, slat = road_engine._transformer(working_crs, "EPSG:4326").transform(shapely.get_x(foot), shapely.get_y(foot))
    row = edges.canon[li]
    u_id, v_id, key = edges.ids
    snap = type(nearest)(edge_row=row.astype(np.int64), edge_u=u_id[row], edge_v=v_id[row], edge_key=key[row],
                         fraction=frac, along_m=along, snap_lon=np.asarray(slon), snap_lat=np.asarray(slat),
                         leg_m=shapely.distance(pts[pi], foot))
    return ok[pi], snap


def clear_of_barriers(grid: TerrainGrid, flon, flat, tlon, tlat) -> np.ndarray:
    """True for the straight lines that cross no barrier cell (no elevation, or outside the region's buffer).

    Each line is sampled every half cell (in the grid's own coordinates); points outside the grid are barriers.
    """
    fx, fy = (np.asarray(a, float) for a in _to_grid_crs(grid.crs, flon, flat))
    tx, ty = (np.asarray(a, float) for a in _to_grid_crs(grid.crs, tlon, tlat))
    if not len(fx):
        return np.zeros(0, bool)
    inv = ~grid.transform
    c0, r0 = inv @ (fx, fy)
    c1, r1 = inv @ (tx, ty)
    return _lines_clear(grid.elevation, *(np.ascontiguousarray(a, np.float64) for a in (c0, r0, c1, r1)))


@njit(cache=True, nogil=True)
def _lines_clear(elevation, c0, r0, c1, r1):
    """Per line (grid column/row coordinates): no sample, every half cell from start to end, falls on a NaN cell
    or off the grid. Sample ``k`` of ``n = max(ceil(2·length), 1)`` is the cell under ``start + (end − start)·k/n``."""
    rows, cols = elevation.shape
    out = np.ones(c0.shape[0], np.bool_)
    for i in range(c0.shape[0]):
        dc = c1[i] - c0[i]
        dr = r1[i] - r0[i]
        if not (math.isfinite(dc) and math.isfinite(dr)):
            out[i] = False
            continue
        steps = max(int(math.ceil(2.0 * math.hypot(dc, dr))), 1)
        for k in range(steps + 1):
            t = k / steps
            r = math.floor(r0[i] + dr * t)
            c = math.floor(c0[i] + dc * t)
            if r < 0 or r >= rows or c < 0 or c >= cols or math.isnan(elevation[r, c]):
                out[i] = False
                break
    return out


def _clear_pairs(grid, o_lon, o_lat, d_lon, d_lat, working_crs, direct_km, legs):
    """Settlement–facility pairs within ``direct_km`` whose straight line crosses no barrier, with leg minutes."""
    if not direct_km > 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    oi, di, _ = road_engine._direct_pairs(o_lon, o_lat, d_lon, d_lat, working_crs, direct_km * 1000.0,
                                          offroad_minutes=None, speed_kph=1.0, detour=1.0)
    keep = clear_of_barriers(grid, o_lon[oi], o_lat[oi], d_lon[di], d_lat[di])
    oi, di = oi[keep], di[keep]
    return oi, di, legs(o_lon[oi], o_lat[oi], d_lon[di], d_lat[di])


def _nan_legs(legs, flon, flat, tlon, tlat, valid) -> np.ndarray:
    out = np.full(len(valid), np.nan)
    if valid.any():
        out[valid] = legs(flon[valid], flat[valid], tlon[valid], tlat[valid])
    return out


def _cells_around(grid: TerrainGrid, lon, lat, ok) -> tuple[np.ndarray, np.ndarray]:
    """(point index, cell index) of the passable cells in the 3×3 block around each point."""
    idx = np.flatnonzero(ok)
    if not len(idx):
        return idx, idx
    r, c = grid.cell_of(lon[idx], lat[idx])
    rows, cols = grid.shape
    off = np.array([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)])
    rr = r[:, None] + off[None, :, 0]
    cc = c[:, None] + off[None, :, 1]
    pi = np.repeat(idx, 9)
    rr, cc = rr.ravel(), cc.ravel()
    inside = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
    pi, rr, cc = pi[inside], rr[inside], cc[inside]
    cell = rr * cols + cc
    keep = np.isfinite(grid.elevation.ravel()[cell])
    return pi[keep], cell[keep]


def _access_spacing(lines, crs, grid: TerrainGrid) -> np.ndarray:
    """Metres between candidate access points along each road: a third of the smaller side of the grid's cells
    where the road is (on a geographic grid, at the road's latitude farthest from the equator, where cells are
    narrowest). Each road's own, so a road gets the same points whatever the extent of the run (a province alone
    or inside the national grid)."""
    from ._crs import metres_per_degree

    a, e = abs(grid.transform.a), abs(grid.transform.e)
    if not _is_geographic(grid.crs):
        return np.full(len(lines), min(a, e) / 3.0)
    if not _is_geographic(str(crs)):
        lines = road_engine._project(lines, road_engine._transformer(crs, "EPSG:4326"))
    bounds = shapely.bounds(lines)
    lat = np.maximum(np.abs(bounds[:, 1]), np.abs(bounds[:, 3]))
    deg_lon, deg_lat = metres_per_degree(lat)
    return np.minimum(deg_lon * a, deg_lat * e) / 3.0


def _access_points(edges, grid: TerrainGrid, working_crs: str, spacing_m: float | None):
    """One point per road and passable cell it crosses (the sample nearest the cell centre), as a Snap."""
    lines = road_engine._project(edges.geometry[edges.canon], road_engine._transformer(edges.crs, working_crs))
    length = shapely.length(lines)
    if spacing_m is None:
        spacing_m = _access_spacing(edges.geometry[edges.canon], edges.crs, grid)
    n = np.maximum(np.ceil(length / spacing_m).astype(np.int64), 1)
    road_of = np.repeat(np.arange(len(lines)), n + 1)
    k = np.arange(int((n + 1).sum())) - np.repeat(np.cumsum(n + 1) - (n + 1), n + 1)
    frac = k / n[road_of]
    vxy, vline = shapely.get_coordinates(lines, return_index=True)
    along, first, last = _vertex_distances(vxy[:, 0], vxy[:, 1], vline, len(lines))
    x, y = _points_along(vxy, along, first, last, road_of, frac)
    back = road_engine._transformer(working_crs, "EPSG:4326")
    lon, lat = back.transform(x, y)
    lon, lat = np.asarray(lon), np.asarray(lat)
    r, c = grid.cell_of(lon, lat)
    rows, cols = grid.shape
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    cell = np.where(inside, r * cols + c, -1)
    inside &= np.isfinite(grid.elevation.ravel()[np.maximum(cell, 0)])
    # nearest the cell centre per (road, cell)
    clon, clat = grid.centre_lonlat(r, c)
    d2 = (lon - clon) ** 2 + (lat - clat) ** 2
    sel = np.flatnonzero(inside)
    order = np.lexsort((d2[sel], cell[sel], road_of[sel]))
    sel = sel[order]
    first = np.r_[True, (road_of[sel][1:] != road_of[sel][:-1]) | (cell[sel][1:] != cell[sel][:-1])]
    sel = sel[first]
    roads = road_of[sel]
    f = frac[sel]
    m = len(sel)
    snap = road_engine.Snap(edge_row=edges.canon[roads].astype(np.int64), edge_u=np.full(m, None, object),
                            edge_v=np.full(m, None, object), edge_key=np.full(m, None, object),
                            fraction=f, along_m=f * length[roads], snap_lon=lon[sel], snap_lat=lat[sel],
                            leg_m=np.zeros(m))
    return snap, cell[sel]


# --------------------------------------------------------------------------- level passes
@dataclass(frozen=True)
class LevelResult:
    """One level's search: minutes and nearest facility for every settlement and every cell."""

    settlement_minutes: np.ndarray
    settlement_nearest: np.ndarray     # facility index into the facility table, -1 unreachable
    cell_minutes: np.ndarray           # float32 (rows, cols), NaN at barriers, inf unreachable
    cell_nearest: np.ndarray           # int32 (rows, cols) facility index, -1 none


def level_passes(graph: CombinedGraph, facility_levels: np.ndarray,
                 groups: Mapping[str, Sequence[str]] = LEVEL_GROUPS, *, threads: int | None = None,
                 search_all=None) -> dict[str, LevelResult]:
    """One multi-source search per level group from all its located facilities.

    Groups with the same facilities (e.g. clinic and township centre when a register lists no village
    clinics) share one search; the searches run in parallel threads (the compiled kernel releases the GIL),
    ``threads`` at a time (default: the CPUs available, at most the number of searches).
    ``search_all(graph, [source nodes per search])`` replaces the searches (e.g.
    :class:`geoaccess.windows.WindowedSearch`): per search what :func:`at_nodes` takes from one, the same values.
    """
    import os

    from ._pools import thread_pool

    rows, cols = graph.grid.shape
    levels = np.asarray(facility_levels).astype(str)
    barrier = np.isnan(graph.grid.elevation)
    members_of = {g: np.flatnonzero(np.isin(levels, list(m)) & (graph.dest_nodes >= 0)) for g, m in groups.items()}
    unique: dict[tuple, np.ndarray] = {}
    for fac in members_of.values():
        unique.setdefault(tuple(fac.tolist()), fac)
    searches = [fac for fac in unique.values() if len(fac)]
    n_threads = max(1, min(len(searches), threads or len(os.sched_getaffinity(0)))) if searches else 1
    legs = _StraightLegs(graph)

    def finish(fac: np.ndarray, o_min, o_lab, c_min, c_lab) -> LevelResult:
        # one facility set's search as the level passes read it (see at_nodes): its cell fields and the origins'
        # times improved by straight trips (in a worker thread)
        s_near = np.where(o_lab >= 0, fac[np.maximum(o_lab, 0)], -1)
        cm = c_min.reshape(rows, cols)
        cm[barrier] = np.nan
        cell_label = c_lab.reshape(rows, cols)
        cn = fac.astype(np.int32)[np.maximum(cell_label, 0)]
        cn[cell_label < 0] = -1
        del c_lab, cell_label
        s_min, s_near = legs.improve(o_min, s_near, fac)
        return LevelResult(s_min, s_near, cm, cn)

    def one_search(fac: np.ndarray) -> LevelResult:
        return finish(fac, *at_nodes(graph, *graph.search(graph.dest_nodes[fac])))

    with thread_pool(n_threads, "geoaccess-search") as pool:
        if search_all is None:
            done = list(pool.map(one_search, searches))
        else:
            raw = list(search_all(graph, [graph.dest_nodes[fac] for fac in searches]))

            def finish_one(i: int) -> LevelResult:
                found_i = raw[i]
                raw[i] = None  # each search's arrays are freed as soon as they are read
                return finish(searches[i], *found_i)

            done = list(pool.map(finish_one, range(len(searches))))
    found = dict(zip((tuple(f.tolist()) for f in searches), done))
    out = {}
    n_on = len(graph.origin_nodes)
    for group, fac in members_of.items():
        if len(fac):
            out[group] = found[tuple(fac.tolist())]
        else:
            out[group] = LevelResult(np.where(graph.origin_nodes >= 0, np.inf, np.nan), np.full(n_on, -1, np.int64),
                                     np.where(barrier, np.float32(np.nan), np.float32(np.inf)),
                                     np.full((rows, cols), -1, np.int32))
    log.info("combined engine: %d level groups, %d distinct searches on %d threads; %d straight off-road trips "
             "checked against the searched times, %d shorter", len(groups), len(searches), n_threads,
             legs.n_checked, legs.n_improved)
    return out


def at_nodes(graph: CombinedGraph, dist: np.ndarray, label: np.ndarray):
    """What the level passes read of one search (minutes and source index of every node): (minutes of each origin
    (NaN: no node), its source index (-1 none), float32 minutes of every grid cell, int32 source index of every
    cell)."""
    nc = graph.grid.n_cells
    on = graph.origin_nodes
    o_min = np.where(on >= 0, dist[np.maximum(on, 0)], np.nan)
    o_lab = np.where(on >= 0, label[np.maximum(on, 0)], -1)
    return o_min, o_lab, dist[:nc].astype(np.float32), label[:nc]


class _StraightLegs:
    """The straight off-road trip from each settlement to every facility that could beat its searched time.

    A settlement node only has out-edges, so a straight edge settlement → facility changes nothing but that
    settlement's own time: taking ``min(searched, straight)`` afterwards is exactly the search over the graph
    with those edges. Candidates are the facilities closer than the distance the fastest off-road pace could
    cover in the searched time (a leg is never faster than ``straight × detour`` at the top off-road speed);
    their legs are computed once, with the one off-road model, and shared by the levels.
    """

    def __init__(self, graph: CombinedGraph):
        from pyproj import Transformer

        self.graph = graph
        p = graph.params
        self.kph_bound = max(p.tobler_max_kph * p.offroad_speed_factor, p.offroad_min_kph)
        self.cache: dict[tuple[int, int], float] = {}
        self.ok = len(graph.origin_lonlat) == 2 and len(graph.dest_lonlat) == 2 and bool(graph.working_crs)
        if self.ok:
            tr = Transformer.from_crs("EPSG:4326", graph.working_crs, always_xy=True)
            self.oxy = np.column_stack(tr.transform(*graph.origin_lonlat))
            self.dxy = np.column_stack(tr.transform(*graph.dest_lonlat))
        self.n_checked = 0
        self.n_improved = 0
        self._lock = threading.Lock()  # the levels' threads share the cache and the counts

    def pairs(self, origins: np.ndarray, fac: np.ndarray, within_minutes: np.ndarray):
        """(origin, facility, minutes) of the straight trips that could take under ``within_minutes`` (per origin);
        trips across a barrier are infinite."""
        from scipy.spatial import cKDTree

        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        if not self.ok or not len(fac) or not len(origins):
            return empty
        p = self.graph.params
        o = origins[self.graph.origin_nodes[origins] >= 0]
        pos = np.searchsorted(origins, o)
        t = np.where(np.isfinite(within_minutes[pos]), within_minutes[pos], 1e6)
        # 2 % above the bound: projected distances may differ a little from geodesic ones
        radius = t / 60.0 * self.kph_bound * 1000.0 / p.offroad_detour_factor * 1.02
        fac = fac[np.isfinite(self.dxy[fac]).all(axis=1)]
        if not len(fac) or not len(o):
            return empty
        hits = cKDTree(self.dxy[fac]).query_ball_point(self.oxy[o], radius)
        counts = np.fromiter((len(h) for h in hits), np.int64, len(hits))
        if not counts.sum():
            return empty
        oi = np.repeat(o, counts)
        fi = fac[np.concatenate([np.asarray(h, np.int64) for h in hits if len(h)])]
        return oi, fi, self._minutes(oi, fi)

    def improve(self, minutes: np.ndarray, nearest: np.ndarray, fac: np.ndarray):
        """The searched minutes and nearest facility of every origin, improved by straight trips."""
        oi, fi, known = self.pairs(np.arange(len(minutes)), fac, minutes)
        if not len(oi):
            return minutes, nearest
        minutes, nearest = minutes.copy(), nearest.copy()
        order = np.lexsort((known, oi))
        first = order[np.r_[True, oi[order][1:] != oi[order][:-1]]]
        better = known[first] < np.where(np.isfinite(minutes[oi[first]]), minutes[oi[first]], np.inf)
        rows = oi[first][better]
        minutes[rows] = known[first][better]
        nearest[rows] = fi[first][better]
        with self._lock:
            self.n_improved += int(better.sum())
        return minutes, nearest

    def _minutes(self, oi: np.ndarray, fi: np.ndarray) -> np.ndarray:
        p = self.graph.params
        key = oi * len(self.dxy) + fi
        known = np.fromiter((self.cache.get(k, np.nan) for k in key.tolist()), float, len(key))
        todo = np.flatnonzero(np.isnan(known))
        if len(todo):
            (olon, olat), (dlon, dlat) = self.graph.origin_lonlat, self.graph.dest_lonlat
            clear = clear_of_barriers(self.graph.grid, olon[oi[todo]], olat[oi[todo]], dlon[fi[todo]], dlat[fi[todo]])
            known[todo[~clear]] = np.inf
            self.cache.update(zip(key[todo[~clear]].tolist(), known[todo[~clear]].tolist()))
            todo = todo[clear]
        if len(todo):
            known[todo] = offroad_leg_times(olon[oi[todo]], olat[oi[todo]], dlon[fi[todo]], dlat[fi[todo]],
                                            self.graph.dem, p, self.graph.working_crs)[1]
            self.cache.update(zip(key[todo].tolist(), known[todo].tolist()))
            with self._lock:
                self.n_checked += len(todo)
        return known


def compute_travel_times(G, dem: Dem, settlements: pd.DataFrame, facilities: pd.DataFrame, *, params: TerrainParams,
                         working_crs: str, region=None, buffer_m: float = 30000.0, direct_km: float = 0.0,
                         road_legs_km: float = 2.0, moves: int = 16, groups: Mapping[str, Sequence[str]] | None = None):
    """Travel-time result of the combined engine on ``dem`` (see :func:`compute_on_grid`)."""
    grid = terrain_grid(dem, region=region, buffer_m=buffer_m, working_crs=working_crs, moves=moves)
    return compute_on_grid(G, grid, dem, settlements, facilities, params=params, working_crs=working_crs,
                           direct_km=direct_km, road_legs_km=road_legs_km, groups=groups)


def compute_on_grid(G, grid: TerrainGrid, dem: Dem | None, settlements: pd.DataFrame, facilities: pd.DataFrame, *,
                    params: TerrainParams, working_crs: str, direct_km: float = 0.0, road_legs_km: float = 2.0,
                    groups: Mapping[str, Sequence[str]] | None = None, search_all=None, move_weights=None):
    """Travel-time result of the combined engine for every settlement, and the per-level cell results.

    Parameters
    ----------
    G : road graph with ``travel_time`` (s) on every edge (may have no edges).
    grid : from :func:`terrain_grid`; dem : the DEM the off-road legs sample (None: flat legs).
    settlements, facilities : WGS84 tables (facilities need ``facility_id`` and ``level``).
    params : the off-road model; direct_km : straight off-road trips to facilities within this distance;
    road_legs_km : straight legs to every road within this distance (see :func:`build_combined_graph`).
    search_all : replaces the level searches (see :func:`level_passes`), e.g. windows searched on a cluster.
    move_weights : the grid's :func:`grid_move_weights` when already computed.

    Returns
    -------
    (DataFrame aligned to ``settlements.index`` with ``t_{group}_min`` and ``nearest_{group}_id``,
    ``offroad_m`` / ``offroad_min`` of the leg to the nearest road, ``snap_lon`` / ``snap_lat``; attrs
    ``engine`` and ``warnings``), ({group: LevelResult}, TerrainGrid).
    """
    from .travel import check_facility_table, level_table

    groups = dict(LEVEL_GROUPS if groups is None else groups)
    check_facility_table(facilities)
    t0 = time.perf_counter()
    s_lon, s_lat = road_engine._lonlat(settlements)
    f_lon, f_lat = road_engine._lonlat(facilities)
    graph = build_combined_graph(G, grid, params, dem, working_crs=working_crs, origin_lon=s_lon, origin_lat=s_lat,
                                 dest_lon=f_lon, dest_lat=f_lat, direct_km=direct_km, road_legs_km=road_legs_km,
                                 move_weights=move_weights)
    t1 = time.perf_counter()
    results = level_passes(graph, facilities["level"].to_numpy(), groups, search_all=search_all)
    t2 = time.perf_counter()
    ids = np.r_[facilities["facility_id"].to_numpy(), None].astype(object)  # row -1 (none) → None
    out = level_table(settlements.index, {g: r.settlement_minutes for g, r in results.items()},
                      {g: ids[r.settlement_nearest] for g, r in results.items()})
    if graph.road is not None:
        out["offroad_m"] = graph.road.origin_snap.leg_m
        out["offroad_min"] = graph.road.origin_leg_min
        out["snap_lon"] = graph.road.origin_snap.snap_lon
        out["snap_lat"] = graph.road.origin_snap.snap_lat
    else:
        for c in ("offroad_m", "offroad_min", "snap_lon", "snap_lat"):
            out[c] = np.nan
    warnings = []
    unlocated = int((graph.dest_nodes < 0).sum())
    if unlocated:
        warnings.append(f"{unlocated} facilities have no coordinates and are ignored")
    located = graph.origin_nodes >= 0
    n_unreach = int((out[f"t_{next(iter(groups))}_min"].isna().to_numpy() & located).sum()) if groups else 0
    log.info("combined engine: %d settlements, %d facilities; build %.2f s, %d level passes %.2f s; %d located "
             "settlements without a path", len(out), len(facilities), t1 - t0, len(groups), t2 - t1, n_unreach)
    out.attrs["warnings"] = warnings
    out.attrs["engine"] = {"engine": "combined", **graph.facts, "direct_km": direct_km, "road_legs_km": road_legs_km,
                           "build_s": round(t1 - t0, 3), "passes_s": round(t2 - t1, 3),
                           "method": "one multi-source search per level over the road graph and the DEM grid joined "
                                     "(docs/engine.md)"}
    return out, (results, grid)
