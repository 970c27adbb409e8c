"""Scenarios and travel modes: named changes to a run's inputs, applied before any engine runs.

A region config may hold ``[scenarios.NAME]`` tables (seasons, road works, facility changes) and
``[modes.NAME]`` tables (ways of travelling beside the built-in ``motorised`` and ``walking``).
:func:`with_variant` returns a copy of the config carrying one scenario and one mode; the region
preparation (:func:`geoaccess.pipeline.prepare_region`) then calls :func:`apply_to_inputs` (facility
table) and :func:`apply_to_graph` (road edge times and speeds, closures). Thresholds and terrain
parameters are changed in the config copy itself. Every engine (combined, network, raster) reads
only those inputs, so each honours a scenario without knowing of it. docs/scenarios.md has the
table format and the shipped Tibet scenarios with their sources.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

log = logging.getLogger("geoaccess")

BASELINE = "baseline"
#: Keys a [scenarios.NAME] table may hold.
SCENARIO_KEYS = ("description", "source", "speed_by_class", "speed_by_road", "speed_by_altitude", "speed_by_area",
                 "close", "facilities", "thresholds", "terrain")
CLOSE_KEYS = ("above_m", "roads", "areas")
FACILITY_KEYS = ("add", "remove")
MODE_KEYS = ("description", "roads", "speed_factor", "terrain")
ROAD_MODELS = ("motorised", "walking")
#: A speed factor beyond these is a typo, not a season or a road works: ×0.01 … ×5.
MIN_FACTOR, MAX_FACTOR = 0.01, 5.0


@dataclass(frozen=True)
class Scenario:
    """One named scenario; speeds are multipliers (0.7 = 30 % slower), altitudes metres, paths resolved."""

    name: str
    description: str = ""
    source: str = ""
    speed_by_class: dict = field(default_factory=dict)      # road class → factor
    speed_by_road: dict = field(default_factory=dict)       # route number (RDNAME / OSM ref) or name → factor
    speed_by_altitude: tuple = ()                           # (above_m, below_m, factor): segment mid altitude
    speed_by_area: tuple = ()                               # (polygon path, factor)
    close_above_m: float | None = None                      # segments whose mid altitude is above: closed
    close_roads: tuple = ()                                 # route numbers / names closed whole
    close_areas: tuple = ()                                 # polygon paths: segments inside closed
    add_facilities: str | None = None                       # register file of facilities added
    remove_facilities: tuple = ()                           # facility_ids removed
    thresholds: dict = field(default_factory=dict)
    terrain: dict = field(default_factory=dict)

    @property
    def changes_roads(self) -> bool:
        return bool(self.speed_by_class or self.speed_by_road or self.speed_by_altitude or self.speed_by_area
                    or self.close_above_m is not None or self.close_roads or self.close_areas)


@dataclass(frozen=True)
class Mode:
    """A way of travelling: ``roads`` = motorised (class speeds with grade and altitude factors) or walking
    (Tobler's hiking function on the road's grade, like off road); ``speed_factor`` scales road speeds;
    ``terrain`` overrides [terrain] parameters (e.g. the off-road speed factor)."""

    name: str
    roads: str = "motorised"
    speed_factor: float = 1.0
    terrain: dict = field(default_factory=dict)
    description: str = ""


#: Built-in modes. Walking: the off-road legs walk at Tobler's speed (factor 1) instead of the region's
#: "unmapped roads driven slowly" factor; on roads Tobler's speed on the road's own grade (docs/scenarios.md).
BUILTIN_MODES = {
    "motorised": Mode("motorised", "motorised", 1.0, {}, "vehicles on the mapped roads, the region's off-road model"),
    "walking": Mode("walking", "walking", 1.0, {"offroad_speed_factor": 1.0},
                    "on foot everywhere: Tobler's hiking function on roads and off road"),
}


# ------------------------------------------------------------------------------------------- parsing
def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _factor(value, path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not MIN_FACTOR <= value <= MAX_FACTOR:
        raise ConfigError(path, f"{where} = {value!r}: a speed factor must be a number in [{MIN_FACTOR:g}, "
                                f"{MAX_FACTOR:g}] (0.7 = 30 % slower, 1.5 = 50 % faster)")
    return float(value)


def _metres(value, path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not -500 <= value <= 9000:
        raise ConfigError(path, f"{where} = {value!r}: an altitude in metres (−500 … 9,000)")
    return float(value)


def _table(value, path, where: str, keys=None) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(path, f"{where} must be a table")
    for k in value:
        if keys is not None and k not in keys:
            raise ConfigError(path, f"{where}: unknown key '{k}'{_suggest(k, keys)} (keys: {', '.join(keys)})")
    return value


def _names(value, path, where: str) -> tuple:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(path, f"{where} must be a list of names, e.g. [\"G318\", \"S301\"]")
    return tuple(v.strip() for v in value)


def _path(value, path, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, f"{where} must be a file path (string)")
    return value.strip().replace("\\", "/")


def road_classes(raw: dict) -> list[str]:
    """Road classes a scenario may name: the [speeds.road_class] keys and the [roads.paths] layer names."""
    paths = raw["roads"]["paths"]
    return sorted(set(raw["speeds"]["road_class"]) | (set(paths) if isinstance(paths, dict) else set()))


def parse_scenarios(raw: dict, path: Path | None) -> dict[str, Scenario]:
    """Every [scenarios.NAME] table of a config as a Scenario; ConfigError (one line) for any bad value."""
    from .config import THRESHOLD_ORDER, check_threshold_order
    from .terrain import TerrainParams

    out = {}
    classes = road_classes(raw)
    for name, t in raw.get("scenarios", {}).items():
        w = f"[scenarios.{name}]"
        if name == BASELINE or name in BUILTIN_MODES:
            raise ConfigError(path, f"{w}: '{name}' is a reserved name (the unchanged run / a travel mode)")
        _table(t, path, w, SCENARIO_KEYS)
        kw: dict[str, Any] = {"name": name}
        for key in ("description", "source"):
            if key in t:
                if not isinstance(t[key], str):
                    raise ConfigError(path, f"{w} {key} must be a string")
                kw[key] = t[key]
        by_class = _table(t.get("speed_by_class", {}), path, f"{w} speed_by_class")
        for cls, f in by_class.items():
            if cls not in classes:
                raise ConfigError(path, f"{w} speed_by_class: unknown road class '{cls}'{_suggest(cls, classes)} "
                                        f"(classes: {', '.join(classes)})")
        kw["speed_by_class"] = {c: _factor(f, path, f"{w} speed_by_class.{c}") for c, f in by_class.items()}
        by_road = _table(t.get("speed_by_road", {}), path, f"{w} speed_by_road")
        kw["speed_by_road"] = {str(r).strip(): _factor(f, path, f"{w} speed_by_road.{r}") for r, f in by_road.items()}
        bands = t.get("speed_by_altitude", [])
        if not isinstance(bands, list):
            raise ConfigError(path, f"{w} speed_by_altitude must be a list of tables [[...]] with above_m, below_m, "
                                    "factor")
        parsed = []
        for i, b in enumerate(bands):
            bw = f"{w} speed_by_altitude[{i}]"
            _table(b, path, bw, ("above_m", "below_m", "factor"))
            if "factor" not in b or ("above_m" not in b and "below_m" not in b):
                raise ConfigError(path, f"{bw}: needs factor and above_m and/or below_m")
            lo = _metres(b.get("above_m", -500.0), path, f"{bw} above_m")
            hi = _metres(b.get("below_m", 9000.0), path, f"{bw} below_m")
            if hi <= lo:
                raise ConfigError(path, f"{bw}: below_m = {hi:g} must be above above_m = {lo:g}")
            parsed.append((lo, hi, _factor(b["factor"], path, f"{bw} factor")))
        kw["speed_by_altitude"] = tuple(parsed)
        areas = t.get("speed_by_area", [])
        if not isinstance(areas, list):
            raise ConfigError(path, f"{w} speed_by_area must be a list of tables [[...]] with polygon, factor")
        parsed = []
        for i, a in enumerate(areas):
            aw = f"{w} speed_by_area[{i}]"
            _table(a, path, aw, ("polygon", "factor"))
            if "polygon" not in a or "factor" not in a:
                raise ConfigError(path, f"{aw}: needs polygon (a file) and factor")
            parsed.append((_path(a["polygon"], path, f"{aw} polygon"), _factor(a["factor"], path, f"{aw} factor")))
        kw["speed_by_area"] = tuple(parsed)
        close = _table(t.get("close", {}), path, f"{w} close", CLOSE_KEYS)
        if "above_m" in close:
            kw["close_above_m"] = _metres(close["above_m"], path, f"{w} close.above_m")
        kw["close_roads"] = _names(close.get("roads", []), path, f"{w} close.roads")
        kw["close_areas"] = tuple(_path(p, path, f"{w} close.areas") for p in
                                  ([close["areas"]] if isinstance(close.get("areas"), str) else close.get("areas", [])))
        fac = _table(t.get("facilities", {}), path, f"{w} facilities", FACILITY_KEYS)
        if "add" in fac:
            kw["add_facilities"] = _path(fac["add"], path, f"{w} facilities.add")
        kw["remove_facilities"] = _names(fac.get("remove", []), path, f"{w} facilities.remove")
        th = _table(t.get("thresholds", {}), path, f"{w} thresholds",
                    sorted({k for pair in THRESHOLD_ORDER for k in pair}))
        for k, v in th.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 7 * 24 * 60:
                raise ConfigError(path, f"{w} thresholds.{k} = {v!r}: minutes must be a positive number")
        merged = {**raw["thresholds"], **{k: float(v) for k, v in th.items()}}
        check_threshold_order(merged, path, where=f"{w} thresholds:")
        kw["thresholds"] = {k: float(v) for k, v in th.items()}
        terrain = _table(t.get("terrain", {}), path, f"{w} terrain")
        _terrain_params({**raw["terrain"], **terrain}, path, f"{w} terrain")
        kw["terrain"] = dict(terrain)
        out[name] = Scenario(**kw)
        if not (out[name].changes_roads or out[name].add_facilities or out[name].remove_facilities
                or out[name].thresholds or out[name].terrain):
            raise ConfigError(path, f"{w} changes nothing: give speed_by_*, close, facilities, thresholds or terrain")
    return out


def _terrain_params(d: dict, path, where: str):
    from .terrain import TerrainParams

    try:
        return TerrainParams.from_dict(d)
    except ConfigError as exc:
        raise ConfigError(path, f"{where}: {exc.problem.removeprefix('[terrain] ')}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(path, f"{where}: {exc}") from None


def parse_modes(raw: dict, path: Path | None) -> dict[str, Mode]:
    """The built-in modes plus the config's [modes.NAME] tables (which may redefine walking's parameters)."""
    out = dict(BUILTIN_MODES)
    for name, t in raw.get("modes", {}).items():
        w = f"[modes.{name}]"
        if name in ("both", BASELINE):
            raise ConfigError(path, f"{w}: '{name}' is a reserved name")
        _table(t, path, w, MODE_KEYS)
        base = BUILTIN_MODES.get(name, Mode(name))
        roads = t.get("roads", base.roads)
        if roads not in ROAD_MODELS:
            raise ConfigError(path, f"{w} roads = {roads!r}: must be one of {', '.join(ROAD_MODELS)}"
                                    f"{_suggest(roads, ROAD_MODELS)}")
        factor = _factor(t.get("speed_factor", base.speed_factor), path, f"{w} speed_factor")
        terrain = {**base.terrain, **_table(t.get("terrain", {}), path, f"{w} terrain")}
        _terrain_params({**raw["terrain"], **terrain}, path, f"{w} terrain")
        out[name] = Mode(name, roads, factor, terrain, str(t.get("description", base.description)))
    return out


# ------------------------------------------------------------------------------------------- selection
def scenario_names(config) -> list[str]:
    return [BASELINE] + sorted(config.raw.get("scenarios", {}))


def mode_names(config) -> list[str]:
    return sorted(parse_modes(config.raw, config.source))


def get_scenario(config, name: str | None) -> Scenario | None:
    """The named scenario of the config (None for the baseline); ConfigError with a suggestion if unknown."""
    if name in (None, "", BASELINE):
        return None
    known = parse_scenarios(config.raw, config.source)
    if name not in known:
        names = scenario_names(config)
        raise ConfigError(config.source, f"unknown scenario '{name}'{_suggest(name, names)}: this config defines "
                                         f"{', '.join(names)}")
    return known[name]


def get_mode(config, name: str | None) -> Mode:
    modes = parse_modes(config.raw, config.source)
    name = name or "motorised"
    if name not in modes:
        raise ConfigError(config.source, f"unknown travel mode '{name}'{_suggest(name, modes)}: use "
                                         f"{', '.join(sorted(modes))} (or both)")
    return modes[name]


def resolve_file(value: str, config, data_dir: Path | None) -> Path:
    """A scenario file: absolute as given; else beside the config; else in the data directory."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    for base in ([Path(config.source).parent] if config.source else []) + ([Path(data_dir)] if data_dir else []):
        if (base / p).is_file():
            return base / p
    return (Path(data_dir) / p) if data_dir else p


