"""Where each command writes, and what it must never write over.

`--out` names the *run folder* (default ``output/{region}/``). `gaps` writes the run folder itself;
every other command writes an output set of its own in a named subfolder of it, so results of different
commands and scenarios sit side by side and never mix (docs/reliability.md, "Output folders"):

``traveltime_{engine}[_flat]/`` · ``proposals/clinics_{min}min_{mode}_{candidates}/`` ·
``proposals/centres_{min}min/`` · ``access/{method}_{level}_{min}min[_{supply}]/`` · ``maps/`` (or ``--maps-dir``) · ``export/`` (or ``--dest``).
"""
from __future__ import annotations

from pathlib import Path

from .config import RegionConfig, resolve_input

#: Files that belong with a shapefile (they shape what it reads as).
_SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


def road_files(config: RegionConfig, data_dir: Path) -> dict[str, Path]:
    """The road files a run reads (shapefiles with their sidecars), by name for the manifest."""
    roads = config.section("roads")
    out: dict[str, Path] = {}
    if roads["source"] == "osm_online":
        return out
    paths = roads["paths"] if isinstance(roads["paths"], dict) else {Path(p).stem: p for p in roads["paths"]}
    for name, rel in paths.items():
        p = resolve_input(rel, data_dir)
        if p.suffix.lower() == ".shp":
            for ext in _SHAPEFILE_PARTS:
                part = p.with_suffix(ext)
                if part.exists():
                    out[f"roads_{name}{ext}"] = part
        else:
            out[f"roads_{name}"] = p
    return out


def provenance_inputs(config: RegionConfig, data_dir: Path, loaded: dict[str, Path]) -> dict[str, Path]:
    """Every input that shaped a run's result, for its manifest: the layers read, the roads, the region config."""
    return {**loaded, **road_files(config, data_dir), "region_config": Path(config.source)}


def configured_inputs(config: RegionConfig, data_dir: Path) -> list[Path]:
    """Every input file or folder the config names (they may not all exist), the road files and the config."""
    inp = config.section("inputs")
    paths = [Path(config.source)]
    for key, value in inp.items():
        if isinstance(value, str) and value and not key.endswith("_crs"):
            paths.append(resolve_input(value, data_dir))
    for spec in inp.get("settlement_tables") or []:
        paths.append(resolve_input(spec["path"], data_dir))
    return paths + list(road_files(config, data_dir).values())


def protected_paths(config: RegionConfig, data_dir: Path) -> list[Path]:
    """Paths no output folder may be, hold or lie inside: the data folder, every configured input, the config."""
    paths = [Path(data_dir), *configured_inputs(config, data_dir)]
    roads = config.section("roads")
    if roads["source"] == "osm_online" and roads.get("cache_dir"):
        paths.append(Path(roads["cache_dir"]))
    return paths


def run_folder(config: RegionConfig, out: str | Path | None) -> Path:
    """The run folder: `--out`, else ``output/{region}``."""
    return Path(out) if out else Path("output") / config.key


def traveltime_folder(run: Path, engine: str, terrain: bool) -> Path:
    """``traveltime_{engine}`` (``_flat`` without terrain) inside the run folder."""
    return run / f"traveltime_{engine}{'' if terrain else '_flat'}"


def clinics_folder(run: Path, threshold_min: float, max_sites: int | None, candidates: list[str]) -> Path:
    """``proposals/clinics_{min}min_{fewest|bestK}_{candidates}``: one folder per scenario."""
    mode = "fewest" if max_sites is None else f"best{max_sites}"
    return run / "proposals" / f"clinics_{threshold_min:g}min_{mode}_{'+'.join(sorted(candidates))}"


def centres_folder(run: Path, threshold_min: float) -> Path:
    """``proposals/centres_{min}min``."""
    return run / "proposals" / f"centres_{threshold_min:g}min"


def access_folder(run: Path, method: str, level: str, catchment_min: float, supply: str | None) -> Path:
    """``access/{method}_{level}_{min}min[_{supply column}]``: one folder per scenario."""
    import re

    tail = "_" + re.sub(r"[^A-Za-z0-9_-]+", "-", supply) if supply else ""
    return run / "access" / f"{method}_{level}_{catchment_min:g}min{tail}"


def own_unit_folder(run: Path) -> Path:
    """``own_unit/``: care in one's own county and township against the nearest across borders."""
    return run / "own_unit"


def referral_folder(run: Path) -> Path:
    """``referral/``: facility-to-higher-level times and the settlements' referral chains."""
    return run / "referral"


def coverage_folder(run: Path, level: str, capacity: str, max_minutes: float, order: str) -> Path:
    """``coverage/{level}_{capacity}_{min}min_{order}``: one folder per scenario."""
    import re

    cap = re.sub(r"[^A-Za-z0-9_.-]+", "-", capacity)
    return run / "coverage" / f"{level}_{cap}_{max_minutes:g}min_{order}"


def catchments_folder(run: Path, level: str, bands: list[float]) -> Path:
    """``catchments/{level}_{b1-b2-…}min``: one folder per level and set of bands."""
    return run / "catchments" / f"{level}_{'-'.join(f'{b:g}' for b in bands)}min"


def population_grid_folder(run: Path) -> Path:
    """``population_grid/``: people per cell and the raster-based coverage beside the settlement-based."""
    return run / "population_grid"
