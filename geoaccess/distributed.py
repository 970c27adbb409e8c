"""Distributed runs on Dask distributed: several regions at once, or one big region in buffered partitions.

* `run_regions` / `gaps_regions`: one task per region, each the ordinary `compute_region_times`
  (or `run_gaps`, writing the region's outputs).
* `run_partitioned` / `partitioned_run`: the provinces, prefectures or counties of one region, each searched
  in a window around it: the combined engine's grid and roads within a buffer (:mod:`geoaccess.windows`), or
  with ``engine="network"`` the roads alone. A per-node certificate proves that a window's time equals the
  single-process run's; what it cannot certify is searched again with a wider buffer, finally in the whole
  graph. The argument is in docs/distributed.md.

Measurements of national runs (single process and Dask, time and memory per step): bench/bench_national.py;
the per-edge engine costs of the earlier paper estimate: bench/bench_engine_costs.py.

Clients: `scheduler="tcp://host:8786"` connects to a running `dask scheduler`; otherwise a
`LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)` is started and stopped.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Sequence

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from .config import RegionConfig, load_region
from .errors import ClusterError, ConfigError, GeoaccessError
from .pipeline import PreparedRegion, Run, compute_region_times, finish_table, prepare_region
from .schema import LEVEL_GROUPS

log = logging.getLogger("geoaccess")

#: Partition → the settlement column its units come from; a province is the first two digits of the county code.
PARTITION_KEYS = {"province": "county_code", "prefecture": "prefecture_code", "county": "county_code"}


def partition_units(codes: np.ndarray, by: str) -> np.ndarray:
    """The partition unit of each settlement from its PARTITION_KEYS[by] code (province: XX0000)."""
    codes = np.asarray(pd.Series(codes).fillna("").astype(str).to_numpy(), dtype=object)
    if by != "province":
        return codes
    return np.array([c[:2] + "0000" if len(c) >= 2 else "" for c in codes], dtype=object)


# --------------------------------------------------------------------------- clients
@contextmanager
def cluster_client(scheduler: str | None = None, workers: int | None = None, client=None) -> Iterator:
    """A Dask client: ``client`` as given, else one on ``scheduler``, else on a new LocalCluster.

    The LocalCluster has ``workers`` single-threaded worker processes (default: one per CPU) and
    is shut down on exit.
    """
    if client is not None:
        yield client
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(None, "distributed runs need Dask: pip install -e '.[dist]' (or 'dask[distributed]')") from None

    if scheduler:
        with Client(scheduler) as c:
            yield c
        return
    n = int(workers) if workers is not None else (os.cpu_count() or 1)  # 0 is refused, not 'all cores'
    if n < 1:
        raise ConfigError(None, f"--workers {n}: need at least one worker")
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.WARNING) as cluster, Client(cluster) as c:
        yield c


def worker_data_dir(data_dir: str | Path) -> Path:
    """The data directory as a worker sees it: the client's path if it exists here, else $GEOACCESS_DATA."""
    p = Path(data_dir)
    if p.is_dir():
        return p
    env = os.environ.get("GEOACCESS_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    raise ConfigError(p, "data directory not found on this worker: mount it at the same path or set "
                         "GEOACCESS_DATA for the dask worker")


# --------------------------------------------------------------------------- several regions
def _region_table(config: RegionConfig, data_dir: str, terrain: bool, engine: str = "combined") -> gpd.GeoDataFrame:
    return compute_region_times(config, worker_data_dir(data_dir), terrain=terrain, engine=engine or "combined").table


def _region_gaps(config: RegionConfig, data_dir: str, out_dir: str, thresholds, terrain: bool,
                 engine: str = "combined") -> dict:
    from .pipeline import run_gaps

    return run_gaps(config, worker_data_dir(data_dir), Path(out_dir), thresholds=thresholds, terrain=terrain,
                    engine=engine or "combined")


def _configs(regions: Sequence[str | RegionConfig]) -> dict[str, RegionConfig]:
    out = {}
    for r in regions:
        cfg = r if isinstance(r, RegionConfig) else load_region(r)
        out[cfg.key] = cfg
    return out