def with_variant(config, scenario: str | None = None, mode: str | None = None, data_dir: Path | None = None):
    """A copy of ``config`` that carries one scenario and one travel mode: thresholds and terrain
    parameters changed in it, files named by the scenario resolved and checked (ConfigError if missing)."""
    sc = get_scenario(config, scenario)
    md = get_mode(config, mode)
    raw = copy.deepcopy(config.raw)
    if sc is not None:
        files = {}
        for key, value in (("add_facilities", sc.add_facilities),):
            if value:
                files[key] = str(_existing(resolve_file(value, config, data_dir), config, sc, "facilities.add"))
        areas = tuple((str(_existing(resolve_file(p, config, data_dir), config, sc, "speed_by_area polygon")), f)
                      for p, f in sc.speed_by_area)
        closed = tuple(str(_existing(resolve_file(p, config, data_dir), config, sc, "close.areas"))
                       for p in sc.close_areas)
        sc = dataclasses.replace(sc, speed_by_area=areas, close_areas=closed, **files)
        raw["thresholds"].update(sc.thresholds)
        raw["terrain"].update(sc.terrain)
    raw["terrain"].update(md.terrain)
    return dataclasses.replace(config, raw=raw, scenario=sc, mode=md if md.name != "motorised" else None)


def _existing(p: Path, config, sc: Scenario, what: str) -> Path:
    if not p.is_file():
        raise ConfigError(config.source, f"[scenarios.{sc.name}] {what}: file {p} not found (paths are absolute, "
                                         "beside the config, or in the data directory)")
    return p


