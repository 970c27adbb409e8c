"""Benchmark: the full `gaps --region R` run (in a fresh process, imports included) and each siting solve.

Run: ``python bench/bench_pipeline.py [--region tibet] [--repeat 3] [--json out.json]``

Prints JSON: wall time and peak memory (max RSS of the child process) of `python cli.py gaps`, the run's
own step timings from summary.json, and the time of each siting solve (temporary points in both modes,
the 19 regional centres and the unconstrained optimum) on the same region.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024.0, done.stdout


def bench_gaps(region: str, repeat: int) -> dict:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            wall, peak, _ = _child([sys.executable, "cli.py", "-q", "gaps", "--region", region, "--out", tmp])
            summary = json.loads((Path(tmp) / "summary.json").read_text())
            runs.append({"wall_s": round(wall, 3), "peak_rss_mb": round(peak, 1),
                         "in_process_s": summary["wall_time_s"], "steps_s": summary["timings_s"]})
    best = min(runs, key=lambda r: r["wall_s"])
    return {"case": f"gaps --region {region}", "best": best, "runs": runs,
            "target_s": 10.0, "meets_target": best["wall_s"] < 10.0}


def bench_siting(region: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from geoaccess.config import load_region, resolve_data_dir
    from geoaccess.pipeline import compute_region_times
    from geoaccess.proposals import propose_centres, propose_clinics

    cfg = load_region(region)
    data_dir, _ = resolve_data_dir(None)
    run = compute_region_times(cfg, data_dir)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in (("clinics_cover", {}), ("clinics_best_25", {"max_sites": 25})):
            t = time.perf_counter()
            res = propose_clinics(cfg, data_dir, Path(tmp) / name, run=run, **kwargs)
            s = res["summary"]
            out[name] = {"total_s": round(time.perf_counter() - t, 3), "cost_matrix_s": s["cost_matrix"]["build_s"],
                         "solve_s": s["solve_s"], "status": s["solver"]["status"], "gap": s["solver"]["mip_gap"],
                         "sites": s["solver"]["n_sites"], "targets": s["n_targets"], "verified": s["verified"]}
        if cfg.section("siting")["regional_centres"]:
            t = time.perf_counter()
            res = propose_centres(cfg, data_dir, Path(tmp) / "centres", run=run)
            s = res["summary"]
            out["regional_centres"] = {
                "total_s": round(time.perf_counter() - t, 3), "cost_matrix_s": s["cost_matrix"]["build_s"],
                "plan_and_optimum_solve_s": s["solve_s"], "plan_status": s["plan"]["status"],
                "optimum_status": s["optimum"]["status"], "optimum_gap": s["optimum"]["mip_gap"],
                "share_of_optimum": s["comparison"]["share_of_optimum"], "verified": s["verified"]}
    return {"case": f"siting on {region}", "solves": out, "target_s_each": 60.0,
            "meets_target": all(v.get("solve_s", v.get("plan_and_optimum_solve_s", 0)) < 60 for v in out.values())}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--region", default="tibet")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    report = {"machine": {"cpus": os.cpu_count()}, "cases": [bench_gaps(a.region, a.repeat), bench_siting(a.region)]}
    text = json.dumps(report, ensure_ascii=False, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text)
    return report


if __name__ == "__main__":
    main()