def run_regions(regions: Sequence[str | RegionConfig], data_dir: str | Path, *, scheduler: str | None = None,
                workers: int | None = None, client=None, terrain: bool = True,
                engine: str = "combined") -> dict[str, gpd.GeoDataFrame]:
    """Settlement tables of several regions, one Dask task per region (`compute_region_times` each, with `engine`).

    Returns region key → the table `compute_region_times(...).table` gives in a single process.
    Workers read the inputs themselves: ``data_dir`` must exist on them (or $GEOACCESS_DATA).
    """
    configs = _configs(regions)
    with cluster_client(scheduler, workers, client) as c, _cluster_failures(c):
        futures = {k: c.submit(_region_table, cfg, str(Path(data_dir).resolve()), terrain, engine, pure=False)
                   for k, cfg in configs.items()}
        return {k: f.result() for k, f in futures.items()}


def gaps_regions(regions: Sequence[str | RegionConfig], data_dir: str | Path, out_root: str | Path | None = None, *,
                 scheduler: str | None = None, workers: int | None = None, client=None,
                 thresholds: list[str] | None = None, terrain: bool = True, engine: str | None = "combined",
                 out_dirs: dict[str, str | Path] | None = None) -> dict[str, dict]:
    """`pipeline.run_gaps` for several regions in parallel (each with `engine`); each writes ``{out_root}/{region}/``
    (or ``out_dirs[region]`` where given).

    The output directory must be shared by the client and the workers (same path). Returns region
    key → the run summary (as `run_gaps` returns it).
    """
    configs = _configs(regions)
    root = Path(out_root) if out_root else Path("output")
    where = {k: Path((out_dirs or {}).get(k, root / k)) for k in configs}
    with cluster_client(scheduler, workers, client) as c, _cluster_failures(c):
        futures = {k: c.submit(_region_gaps, cfg, str(Path(data_dir).resolve()), str(where[k].resolve()),
                               thresholds, terrain, engine, pure=False) for k, cfg in configs.items()}
        return {k: f.result() for k, f in futures.items()}


# --------------------------------------------------------------------------- one region, partitioned
class _LegLookup:
    """``offroad_minutes`` for `build_engine_graph`: legs computed earlier, found by their four end
    coordinates; any other leg (e.g. a settlement sharing a facility's position) is computed."""

    def __init__(self, ends: np.ndarray, minutes: np.ndarray, dem, params, working_crs: str):
        index = pd.MultiIndex.from_arrays(list(ends.T))
        keep = ~index.duplicated()
        self.index, self.minutes = index[keep], minutes[keep]
        self.dem, self.params, self.working_crs = dem, params, working_crs
        self.computed = 0

    def __call__(self, flon, flat, tlon, tlat) -> np.ndarray:
        from .terrain import offroad_leg_times

        pos = self.index.get_indexer(pd.MultiIndex.from_arrays([flon, flat, tlon, tlat]))
        out = np.empty(len(pos))
        hit = pos >= 0
        out[hit] = self.minutes[pos[hit]]
        if not hit.all():
            miss = ~hit
            out[miss] = offroad_leg_times(flon[miss], flat[miss], tlon[miss], tlat[miss], self.dem, self.params,
                                          self.working_crs)[1]
            self.computed += int(miss.sum())
        return out


def _leg_minutes(ends: np.ndarray, dem, params, working_crs: str) -> np.ndarray:
    from .terrain import offroad_leg_times

    return offroad_leg_times(*ends.T, dem, params, working_crs)[1]