def variant_label(config) -> str:
    """``baseline``, the scenario's name, and the mode when not motorised (e.g. ``winter_walking``)."""
    parts = [config.scenario.name if config.scenario is not None else BASELINE]
    if config.mode is not None:
        parts.append(config.mode.name)
    return "_".join(parts)


def variant_folder(run: Path, config) -> Path:
    """The run folder of a scenario / mode run: beside the baseline's, ``{run}_{scenario}[_{mode}]``."""
    label = variant_label(config)
    if label == BASELINE:
        return run
    return run.with_name(f"{run.name}_{label.removeprefix(BASELINE + '_')}")


# ------------------------------------------------------------------------------------------- inputs
def apply_to_inputs(config, inputs):
    """The facility table with the scenario's facilities removed and added (the load report says so)."""
    sc = config.scenario
    if sc is None:
        return inputs
    for i, path in enumerate([p for p, _ in sc.speed_by_area] + list(sc.close_areas)):
        inputs.paths[f"scenario_{sc.name}_area_{i + 1}"] = Path(path)  # the manifest records every file read
    if sc.add_facilities:
        inputs.paths[f"scenario_{sc.name}_facilities"] = Path(sc.add_facilities)
    if not sc.add_facilities and not sc.remove_facilities:
        return inputs
    import pandas as pd

    fac = inputs.facilities
    if fac is not None and fac.attrs.get("scenario") == sc.name:
        return inputs  # already applied to these inputs
    ids = fac["facility_id"].astype(str)
    unknown = [f for f in sc.remove_facilities if f not in set(ids)]
    if unknown:
        raise ConfigError(config.source, f"[scenarios.{sc.name}] facilities.remove: no facility '{unknown[0]}' in "
                                         f"the register{_suggest(unknown[0], ids)}")
    out = fac[~ids.isin(sc.remove_facilities)]
    if sc.remove_facilities:
        inputs.report.assumptions.append(f"scenario {sc.name}: {len(sc.remove_facilities)} facilities removed "
                                         f"({', '.join(sc.remove_facilities[:5])}{'…' if len(sc.remove_facilities) > 5 else ''})")
    if sc.add_facilities:
        from .loaders import load_facilities

        added = load_facilities(sc.add_facilities, default_system="wgs84", gazetteer=inputs.gazetteer,
                                county_codes=inputs.county_codes, counties=inputs.counties, locate_units=True,
                                report=inputs.report)
        clash = sorted(set(added["facility_id"].astype(str)) & set(out["facility_id"].astype(str)))
        if clash:
            raise ConfigError(sc.add_facilities, f"[scenarios.{sc.name}] facilities.add: facility_id '{clash[0]}' is "
                                                 "already in the register (give added facilities new ids)")
        added = added.assign(basis=f"added by scenario {sc.name}")
        out = pd.concat([out, added[[c for c in added.columns if c in out.columns]]], ignore_index=True)
        inputs.report.assumptions.append(f"scenario {sc.name}: {len(added)} facilities added from {sc.add_facilities}")
    out = out.reset_index(drop=True)
    out.attrs["scenario"] = sc.name
    inputs.facilities = out
    return inputs


