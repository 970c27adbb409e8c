"""Network travel-time engine: off-road legs, CSR road graph, multi-source Dijkstra per level."""
from __future__ import annotations

import gc
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Callable, Mapping, Sequence

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp
import shapely
from pyproj import Transformer
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from geoaccess.errors import InputError
from geoaccess.schema import LEVEL_GROUPS
from geoaccess.terrain import TerrainParams, tobler_kph

log = logging.getLogger("geoaccess")

#: ``offroad_minutes(from_lon, from_lat, to_lon, to_lat)`` -> minutes, or ``(length_m, minutes)``
#: as ``terrain.offroad_leg_times`` returns (bind its dem/params/working_crs with functools.partial).
OffroadMinutes = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], "np.ndarray | tuple"]


@dataclass(frozen=True)
class Snap:
    """Where each point meets the road network: nearest point on the nearest edge geometry.

    Rows of points without coordinates have NaN numbers and ``None`` edge ids.
    """

    edge_row: np.ndarray    # row of the snapped edge in G.edges(keys=True) order (-1: not snapped)
    edge_u: np.ndarray      # snapped directed edge (u, v, key), node ids of the graph
    edge_v: np.ndarray
    edge_key: np.ndarray
    fraction: np.ndarray    # position along the u→v geometry, 0..1
    along_m: np.ndarray     # distance along the geometry from u (working CRS metres)
    snap_lon: np.ndarray    # WGS84 position of the snap point
    snap_lat: np.ndarray
    leg_m: np.ndarray       # straight-line length of the off-road leg (working CRS metres)

    def __len__(self) -> int:
        return len(self.fraction)

    @property
    def valid(self) -> np.ndarray:
        """True where the point was snapped (it had coordinates)."""
        return np.isfinite(self.fraction)

    def take(self, idx) -> "Snap":
        """The rows ``idx`` (slice, index or mask) as a new Snap."""
        return Snap(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass(frozen=True)
class EngineGraph:
    """A road graph as CSR arrays (seconds), with snap points and virtual point nodes inserted.

    Node numbering: ``0..len(node_ids)-1`` are the road nodes of the source graph (in
    ``node_ids`` order), then the split nodes where points meet edges, then one virtual node
    per origin (``origin_nodes``) and per destination (``dest_nodes``). An origin's only edge
    leads out to the road (its off-road leg), a destination's only edge leads in from the road,
    so no route passes through another point's leg.
    """

    forward: sp.csr_matrix              # travel direction, edge weights in seconds
    reverse: sp.csr_matrix              # transposed: Dijkstra from destinations gives times *to* them
    node_ids: np.ndarray                # source-graph node id of each road node
    origin_nodes: np.ndarray            # virtual node per origin point
    dest_nodes: np.ndarray              # virtual node per destination point
    origin_snap: Snap | None = None
    dest_snap: Snap | None = None
    origin_leg_min: np.ndarray | None = None
    dest_leg_min: np.ndarray | None = None
    via_nodes: np.ndarray | None = None    # road node of each via point (-1: not snapped)

    @property
    def n_nodes(self) -> int:
        return self.forward.shape[0]

    @property
    def n_edges(self) -> int:
        return self.forward.nnz

    @classmethod
    def from_edges(cls, src: np.ndarray, dst: np.ndarray, seconds: np.ndarray, n_nodes: int,
                   node_ids: np.ndarray | None = None) -> "EngineGraph":
        """An EngineGraph straight from directed edge arrays (no snapping; nodes are 0..n-1)."""
        fwd = _csr(np.asarray(src), np.asarray(dst), np.asarray(seconds, float), n_nodes)
        ids = np.arange(n_nodes) if node_ids is None else np.asarray(node_ids)
        empty = np.empty(0, np.int64)
        return cls(fwd, _transpose(fwd), ids, empty, empty)

    def node_index(self, ids: Sequence) -> np.ndarray:
        """Engine node numbers of source-graph node ids (KeyError if any is unknown)."""
        idx = pd.Index(self.node_ids).get_indexer(pd.Index(ids))
        if (idx < 0).any():
            raise KeyError(f"{int((idx < 0).sum())} node ids are not in the graph")
        return idx


# --------------------------------------------------------------------------- edge table
@dataclass(frozen=True)
class _Edges:
    """The directed edges of a MultiDiGraph as arrays, grouped into undirected roads."""

    node_ids: np.ndarray
    ids: tuple                 # (u ids, v ids, keys) as object arrays
    u: np.ndarray              # node numbers
    v: np.ndarray
    seconds: np.ndarray
    geometry: np.ndarray       # LineStrings in the graph CRS, oriented u→v
    prof_start: np.ndarray     # time_profile per edge: offset and size in prof_x/prof_y (size 0: none)
    prof_size: np.ndarray
    prof_x: np.ndarray         # cumulative distance share 0..1
    prof_y: np.ndarray         # cumulative time share 0..1
    road: np.ndarray           # undirected road id per directed edge
    canon: np.ndarray          # per road: row of its canonical directed edge
    same: np.ndarray           # edge runs in the direction of its road's canonical edge
    crs: str


@contextmanager
def _gc_paused():
    """Pause the cyclic GC while bulk-creating acyclic objects (a full collection over a big
    graph's dicts would otherwise cost more than the extraction itself)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _edge_table(G: nx.MultiDiGraph) -> _Edges:
    """Extract arrays from ``G`` once; pair the two directions of each road by geometry."""
    with _gc_paused():
        return _edge_arrays(G)


def _edge_arrays(G: nx.MultiDiGraph) -> _Edges:
    rows = list(G.edges(keys=True, data=True))
    if not rows:
        raise InputError(None, "the road graph has no edges: no usable road lines")
    nodes, xy = zip(*((n, (d["x"], d["y"])) for n, d in G.nodes(data=True)))
    node_ids = np.fromiter(nodes, dtype=object, count=len(nodes))
    if pd.api.types.infer_dtype(node_ids, skipna=False) == "integer":
        node_ids = node_ids.astype(np.int64)
    xy = np.array(xy, float)
    u_ids, v_ids, keys, data = zip(*rows)
    node_index = pd.Index(nodes)
    u = node_index.get_indexer(u_ids)
    v = node_index.get_indexer(v_ids)
    seconds = np.array([d.get("travel_time", np.nan) for d in data], float)
    bad = ~np.isfinite(seconds) | (seconds < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(None, f"{int(bad.sum())} edges lack a finite, non-negative travel_time "
                         f"(first: {u_ids[i]}→{v_ids[i]}); run terrain.add_edge_travel_times first")
    geometry = np.array([d.get("geometry") for d in data], dtype=object)
    missing = pd.isna(geometry)
    if missing.any():
        geometry[missing] = shapely.linestrings(np.stack([xy[u[missing]], xy[v[missing]]], axis=1))
    profiles = _flatten_profiles([d.get("time_profile") for d in data])

    # Both directions of a road share the node pair and the (order-free) vertex set of the
    # geometry; bounds and vertex count are exact for a reversed copy.
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    road, canon = _group([lo, hi, shapely.get_num_coordinates(geometry), *shapely.bounds(geometry).T])
    c = canon[road]
    same = (u == u[c]) & (v == v[c])
    loop = u == v
    if loop.any():  # a loop road: compare the second vertex to tell its two directions apart
        same[loop] = shapely.equals(shapely.get_point(geometry[loop], 1), shapely.get_point(geometry[c[loop]], 1))
    crs = str(G.graph.get("crs", "EPSG:4326"))
    ids = tuple(np.fromiter(a, dtype=object, count=len(a)) for a in (u_ids, v_ids, keys))
    return _Edges(node_ids, ids,
                  u, v, seconds, geometry, *profiles, road, canon, same, crs)


def _group(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Group equal rows of ``columns`` (sorted by them): group id per row, first row of each group."""
    order = np.lexsort(columns[::-1])
    new = np.ones(len(order), bool)
    for col in columns:
        s = np.asarray(col)[order]
        new[1:] &= s[1:] == s[:-1]
    new = ~new
    new[:1] = True
    gid = np.empty(len(order), np.int64)
    gid[order] = np.cumsum(new) - 1
    return gid, order[new]


def _project(geoms: np.ndarray, transformer: Transformer) -> np.ndarray:
    """Transform shapely geometries with one vectorised pyproj call."""
    return shapely.transform(geoms, lambda c: np.column_stack(transformer.transform(c[:, 0], c[:, 1])))


# --------------------------------------------------------------------------- snapping
def snap_points_to_edges(G: nx.MultiDiGraph, lon: np.ndarray, lat: np.ndarray, working_crs: str) -> Snap:
    """Snap WGS84 points to the nearest point on the nearest edge geometry of ``G``.

    Parameters
    ----------
    G : road graph (osmnx format), edges with ``geometry`` (else straight lines between nodes).
    lon, lat : WGS84 coordinates; NaN rows are kept unsnapped.
    working_crs : projected CRS in metres where distances are measured.

    Returns
    -------
    Snap : edge (u, v, key), fraction and distance along it, snap point, straight leg length.
    """
    return _snap(_edge_table(G), lon, lat, working_crs)


def _snap(edges: _Edges, lon, lat, working_crs: str) -> Snap:
    lon = np.asarray(lon, float)
    lat = np.asarray(lat, float)
    n = len(lon)
    lines = _project(edges.geometry[edges.canon], _transformer(edges.crs, working_crs))
    ok = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
    xy = np.column_stack(_transformer("EPSG:4326", working_crs).transform(lon[ok], lat[ok]))

    # Road segments; the nearest vertex bounds the distance to the nearest segment, so only
    # segments within that distance are candidates (exact, and far cheaper than nearest-line).
    coords, line = shapely.get_coordinates(lines, return_index=True)
    inner = np.flatnonzero(line[1:] == line[:-1])
    a, b, seg_line = coords[inner], coords[inner + 1], line[inner]
    seg_len = np.hypot(*(b - a).T)
    first = np.r_[True, seg_line[1:] != seg_line[:-1]]
    # along each line to the segment start, summed within the line only: a road's snap fractions must not
    # depend on which other roads are in the graph (partitioned runs equal the whole-region run bit for bit)
    seg_from = pd.Series(seg_len).groupby(seg_line, sort=False).cumsum().to_numpy() - seg_len
    line_len = np.zeros(len(lines))
    line_len[seg_line[first]] = np.add.reduceat(seg_len, np.flatnonzero(first))

    r = cKDTree(coords).query(xy)[0] * (1 + 1e-9) + 1e-6
    boxes = shapely.box(xy[:, 0] - r, xy[:, 1] - r, xy[:, 0] + r, xy[:, 1] + r)
    pi, si = shapely.STRtree(shapely.linestrings(np.stack([a, b], axis=1))).query(boxes)
    ab = b[si] - a[si]
    t = np.clip(np.einsum("ij,ij->i", xy[pi] - a[si], ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-300), 0, 1)
    foot = a[si] + t[:, None] * ab
    dist = np.hypot(*(xy[pi] - foot).T)
    along = seg_from[si] + t * seg_len[si]
    li = seg_line[si]

    # Nearest segment per point; among equally near ones (1 µm), the one nearest a line end,
    # so that a point on a node attaches to that node rather than to a road passing over it.
    best = np.full(len(ok), np.inf)
    np.minimum.at(best, pi, dist)
    tie = dist <= best[pi] + 1e-6
    pi, li, along, foot, dist = pi[tie], li[tie], along[tie], foot[tie], dist[tie]
    order = np.lexsort((np.minimum(along, line_len[li] - along), pi))
    first = order[np.r_[True, pi[order][1:] != pi[order][:-1]]]
    pi, li, along, foot, dist = pi[first], li[first], along[first], foot[first], dist[first]

    frac = np.divide(along, line_len[li], out=np.zeros_like(along), where=line_len[li] > 0).clip(0.0, 1.0)
    frac[frac < 1e-12] = 0.0
    frac[frac > 1 - 1e-12] = 1.0
    slon, slat = _transformer(working_crs, "EPSG:4326").transform(foot[:, 0], foot[:, 1])
    row = edges.canon[li]

    def full(values, fill=np.nan, dtype=float):
        out = np.full(n, fill, dtype=dtype)
        out[ok[pi]] = values
        return out

    u_id, v_id, key = edges.ids
    return Snap(edge_row=full(row, -1, np.int64), edge_u=full(u_id[row], None, object),
                edge_v=full(v_id[row], None, object), edge_key=full(key[row], None, object),
                fraction=full(frac), along_m=full(along),
                snap_lon=full(slon), snap_lat=full(slat), leg_m=full(dist))


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


# --------------------------------------------------------------------------- graph building
def build_engine_graph(G: nx.MultiDiGraph, origin_lon, origin_lat, dest_lon, dest_lat, *, working_crs: str,
                       offroad_minutes: OffroadMinutes | None = None, terrain: TerrainParams | None = None,
                       direct_offroad_m: float = 0.0) -> EngineGraph:
    """Build the CSR engine graph of ``G`` with origins and destinations attached by off-road legs.

    Parameters
    ----------
    G : road graph (osmnx format) whose edges carry ``travel_time`` (s) and optionally
        ``time_profile`` = (cumulative distance m, cumulative seconds) along the edge.
    origin_lon, origin_lat : WGS84 points that travel (settlements): leg point → road.
    dest_lon, dest_lat : WGS84 points travelled to (facilities, candidates): leg road → point.
    working_crs : projected CRS in metres for snapping.
    offroad_minutes : leg time model ``f(from_lon, from_lat, to_lon, to_lat)`` (a region run passes the
        terrain-aware :func:`geoaccess.terrain.offroad_leg_times`); default flat: ``leg_m ×
        offroad_detour_factor`` at Tobler's flat speed × ``offroad_speed_factor`` of ``terrain``.
    terrain : the off-road parameters (default ``TerrainParams()``), the one definition of the model.
    direct_offroad_m : an origin within this distance of a destination may also go there
        directly off road (0: only when they share coordinates, e.g. a clinic in its village).

    Returns
    -------
    EngineGraph : reusable for any number of passes.
    """
    edges = _edge_table(G)
    n_o = len(np.asarray(origin_lon))
    snap = _snap(edges, np.r_[np.asarray(origin_lon, float), np.asarray(dest_lon, float)],
                 np.r_[np.asarray(origin_lat, float), np.asarray(dest_lat, float)], working_crs)
    o_snap, d_snap = snap.take(slice(0, n_o)), snap.take(slice(n_o, None))
    leg = flat_leg_model(offroad_minutes, terrain)
    o_min = _leg_minutes(origin_lon, origin_lat, o_snap.snap_lon, o_snap.snap_lat, o_snap.leg_m, **leg)
    d_min = _leg_minutes(d_snap.snap_lon, d_snap.snap_lat, dest_lon, dest_lat, d_snap.leg_m, **leg)
    direct = _direct_pairs(origin_lon, origin_lat, dest_lon, dest_lat, working_crs, direct_offroad_m, **leg)
    return _assemble(edges, o_snap, o_min, d_snap, d_min, direct)


def flat_leg_model(offroad_minutes: OffroadMinutes | None, terrain: TerrainParams | None) -> dict:
    """Keyword arguments of ``_leg_minutes``: the given model, else the flat form of the one off-road model."""
    p = terrain or TerrainParams()
    kph = max(p.offroad_min_kph, tobler_kph(0.0, p) * p.offroad_speed_factor)
    return dict(offroad_minutes=offroad_minutes, speed_kph=kph, detour=p.offroad_detour_factor)


def _leg_minutes(from_lon, from_lat, to_lon, to_lat, length_m, *, offroad_minutes, speed_kph, detour) -> np.ndarray:
    """Off-road leg minutes: the given model, else flat ``length × detour / speed``; NaN stays NaN."""
    length_m = np.asarray(length_m, float)
    if offroad_minutes is None:
        return length_m * detour / (speed_kph * 1000.0 / 60.0)
    ok = np.isfinite(length_m)
    out = np.full(len(length_m), np.nan)
    if ok.any():
        args = [np.asarray(a, float)[ok] for a in (from_lon, from_lat, to_lon, to_lat)]
        res = offroad_minutes(*args)
        out[ok] = np.asarray(res[1] if isinstance(res, tuple) else res, float)
    return out


def _direct_pairs(o_lon, o_lat, d_lon, d_lat, working_crs, within_m, **leg) -> tuple[np.ndarray, ...]:
    """(origin, destination, minutes) of the off-road trips allowed without the road."""
    o_lon, o_lat, d_lon, d_lat = (np.asarray(a, float) for a in (o_lon, o_lat, d_lon, d_lat))
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    if within_m is None or within_m < 0 or len(o_lon) == 0 or len(d_lon) == 0:
        return empty
    to_work = _transformer("EPSG:4326", working_crs)
    o_ok = np.flatnonzero(np.isfinite(o_lon) & np.isfinite(o_lat))
    d_ok = np.flatnonzero(np.isfinite(d_lon) & np.isfinite(d_lat))
    o_xy = np.column_stack(to_work.transform(o_lon[o_ok], o_lat[o_ok]))
    d_xy = np.column_stack(to_work.transform(d_lon[d_ok], d_lat[d_ok]))
    pairs = cKDTree(o_xy).sparse_distance_matrix(cKDTree(d_xy), within_m, output_type="ndarray")
    if len(pairs) == 0:
        return empty
    oi, di, dist = o_ok[pairs["i"]], d_ok[pairs["j"]], pairs["v"]
    return oi, di, _leg_minutes(o_lon[oi], o_lat[oi], d_lon[di], d_lat[di], dist, **leg)


def _assemble(edges: _Edges, o_snap: Snap, o_min: np.ndarray, d_snap: Snap, d_min: np.ndarray,
              direct: tuple[np.ndarray, ...], via_snap: Snap | None = None) -> EngineGraph:
    """Split snapped edges at their snap points, add virtual point nodes, build the CSR pair.

    ``via_snap``: further points on the roads (e.g. where the combined engine lets a trip leave or join a
    road); the roads are split there too and the road node of each is returned in ``via_nodes``.
    """
    n_road = len(edges.node_ids)
    n_o, n_d = len(o_snap), len(d_snap)
    n_v = 0 if via_snap is None else len(via_snap)

    # Where each point meets its road: fraction g along the road's canonical edge.
    parts = (o_snap, d_snap) if via_snap is None else (o_snap, d_snap, via_snap)
    snap = Snap(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Snap)})
    ok = np.flatnonzero(snap.valid)
    row = snap.edge_row[ok]
    road = edges.road[row]
    g = np.where(edges.same[row], snap.fraction[ok], 1.0 - snap.fraction[ok])
    c = edges.canon[road]
    inner = (g > 0.0) & (g < 1.0)
    attach = np.where(g <= 0.0, edges.u[c], edges.v[c])

    # One split node per distinct (road, position), sorted along the road.
    inv, first = _group([road[inner], g[inner]])
    attach[inner] = n_road + inv
    sp_road, sp_g = road[inner][first], g[inner][first]
    n_split = len(sp_g)
    n_roads = len(edges.canon)
    count = np.bincount(sp_road, minlength=n_roads)
    start = np.zeros(n_roads, np.int64)
    start[1:] = np.cumsum(count)[:-1]

    # Every directed edge of a split road becomes a chain u → s… → v, in its own direction.
    m_e = count[edges.road]
    split = np.flatnonzero(m_e > 0)
    keep = np.flatnonzero(m_e == 0)
    src = [edges.u[keep]]
    dst = [edges.v[keep]]
    w = [edges.seconds[keep]]
    if len(split):
        m = m_e[split]
        pe = np.repeat(np.arange(len(split)), m + 1)
        k = np.arange(len(pe)) - np.repeat(np.cumsum(m + 1) - (m + 1), m + 1)
        e = split[pe]
        mm, s0, same = m[pe], start[edges.road[e]], edges.same[e]

        def chain(p):
            j = np.clip(np.where(same, s0 + p - 1, s0 + mm - p), 0, max(n_split - 1, 0))
            node = np.where(p == 0, edges.u[e], np.where(p == mm + 1, edges.v[e], n_road + j))
            frac = np.where(p == 0, 0.0, np.where(p == mm + 1, 1.0, np.where(same, sp_g[j], 1.0 - sp_g[j])))
            return node, frac

        a, fa = chain(k)
        b, fb = chain(k + 1)
        pa, pb = _time_share(edges, e, fa), _time_share(edges, e, fb)
        src.append(a)
        dst.append(b)
        w.append(edges.seconds[e] * np.maximum(pb - pa, 0.0))

    # Virtual point nodes and their legs (seconds).
    base = n_road + n_split
    origin_nodes = base + np.arange(n_o)
    dest_nodes = base + n_o + np.arange(n_d)
    via_nodes = np.full(n_v, -1, np.int64)
    is_v = ok >= n_o + n_d
    via_nodes[ok[is_v] - n_o - n_d] = attach[is_v]
    ok, attach = ok[~is_v], attach[~is_v]
    is_o = ok < n_o
    leg_s = np.r_[o_min, d_min][ok] * 60.0
    oi, di, direct_min = direct
    src += [origin_nodes[ok[is_o]], attach[~is_o], origin_nodes[oi]]
    dst += [attach[is_o], dest_nodes[ok[~is_o] - n_o], dest_nodes[di]]
    w += [leg_s[is_o], leg_s[~is_o], np.asarray(direct_min, float) * 60.0]
    src, dst, w = (np.concatenate(x) for x in (src, dst, w))
    good = w >= 0  # False for NaN
    if not good.all():
        log.warning("%d off-road legs have no valid time: left out, their points stay unconnected",
                    int((~good).sum()))
        src, dst, w = src[good], dst[good], w[good]
    fwd = _csr(src, dst, w, base + n_o + n_d)
    return EngineGraph(fwd, _transpose(fwd), edges.node_ids, origin_nodes, dest_nodes,
                       o_snap, d_snap, np.asarray(o_min, float), np.asarray(d_min, float), via_nodes)