def _route_partition(G: nx.MultiDiGraph, dem, params, working_crs: str, job: dict) -> dict:
    """Route one partition on its subgraph and certify each own settlement (runs on a worker).

    ``job``: ``rows`` (edge rows of G kept, sorted), ``boundary`` (road node ids of the subgraph that
    touch a road left out), origins (own settlements and every settlement snapping onto the kept
    roads, in input order), destinations (facilities snapping onto them), their expected snaps and
    leg minutes. Returns the own settlements' times, nearest ids, legs and the certificate.
    """
    from scipy.sparse.csgraph import dijkstra

    from .engine import build_engine_graph, nearest_facility_times

    t0 = time.perf_counter()
    all_edges = list(G.edges(keys=True, data=True))
    kept = [all_edges[i] for i in job["rows"]]
    used = {e[0] for e in kept} | {e[1] for e in kept}
    H = nx.MultiDiGraph(**G.graph)
    H.add_nodes_from((n, d) for n, d in G.nodes(data=True) if n in used)  # G's order: same numbering order
    H.add_edges_from(kept)
    o, d = job["origins"], job["dests"]
    legs = _LegLookup(job["leg_ends"], job["leg_min"], dem, params, working_crs)
    net = build_engine_graph(H, o["lon"], o["lat"], d["lon"], d["lat"], working_crs=working_crs, offroad_minutes=legs)
    t1 = time.perf_counter()

    level = d["level"]
    by_group = {g: net.dest_nodes[np.isin(level, list(lv)) & net.dest_snap.valid] for g, lv in LEVEL_GROUPS.items()}
    own = np.flatnonzero(o["own"])
    nodes = net.origin_nodes[own]
    times = nearest_facility_times(net, nodes, by_group, pd.Series(d["facility_id"], index=net.dest_nodes))
    # Certificate: minutes from each settlement to the nearest boundary node of the subgraph.
    bound = np.full(len(own), np.inf)
    if len(job["boundary"]):
        dist = dijkstra(net.reverse, directed=True, indices=np.unique(net.node_index(job["boundary"])), min_only=True)
        bound = dist[nodes] / 60.0
    t = times[[f"t_{g}_min" for g in LEVEL_GROUPS]].to_numpy(float)
    # Snap fractions (hence split-edge weights) may differ from the whole graph's in the last bits:
    # a relative margin keeps the certificate safe from that round-off.
    certified = (np.isinf(bound)[:, None] | (t < bound[:, None] * (1.0 - 1e-9))).all(axis=1)
    same_snaps = all(_same_snap(getattr(net, f"{side}_snap"), job[f"{side}_snap"]) for side in ("origin", "dest"))
    if not same_snaps:
        certified[:] = False  # the subgraph is not an exact piece of the whole graph: route these again
    times["offroad_m"] = net.origin_snap.leg_m[own]
    times["offroad_min"] = net.origin_leg_min[own]
    times["snap_lon"] = net.origin_snap.snap_lon[own]
    times["snap_lat"] = net.origin_snap.snap_lat[own]
    return {"positions": o["position"][own], "times": times, "certified": certified,
            "stats": {"nodes": net.n_nodes, "edges": net.n_edges, "road_edges": len(kept), "origins": len(o["lon"]),
                      "dests": len(d["lon"]), "build_s": t1 - t0, "route_s": time.perf_counter() - t1,
                      "legs_computed": legs.computed, "same_snaps": same_snaps}}


def _same_snap(got, expected: dict) -> bool:
    """True when build_engine_graph attached every point where the whole-graph snap did.

    A point snapped onto a node may name any road ending there; it attaches to the node all the same.
    """
    for name in ("snap_lon", "snap_lat", "leg_m"):
        if not np.array_equal(getattr(got, name), expected[name], equal_nan=True):
            return False
    return _attachments(got.edge_u, got.edge_v, got.edge_key, got.fraction) == \
        _attachments(expected["edge_u"], expected["edge_v"], expected["edge_key"], expected["fraction"])


def _attachments(u, v, key, fraction) -> list:
    return [None if not np.isfinite(x) else a if x == 0.0 else b if x == 1.0 else (a, b, k)
            for a, b, k, x in zip(u, v, key, fraction)]


