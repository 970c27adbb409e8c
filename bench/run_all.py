"""Run every benchmark and print one JSON report: `python bench/run_all.py [--json bench/results/all.json]`.

Cases: the network engine against networkx and igraph (Tibet roads, a real OSM graph, a ≥1 M-node DEM
grid); the raster engine against scikit-image and scipy (and GRASS where installed); the full gaps run
and each siting solve. Each case runs in its own process; a failing case is reported, not fatal.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SUITES = {"engine": ["bench_engine.py"], "combined": ["bench_combined.py"], "raster": ["bench_raster.py"],
          "pipeline": ["bench_pipeline.py"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path)
    p.add_argument("--only", choices=list(SUITES), action="append")
    a = p.parse_args(argv)
    report = {}
    for name in a.only or SUITES:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"{name}.json"
            t = time.perf_counter()
            done = subprocess.run([sys.executable, str(ROOT / SUITES[name][0]), "--json", str(out)],
                                  capture_output=True, text=True)
            entry = {"seconds": round(time.perf_counter() - t, 1), "exit": done.returncode}
            if out.exists():
                entry["report"] = json.loads(out.read_text())
            else:
                entry["stderr_tail"] = done.stderr.strip().splitlines()[-5:]
            report[name] = entry
            print(f"{name}: exit {done.returncode} in {entry['seconds']} s", file=sys.stderr)
    text = json.dumps(report, ensure_ascii=False, indent=1)
    print(text)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text)
    return 0 if all(e["exit"] == 0 for e in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
