"""Benchmark: the combined (roads + terrain) engine against scipy csgraph on the very same graph.

Run: ``python bench/bench_combined.py [--region tibet] [--json out.json]``

On the region's real data (default Tibet: 3.15 M DEM cells, the 2000 trunk roads, 6,182 settlements,
716 facilities) it times, in the same run:

* ``build``: the combined graph (region mask, road splitting, access points, point and road legs);
* ``passes``: geoaccess's compiled search, one multi-source pass per distinct level group (threads);
* ``scipy``: ``scipy.sparse.csgraph.dijkstra(min_only=True)`` on the same graph made explicit (every grid
  move an edge; its CSR build is timed apart), one call per level group, serially;
* ``gaps``: ``python cli.py gaps`` end to end in a fresh process (imports included).

It checks that every node's minutes are bit-identical between geoaccess and scipy, and prints the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from geoaccess._memory import measure as _measure  # noqa: E402


def measure(fn, *args):
    """(result, {"seconds", "peak_mb"}) of one call."""
    out, seconds, mb = _measure(fn, *args)
    return out, {"seconds": round(seconds, 3), "peak_mb": None if mb is None else round(mb, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--region", default="tibet")
    p.add_argument("--data", default=None)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)

    from scipy.sparse.csgraph import dijkstra

    from geoaccess.combined import build_combined_graph
    from geoaccess.config import load_region, resolve_data_dir
    from geoaccess.pipeline import prepare_region
    from geoaccess.schema import LEVEL_GROUPS
    from geoaccess.travel import TravelModel

    cfg = load_region(a.region)
    data, _ = resolve_data_dir(a.data)
    prep = prepare_region(cfg, data)
    model = TravelModel(prep, "combined")
    s, f = prep.inputs.settlements, prep.facilities
    grid = model.terrain_grid()

    def build():
        return build_combined_graph(prep.graph, grid, prep.params, prep.dem, working_crs=cfg.working_crs,
                                    origin_lon=s["lon"].to_numpy(), origin_lat=s["lat"].to_numpy(),
                                    dest_lon=f["lon"].to_numpy(), dest_lat=f["lat"].to_numpy(),
                                    direct_km=model.direct_km)

    build()  # compile once
    g, build_t = measure(build)
    levels = f["level"].astype(str).to_numpy()
    searches = {}
    for group, members in LEVEL_GROUPS.items():
        fac = np.flatnonzero(np.isin(levels, list(members)) & (g.dest_nodes >= 0))
        searches.setdefault(tuple(fac.tolist()), group)
    sources = [g.dest_nodes[np.array(k)] for k in searches]

    from concurrent.futures import ThreadPoolExecutor

    def ours():
        with ThreadPoolExecutor(min(len(sources), len(os.sched_getaffinity(0)))) as pool:
            return list(pool.map(g.search, sources))

    def ours_serial():
        return [g.search(src) for src in sources]

    mine, passes_t = measure(ours)
    _, serial_t = measure(ours_serial)
    explicit, csr_t = measure(g.explicit_forward)
    rev = explicit.T.tocsr()

    def theirs():
        return [dijkstra(rev, directed=True, indices=src, min_only=True) for src in sources]

    scipy_res, scipy_t = measure(theirs)
    identical = all(np.array_equal(np.nan_to_num(m[0], posinf=-1), np.nan_to_num(t, posinf=-1))
                    for m, t in zip(mine, scipy_res))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "-q", "gaps", "--region", a.region, "--out",
                               tmp] + (["--data", a.data] if a.data else []), capture_output=True, text=True)
        gaps_s = time.perf_counter() - t0
        summary = json.loads((Path(tmp) / "summary.json").read_text()) if done.returncode == 0 else {}

    report = {
        "region": a.region, "graph": g.facts, "searches": [searches[k] for k in searches],
        "build": build_t, "passes_threads": passes_t, "passes_serial": serial_t,
        "scipy_csr_build": csr_t, "scipy_passes": scipy_t, "identical_minutes": bool(identical),
        "ratio_scipy_vs_serial_passes": round(scipy_t["seconds"] / serial_t["seconds"], 2),
        "ratio_scipy_vs_threaded_passes": round(scipy_t["seconds"] / passes_t["seconds"], 2),
        "ratio_scipy_with_csr_vs_threaded_passes": round((scipy_t["seconds"] + csr_t["seconds"]) / passes_t["seconds"], 2),
        "gaps_cli_wall_s": round(gaps_s, 2), "gaps_exit": done.returncode,
        "gaps_timings_s": summary.get("timings_s"), "gaps_peak_memory_mb": summary.get("peak_memory_mb"),
        "load_average": os.getloadavg(),
    }
    text = json.dumps(report, ensure_ascii=False, indent=1, default=float)
    print(text)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text)
    return 0 if identical and done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