class _EdgeIndex:
    """The directed edges of the whole road graph: ids, geometry (WGS84) and a spatial index."""

    def __init__(self, G: nx.MultiDiGraph):
        rows = list(G.edges(keys=True, data=True))
        self.u = np.array([r[0] for r in rows], dtype=object)
        self.v = np.array([r[1] for r in rows], dtype=object)
        self.key = np.array([r[2] for r in rows], dtype=object)
        xy = {n: (d["x"], d["y"]) for n, d in G.nodes(data=True)}
        geoms = [r[3].get("geometry") for r in rows]
        self.geometry = np.array([shapely.LineString([xy[r[0]], xy[r[1]]]) if g is None else g
                                  for r, g in zip(rows, geoms)], dtype=object)
        self.tree = shapely.STRtree(self.geometry)
        self.ids = pd.MultiIndex.from_arrays([self.u, self.v, self.key])
        self.pair = pd.MultiIndex.from_arrays([self.u, self.v])
        self.n = len(rows)

    def near(self, polygon) -> np.ndarray:
        """Mask of the edges meeting ``polygon`` (WGS84)."""
        mask = np.zeros(self.n, bool)
        mask[self.tree.query(polygon, predicate="intersects")] = True
        return mask

    def between(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Mask of every edge, either direction and any key, between the node pairs (u, v)."""
        pairs = pd.MultiIndex.from_arrays([np.r_[u, v], np.r_[v, u]])
        return self.pair.isin(pairs)

    def boundary(self, kept: np.ndarray) -> np.ndarray:
        """Road nodes of the kept edges that also touch an edge left out."""
        inside = set(self.u[kept]) | set(self.v[kept])
        outside = set(self.u[~kept]) | set(self.v[~kept])
        return np.array(sorted(inside & outside, key=str), dtype=object)


def _buffered(polygon, buffer_km: float, working_crs: str):
    """``polygon`` (WGS84) grown by ``buffer_km`` in the working CRS, back in WGS84."""
    fwd = Transformer.from_crs("EPSG:4326", working_crs, always_xy=True)
    inv = Transformer.from_crs(working_crs, "EPSG:4326", always_xy=True)
    p = shapely.transform(polygon, lambda c: np.column_stack(fwd.transform(c[:, 0], c[:, 1])))
    p = shapely.buffer(shapely.simplify(p, 500.0), buffer_km * 1000.0)
    return shapely.transform(p, lambda c: np.column_stack(inv.transform(c[:, 0], c[:, 1])))


def check_partition_options(by: str, buffer_km: float, engine: str) -> None:
    """ConfigError for a partitioning the partitioned run cannot do (checked before any work or cluster)."""
    if by not in PARTITION_KEYS:
        raise ConfigError(None, f"partition by '{by}': use {', '.join(PARTITION_KEYS)}")
    if not buffer_km > 0:
        raise ConfigError(None, f"partition buffer {buffer_km} km: must be positive")
    if engine not in ("combined", "network"):
        raise ConfigError(None, f"--partition with --engine {engine}: partitioned runs use the combined engine "
                                "(windows of its grid and roads) or the road-only network engine; the raster engine "
                                "runs in one process (docs/distributed.md)")


def _unit_polygons(inputs, by: str) -> dict[str, object]:
    layer = inputs.prefectures if by == "prefecture" else inputs.counties
    if layer is None or not len(layer):
        return {}
    units = partition_units(layer["adcode"].to_numpy(), by)
    return {str(k): shapely.union_all(g.geometry.to_numpy()) for k, g in layer.groupby(units)}


def _snap_dict(snap, idx) -> dict:
    return {name: getattr(snap, name)[idx] for name in ("snap_lon", "snap_lat", "leg_m", "edge_u", "edge_v", "edge_key",
                                                 "fraction")}


def partitioned_run(config: RegionConfig, data_dir: str | Path, *, by: str = "prefecture", buffer_km: float = 100.0,
                    rounds: int = 1, scheduler: str | None = None, workers: int | None = None, client=None,
                    terrain: bool = True, thresholds: dict | None = None, engine: str = "combined") -> Run:
    """`compute_region_times` with the prefectures (or counties, provinces) of the region searched in parallel.

    ``engine="combined"`` (the default, as in a single process): the client loads the inputs and builds the
    combined graph once, as the serial run does; each partition's window of it (the grid cells and roads within
    ``buffer_km`` of the partition, :mod:`geoaccess.windows`) is searched on a worker, which needs only its
    window, not the whole grid. ``engine="network"``: the road graph only, routed per partition on the
    roads within ``buffer_km`` (the off-road legs computed on the workers).

    Either way each time is accepted only with a certificate that no route leaving the partition's window is
    shorter; the rest are searched again with the buffer doubled, ``rounds`` times, then in the whole graph
    (on the client). The table is identical to the single-process run's, every settlement once, in input order.

    Takes `compute_region_times`'s arguments plus the partitioning and the cluster, so `pipeline.run_gaps` can use
    it in its place.

    Returns
    -------
    Run : as `compute_region_times`; ``run.engine["partitions"]`` records the rounds.
    """
    check_partition_options(by, buffer_km, engine)
    if engine == "combined":
        return _windowed_run(config, data_dir, by=by, buffer_km=buffer_km, rounds=rounds, scheduler=scheduler,
                             workers=workers, client=client, terrain=terrain, thresholds=thresholds)
    from .engine import _warnings

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    data_dir = Path(data_dir)
    with cluster_client(scheduler, workers, client) as c, _cluster_failures(c):
        addresses = list(c.scheduler_info(n_workers=-1).get("workers", {}))
        warm = [c.submit(_warm_up, workers=[a], pure=False) for a in addresses]  # imports, while the client loads
        prep = prepare_region(config, data_dir, terrain=terrain)
        timings.update(prep.timings)
        G, wcrs = prep.graph, config.working_crs
        t = time.perf_counter()
        points = _Points(prep.inputs.settlements, prep.facilities, G, wcrs)
        timings["snap_s"] = time.perf_counter() - t

        t = time.perf_counter()
        c.gather(warm)
        timings["workers_ready_s"] = time.perf_counter() - t
        t = time.perf_counter()
        g_fut = c.scatter(G, broadcast=True)
        dem_fut = c.scatter(prep.dem, broadcast=True) if prep.dem is not None else None
        timings["scatter_s"] = time.perf_counter() - t

        t = time.perf_counter()
        todo = np.flatnonzero(np.isfinite(points.ends).all(axis=1))
        chunks = [ch for ch in np.array_split(todo, 4 * max(1, len(addresses))) if len(ch)]
        futures = [c.submit(_leg_minutes, points.ends[ch], dem_fut, prep.params, wcrs, pure=False) for ch in chunks]
        for ch, minutes in zip(chunks, c.gather(futures)):
            points.leg_min[ch] = minutes
        timings["legs_s"] = time.perf_counter() - t

        t = time.perf_counter()
        times, rounds_log = _route_in_rounds(c, points, prep, by, buffer_km, rounds, g_fut, dem_fut)
        timings["engine_s"] = time.perf_counter() - t

    s, f = prep.inputs.settlements, prep.facilities
    times.index = s.index
    max_off = config.section("offroad")["max_offroad_km"] * 1000.0
    snaps = SimpleNamespace(dest_snap=points.f_snap, origin_snap=points.s_snap)
    warnings = _warnings(f, snaps, f["level"].astype(str).to_numpy(), dict(LEVEL_GROUPS), max_off)
    for w in warnings:
        log.warning(w)
    th = thresholds or config.thresholds
    table, positions = finish_table(prep, times, th)
    timings["total_s"] = time.perf_counter() - t_start
    eng = {"engine": "network", **prep.engine_facts(),
           "partitions": {"by": by, "buffer_km": buffer_km, "workers": len(addresses), "rounds": rounds_log}}
    return Run(config=config, data_dir=data_dir, inputs=prep.inputs, table=table, thresholds=th, graph=G,
               dem=prep.dem, terrain_params=prep.params, engine=eng, timings=timings, warnings=warnings,
               raw_times=times.copy(), offroad_minutes=prep.offroad_minutes, facilities=prep.facilities,
               positions=positions)


def _windowed_run(config: RegionConfig, data_dir: str | Path, *, by: str, buffer_km: float, rounds: int,
                  scheduler: str | None, workers: int | None, client, terrain: bool, thresholds: dict | None) -> Run:
    """The combined engine's partitioned run: `compute_region_times` whose level searches are windows on workers."""
    from .windows import WindowedSearch

    searches: list[WindowedSearch] = []
    t_start = time.perf_counter()
    with cluster_client(scheduler, workers, client) as c, _cluster_failures(c):
        addresses = list(c.scheduler_info(n_workers=-1).get("workers", {}))
        n_workers = len(addresses)
        warm = [c.submit(_warm_up, workers=[a], pure=False) for a in addresses]  # imports, while the client loads

        def searcher(prep: PreparedRegion) -> WindowedSearch:
            c.gather(warm)
            polygons = _unit_polygons(prep.inputs, by)
            search = WindowedSearch(list(polygons.values()), names=list(polygons), buffer_km=buffer_km, rounds=rounds,
                                    runner=dask_runner(c, in_flight=max(1, n_workers) + 1))
            searches.append(search)
            return search

        run = compute_region_times(config, Path(data_dir), terrain=terrain, engine="combined", thresholds=thresholds,
                                   searcher=searcher)
    run.engine["partitions"] = {"by": by, "buffer_km": buffer_km, "workers": n_workers, "engine": "combined",
                                "rounds": searches[0].log if searches else []}
    run.timings["total_s"] = time.perf_counter() - t_start
    return run


