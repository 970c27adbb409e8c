"""Benchmark: the national run (`--region china`), single process and on Dask, time and peak memory per step.

Run (never in CI; each national case takes minutes):

    python bench/bench_national.py single [--engine combined|network]      # python cli.py gaps --region china
    python bench/bench_national.py dask [--workers 2] [--engine ...]        # --partition province --workers N
    python bench/bench_national.py scaling [--provinces 1 5 10 29]          # both modes on the first N provinces
    python bench/bench_national.py combined-steps [--provinces 29]          # the combined engine's build and
                                                                            # level passes, step by step
    add --json FILE to keep the result (docs/distributed.md quotes these files)

Each run is a child process (`python cli.py gaps ...`): wall time, its peak RSS (the whole process tree for
Dask: the client and every worker), the run's own per-step record (summary.json "steps") and the machine's
load average before and after, because the machine is shared. `combined-steps` calls the combined engine's
pieces in this process, one at a time, with `_memory.measure` (seconds, rise of the peak RSS).
A bundle of N provinces is a data folder in the national layout holding only their rows (`make_bundle`).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- bundles
def provinces_in(data_dir: Path) -> list[str]:
    """Two-digit province codes of the national gazetteer, in code order."""
    return sorted({f.name[:2] for f in (Path(data_dir) / "gazetteer" / "adcode").glob("*.csv")})


def make_bundle(data_dir: Path, root: Path, provinces) -> Path:
    """A data folder in the national layout holding only ``provinces``: gazetteer files, DEM and roads as links,
    the national boundaries, register and census filtered to those codes (same file names as the national ones)."""
    import geopandas as gpd

    provinces = tuple(provinces)
    data_dir, root = Path(data_dir), Path(root)
    for sub in ("gazetteer/adcode", "boundaries", "facilities", "facts"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("dem", "roads"):
        if not (root / sub).exists():
            (root / sub).symlink_to(data_dir / sub)
    for f in (data_dir / "gazetteer" / "adcode").glob("*.csv"):
        if f.name.startswith(provinces):
            (root / "gazetteer" / "adcode" / f.name).symlink_to(f)
    for layer in ("counties", "prefectures"):
        g = gpd.read_file(data_dir / "boundaries" / f"china_{layer}.geojson")
        g[g["adcode"].astype(str).str.startswith(provinces)].to_file(root / "boundaries" / f"china_{layer}.geojson",
                                                                      driver="GeoJSON")
    for rel, code_col in (("facilities/china_facilities.csv", "admin_code"),
                          ("facts/china_county_population_2020.csv", "adcode")):
        lines = (data_dir / rel).read_text(encoding="utf-8").splitlines()
        col = lines[0].split(",").index(code_col)
        keep = [x for x in lines[1:] if x.split(",")[col].startswith(provinces)]
        (root / rel).write_text("\n".join([lines[0]] + keep) + "\n", encoding="utf-8")
    return root


# --------------------------------------------------------------------------- child runs
def _tree_peak_mb(pid: int) -> float:
    """Current RSS of a process and all its descendants (MB)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += float(Path(f"/proc/{p}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024.0
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, IndexError):
            continue
        todo += [int(c) for c in children]
    return total


def run_gaps(data_dir: Path, out: Path, *args: str) -> dict:
    """`python cli.py gaps --region china ...` in a child: wall s, peak RSS of its process tree, its summary."""
    cmd = [sys.executable, str(ROOT / "cli.py"), "gaps", "--region", "china", "--data", str(data_dir),
           "--out", str(out), *args]
    load0 = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _tree_peak_mb(proc.pid))
        time.sleep(0.5)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode:
        return {"command": cmd, "returncode": proc.returncode, "error": stderr.strip().splitlines()[-1:]}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {"command": " ".join(cmd[1:]), "wall_s": round(wall, 1), "tree_peak_mb": round(peak),
            "process_peak_mb": summary.get("peak_memory_mb"), "run_wall_s": summary.get("wall_time_s"),
            "settlements": summary["inputs"]["settlements"], "steps": summary.get("steps"),
            "timings_s": summary.get("timings_s"), "partitions": summary["engine"].get("partitions"),
            "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in os.getloadavg()]}


def single(data_dir: Path, engine: str, tmp: Path) -> dict:
    return run_gaps(data_dir, tmp / f"single_{engine}", "--engine", engine)


def dask(data_dir: Path, workers: int, tmp: Path, buffer_km: float = 100.0, engine: str = "combined") -> dict:
    return run_gaps(data_dir, tmp / f"dask_{workers}_{engine}", "--engine", engine, "--partition", "province",
                    "--workers", str(workers), "--buffer-km", str(buffer_km))


def same_outputs(a: Path, b: Path) -> dict:
    """Which outputs of two run folders are identical: every CSV byte for byte, every travel-time raster's cells."""
    out = {}
    for f in sorted(a.glob("*.csv")):
        if (b / f.name).exists():
            out[f.name] = f.read_bytes() == (b / f.name).read_bytes()
    tifs = sorted(a.glob("traveltime_*.tif"))
    if tifs:
        import numpy as np
        import rasterio

        for f in tifs:
            if (b / f.name).exists():
                with rasterio.open(f) as x, rasterio.open(b / f.name) as y:
                    out[f.name] = bool(np.array_equal(x.read(), y.read(), equal_nan=True))
    return out


def scaling(data_dir: Path, counts, workers: int, tmp: Path, engine: str = "combined") -> list[dict]:
    """Single process and Dask on the first N provinces, for each N: time, memory, outputs equal."""
    provs = provinces_in(data_dir)
    rows = []
    for n in counts:
        chosen = provs[: int(n)]
        bundle = data_dir if len(chosen) == len(provs) else make_bundle(data_dir, tmp / f"bundle_{n}", chosen)
        s = run_gaps(bundle, tmp / f"s{n}", "--engine", engine)
        d = run_gaps(bundle, tmp / f"d{n}", "--engine", engine, "--partition", "province", "--workers",
                     str(workers))
        rows.append({"provinces": len(chosen), "codes": chosen, "engine": engine, "single": s, "dask": d,
                     "identical": same_outputs(tmp / f"s{n}", tmp / f"d{n}")})
        print(json.dumps({k: rows[-1][k] for k in ("provinces", "identical")}), flush=True)
    return rows


# --------------------------------------------------------------------------- the combined engine, step by step
def combined_steps(data_dir: Path, n_provinces: int | None, tmp: Path, direct_km: float | None = None) -> dict:
    """Time and peak-memory rise of each piece of the combined engine on the national (or N-province) input.

    Calls the same functions `combined.build_combined_graph` and `level_passes` call, in their order, so each
    is measured alone; the level passes are measured per search (one search per distinct facility set).
    ``direct_km`` overrides [offroad] direct_km (0: no straight off-road pairs, e.g. to measure the searches
    when the pairs do not fit in memory).
    """
    import numpy as np

    from geoaccess import combined as cb
    from geoaccess import engine as road_engine
    from geoaccess._memory import measure, peak_memory_mb
    from geoaccess.config import load_region
    from geoaccess.pipeline import prepare_region
    from geoaccess.schema import LEVEL_GROUPS
    from geoaccess.terrain import offroad_leg_times
    from geoaccess.travel import TravelModel

    provs = provinces_in(data_dir)
    if n_provinces and n_provinces < len(provs):
        data_dir = make_bundle(data_dir, tmp / f"bundle_{n_provinces}", provs[:n_provinces])
    steps = []

    def m(name, fn, *a, **k):
        out, s, mb = measure(fn, *a, **k)
        steps.append({"step": name, "seconds": round(s, 2), "peak_rise_mb": None if mb is None else round(mb),
                      "process_peak_mb": peak_memory_mb(), "load": round(os.getloadavg()[0], 2)})
        print(json.dumps(steps[-1]), flush=True)
        return out

    prep = m("prepare_region (inputs, DEM, roads, terrain)", prepare_region, load_region("china"), data_dir)
    model = TravelModel(prep, "combined")
    if direct_km is not None:
        model.direct_km = float(direct_km)
    grid = m("terrain_grid", model.terrain_grid)
    s, f = prep.inputs.settlements, prep.facilities
    o_lon, o_lat = s["lon"].to_numpy(float), s["lat"].to_numpy(float)
    d_lon, d_lat = f["lon"].to_numpy(float), f["lat"].to_numpy(float)
    wcrs, params, dem = prep.config.working_crs, prep.params, prep.dem

    def legs(flon, flat, tlon, tlat):
        return offroad_leg_times(flon, flat, tlon, tlat, dem, params, wcrs)[1] if len(flon) else np.zeros(0)

    edges = m("road edge table", road_engine._edge_table, prep.graph)
    snap = m("snap settlements and facilities", road_engine._snap, edges, np.r_[o_lon, d_lon], np.r_[o_lat, d_lat],
             wcrs)
    n_o = len(o_lon)
    o_snap = snap.take(slice(0, n_o))
    m("off-road legs settlement → road", cb._nan_legs, legs, o_lon, o_lat, o_snap.snap_lon, o_snap.snap_lat,
      o_snap.valid)
    via, via_cell = m("road access points (one per road and cell)", cb._access_points, edges, grid, wcrs, None)
    m(f"direct off-road pairs within direct_km = {model.direct_km:g} km", cb._clear_pairs, grid, o_lon, o_lat, d_lon, d_lat, wcrs,
      model.direct_km, legs)
    pi, cell = m("settlement 3×3 cells", cb._cells_around, grid, o_lon, o_lat, np.isfinite(o_lon))
    clon, clat = grid.centre_lonlat(*np.divmod(cell, grid.shape[1]))
    m(f"legs settlement → its 3×3 cells ({len(pi):,})", legs, o_lon[pi], o_lat[pi], clon, clat)
    m("grid move weights (_in_move_weights)", cb._in_move_weights, grid.shape[1], grid.elevation, grid.move_dr,
      grid.move_dc, grid.move_len, cb._MIN_PER_M_AT_1_KPH * params.offroad_detour_factor, params.tobler_decay,
      params.tobler_slope_offset, params.tobler_max_kph * params.offroad_speed_factor, params.offroad_min_kph,
      np.flatnonzero(np.isfinite(grid.elevation.ravel())))
    del edges, snap, via, via_cell
    graph = m("build_combined_graph (all of the above, as the engine runs it)", cb.build_combined_graph, prep.graph,
              grid, params, dem, working_crs=wcrs, origin_lon=o_lon, origin_lat=o_lat, dest_lon=d_lon,
              dest_lat=d_lat, direct_km=model.direct_km)
    levels = f["level"].astype(str).to_numpy()
    for group, members in LEVEL_GROUPS.items():
        fac = np.flatnonzero(np.isin(levels, list(members)) & (graph.dest_nodes >= 0))
        if len(fac):
            m(f"search {group} ({len(fac):,} facilities, {graph.n_nodes:,} nodes)", graph.search, graph.dest_nodes[fac])
    return {"grid": "×".join(map(str, grid.shape)), "cells": grid.n_cells, "settlements": len(s), "facilities": len(f),
            "direct_km": model.direct_km, "steps": steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["single", "dask", "scaling", "combined-steps"])
    ap.add_argument("--data", default=os.environ.get("GEOACCESS_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--engine", default="combined", choices=["combined", "network"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--provinces", type=int, nargs="*", default=None)
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--keep", help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--direct-km", type=float, help="combined-steps: override [offroad] direct_km")
    args = ap.parse_args(argv)
    data_dir = Path(args.data)
    with tempfile.TemporaryDirectory(prefix="bench_national_") as t:
        tmp = Path(args.keep) if args.keep else Path(t)
        tmp.mkdir(parents=True, exist_ok=True)
        if args.mode == "single":
            result = single(data_dir, args.engine, tmp)
        elif args.mode == "dask":
            result = dask(data_dir, args.workers, tmp, engine=args.engine)
        elif args.mode == "scaling":
            result = scaling(data_dir, args.provinces or [1, 5, 10, 29], args.workers, tmp, args.engine)
        else:
            result = combined_steps(data_dir, (args.provinces or [None])[0], tmp, args.direct_km)
    text = json.dumps({"mode": args.mode, "cpus": os.cpu_count(), "result": result}, ensure_ascii=False, indent=1,
                      default=str)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