# ------------------------------------------------------------------------------------------- roads
def _polygon(path: str):
    import geopandas as gpd
    import shapely

    from .errors import InputError

    try:
        g = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(path, f"cannot read the polygon file ({type(exc).__name__}: {exc})") from None
    if g.crs is not None:
        g = g.to_crs(4326)
    geom = shapely.union_all(g.geometry.dropna().to_numpy())
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise InputError(path, "holds no polygon: a scenario area must be a polygon layer (GeoJSON, GeoPackage, "
                               "shapefile)")
    return geom


def _edge_names(d: dict) -> set[str]:
    out = set()
    for key in ("ref", "name"):
        v = d.get(key)
        for item in (v if isinstance(v, list) else [v]):
            if isinstance(item, str) and item.strip():
                out |= {part.strip().lower() for part in item.replace(",", ";").split(";") if part.strip()}
    return out


def _first(v):
    return v[0] if isinstance(v, list) and v else v


def apply_to_graph(config, G, dem, params):
    """Change the road edges' times for the run's travel mode and scenario (in place; returns G).

    Each edge's ``time_profile`` already cuts it into segments of about [terrain] sample_spacing_m. Per
    segment: walking replaces the time by Tobler's speed on the segment's grade; the mode's
    speed_factor and the scenario's factors (class, named road, altitude band of the segment's middle,
    area holding it) divide the time; closed segments become
    impassable (see _rewrite_edges). ``travel_time``, ``time_profile``, ``speed_kph`` (raster engine:
    mean speed) and ``flat_time`` follow; a report goes to ``G.graph["scenario"]``.
    """
    sc, md = config.scenario, config.mode
    walking = md is not None and md.roads == "walking"
    factor = md.speed_factor if md is not None else 1.0
    if (sc is None or not sc.changes_roads) and not walking and factor == 1.0:
        return G
    edges = [e for e in G.edges(keys=True, data=True)]
    report = {"scenario": sc.name if sc else BASELINE, "mode": md.name if md else "motorised", "edges": len(edges),
              "road_km": 0.0, "km_slower": 0.0, "km_faster": 0.0, "km_closed": 0.0, "edges_with_closures": 0}
    if not edges:
        G.graph["scenario"] = report
        return G
    geo = _segments(G, edges, dem, config.working_crs)
    names = [_edge_names(d) for *_, d in edges]
    if sc is not None:
        known = set().union(*names)
        for r in list(sc.speed_by_road) + list(sc.close_roads):
            if r.lower() not in known:
                raise ConfigError(config.source, f"[scenarios.{sc.name}]: no road '{r}' in the network"
                                                 f"{_suggest(r.upper(), sorted(n.upper() for n in known))} (route "
                                                 "numbers RDNAME / OSM ref, or road names)")
    seg_edge = geo["seg_edge"]
    seg_len = geo["seg_len"]
    base = geo["seg_time"].copy()
    if walking:
        from .terrain import tobler_kph

        base = seg_len / (np.asarray(tobler_kph(geo["seg_grade"], params)) / 3.6)
    f = np.full(seg_len.size, float(factor))
    closed = np.zeros(seg_len.size, bool)
    if sc is not None:
        cls = np.array([str(_first(d.get("road_class", ""))) for *_, d in edges], dtype=object)
        per_edge = np.ones(len(edges))
        for c, v in sc.speed_by_class.items():
            per_edge[(cls == c) | (cls == c + "_link")] *= v
        for r, v in sc.speed_by_road.items():
            per_edge[[r.lower() in n for n in names]] *= v
        f *= per_edge[seg_edge]
        z = geo["seg_z"]
        for lo, hi, v in sc.speed_by_altitude:
            f[(z > lo) & (z <= hi)] *= v
        if sc.speed_by_area or sc.close_areas:
            import shapely

            for p, v in sc.speed_by_area:
                f[shapely.contains_xy(_polygon(p), geo["seg_lon"], geo["seg_lat"])] *= v
            for p in sc.close_areas:
                closed |= shapely.contains_xy(_polygon(p), geo["seg_lon"], geo["seg_lat"])
        if sc.close_above_m is not None:
            closed |= z > sc.close_above_m
        if sc.close_roads:
            shut = np.array([any(r.lower() in n for r in sc.close_roads) for n in names])
            closed |= shut[seg_edge]
    new = base / f
    km = seg_len / 1000.0 / 2.0  # a two-way road's two directed edges count once
    old = geo["seg_time"]
    report["road_km"] = round(float(km.sum()), 1)
    report["km_slower"] = round(float(km[(new > old * (1 + 1e-9)) & ~closed].sum()), 1)
    report["km_faster"] = round(float(km[(new < old * (1 - 1e-9)) & ~closed].sum()), 1)
    report["km_closed"] = round(float(km[closed].sum()), 1)
    _rewrite_edges(G, edges, geo, new, closed, report)
    G.graph["scenario"] = report
    log.info("scenario %s, mode %s: %.0f km of road slower, %.0f km faster, %.0f km closed (on %d directed edges)",
             report["scenario"], report["mode"], report["km_slower"], report["km_faster"], report["km_closed"],
             report["edges_with_closures"])
    return G


