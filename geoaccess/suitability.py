"""Candidate sites a proposal may use: exclusion areas and suitability rules from the config's [siting].

``exclusion_areas`` (polygon files: nature reserves, flood plains, military zones) remove candidates
inside them; ``candidate_max_slope`` (rise/run of the DEM around the point), ``candidate_max_altitude_m``
(DEM metres) and ``candidate_max_road_km`` (straight distance to the nearest mapped road) remove
candidates beyond them. 0 or an empty list means no rule. docs/siting.md, "Candidates".
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("geoaccess")


def _slope(dem, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Rise/run of the DEM at each point, by central differences one 30″ cell either side."""
    from .elevation import sample_dem

    d = 1.0 / 120.0
    zx = sample_dem(dem, lon + d, lat) - sample_dem(dem, lon - d, lat)
    zy = sample_dem(dem, lon, lat + d) - sample_dem(dem, lon, lat - d)
    dx = 2 * d * 111_320.0 * np.cos(np.radians(lat))
    dy = 2 * d * 110_540.0
    return np.hypot(zx / dx, zy / dy)


def _road_km(run, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    import shapely
    from pyproj import Transformer

    lines = [d["geometry"] for *_, d in run.graph.edges(data=True) if d.get("geometry") is not None]
    if not lines:
        return np.full(lon.size, np.inf)
    tr = Transformer.from_crs("EPSG:4326", run.config.working_crs, always_xy=True)
    metric = shapely.transform(np.array(lines, dtype=object),
                               lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    x, y = tr.transform(lon, lat)
    pts = shapely.points(np.asarray(x), np.asarray(y))
    tree = shapely.STRtree(metric)
    (_, _), dist = tree.query_nearest(pts, return_distance=True, all_matches=False)
    return np.asarray(dist) / 1000.0


def filter_candidates(run, cand: pd.DataFrame, data_dir: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The candidates that pass the config's rules, and how many each rule removed."""
    import shapely

    from .scenarios import _polygon, resolve_file

    sit = run.config.section("siting")
    lon, lat = cand["lon"].to_numpy(float), cand["lat"].to_numpy(float)
    keep = np.ones(len(cand), bool)
    removed: dict[str, int] = {}
    for rel in sit.get("exclusion_areas") or []:
        path = resolve_file(rel, run.config, data_dir or run.data_dir if hasattr(run, "data_dir") else data_dir)
        if not path.is_file():
            from .errors import ConfigError

            raise ConfigError(run.config.source, f"[siting] exclusion_areas: file {path} not found")
        inside = shapely.contains_xy(_polygon(str(path)), lon, lat)
        removed[f"inside {Path(rel).name}"] = int((inside & keep).sum())
        keep &= ~inside
    dem = run.dem
    if sit.get("candidate_max_altitude_m") and dem is not None:
        from .elevation import sample_dem

        high = ~(sample_dem(dem, lon, lat) <= sit["candidate_max_altitude_m"])
        removed[f"above {sit['candidate_max_altitude_m']:g} m"] = int((high & keep).sum())
        keep &= ~high
    if sit.get("candidate_max_slope") and dem is not None:
        steep = ~(_slope(dem, lon, lat) <= sit["candidate_max_slope"])
        removed[f"slope above {sit['candidate_max_slope']:g}"] = int((steep & keep).sum())
        keep &= ~steep
    if sit.get("candidate_max_road_km"):
        far = ~(_road_km(run, lon, lat) <= sit["candidate_max_road_km"])
        removed[f"farther than {sit['candidate_max_road_km']:g} km from a mapped road"] = int((far & keep).sum())
        keep &= ~far
    if removed:
        log.info("candidates: %d of %d kept (%s)", int(keep.sum()), len(cand),
                 ", ".join(f"{k}: {v} removed" for k, v in removed.items()))
    return cand[keep].reset_index(drop=True), {"kept": int(keep.sum()), "of": int(len(cand)), "removed": removed}