def dask_runner(client, in_flight: int = 3):
    """A runner for :class:`geoaccess.windows.WindowedSearch` on a Dask client: windows are cut as workers free up,
    at most ``in_flight`` at once (each cut window is held by the client until its worker has it)."""
    from distributed import as_completed

    def run(jobs):
        jobs = iter(jobs)
        keys = {}
        queue = as_completed()

        def submit_next() -> bool:
            job = next(jobs, None)
            if job is None:
                return False
            key, args = job
            # the window goes to a worker as data of its own, not inside the task graph through the scheduler
            [data] = client.scatter([args], hash=False)
            fut = client.submit(_search_window, data, pure=False)
            keys[fut.key] = (key, data)
            queue.add(fut)
            return True

        for _ in range(max(1, in_flight)):
            if not submit_next():
                break
        for fut in queue:
            result = fut.result()
            key, data = keys.pop(fut.key)
            fut.release()
            data.release()
            submit_next()
            yield key, result

    return run


def _search_window(args: tuple):
    """A worker's task: :func:`geoaccess.windows.search_window` on one scattered window."""
    from .windows import search_window

    return search_window(*args)


@contextmanager
def _cluster_failures(client):
    """Dask's own failures (a worker killed or restarted, a result or scattered input forgotten, a lost
    connection) as one :class:`ClusterError` line that says what to change; input errors pass unchanged."""
    try:
        yield
    except GeoaccessError:
        raise
    except Exception as exc:
        module = type(exc).__module__ or ""
        if not (module.startswith("distributed") or type(exc).__name__ in ("CancelledError", "KilledWorker",
                                                                          "FutureCancelledError")):
            raise
        try:
            workers = client.scheduler_info(n_workers=-1).get("workers", {})
            alive = f"{len(workers)} worker(s) alive"
            limits = sorted({round(w.get("memory_limit", 0) / 2 ** 30, 1) for w in workers.values()})
            if limits:
                alive += f", memory limit {', '.join(map(str, limits))} GB each"
        except Exception:  # the scheduler itself may be gone
            alive = "the scheduler is not answering"
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ClusterError(f"the Dask cluster failed during the run ({type(exc).__name__}: {first}; {alive}): a "
                           f"worker was lost or restarted, most often for lack of memory. Give each worker more "
                           f"memory (docs/distributed.md: memory per worker), use fewer workers per machine, or "
                           f"check the scheduler's log; no output was written") from exc