def _segments(G, edges, dem, working_crs) -> dict:
    """Per edge segment (the time_profile's cuts): edge index, length (m), time (s), middle lon/lat and
    altitude (m, NaN without DEM), grade u→v; per sample: lon/lat; and the edges' metric geometries."""
    import shapely
    from pyproj import Transformer

    from .elevation import sample_dem
    from .terrain import _edge_geometries

    geoms = _edge_geometries(G, edges)
    fwd = Transformer.from_crs("EPSG:4326", working_crs, always_xy=True)
    inv = Transformer.from_crs(working_crs, "EPSG:4326", always_xy=True)
    metric = shapely.transform(geoms, lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1])))
    dist, tim, n_samp = [], [], []
    for *_, d in edges:
        prof = d.get("time_profile")
        if prof is None:
            L, t = float(d["length"]), float(d["travel_time"])
            prof = (np.array([0.0, L]), np.array([0.0, t]))
        dist.append(np.asarray(prof[0], float))
        tim.append(np.asarray(prof[1], float))
        n_samp.append(len(prof[0]))
    n_samp = np.array(n_samp)
    samp_edge = np.repeat(np.arange(len(edges)), n_samp)
    cum_d = np.concatenate(dist)
    total = np.array([a[-1] if a[-1] > 0 else 1.0 for a in dist])
    frac = np.clip(cum_d / total[samp_edge], 0.0, 1.0)
    pts = shapely.line_interpolate_point(metric[samp_edge], frac, normalized=True)
    xy = shapely.get_coordinates(pts)
    lon, lat = inv.transform(xy[:, 0], xy[:, 1])
    lon, lat = np.asarray(lon), np.asarray(lat)
    z = sample_dem(dem, lon, lat) if dem is not None else np.full(lon.size, np.nan)
    first = np.concatenate(([0], np.cumsum(n_samp)[:-1]))
    is_seg = np.ones(cum_d.size, bool)
    is_seg[first + n_samp - 1] = False  # a segment starts at every sample but an edge's last
    a = np.flatnonzero(is_seg)
    b = a + 1
    cum_t = np.concatenate(tim)
    seg_len = cum_d[b] - cum_d[a]
    za, zb = z[a], z[b]
    with np.errstate(invalid="ignore", divide="ignore"):
        grade = np.where(seg_len > 0, (zb - za) / seg_len, 0.0)
    grade = np.where(np.isfinite(grade), grade, 0.0)
    return {"seg_edge": samp_edge[a], "seg_len": seg_len, "seg_time": cum_t[b] - cum_t[a],
            "seg_z": np.where(np.isnan(za), zb, np.where(np.isnan(zb), za, (za + zb) / 2.0)),
            "seg_grade": grade, "seg_lon": (lon[a] + lon[b]) / 2, "seg_lat": (lat[a] + lat[b]) / 2,
            "samp_lon": lon, "samp_lat": lat, "samp_first": first, "n_samp": n_samp, "cum_d": cum_d,
            "metric": metric, "inv": inv}