def _time_share(edges: _Edges, e: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Share of edge ``e``'s travel time spent before ``frac`` of its length (time profile, else linear)."""
    out = np.asarray(frac, float).copy()
    sel = np.flatnonzero(edges.prof_size[e] > 0)
    if not len(sel):
        return out
    x, y, q = edges.prof_x, edges.prof_y, out[sel]
    # Vectorised bisection for the profile segment [i, i+1] holding q (log2(profile size) steps).
    a = edges.prof_start[e[sel]]
    b = a + edges.prof_size[e[sel]] - 2
    while (a < b).any():
        mid = (a + b + 1) // 2
        right = x[mid] <= q
        a, b = np.where(right, mid, a), np.where(right, b, mid - 1)
    dx = x[a + 1] - x[a]
    t = np.divide(q - x[a], dx, out=np.zeros_like(q), where=dx > 0).clip(0.0, 1.0)
    out[sel] = y[a] + t * (y[a + 1] - y[a])
    return out


def _flatten_profiles(profiles: list) -> tuple[np.ndarray, ...]:
    """Concatenate per-edge (cum distance, cum seconds) profiles, normalised to 0..1 on both axes."""
    start = np.zeros(len(profiles), np.int64)
    size = np.zeros(len(profiles), np.int64)
    xs, ys, pos = [], [], 0
    for i, p in enumerate(profiles):  # once per edge, at extraction
        if p is None:
            continue
        arr = np.asarray(p, float)
        if arr.ndim == 2 and arr.shape[0] != 2 and arr.shape[1] == 2:
            arr = arr.T
        d, t = arr
        if len(d) < 2 or not (d[-1] > d[0] and t[-1] > t[0]):
            continue  # degenerate: fall back to proportional split
        xs.append((d - d[0]) / (d[-1] - d[0]))
        ys.append((t - t[0]) / (t[-1] - t[0]))
        start[i], size[i] = pos, len(d)
        pos += len(d)
    if not xs:
        return start, size, np.empty(0), np.empty(0)
    return start, size, np.concatenate(xs), np.concatenate(ys)


def _csr(src: np.ndarray, dst: np.ndarray, w: np.ndarray, n: int) -> sp.csr_matrix:
    """CSR adjacency (rows = from) with parallel edges collapsed to the minimum weight."""
    key = src.astype(np.int64) * n + dst.astype(np.int64)
    if np.all(key[1:] > key[:-1]):  # already sorted, no parallel edges
        weight = w
    else:
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        weight = np.minimum.reduceat(w[order], first) if len(first) else np.empty(0)
        key = key[first]
    rows, cols = np.divmod(key, n)
    itype = np.int32 if max(n, len(key)) < 2**31 - 1 else np.int64
    indptr = np.zeros(n + 1, itype)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    # Explicit zero weights are kept: csgraph treats stored zeros in sparse input as edges.
    return sp.csr_matrix((weight.astype(float), cols.astype(itype), indptr), shape=(n, n))


def _transpose(m: sp.csr_matrix) -> sp.csr_matrix:
    t = m.T.tocsr()
    t.indices = t.indices.astype(m.indices.dtype, copy=False)
    t.indptr = t.indptr.astype(m.indptr.dtype, copy=False)
    return t


# --------------------------------------------------------------------------- passes
def nearest_facility_times(network: EngineGraph, settlement_nodes: np.ndarray,
                           facility_nodes_by_group: Mapping[str, np.ndarray],
                           facility_ids: pd.Series | None = None) -> pd.DataFrame:
    """Minutes from each settlement node to the nearest facility node of each group.

    One multi-source Dijkstra per group on the reversed graph (settlement → facility direction).

    Parameters
    ----------
    network : the engine graph.
    settlement_nodes : engine node per settlement (e.g. ``network.origin_nodes``).
    facility_nodes_by_group : group name → engine nodes of its facilities.
    facility_ids : engine node → facility id (e.g. ``pd.Series(ids, index=network.dest_nodes)``);
        without it the nearest facility's engine node is reported.

    Returns
    -------
    DataFrame (one row per settlement node, in order): ``t_{group}_min`` (NaN when
    unreachable) and ``nearest_{group}_id`` (None when unreachable).
    """
    from .travel import level_table

    settlement_nodes = np.asarray(settlement_nodes, np.int64)
    times, nearest = {}, {}
    for group, fac in facility_nodes_by_group.items():
        fac = np.unique(np.asarray(fac, np.int64))
        t = np.full(len(settlement_nodes), np.nan)
        ids = np.full(len(settlement_nodes), None, dtype=object)
        if len(fac):
            dist, _, source = dijkstra(network.reverse, directed=True, indices=fac,
                                       min_only=True, return_predecessors=True)
            d, s = dist[settlement_nodes], source[settlement_nodes]
            reach = np.isfinite(d) & (s >= 0)
            t[reach] = d[reach] / 60.0
            ids[reach] = s[reach] if facility_ids is None else facility_ids.reindex(s[reach]).to_numpy()
        times[group], nearest[group] = t, ids
    return level_table(pd.RangeIndex(len(settlement_nodes)), times, nearest)


def cost_matrix(network: EngineGraph, settlement_nodes: np.ndarray, candidate_nodes: np.ndarray,
                limit_minutes: float, *, chunk_mb: float = 64.0) -> sp.csr_matrix:
    """Sparse settlement × candidate travel minutes, only pairs within ``limit_minutes``.

    Bounded Dijkstra from each candidate on the reversed graph (settlement → candidate
    direction), candidates in chunks so that one dense chunk × nodes block stays under
    ``chunk_mb``. A stored entry means "reachable within the limit": zero-minute pairs are kept
    as **explicit zeros** (do not call ``eliminate_zeros``; test membership with the sparsity
    structure, e.g. ``m.tocoo()`` rows/cols, never with ``m != 0``).
    """
    settlement_nodes = np.asarray(settlement_nodes, np.int64)
    candidate_nodes = np.asarray(candidate_nodes, np.int64)
    limit_s = float(limit_minutes) * 60.0
    chunk = max(1, int(chunk_mb * 2**20 // (8 * max(network.n_nodes, 1))))
    rows, cols, vals = [], [], []
    for lo in range(0, len(candidate_nodes), chunk):
        cand = candidate_nodes[lo:lo + chunk]
        dist = dijkstra(network.reverse, directed=True, indices=cand, limit=limit_s)
        block = dist[:, settlement_nodes]           # candidates × settlements
        ci, si = np.nonzero(block <= limit_s)
        rows.append(si)
        cols.append(ci + lo)
        vals.append(block[ci, si] / 60.0)
    shape = (len(settlement_nodes), len(candidate_nodes))
    if not rows:
        return sp.csr_matrix(shape)
    coo = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    return coo.tocsr()


# --------------------------------------------------------------------------- convenience
def compute_travel_times(G: nx.MultiDiGraph, settlements: pd.DataFrame, facilities: pd.DataFrame, *,
                         working_crs: str, groups: Mapping[str, Sequence[str]] | None = None,
                         offroad_minutes: OffroadMinutes | None = None, terrain: TerrainParams | None = None,
                         max_offroad_m: float | None = None,
                         direct_offroad_m: float = 0.0) -> pd.DataFrame:
    """Travel-time result for every settlement: nearest facility of each level group.

    Parameters
    ----------
    G : road graph with ``travel_time`` on every edge.
    settlements, facilities : WGS84 tables (``lon``/``lat`` or point geometry); facilities need
        ``facility_id`` and ``level``.
    working_crs : projected CRS in metres.
    groups : group → facility levels (default: ``schema.LEVEL_GROUPS``).
    offroad_minutes, terrain, direct_offroad_m : see ``build_engine_graph``.
    max_offroad_m : facilities (and settlements) with a longer off-road leg are still routed
        (their leg is long) and reported in ``result.attrs["warnings"]`` and the log.

    Returns
    -------
    DataFrame aligned to ``settlements.index``: ``t_{group}_min``, ``nearest_{group}_id``,
    ``offroad_m``, ``offroad_min``, ``snap_lon``, ``snap_lat``; ``attrs`` holds ``warnings`` and
    ``engine`` (sizes and timings).
    """
    from .travel import check_facility_table

    groups = dict(LEVEL_GROUPS if groups is None else groups)
    check_facility_table(facilities)
    s_lon, s_lat = _lonlat(settlements)
    f_lon, f_lat = _lonlat(facilities)
    t0 = time.perf_counter()
    net = build_engine_graph(G, s_lon, s_lat, f_lon, f_lat, working_crs=working_crs,
                             offroad_minutes=offroad_minutes, terrain=terrain, direct_offroad_m=direct_offroad_m)
    t1 = time.perf_counter()
    level = facilities["level"].astype(str).to_numpy()
    by_group = {g: net.dest_nodes[np.isin(level, list(levels)) & net.dest_snap.valid] for g, levels in groups.items()}
    ids = pd.Series(facilities["facility_id"].to_numpy(), index=net.dest_nodes)
    out = nearest_facility_times(net, net.origin_nodes, by_group, ids)
    t2 = time.perf_counter()

    out.index = settlements.index
    out["offroad_m"] = net.origin_snap.leg_m
    out["offroad_min"] = net.origin_leg_min
    out["snap_lon"] = net.origin_snap.snap_lon
    out["snap_lat"] = net.origin_snap.snap_lat

    warnings = _warnings(facilities, net, level, groups, max_offroad_m)
    for w in warnings:
        log.warning(w)
    n_unreach = int(out[f"t_{next(iter(groups))}_min"].isna().sum()) if groups else 0
    log.info("engine: %d settlements, %d facilities, %d nodes, %d edges; build %.3f s, %d passes %.3f s; "
             "%d settlements without a path", len(out), len(facilities), net.n_nodes, net.n_edges,
             t1 - t0, len(groups), t2 - t1, n_unreach)
    out.attrs["warnings"] = warnings
    out.attrs["engine"] = {"engine": "network", "n_nodes": net.n_nodes, "n_edges": net.n_edges,
                           "build_s": round(t1 - t0, 4), "passes_s": round(t2 - t1, 4)}
    return out


def _lonlat(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    if {"lon", "lat"} <= set(df.columns):
        return df["lon"].to_numpy(float), df["lat"].to_numpy(float)
    geom = df.to_crs("EPSG:4326").geometry if getattr(df, "crs", None) is not None else df.geometry
    return shapely.get_x(geom.to_numpy()), shapely.get_y(geom.to_numpy())


def _warnings(facilities, net: EngineGraph, level, groups, max_offroad_m) -> list[str]:
    out = []
    if max_offroad_m is not None:
        far = net.dest_snap.leg_m > max_offroad_m
        if far.any():
            ids = facilities["facility_id"].to_numpy()[far]
            out.append(f"{int(far.sum())} facilities are more than {max_offroad_m:.0f} m from any road "
                       f"(routed with a long off-road leg): {', '.join(map(str, ids[:20]))}"
                       + (" …" if far.sum() > 20 else ""))
        far_s = net.origin_snap.leg_m > max_offroad_m
        if far_s.any():
            out.append(f"{int(far_s.sum())} settlements are more than {max_offroad_m:.0f} m from any road "
                       "(routed with a long off-road leg)")
    unsnapped = ~net.dest_snap.valid
    if unsnapped.any():
        out.append(f"{int(unsnapped.sum())} facilities have no coordinates and are ignored")
    known = set().union(*map(set, groups.values())) if groups else set()
    unknown = sorted(set(level) - known)
    if unknown:
        out.append(f"facility levels in no group, ignored: {', '.join(unknown)}")
    return out
