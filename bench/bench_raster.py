"""Benchmark the raster engine against peers on the full Tibet DEM (one facility level).

    python bench/bench_raster.py --json out.json [--data DIR] [--repeat 3] [--cases a,b]

Each engine runs in its own subprocess, so its peak memory (max RSS) is its own. Per-level time
excludes the shared friction surface and Numba's JIT compile (reported separately). Prints a JSON
report with times, peak memory, ratios to geoaccess and agreement with geoaccess's minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEVELS = ("county_hospital", "prefecture_hospital")
GEOACCESS = {
    "geoaccess_iso": dict(anisotropic=False, knight_moves=False),
    "geoaccess_aniso": dict(anisotropic=True, knight_moves=False),
    "geoaccess_iso_knight": dict(anisotropic=False, knight_moves=True),
    "geoaccess_aniso_knight": dict(anisotropic=True, knight_moves=True),
}
PEERS = {  # peer -> the geoaccess case doing the same work
    "skimage_mcp_geometric": "geoaccess_iso",
    "scipy_csgraph_dijkstra": "geoaccess_iso",
    "grass_r_cost": "geoaccess_iso",
    "grass_r_cost_knight": "geoaccess_iso_knight",
    "grass_r_walk": "geoaccess_aniso",
}
CASES = [*GEOACCESS, *PEERS]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_inputs(data: Path):
    """Friction surface of the Tibet DEM and the cells of its county and prefecture hospitals."""
    import pandas as pd

    from geoaccess import raster
    from geoaccess.coords import gcj02_to_wgs84

    dem, transform, crs, nodata = raster.read_dem(data / "dem" / "tibet_dem_30s.tif")
    t0 = time.perf_counter()
    surface = raster.friction_surface(dem, transform, nodata=nodata, crs=crs)
    surface_s = time.perf_counter() - t0
    del dem
    fac = pd.read_csv(data / "facilities" / "tibet_facilities.csv")
    fac = fac[fac["level"].isin(LEVELS)]
    lon, lat = gcj02_to_wgs84(fac["lon"].to_numpy(), fac["lat"].to_numpy())
    rows, cols = raster.source_cells(surface, lon, lat, names=fac["facility_id"].to_numpy())
    return surface, rows, cols, surface_s


def best_of(repeat: int, fn):
    """Best wall time and best CPU time of `repeat` runs, and the last result."""
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        out = None  # free the previous result before the next run
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"seconds": min(wall), "cpu_seconds": min(cpu)}, out


def run_geoaccess(name, surface, rows, cols, repeat):
    from geoaccess import raster

    t0 = time.perf_counter()  # JIT: load from cache, or compile when the cache is cold
    tiny = raster.friction_surface(np.zeros((3, 3)), surface.transform, crs=surface.crs)
    raster.cost_distance(tiny, [1], [1], **GEOACCESS[name])
    jit_s = time.perf_counter() - t0
    before = psutil.Process().memory_info().rss / 2**20
    timing, (minutes, _) = best_of(repeat, lambda: raster.cost_distance(surface, rows, cols, **GEOACCESS[name]))
    # what one level adds on top of the loaded surface (kernel arrays and results), max RSS based
    return {**timing, "jit_seconds": jit_s, "level_rss_increment_mb": peak_rss_mb() - before}, minutes


def run_mcp(surface, rows, cols, repeat):
    from skimage.graph import MCP_Geometric

    from geoaccess import raster

    costs = np.where(surface.valid, raster.cell_pace(surface), np.inf)
    mid = surface.shape[0] // 2
    sampling = (surface.dy_m[mid], surface.dx_m[mid])  # one cell size for the grid (MCP has no per-row size)
    starts = list(zip(rows.tolist(), cols.tolist()))

    def level():
        return MCP_Geometric(costs, sampling=sampling, fully_connected=True).find_costs(starts)[0]

    timing, cum = best_of(repeat, level)
    return {**timing, "note": f"isotropic, 8-connected, one cell size {sampling[0]:.0f} x {sampling[1]:.0f} m"}, cum


def build_csr(surface):
    """The 8-connected cell graph as CSR, edge weight = length * (pace_a + pace_b) / 2 (minutes)."""
    from scipy.sparse import csr_matrix

    from geoaccess import raster

    R, C = surface.shape
    pace = np.where(surface.valid, raster.cell_pace(surface), np.nan).astype(np.float64)
    idx = np.arange(R * C, dtype=np.int32).reshape(R, C)
    heads, tails, weights = [], [], []
    for dr, dc in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]:
        r0, r1 = max(0, -dr), R - max(0, dr)
        c0, c1 = max(0, -dc), C - max(0, dc)
        a = (slice(r0, r1), slice(c0, c1))
        b = (slice(r0 + dr, r1 + dr), slice(c0 + dc, c1 + dc))
        rows_a = np.arange(r0, r1)
        h = abs(dc) * 0.5 * (surface.dx_m[rows_a] + surface.dx_m[rows_a + dr])
        v = abs(dr) * 0.5 * (surface.dy_m[rows_a] + surface.dy_m[rows_a + dr])
        w = np.hypot(h, v)[:, None] * 0.5 * (pace[a] + pace[b])
        ok = np.isfinite(w)
        heads.append(idx[a][ok])
        tails.append(idx[b][ok])
        weights.append(w[ok])
    heads, tails, weights = np.concatenate(heads), np.concatenate(tails), np.concatenate(weights)
    return csr_matrix((weights, (heads, tails)), shape=(R * C, R * C))


def run_scipy(surface, rows, cols, repeat):
    from scipy.sparse.csgraph import dijkstra

    t0 = time.perf_counter()
    graph = build_csr(surface)
    build_s = time.perf_counter() - t0
    sources = rows * surface.shape[1] + cols
    timing, dist = best_of(repeat, lambda: dijkstra(graph, indices=sources, min_only=True))
    minutes = np.where(surface.valid.ravel(), dist, np.nan).reshape(surface.shape)
    return {**timing, "setup_seconds": build_s, "note": "isotropic, 8-connected, CSR build in setup_seconds"}, minutes


GRASS_JOB = r'''
import json, os, subprocess, sys, time
args = json.loads(sys.argv[1])
def run(*cmd):
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        sys.exit(cmd[0] + " failed: " + proc.stderr.strip()[-300:])
def timed(cmd):
    # wall time, CPU time and max RSS of this one module process (os.wait4 gives its own rusage)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status:
        sys.exit(cmd[0] + " failed: " + proc.stderr.read().decode()[-300:])
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024
run("r.in.gdal", "input=" + args["cost"], "output=cost")
run("r.in.gdal", "input=" + args["dem"], "output=dem")
run("g.region", "raster=dem")
run("r.mapcalc", "expression=zero = if(isnull(cost), null(), 0)")
if args["module"] == "r.walk":
    cmd = ["r.walk", "elevation=dem", "friction=zero", "output=out", "nearest=near", "--overwrite", "--quiet"]
else:
    cmd = ["r.cost", "input=cost", "output=out", "nearest=near", "--overwrite", "--quiet"]
cmd += args["flags"] + ["start_coordinates=" + args["starts"]]
runs = [timed(cmd) for _ in range(args["repeat"])]
run("r.out.gdal", "input=out", "output=" + args["out"], "format=GTiff", "type=Float32", "--quiet", "-c", "-f")
print(json.dumps({"seconds": min(r[0] for r in runs), "cpu_seconds": min(r[1] for r in runs),
                  "peak_rss_mb": max(r[2] for r in runs)}))
'''


def run_grass(name, surface, rows, cols, repeat, data: Path):
    """r.cost / r.walk in a temporary GRASS location; time and max RSS of the module process alone."""
    import rasterio

    from geoaccess import raster

    grass = shutil.which("grass")
    if grass is None:
        return {"skipped": "grass not installed (apt-get install grass-core)"}, None
    work = Path(tempfile.mkdtemp(prefix="bench_grass_"))
    try:
        # r.cost in a lat/long location treats cells as square (NS_fac = ns_res / ew_res = 1): give it
        # the cost (minutes) of crossing each cell east-west at that row's width
        cost = raster.cell_pace(surface) * surface.dx_m[:, None].astype(np.float32)
        with rasterio.open(work / "cost.tif", "w", driver="GTiff", width=surface.shape[1], height=surface.shape[0],
                           count=1, dtype="float32", crs=surface.crs, transform=surface.transform, nodata=-1) as dst:
            dst.write(np.where(surface.valid, cost, -1).astype(np.float32), 1)
        (work / "job.py").write_text(GRASS_JOB)
        x, y = rasterio.transform.xy(surface.transform, rows, cols)
        job = {"cost": str(work / "cost.tif"), "dem": str(data / "dem" / "tibet_dem_30s.tif"),
               "starts": ",".join(f"{a:.8f},{b:.8f}" for a, b in zip(x, y)), "repeat": repeat,
               "module": "r.walk" if name == "grass_r_walk" else "r.cost",
               "flags": ["-k"] if name.endswith("knight") else [], "out": str(work / "out.tif")}
        proc = subprocess.run([grass, "--tmp-location", "EPSG:4326", "--exec", "/usr/bin/python3",
                               str(work / "job.py"), json.dumps(job)], capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            return {"skipped": f"GRASS failed: {proc.stderr.strip()[-300:]}"}, None
        result = json.loads(lines[-1])
        with rasterio.open(work / "out.tif") as src:
            minutes = src.read(1, masked=True).filled(np.nan).astype(np.float32)
        version = subprocess.run([grass, "--version"], capture_output=True, text=True).stderr.strip().splitlines()[0]
        note = {"grass_r_walk": "anisotropic Naismith-Langmuir walking model (r.walk defaults), seconds; not Tobler",
                "grass_r_cost_knight": "isotropic, knight's moves"}.get(name, "isotropic, 8-connected")
        result.update(note=f"{version}; {note}; cells treated as square in lat/long")
        return result, minutes
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_case(name: str, data: Path, repeat: int, out_npy: Path | None) -> dict:
    surface, rows, cols, surface_s = load_inputs(data)
    if name in GEOACCESS:
        result, minutes = run_geoaccess(name, surface, rows, cols, repeat)
    elif name == "skimage_mcp_geometric":
        result, minutes = run_mcp(surface, rows, cols, repeat)
    elif name == "scipy_csgraph_dijkstra":
        result, minutes = run_scipy(surface, rows, cols, repeat)
    else:
        result, minutes = run_grass(name, surface, rows, cols, repeat, data)
    result.setdefault("peak_rss_mb", peak_rss_mb())
    result.update(case=name, cells=int(np.prod(surface.shape)), valid_cells=int(surface.valid.sum()),
                  sources=int(len(rows)), surface_seconds=surface_s)
    if minutes is not None and out_npy is not None:
        np.save(out_npy, minutes.astype(np.float32))
    return result


WARM_UP = ("import time, numpy as np; from affine import Affine; from geoaccess import raster; "
           "t = time.perf_counter(); "
           "s = raster.friction_surface(np.zeros((3, 3)), Affine(100, 0, 0, 0, -100, 0), crs='EPSG:32645'); "
           "raster.cost_distance(s, [1], [1]); raster.cost_distance(s, [1], [1], anisotropic=False); "
           "print(time.perf_counter() - t)")


def cold_jit_seconds() -> float:
    """Compile time of the kernels with an empty Numba cache (fresh process)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-c", WARM_UP], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Relative difference of b to a over cells both reach (a > 0)."""
    both = np.isfinite(a) & np.isfinite(b) & (a > 0)
    rel = np.abs(b[both] - a[both]) / a[both]
    return {"cells": int(both.sum()), "median_rel_diff": float(np.median(rel)), "max_rel_diff": float(rel.max()),
            "p99_rel_diff": float(np.quantile(rel, 0.99))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="write the report here too")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("GEOACCESS_DATA", ROOT.parent / "shared" / "data")))
    p.add_argument("--repeat", type=int, default=3, help="runs per engine; the best is reported")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    p.add_argument("--case", help=argparse.SUPPRESS)  # child mode: run one engine
    p.add_argument("--npy", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.data, args.repeat, args.npy)))
        return {}

    work = Path(tempfile.mkdtemp(prefix="bench_raster_"))
    results, arrays = {}, {}
    load_start = os.getloadavg()  # other jobs on the machine inflate wall times; CPU times less so
    try:
        jit_cold = cold_jit_seconds()
        subprocess.run([sys.executable, "-c", WARM_UP], check=True, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fill the Numba cache once
        for name in args.cases.split(","):
            npy = work / f"{name}.npy"
            proc = subprocess.run([sys.executable, __file__, "--case", name, "--data", str(args.data),
                                   "--repeat", str(args.repeat), "--npy", str(npy)], capture_output=True, text=True)
            if proc.returncode:
                results[name] = {"case": name, "skipped": proc.stderr.strip()[-500:]}
            else:
                results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            if npy.exists():
                arrays[name] = np.load(npy)
            print(f"{name}: {results[name].get('seconds', 'skipped')}", file=sys.stderr)
        for peer, ours in PEERS.items():
            if peer in results and ours in results and "seconds" in results[peer] and "seconds" in results[ours]:
                r, o = results[peer], results[ours]
                r["vs"] = ours
                r["time_ratio"] = r["seconds"] / o["seconds"]
                r["cpu_time_ratio"] = r["cpu_seconds"] / o["cpu_seconds"]
                r["total_time_ratio"] = (r["seconds"] + r.get("setup_seconds", 0)) / o["seconds"]
                r["memory_ratio"] = r["peak_rss_mb"] / o["peak_rss_mb"]
                if peer in arrays and ours in arrays and peer != "grass_r_walk":
                    r["agreement_with_geoaccess"] = agreement(arrays[ours], arrays[peer])
        report = {
            "benchmark": "raster cost-distance, full Tibet DEM, one facility level (county + prefecture hospitals)",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "load_average_1min_start_end": [load_start[0], os.getloadavg()[0]]},
            "repeat": args.repeat,
            "jit_compile_seconds_cold_cache": jit_cold,
            "results": results,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
