"""What each CLI command does, in library calls; printing is kept here, analysis elsewhere."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from .config import available_regions, load_region, resolve_data_dir

log = logging.getLogger("geoaccess")


def list_regions() -> int:
    """Print the shipped region configs."""
    for key in available_regions():
        cfg = load_region(key)
        print(f"{key:15s} {cfg.name}  (admin prefix {cfg.admin_prefix}, {cfg.source})")
    return 0


def data_check(region: str, data: str | None, *, as_json: bool = False) -> int:
    """Load every input layer and print what was loaded, converted, approximated and skipped."""
    from .loaders import load_inputs
    from .terrain import open_dem

    cfg = load_region(region)
    data_dir, how = resolve_data_dir(data)
    inputs = load_inputs(cfg, data_dir)
    rep = inputs.report
    dem_path = cfg.input_path("dem", data_dir)
    if dem_path is not None and dem_path.exists():
        s = inputs.settlements
        bounds = (float(s["lon"].min()), float(s["lat"].min()), float(s["lon"].max()), float(s["lat"].max()))
        dem = open_dem(dem_path, region_bounds=bounds)
        rep.add("dem", file=str(dem_path), shape=list(dem.array.shape), crs=str(dem.crs), covers_settlements=True)
    else:
        rep.skipped.append(f"dem: {dem_path} not found (travel times would be flat)")
    roads = cfg.section("roads")
    road_files = roads["paths"].values() if isinstance(roads["paths"], dict) else roads["paths"]
    present = [str(Path(data_dir) / p) for p in road_files if (Path(data_dir) / p).exists()]
    rep.add("roads", source=roads["source"], files=present)
    if as_json:
        print(json.dumps({"region": cfg.key, "data_dir": str(data_dir), "data_dir_from": how, "layers": rep.layers,
                          "assumptions": rep.assumptions, "skipped": rep.skipped, "repairs": rep.repairs},
                         ensure_ascii=False, indent=1, default=str))
        return 0
    print(f"region {cfg.key}: {cfg.name}   data: {data_dir} (from {how})   config: {cfg.source}")
    for layer, facts in rep.layers.items():
        print(f"\n[{layer}]")
        for k, v in facts.items():
            print(f"  {k}: {_fmt(v)}")
    for title, items in (("assumed", rep.assumptions), ("skipped", rep.skipped), ("repaired", rep.repairs)):
        if items:
            print(f"\n{title}:")
            for item in items:
                print(f"  - {item}")
    return 0


def _fmt(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) or "none"
    return str(v)
