"""Windows of the combined graph: exact pieces of it searched apart (the partitioned runs), each time certified.

A *window* is a rectangle of grid cells with the explicit nodes (roads, settlements, facilities) located in it
and every edge and grid move between them exactly as in the whole graph (the same float32 move minutes, the
same edge minutes). A search in the window gives each node the time of the best route that stays inside. A
second search, from the window's *boundary* (its nodes with an edge or a move leaving it), gives each node the
time it needs to leave the window. A time shorter than the time to leave is the whole graph's time: any route
that leaves costs at least that. Such a node is *certified*; the others are searched again in a window grown
by twice the buffer, and finally in the whole graph. So the partitioned result is the single search's result,
node for node (docs/distributed.md).

Only the nodes the level passes read are kept: every passable cell and every origin. Each belongs to the
partition whose polygon holds its cell (cells outside every polygon: to the nearest one); a window is the
bounding box of its partition's nodes still to certify, grown by the buffer.

`WindowedSearch` is what :func:`geoaccess.combined.level_passes` calls in place of its own searches;
`search_window` is the task a worker runs; `cut_window` cuts one window on the client.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ._pools import thread_pool
from .combined import CombinedGraph, _search_kernel

log = logging.getLogger("geoaccess")

#: A window's time must stay below its time to leave by this relative margin to count as certified (edge
#: minutes summed in another order may differ in the last bits).
CERTIFICATE_MARGIN = 1e-9
#: Knight's moves reach two cells: cells this close to a window side (inside the grid) may leave by a move.
_MOVE_REACH = 2


@dataclass(frozen=True)
class Window:
    """One window as a worker searches it: the combined graph's kernel arrays for the window's nodes.

    Nodes ``0 .. rows·cols-1`` are the window's cells (row-major), then its explicit nodes. ``boundary``: window
    nodes with an edge or a move leaving the window (a superset is safe: it only makes certificates stricter).
    """

    shape: tuple[int, int]
    n_nodes: int
    weights: np.ndarray     # float32 (passable window cells, moves): moves from outside the window are inf
    offset: np.ndarray      # int64 (moves,) node offset of each move in the window's numbering
    row_of: np.ndarray      # int32 (window cells,) row of ``weights``, -1 barrier
    indptr: np.ndarray      # the reversed explicit edges of the window (CSR), minutes
    indices: np.ndarray
    data: np.ndarray
    boundary: np.ndarray    # int64 window nodes

    def kernel_args(self) -> tuple:
        return (self.n_nodes, self.weights, self.offset, self.row_of, self.indptr, self.indices, self.data)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.weights, self.row_of, self.indptr, self.indices, self.data,
                                          self.boundary)))


def search_window(window: Window, sources: Sequence[np.ndarray], targets: np.ndarray):
    """Search a window (a worker's task): per source set, minutes and nearest source at ``targets``; and the
    minutes from each target to the window's boundary (inf: no route leaves).

    ``sources``: per level, the window node of each of its sources (-1: outside the window); ``targets``: window
    nodes. Returns ([(minutes, source index into that level's array, -1 none)], minutes to leave).
    """
    args = window.kernel_args()
    if len(window.boundary):
        leave = _search_kernel(*args, window.boundary)[0][targets]
    else:
        leave = np.full(len(targets), np.inf)
    out = []
    for src in sources:
        present = np.flatnonzero(src >= 0)
        if not len(present):
            out.append((np.full(len(targets), np.inf), np.full(len(targets), -1, np.int64)))
            continue
        dist, label = _search_kernel(*args, src[present].astype(np.int64))
        lab = label[targets]
        out.append((dist[targets], np.where(lab >= 0, present[np.maximum(lab, 0)], -1)))
    return out, leave


def certified(minutes: np.ndarray, leave: np.ndarray) -> np.ndarray:
    """True where a window's minutes are the whole graph's: shorter than the time to leave (or nothing leaves)."""
    return np.isinf(leave) | (minutes < leave * (1.0 - CERTIFICATE_MARGIN))


# --------------------------------------------------------------------------- the client's side
class WindowIndex:
    """What cutting windows needs from a combined graph, computed once: the cell of every node, the forward edges,
    and the grid's cell sizes."""

    def __init__(self, graph: CombinedGraph):
        self.graph = graph
        self.rows, self.cols = graph.grid.shape
        self.n_cells = self.rows * self.cols
        self.forward = graph.reverse.T.tocsr()
        self.node_cell = node_cells(graph)
        explicit = self.node_cell[self.n_cells:]
        self.explicit_r, self.explicit_c = np.divmod(explicit.astype(np.int64), self.cols)
        self.explicit_r[explicit < 0] = -1
        self.explicit_c[explicit < 0] = -1
        self.row_of = graph.move_weights[2]
        from .raster import cell_sizes

        dx, dyr = cell_sizes(graph.grid.transform, graph.grid.shape, graph.grid.crs)
        self.min_dx_m, self.min_dy_m = float(np.min(dx)), float(np.min(dyr))

    def buffer_cells(self, buffer_m: float) -> tuple[int, int]:
        """(rows, cols) that cover at least ``buffer_m`` metres everywhere on the grid."""
        return int(math.ceil(buffer_m / self.min_dy_m)), int(math.ceil(buffer_m / self.min_dx_m))

    def to_local(self, nodes: np.ndarray, r0: int, r1: int, c0: int, c1: int, explicit_map: np.ndarray) -> np.ndarray:
        """Window node of each whole-graph node (-1: not in the window [r0, r1) × [c0, c1))."""
        nodes = np.asarray(nodes, np.int64)
        out = np.full(len(nodes), -1, np.int64)
        is_cell = nodes < self.n_cells
        r, c = np.divmod(nodes[is_cell], self.cols)
        inside = (r >= r0) & (r < r1) & (c >= c0) & (c < c1)
        cell_local = np.where(inside, (r - r0) * (c1 - c0) + (c - c0), -1)
        out[is_cell] = cell_local
        out[~is_cell] = explicit_map[nodes[~is_cell] - self.n_cells]
        return out


def cut_window(index: WindowIndex, r0: int, r1: int, c0: int, c1: int) -> tuple[Window, np.ndarray]:
    """The window [r0, r1) × [c0, c1) of the graph: (Window, the window node of every explicit node (-1 outside))."""
    g = index.graph
    nc, cols = index.n_cells, index.cols
    h, w = r1 - r0, c1 - c0
    weights, offset, row_of = g.move_weights
    # cells: row-major in the window
    rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    cells = (rr * cols + cc).ravel()
    lr_all, lc_all = rr.ravel() - r0, cc.ravel() - c0  # window row and column of each cell
    rows_w = row_of[cells]
    passable = rows_w >= 0
    row_of_w = np.full(len(cells), -1, np.int32)
    row_of_w[passable] = np.arange(int(passable.sum()), dtype=np.int32)
    weights_w = weights[rows_w[passable]]          # a copy: the whole graph's minutes, bit for bit
    dr, dc = g.grid.move_dr, g.grid.move_dc
    # moves from outside the window (only cells near its sides can have one) become inf
    lr, lc = lr_all[passable], lc_all[passable]
    near = np.flatnonzero((lr < _MOVE_REACH) | (lr >= h - _MOVE_REACH) | (lc < _MOVE_REACH) | (lc >= w - _MOVE_REACH))
    for k in range(len(dr)):
        sr, sc = lr[near] + dr[k], lc[near] + dc[k]
        off = (sr < 0) | (sr >= h) | (sc < 0) | (sc >= w)
        weights_w[near[off], k] = np.inf
    offset_w = (dr * w + dc).astype(np.int64)
    # explicit nodes located in the window, in whole-graph order
    er, ec = index.explicit_r, index.explicit_c
    inside = (er >= r0) & (er < r1) & (ec >= c0) & (ec < c1)
    explicit = np.flatnonzero(inside) + nc
    explicit_map = np.full(len(er), -1, np.int64)
    explicit_map[explicit - nc] = h * w + np.arange(len(explicit))
    old = np.r_[cells, explicit]
    n_nodes = len(old)
    # reversed explicit edges between window nodes, in the whole graph's order within each row
    sub = g.reverse[old]
    local = index.to_local(sub.indices, r0, r1, c0, c1, explicit_map)
    keep = local >= 0
    row = np.repeat(np.arange(n_nodes), np.diff(sub.indptr))
    indptr = np.zeros(n_nodes + 1, np.int64)
    np.cumsum(np.bincount(row[keep], minlength=n_nodes), out=indptr[1:])
    itype = np.int32 if n_nodes < 2 ** 31 - 1 else np.int64
    indices = local[keep].astype(itype)
    data = np.asarray(sub.data[keep], np.float64)
    # boundary: forward explicit edges leaving the window, and passable cells a move can leave from
    fsub = index.forward[old]
    frow = np.repeat(np.arange(n_nodes), np.diff(fsub.indptr))
    leaving = index.to_local(fsub.indices, r0, r1, c0, c1, explicit_map) < 0
    edge_out = np.unique(frow[leaving])
    side = np.zeros(len(cells), bool)  # near a side of the window that is not the grid's edge
    if r0 > 0:
        side |= lr_all < _MOVE_REACH
    if r1 < index.rows:
        side |= lr_all >= h - _MOVE_REACH
    if c0 > 0:
        side |= lc_all < _MOVE_REACH
    if c1 < index.cols:
        side |= lc_all >= w - _MOVE_REACH
    band = np.flatnonzero(side & passable)
    boundary = np.union1d(edge_out, band).astype(np.int64)
    win = Window((h, w), n_nodes, weights_w, offset_w, row_of_w, indptr.astype(itype, copy=False), indices, data,
                 boundary)
    return win, explicit_map


def node_cells(graph: CombinedGraph, max_passes: int = 64) -> np.ndarray:
    """The grid cell of every node (int32; -1 unknown): a cell is its own; an explicit node takes the cell of a
    neighbour (settlements, facilities and access points are joined to cells; road nodes to access points), one
    hop per pass."""
    nc = graph.grid.n_cells
    cell = np.full(graph.n_nodes, -1, np.int32)
    cell[:nc] = np.arange(nc, dtype=np.int32)
    rev = graph.reverse
    a = np.repeat(np.arange(graph.n_nodes, dtype=np.int32), np.diff(rev.indptr))  # edge b → a (reversed row a)
    b = rev.indices.astype(np.int32, copy=False)
    open_ = (cell[a] < 0) | (cell[b] < 0)
    a, b = a[open_], b[open_]
    for _ in range(max_passes):
        ka, kb = cell[a] >= 0, cell[b] >= 0
        fill_a, fill_b = ~ka & kb, ka & ~kb
        if not (fill_a.any() or fill_b.any()):
            break
        cell[a[fill_a]] = cell[b[fill_a]]
        cell[b[fill_b]] = cell[a[fill_b]]
        still = (cell[a] < 0) | (cell[b] < 0)
        a, b = a[still], b[still]
    return cell


def cell_owners(graph: CombinedGraph, polygons: Sequence, coarse: int = 8) -> np.ndarray:
    """int32 (rows, cols): the index of the polygon (WGS84) holding each passable cell; passable cells outside
    every polygon take the nearest one's (measured on blocks of ``coarse`` × ``coarse`` cells: a distance transform
    of the whole national grid takes minutes, of its blocks a second); barriers -1."""
    from rasterio import features
    from scipy import ndimage

    from .combined import _is_geographic
    from . import engine as road_engine

    grid = graph.grid
    to_grid = None if _is_geographic(grid.crs) else road_engine._transformer("EPSG:4326", grid.crs)
    shapes = [(poly if to_grid is None else road_engine._project(poly, to_grid), i) for i, poly in enumerate(polygons)
              if poly is not None and not poly.is_empty]
    owner = np.full(grid.shape, -1, np.int32)
    if shapes:
        owner = features.rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=-1, dtype="int32")
    passable = np.isfinite(grid.elevation)
    orphans = np.flatnonzero((passable & (owner < 0)).ravel())
    if len(orphans) and (owner >= 0).any():
        rows, cols = grid.shape
        # each block's owner: the owner of any of its cells (the block's largest index held)
        br, bc = -(-rows // coarse), -(-cols // coarse)
        block = np.full((br * coarse, bc * coarse), -1, np.int32)
        block[:rows, :cols] = owner
        block = block.reshape(br, coarse, bc, coarse).max(axis=(1, 3))
        idx = ndimage.distance_transform_edt(block < 0, return_distances=False, return_indices=True)
        r, c = np.divmod(orphans, cols)
        owner.ravel()[orphans] = block[idx[0][r // coarse, c // coarse], idx[1][r // coarse, c // coarse]]
    owner[~passable] = -1
    return owner


Runner = Callable[[Iterable[tuple[object, tuple]]], Iterator[tuple[object, object]]]


def run_here(jobs: Iterable[tuple[object, tuple]]) -> Iterator[tuple[object, object]]:
    """Run window jobs one after the other in this process (no cluster): (key, result) as each ends."""
    for key, args in jobs:
        yield key, search_window(*args)


class WindowedSearch:
    """The level searches of a combined graph, by windows: what `level_passes` calls instead of its own searches.

    Parameters
    ----------
    polygons : one (Multi)Polygon (WGS84) per partition; its nodes are the cells it holds and the origins in them.
    buffer_km : the first round's windows: the partition's nodes grown by this distance.
    rounds : buffered rounds (each doubles the buffer) before the remaining nodes are searched in the whole graph.
    runner : runs the jobs and yields results as they end (:func:`run_here`, or a Dask client's, see
        :func:`geoaccess.distributed.dask_runner`).
    threads : threads for the last round's whole-graph searches in this process (default: the CPUs available).

    After a call, ``log`` holds one record per round (windows, nodes certified, largest window, seconds).
    """

    def __init__(self, polygons: Sequence, *, buffer_km: float = 100.0, rounds: int = 1, runner: Runner = run_here,
                 names: Sequence[str] | None = None, threads: int | None = None):
        self.polygons = list(polygons)
        self.names = list(names) if names is not None else [str(i) for i in range(len(self.polygons))]
        self.buffer_km = float(buffer_km)
        self.rounds = int(rounds)
        self.runner = runner
        self.threads = threads
        self.log: list[dict] = []

    def __call__(self, graph: CombinedGraph, sources: Sequence[np.ndarray]) -> list[tuple]:
        """Per source set (nodes of the whole graph): what :func:`geoaccess.combined.at_nodes` takes from
        :meth:`CombinedGraph.search` — minutes and nearest source of every origin and every grid cell."""
        t0 = time.perf_counter()
        index = WindowIndex(graph)
        owner_cell = cell_owners(graph, self.polygons).ravel()
        cells = np.flatnonzero(index.row_of >= 0)
        origins = np.flatnonzero(graph.origin_nodes >= 0)
        targets = np.r_[cells, graph.origin_nodes[origins]]
        t_cell = index.node_cell[targets]
        owner = np.where(t_cell >= 0, owner_cell[np.maximum(t_cell, 0)], -1).astype(np.int32)
        del owner_cell
        t_r, t_c = (a.astype(np.int32) for a in np.divmod(np.maximum(t_cell, 0), index.cols))
        del t_cell
        n_levels, n_cells = len(sources), index.n_cells
        # the results, written in place as windows certify them (the level passes' own arrays)
        o_min = [np.where(graph.origin_nodes >= 0, np.inf, np.nan) for _ in range(n_levels)]
        o_lab = [np.full(len(graph.origin_nodes), -1, np.int64) for _ in range(n_levels)]
        c_min = [np.full(n_cells, np.inf, np.float32) for _ in range(n_levels)]
        c_lab = [np.full(n_cells, -1, np.int32) for _ in range(n_levels)]
        pending = np.ones((n_levels, len(targets)), bool)
        n_c = len(cells)

        def store(lv: int, rows: np.ndarray, minutes: np.ndarray, lab: np.ndarray) -> None:
            """Results for targets ``rows`` (indices into ``targets``) of level ``lv``."""
            is_cell = rows < n_c
            c_min[lv][targets[rows[is_cell]]] = minutes[is_cell]
            c_lab[lv][targets[rows[is_cell]]] = lab[is_cell]
            o = origins[rows[~is_cell] - n_c]
            o_min[lv][o] = minutes[~is_cell]
            o_lab[lv][o] = lab[~is_cell]
            pending[lv, rows] = False

        log.info("windowed search: %s nodes to time (%s cells, %s origins) in %d partitions; index %.1f s",
                 f"{len(targets):,}", f"{n_c:,}", f"{len(origins):,}", len(self.polygons), time.perf_counter() - t0)
        self.log = []
        for i in range(max(0, self.rounds)):
            buffer_m = self.buffer_km * 1000.0 * 2 ** i
            any_pending = pending.any(axis=0) & (owner >= 0)
            if not any_pending.any():
                break
            t = time.perf_counter()
            br, bc = index.buffer_cells(buffer_m)
            parts = np.unique(owner[any_pending])
            record = {"buffer_km": buffer_m / 1000.0, "windows": int(len(parts)), "nodes": int(any_pending.sum()),
                      "node_levels": int(pending[:, any_pending].sum()), "certified": 0, "max_window_cells": 0,
                      "max_window_mb": 0.0}

            def jobs():
                for p in parts:
                    mine = np.flatnonzero(any_pending & (owner == p))
                    r0, r1 = max(0, int(t_r[mine].min()) - br), min(index.rows, int(t_r[mine].max()) + br + 1)
                    c0, c1 = max(0, int(t_c[mine].min()) - bc), min(index.cols, int(t_c[mine].max()) + bc + 1)
                    win, explicit_map = cut_window(index, r0, r1, c0, c1)
                    local = index.to_local(targets[mine], r0, r1, c0, c1, explicit_map)
                    src = [index.to_local(s, r0, r1, c0, c1, explicit_map) for s in sources]
                    record["max_window_cells"] = max(record["max_window_cells"], (r1 - r0) * (c1 - c0))
                    record["max_window_mb"] = max(record["max_window_mb"], round(win.nbytes / 2 ** 20, 1))
                    yield (p, mine), (win, src, local)

            done = 0
            for (p, mine), (per_level, leave) in self.runner(jobs()):
                for lv, (m, lab) in enumerate(per_level):
                    ok = pending[lv, mine] & certified(m, leave)
                    store(lv, mine[ok], m[ok], lab[ok])
                    record["certified"] += int(ok.sum())
                done += 1
                log.info("windowed search, buffer %.0f km: window %d of %d (%s) done", buffer_m / 1000.0, done,
                         len(parts), self.names[p] if p < len(self.names) else p)
            record["seconds"] = round(time.perf_counter() - t, 2)
            self.log.append(record)
        index = owner = t_r = t_c = None  # freed before the whole-graph searches
        t = time.perf_counter()
        left = pending.sum(axis=1)

        def whole(lv: int) -> None:  # one level's search of the whole graph, for the nodes still pending
            rows = np.flatnonzero(pending[lv])
            dist, label = graph.search(sources[lv])
            store(lv, rows, dist[targets[rows]], label[targets[rows]])

        todo = [int(lv) for lv in np.flatnonzero(left)]
        with thread_pool(max(1, min(len(todo), self.threads or len(os.sched_getaffinity(0)))),
                         "geoaccess-whole") as pool:
            list(pool.map(whole, todo))  # the compiled search releases the GIL
        self.log.append({"buffer_km": None, "levels": len(todo), "node_levels": int(left.sum()),
                         "seconds": round(time.perf_counter() - t, 2)})
        log.info("windowed search: %s of %s node-levels certified in windows, %s searched in the whole graph "
                 "(%d levels); %.1f s", f"{pending.size - int(left.sum()):,}", f"{pending.size:,}",
                 f"{int(left.sum()):,}", len(todo), time.perf_counter() - t0)
        return list(zip(o_min, o_lab, c_min, c_lab))