#: Seconds to cross one closed ~200 m road segment: 10⁷ s (116 days), far beyond any standard (a week at most),
#: so no search uses it while the road keeps its place in the graph (see _rewrite_edges).
CLOSED_SEGMENT_S = 1.0e7


def _rewrite_edges(G, edges, geo, new_time, closed, report) -> None:
    """Write the new segment times into the edges.

    A closed segment keeps its place in the road graph but takes CLOSED_SEGMENT_S to cross: the graph's nodes,
    geometries, snapping and road access points stay those of the baseline, and every time only grows, so
    a closure can never shorten a trip (removing the segment instead would move some points' nearest-road
    join onto another road, which the engines join by a straight leg — not monotone). The open stretches
    either side stay usable from their own access points. The raster engine burns roads in by geometry:
    it gets the open stretches only (``G.graph["raster_roads"]``, mean speed of each stretch).
    """
    import shapely
    from shapely.ops import substring

    starts = np.concatenate(([0], np.cumsum(geo["n_samp"] - 1)[:-1]))
    raster_roads = [] if closed.any() else None
    for s, (u, v, k, d) in enumerate(edges):
        lo, n = starts[s], geo["n_samp"][s] - 1
        t_seg = new_time[lo:lo + n].copy()
        shut = closed[lo:lo + n]
        was = geo["seg_time"][lo:lo + n]
        dist = geo["cum_d"][geo["samp_first"][s]:geo["samp_first"][s] + n + 1]
        open_old, open_new = float(was[~shut].sum()), float(t_seg[~shut].sum())
        ratio = open_new / open_old if open_old > 0 and open_new > 0 else 1.0
        kph = float(d["speed_kph"]) / ratio
        if shut.any():
            report["edges_with_closures"] = report.get("edges_with_closures", 0) + 1
            t_seg[shut] = CLOSED_SEGMENT_S
        cum = np.concatenate(([0.0], np.cumsum(t_seg)))
        d.update(travel_time=float(cum[-1]), time_profile=(dist.copy(), cum), speed_kph=kph,
                 flat_time=float(d.get("flat_time", cum[-1])) * ratio)
        if raster_roads is None:
            continue
        length = float(d["length"]) if float(d["length"]) > 0 else 1.0
        i = 0
        while i < n:
            if shut[i]:
                i += 1
                continue
            j = i
            while j < n and not shut[j]:
                j += 1
            if dist[j] - dist[i] >= 1.0:
                piece_was, piece_new = float(was[i:j].sum()), float(t_seg[i:j].sum())
                g = substring(geo["metric"][s], float(dist[i] / length), float(dist[j] / length), normalized=True)
                g = shapely.transform(g, lambda xy: np.column_stack(geo["inv"].transform(xy[:, 0], xy[:, 1])))
                raster_roads.append((g, float(d["speed_kph"]) * (piece_was / piece_new if piece_new > 0 else 1.0)))
            i = j
    if raster_roads is not None:
        G.graph["raster_roads"] = raster_roads


def describe(config, G=None) -> dict:
    """What the run's scenario and mode changed, for summary.json and the manifest."""
    sc, md = config.scenario, config.mode
    out = {"name": sc.name if sc else BASELINE, "mode": md.name if md else "motorised"}
    if sc is not None:
        out.update({"description": sc.description, "source": sc.source,
                    "definition": {k: v for k, v in dataclasses.asdict(sc).items()
                                   if k not in ("name", "description", "source") and v not in ({}, (), None, [])}})
    if md is not None:
        out["mode_definition"] = {"roads": md.roads, "speed_factor": md.speed_factor, "terrain": md.terrain}
    if G is not None and "scenario" in G.graph:
        out["roads"] = G.graph["scenario"]
    return out