def _warm_up() -> None:
    """Import the routing modules on a worker (a few seconds, once per process)."""
    import scipy.sparse.csgraph  # noqa: F401

    from . import engine, terrain, windows  # noqa: F401


class _Points:
    """Settlements and facilities snapped to the whole graph, their edges and off-road leg ends."""

    def __init__(self, settlements: pd.DataFrame, facilities: pd.DataFrame, G: nx.MultiDiGraph, working_crs: str):
        from .engine import snap_points_to_edges

        self.s, self.f, self.n = settlements, facilities, len(settlements)
        self.s_lon, self.s_lat = settlements["lon"].to_numpy(float), settlements["lat"].to_numpy(float)
        self.f_lon, self.f_lat = facilities["lon"].to_numpy(float), facilities["lat"].to_numpy(float)
        snap = snap_points_to_edges(G, np.r_[self.s_lon, self.f_lon], np.r_[self.s_lat, self.f_lat], working_crs)
        self.s_snap, self.f_snap = snap.take(slice(0, self.n)), snap.take(slice(self.n, None))
        self.edges = _EdgeIndex(G)
        self.s_road, self.f_road = (self.edges.ids.get_indexer(pd.MultiIndex.from_arrays([sn.edge_u, sn.edge_v,
                                                                                          sn.edge_key]))
                                    for sn in (self.s_snap, self.f_snap))
        # Leg ends as build_engine_graph passes them: settlement → its road point, road point → facility.
        self.ends = np.r_[np.column_stack([self.s_lon, self.s_lat, self.s_snap.snap_lon, self.s_snap.snap_lat]),
                          np.column_stack([self.f_snap.snap_lon, self.f_snap.snap_lat, self.f_lon, self.f_lat])]
        self.leg_min = np.full(len(self.ends), np.nan)


def _route_in_rounds(c, points: _Points, prep: PreparedRegion, by: str, buffer_km: float, rounds: int, g_fut,
                     dem_fut) -> tuple[pd.DataFrame, list[dict]]:
    """Route every settlement in its partition; reroute the uncertified with the buffer doubled, then
    on the whole graph. Returns the travel-time result in input order (positional index) and a log."""
    s, n = points.s, points.n
    key = PARTITION_KEYS[by]
    unit = partition_units(s[key].to_numpy(), by) if key in s else np.full(n, "", object)
    polygons = _unit_polygons(prep.inputs, by)
    pieces, log_rounds = [], []
    pending = np.arange(n)
    for buf in [buffer_km * 2 ** i for i in range(max(0, int(rounds)))] + [None]:
        if not len(pending):
            break
        t0 = time.perf_counter()
        groups = [pending] if buf is None else [pending[unit[pending] == u] for u in pd.unique(unit[pending])]
        jobs = [_partition_job(own, buf, unit, polygons, points, prep.config.working_crs) for own in groups]
        futures = [c.submit(_route_partition, g_fut, dem_fut, prep.params, prep.config.working_crs, job, pure=False)
                   for job in jobs]
        results = c.gather(futures)
        retry = [pending[:0]]
        for res in results:
            ok = res["certified"]
            pieces.append(res["times"][ok].set_axis(res["positions"][ok]))
            retry.append(res["positions"][~ok])
        pending = np.sort(np.concatenate(retry))
        log_rounds.append({"buffer_km": buf, "partitions": len(jobs), "settlements": int(sum(map(len, groups))),
                           "certified": int(sum(r["certified"].sum() for r in results)),
                           "seconds": round(time.perf_counter() - t0, 3),
                           "max_engine_nodes": max(r["stats"]["nodes"] for r in results),
                           "max_road_edges": max(r["stats"]["road_edges"] for r in results),
                           "snap_mismatches": sum(not r["stats"]["same_snaps"] for r in results)})
        log.info("partitions by %s, buffer %s: %d settlements routed, %d certified", by,
                 "whole graph" if buf is None else f"{buf:g} km", log_rounds[-1]["settlements"],
                 log_rounds[-1]["certified"])
    return _assemble(pieces, n), log_rounds


def _assemble(pieces: list[pd.DataFrame], n: int) -> pd.DataFrame:
    """One travel-time result from the partitions' pieces, rows in input order, built as the engine
    builds its own (ids as objects with None where unreachable, so column types match too)."""
    positions = np.concatenate([p.index.to_numpy() for p in pieces])
    if len(positions) != n or not np.array_equal(np.sort(positions), np.arange(n)):
        raise AssertionError(f"partitions returned {len(positions)} settlement rows for {n}")
    columns = {}
    for col in pieces[0].columns:
        ids = col.startswith("nearest_")
        values = np.concatenate([p[col].to_numpy(dtype=object if ids else float) for p in pieces])
        out = np.empty(n, dtype=object if ids else float)
        out[positions] = values
        if ids:
            out[pd.isna(out)] = None
        columns[col] = out
    return pd.DataFrame(columns)


def _partition_job(own: np.ndarray, buffer_km: float | None, unit: np.ndarray, polygons: dict, points: _Points,
                   working_crs: str) -> dict:
    """What a worker needs to route the settlements ``own``: kept edge rows, points, snaps, legs.

    Kept: the roads meeting the partition (its polygon and its settlements' hull) grown by
    ``buffer_km``, and every own settlement's road (None: every road). Points: the own settlements,
    and every settlement and facility snapped onto a kept road, so that the kept roads are split
    exactly where the whole graph splits them.
    """
    edges, s_road, f_road = points.edges, points.s_road, points.f_road
    if buffer_km is None:
        kept = np.ones(edges.n, bool)
    else:
        lon, lat = points.s_lon[own], points.s_lat[own]
        ok = np.isfinite(lon) & np.isfinite(lat)
        shapes = [shapely.convex_hull(shapely.multipoints(np.column_stack([lon[ok], lat[ok]])))] if ok.any() else []
        shapes += [polygons[u] for u in pd.unique(unit[own]) if u in polygons]
        kept = edges.near(_buffered(shapely.union_all(shapes), buffer_km, working_crs)) if shapes \
            else np.zeros(edges.n, bool)
        roads = s_road[own][s_road[own] >= 0]
        kept |= edges.between(edges.u[roads], edges.v[roads])
        if not kept.any():
            kept[:] = True
    origin = (s_road >= 0) & kept[np.maximum(s_road, 0)]
    origin[own] = True
    o = np.flatnonzero(origin)
    d = np.flatnonzero((f_road >= 0) & kept[np.maximum(f_road, 0)])
    legs = np.r_[o, points.n + d]
    legs = legs[np.isfinite(points.leg_min[legs])]
    f = points.f
    return {
        "rows": np.flatnonzero(kept), "boundary": edges.boundary(kept),
        "origins": {"lon": points.s_lon[o], "lat": points.s_lat[o], "position": o, "own": np.isin(o, own)},
        "dests": {"lon": points.f_lon[d], "lat": points.f_lat[d], "level": f["level"].astype(str).to_numpy()[d],
                  "facility_id": f["facility_id"].to_numpy()[d]},
        "origin_snap": _snap_dict(points.s_snap, o), "dest_snap": _snap_dict(points.f_snap, d),
        "leg_ends": points.ends[legs], "leg_min": points.leg_min[legs],
    }


def run_partitioned(region: str | RegionConfig, data_dir: str | Path, *, by: str = "prefecture",
                    buffer_km: float = 100.0, scheduler: str | None = None, workers: int | None = None,
                    client=None, terrain: bool = True, engine: str = "combined") -> gpd.GeoDataFrame:
    """The settlement table of one region, its prefectures (or counties, provinces) searched in parallel.

    Identical to `compute_region_times(..., engine=engine).table` (see `partitioned_run`).
    """
    config = region if isinstance(region, RegionConfig) else load_region(region)
    return partitioned_run(config, data_dir, by=by, buffer_km=buffer_km, scheduler=scheduler, workers=workers,
                           client=client, terrain=terrain, engine=engine).table
