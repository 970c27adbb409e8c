"""Region configs (TOML, one file per region) and the data directory they read from."""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

from .errors import ConfigError, InputError
from .sections import Sections

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
REGIONS_DIR = PACKAGE_DIR / "regions"

#: Every section and key a region config may hold, with its default. `{region}` and `{prefix}`
#: in paths are filled in from the [region] section. Paths are relative to the data directory.
DEFAULTS: dict[str, dict[str, Any]] = {
    "region": {
        "key": None,  # required: short name, e.g. "tibet"
        "name": None,  # required: display name
        "admin_prefix": None,  # required: statistical code prefix, e.g. "54", "5328"; "" = every code (national)
        "working_crs": None,  # required: projected CRS for metric work
        "coord_note": "",
    },
    "inputs": {
        "dem": "dem/{region}_dem_30s.tif",
        "gazetteer": "gazetteer/adcode",
        "gazetteer_crs": "gcj02",
        "facilities": "facilities/{region}_facilities.csv",
        "facilities_crs": "gcj02",  # used for rows without a coord_sys column
        "counties": "boundaries/{region}_counties.geojson",
        "prefectures": "boundaries/{region}_prefectures.geojson",
        "population": "facts/{region}_county_population_2020.csv",
        "relocation": "facts/{region}_relocation_sites.csv",
        "population_raster": "",  # people per cell, any CRS (e.g. WorldPop); empty: `population-grid` builds one
        "settlement_tables": [],  # extra tables: [{path, crs, columns = {id=..., name=..., ...}}]
    },
    "roads": {
        "source": "shapefile",  # shapefile | osm_file | osm_online
        "paths": {
            "national": "roads/china_2000/gd.shp",
            "provincial": "roads/china_2000/sd.shp",
            "expressway": "roads/china_2000/hiway.shp",
        },
        "snap_tolerance_m": 50.0,
        "clip_buffer_km": 30.0,
        "network_type": "drive",
        "cache_dir": "cache/osm",  # osm_online: answers cached here (relative to the working directory)
        "offline": False,  # osm_online: use the cache only, never the network
        "timeout_s": 180.0,
        "retries": 3,
    },
    "speeds": {
        "default_kph": 30.0,
        "use_maxspeed": False,
        "road_class": {},  # class or OSM highway tag -> km/h
        "source": "",
    },
    "terrain": {},  # validated by geoaccess.terrain.TerrainParams.from_dict
    "scenarios": {},  # [scenarios.NAME] tables, validated by geoaccess.scenarios (docs/scenarios.md)
    "modes": {},  # [modes.NAME] travel modes beside motorised and walking, validated by geoaccess.scenarios
    "offroad": {
        "max_offroad_km": 30.0,  # legs longer than this are reported (speeds and detour: [terrain])
        # combined engine: straight off-road trips within this distance are graph edges; every straight trip that
        # could beat a searched time is checked after the search anyway, so this only moves work (0: none are edges)
        "direct_km": 0.0,
        "road_legs_km": 2.0,  # combined engine: a straight leg to every road within this distance (farther: the grid)
        "grid_moves": 16,  # combined engine: 8 (king's moves) or 16 (with knight's moves) per DEM cell
        "grid_buffer_km": 30.0,  # combined engine: DEM cells this far outside the region may be crossed
    },
    "positions": {  # settlements without their own coordinates (docs/engine.md, "Honest positions")
        "range_quantiles": [0.1, 0.9],  # low / high of the range over the unit's habitable cells
        "habitable_quantile": 0.99,  # habitable = altitude and slope below this quantile of located settlements
        "habitable_max_altitude_m": 0.0,  # > 0 overrides the altitude limit (metres)
        "habitable_max_slope": 0.0,  # > 0 overrides the slope limit (rise / run)
        "samples_per_area": 200,  # network engine: cells sampled per unit (grid engines use every cell)
    },
    "thresholds": {
        "clinic": 15.0,
        "thc": 30.0,
        "county": 60.0,
        "county_severe": 120.0,
        "pref": 240.0,
        "bands": [15, 30, 60, 120, 240],
    },
    "standards": {
        "document": "",
        "name_zh": "",
        "county_hospitals_required": 1,
        "county_hospital_scope": "all",  # all | poor
        "poor_counties": [],  # 6-digit codes where scope = poor
        "county_may_rely_on_prefecture": False,
        "township_health_centre_required": True,
        "township_exempt_urban_districts": False,
        "village_clinic_required": True,
        "village_share_population_below": 0,  # villages below this may share a neighbour's clinic
        "village_share_within_min": 30.0,
        "township_seat_village_exempt": True,
        "relocation_clinic_within_min": 30.0,
    },
    "siting": {
        "regional_centres": "",  # CSV of the named counties: beside the config, else in geoaccess/data/
        "centre_threshold_min": 120.0,
        "clinic_threshold_min": 30.0,
        "time_limit_s": 60.0,
        "candidates": ["targets", "settlements"],
        "exclusion_areas": [],  # polygon files: no candidate inside (geoaccess/suitability.py)
        "candidate_max_slope": 0.0,  # > 0: no candidate where the DEM is steeper (rise / run)
        "candidate_max_altitude_m": 0.0,  # > 0: no candidate higher (DEM metres)
        "candidate_max_road_km": 0.0,  # > 0: no candidate farther from a mapped road (straight km)
    },
    "access": {  # supply–demand accessibility and capacity coverage (docs/access.md)
        "e2sfca_bands_min": [],  # E2SFCA band upper ends in minutes; empty: equal bands over the catchment
        "e2sfca_weights": [1.0, 0.68, 0.22],  # one weight per band (Luo & Qi 2009)
        "gravity_beta": 1.0,  # gravity: weight = max(t, gravity_min_minutes) ** -beta
        "gravity_min_minutes": 1.0,
        "own_county_limit_min": 720.0,  # own county's hospital: searched up to this many minutes
        "own_township_limit_min": 240.0,  # own township's health centre: searched up to this many minutes
        "grid_spread_km": 5.0,  # population-grid: a located settlement's people spread over habitable cells this near
    },
}

REQUIRED = {("region", "key"), ("region", "name"), ("region", "admin_prefix"), ("region", "working_crs")}
#: Limits on values the model can take: a threshold or band beyond a week is no travel-time standard;
#: line ends farther apart than 1 km are not one junction; roads beyond 1,000 km of a region are not its.
MAX_MINUTES = 7 * 24 * 60.0
MAX_SNAP_TOLERANCE_M = 1000.0
MAX_CLIP_BUFFER_KM = 1000.0
#: Threshold pairs (lower level, higher level) whose minutes must not decrease.
THRESHOLD_ORDER = (("clinic", "thc"), ("thc", "county"), ("county", "county_severe"), ("county", "pref"))
#: A region config is a few kilobytes; anything far larger is not one.
MAX_CONFIG_BYTES = 1024**2
_NESTED_FREE = {("roads", "paths"), ("speeds", "road_class"), ("inputs", "settlement_tables")}


@dataclass(frozen=True)
class RegionConfig:
    """A validated region config: `.raw` holds every section with defaults filled in."""

    key: str
    name: str
    admin_prefix: str
    working_crs: str
    source: Path
    raw: dict[str, dict[str, Any]] = field(repr=False)
    explicit_inputs: frozenset[str] = frozenset()
    #: The typed view of `raw` (`sections.Sections`): ``cfg.sections.roads.source``, ``cfg.sections.thresholds.county``.
    sections: Sections | None = field(default=None, repr=False, compare=False)
    #: The tables as the TOML file gave them, before defaults (`with_overrides` merges into these).
    given: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    scenario: Any = None  # scenarios.Scenario applied to this run's inputs (None: the baseline)
    mode: Any = None  # scenarios.Mode of travel (None: motorised)

    def section(self, name: str) -> dict[str, Any]:
        """A copy of one section of the config."""
        return copy.deepcopy(self.raw[name])

    def input_path(self, name: str, data_dir: Path) -> Path | None:
        """Absolute path of an input layer in the data directory (None when not configured)."""
        rel = self.raw["inputs"].get(name)
        if not rel:
            return None
        return resolve_input(rel, data_dir)

    @property
    def thresholds(self) -> dict[str, Any]:
        """A copy of [thresholds] as a dict (typed: ``cfg.sections.thresholds``)."""
        return self.section("thresholds")

    def with_overrides(self, overrides: dict[str, dict[str, Any]] | None = None, **sections: dict[str, Any]
                       ) -> RegionConfig:
        """The same config with some values replaced, validated as if the TOML file held them.

        Parameters
        ----------
        overrides : dict, optional
            Section → {key: value}, e.g. ``{"thresholds": {"county": 90}}``.
        **sections : dict
            The same, one keyword per section: ``thresholds={"county": 90}``, ``speeds={"default_kph": 25}``,
            ``terrain={"offroad_speed_factor": 0.8}``. A ``speeds`` override of ``road_class`` replaces the
            whole table; other keys are replaced one by one.

        Returns
        -------
        RegionConfig
            A new config (this one is unchanged). An unknown section or key, or a bad value, raises
            `ConfigError` with one line naming it (and "did you mean" for a near miss).
        """
        merged = {**(overrides or {}), **sections}
        if not merged:
            return self
        user = copy.deepcopy(self.given)
        for section, values in merged.items():
            if section not in DEFAULTS:
                raise ConfigError(None, f"override: unknown section '{section}'{_suggest(section, DEFAULTS)}")
            if not isinstance(values, dict):
                raise ConfigError(None, f"override {section}={_show(values)}: must be a dict of key → value")
            for key in values:
                if section != "terrain" and key not in DEFAULTS[section]:
                    raise ConfigError(None, f"override: unknown key '{key}' in [{section}]"
                                            f"{_suggest(key, DEFAULTS[section])}")
            user.setdefault(section, {}).update(copy.deepcopy(values))
        try:
            return replace(_build(user, self.source), scenario=self.scenario, mode=self.mode)
        except ConfigError as exc:  # the file loaded before: the problem is in the overrides
            raise ConfigError(None, f"override of {self.source.name}: {exc.problem}") from None


def resolve_input(rel: str | Path, data_dir: Path) -> Path:
    """A config path: absolute as given, else relative to the data directory."""
    p = Path(rel).expanduser()
    return p if p.is_absolute() else Path(data_dir) / p


def package_data(name: str) -> Path:
    """A file shipped inside the package (geoaccess/data/NAME), wherever the package is installed."""
    from importlib.resources import files

    return Path(str(files("geoaccess").joinpath("data", name)))


def resolve_project_file(value: str | Path, config_source: Path | None) -> Path:
    """A config's own-data path (e.g. [siting] regional_centres): absolute as given; else beside the config
    file, else shipped in geoaccess/data/ (by name, so "data/facilities/x.csv" of older configs still works)."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    candidates = ([Path(config_source).parent / p] if config_source else []) + [package_data(str(p)),
                                                                              package_data(p.name)]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def region_folders() -> list[Path]:
    """Folders searched for `NAME.toml`, first match wins: $GEOACCESS_REGIONS, ./regions, the shipped configs."""
    extra = os.environ.get("GEOACCESS_REGIONS")
    return ([Path(extra).expanduser()] if extra else []) + [Path.cwd() / "regions", REGIONS_DIR]


def region_files() -> dict[str, Path]:
    """Every region config a name can reach: name → file, in search order (an earlier folder hides a later one)."""
    out: dict[str, Path] = {}
    seen: set[str] = set()
    for folder in region_folders():
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.toml")):
            if f.is_file() and f.stem.lower() not in seen:
                seen.add(f.stem.lower())
                out[f.stem] = f
    return out


def available_regions() -> list[str]:
    """Region names reachable by `--region NAME` (shipped, ./regions, $GEOACCESS_REGIONS)."""
    return sorted(region_files(), key=str.lower)


def find_region_file(name_or_path: str | Path) -> Path:
    """The TOML file for a region name (any letter case) or path; ConfigError with a suggestion if none."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ConfigError(p, "region config file not found")
        return p
    files = region_files()
    by_lower = {k.lower(): v for k, v in files.items()}
    wanted = str(name_or_path).strip().lower()
    if wanted in by_lower:
        return by_lower[wanted]
    import difflib

    close = difflib.get_close_matches(wanted, list(by_lower), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(None, f"unknown region '{name_or_path}': {hint}known regions are {', '.join(available_regions())} "
                            f"(or give the path of a .toml file; `geoaccess regions` lists them)")


def load_region(name_or_path: str | Path) -> RegionConfig:
    """Load and validate a region config by name (shipped or in ./regions) or by path."""
    path = find_region_file(name_or_path)
    text = _config_text(path)
    try:
        user = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None
    return _build(user, path)


def _build(user: dict, path: Path) -> RegionConfig:
    """A validated RegionConfig from the TOML tables `user` of the file `path`."""
    given = copy.deepcopy(user)
    raw, explicit = _merge_with_defaults(user, path)
    _validate_values(raw, path)
    reg = raw["region"]
    fill = {"region": reg["key"], "prefix": reg["admin_prefix"]}
    for key, value in raw["inputs"].items():
        if isinstance(value, str) and key not in ("gazetteer_crs", "facilities_crs"):
            raw["inputs"][key] = _fill(_config_path(value, path, f"[inputs] {key}"), fill, path, f"[inputs] {key}")
    for i, spec in enumerate(raw["inputs"]["settlement_tables"]):
        spec["path"] = _config_path(spec["path"], path, f"[inputs] settlement_tables[{i}] path")
    raw["roads"]["paths"] = {k: _fill(_config_path(str(v), path, f"[roads.paths] {k}"), fill, path, f"[roads.paths] {k}")
                             for k, v in raw["roads"]["paths"].items()} \
        if isinstance(raw["roads"]["paths"], dict) else [_fill(_config_path(str(v), path, "[roads] paths"), fill, path,
                                                               "[roads] paths") for v in raw["roads"]["paths"]]
    for section, key in (("roads", "cache_dir"), ("siting", "regional_centres")):
        raw[section][key] = _config_path(raw[section][key], path, f"[{section}] {key}")
    return RegionConfig(key=reg["key"], name=reg["name"], admin_prefix=str(reg["admin_prefix"]),
                        working_crs=reg["working_crs"], source=path, raw=raw, explicit_inputs=frozenset(explicit),
                        sections=Sections.from_raw(raw), given=given)


def _config_text(path: Path) -> str:
    """The config's text: UTF-8 (a byte-order mark is removed), else GB18030/GBK with a warning; else ConfigError."""
    import logging

    log = logging.getLogger("geoaccess")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(path, f"is {size / 2**20:.1f} MB: too large for a region config (a few KB); wrong file?")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, f"cannot be read: {exc.strerror or exc}") from None
    if b"\x00" in raw:
        raise ConfigError(path, "looks like a binary file, not a TOML region config")
    from ._io import decode_text

    try:  # UTF-8 (BOM removed) or GBK, as for tables; mixed or damaged text is an error naming the line
        text = decode_text(raw, path)
    except InputError as exc:
        raise ConfigError(path, exc.problem, row=exc.row) from None
    if not text.strip():
        raise ConfigError(path, "file is empty")
    if not text.endswith(("\n", "\r")):
        log.warning("%s: no line break at the end: if the file was cut short, the settings after line %d take "
                    "their defaults", path.name, text.count("\n") + 1)
    return text


def _config_path(value: str, path: Path, where: str) -> str:
    """A path as written in a config, Windows back-slashes read as folder separators (`facts\\x.csv` → `facts/x.csv`).

    A control character in a path is an error: in a TOML "double-quoted" string a back-slash starts an
    escape, so `"facts\tibet.csv"` holds a tab, not a folder.
    """
    if any(ord(c) < 32 for c in value):
        raise ConfigError(path, f"{where} = {value!r}: holds a control character — in a TOML \"double-quoted\" string "
                                "a back-slash starts an escape (\\t is a tab); write the path with / or in 'single quotes'")
    return value.replace("\\", "/")


def _fill(value: str, fill: dict, path: Path, where: str) -> str:
    """`{region}` and `{prefix}` filled in; ConfigError for any other brace."""
    try:
        return value.format(**fill)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ConfigError(path, f"{where} = {value!r}: only {{region}} and {{prefix}} may appear in braces "
                                f"({type(exc).__name__}: {exc})") from None


def _check_types(raw: dict, path: Path) -> None:
    """Each value has the type of its default (numbers may be int or float; [roads] paths a table or list)."""
    def kind(v) -> str:
        return "a boolean (true/false)" if isinstance(v, bool) else "a number" if isinstance(v, (int, float)) \
            else "a string" if isinstance(v, str) else "a list" if isinstance(v, list) else "a table"

    for section, defaults in DEFAULTS.items():
        if section in ("terrain", "scenarios", "modes"):
            continue
        for key, default in defaults.items():
            value = raw[section][key]
            if default is None:  # required [region] keys
                ok = isinstance(value, str) or (key in ("admin_prefix", "working_crs") and isinstance(value, int)
                                                and not isinstance(value, bool))
                want = "a string"
            elif (section, key) == ("roads", "paths"):
                ok, want = isinstance(value, (dict, list)), "a table or a list of paths"
            else:
                want = kind(default)
                ok = kind(value) == want
            if not ok:
                raise ConfigError(path, f"[{section}] {key} = {_show(value)}: must be {want}")
    for section, key in (("roads", "paths"), ("speeds", "road_class")):
        value = raw[section][key]
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if key == "paths" and not isinstance(v, str):
                raise ConfigError(path, f"[roads.paths] {k} = {_show(v)}: must be a path (string)")
    for i, spec in enumerate(raw["inputs"]["settlement_tables"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
            raise ConfigError(path, f"[inputs] settlement_tables[{i}] = {_show(spec)}: must be a table with a path, "
                                    "e.g. { path = 'x.csv', crs = 'gcj02' }")
        if not isinstance(spec.get("crs", "wgs84"), str) or not isinstance(spec.get("columns", {}), dict):
            raise ConfigError(path, f"[inputs] settlement_tables[{i}]: crs must be a string and columns a table")


def _show(value) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:60] + "…"


def _merge_with_defaults(user: dict, path: Path) -> tuple[dict, set[str]]:
    raw = copy.deepcopy(DEFAULTS)
    for section, values in user.items():
        if section not in DEFAULTS:
            raise ConfigError(path, f"unknown section [{section}]{_suggest(section, DEFAULTS)}")
        if not isinstance(values, dict):
            raise ConfigError(path, f"[{section}] must be a table")
        if section in ("terrain", "scenarios", "modes"):
            raw[section] = dict(values)
            continue
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(path, f"unknown key '{key}' in [{section}]{_suggest(key, DEFAULTS[section])}")
            raw[section][key] = value
    for section, key in REQUIRED:
        value = raw[section].get(key)
        if value is None or (value == "" and (section, key) != ("region", "admin_prefix")):
            raise ConfigError(path, f"missing required key '{key}' in [{section}]")
    _check_types(raw, path)
    explicit = {k for k in user.get("inputs", {}) if k not in ("gazetteer_crs", "facilities_crs")}
    return raw, explicit


def _suggest(word: str, options) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _validate_values(raw: dict, path: Path) -> None:
    from ._crs import check_metres
    from .coords import normalise_system

    reg = raw["region"]
    if not (str(reg["admin_prefix"]).isdigit() or reg["admin_prefix"] == ""):
        raise ConfigError(path, f"[region] admin_prefix must be digits (or \"\" for every code: a national run), "
                                f"got '{reg['admin_prefix']}'")
    reg["admin_prefix"] = str(reg["admin_prefix"])
    check_metres(reg["working_crs"], path)
    for key in ("gazetteer_crs", "facilities_crs"):
        try:
            raw["inputs"][key] = normalise_system(raw["inputs"][key])
        except ValueError as exc:
            raise ConfigError(path, f"[inputs] {key}: {exc}") from None
    if raw["roads"]["source"] not in ("shapefile", "osm_file", "osm_online"):
        raise ConfigError(path, f"[roads] source must be shapefile, osm_file or osm_online, got '{raw['roads']['source']}'")
    _positive(path, "roads", raw["roads"], "snap_tolerance_m", allow_zero=True, hi=MAX_SNAP_TOLERANCE_M,
              why="line ends this far apart would be joined into junctions that do not exist")
    _positive(path, "roads", raw["roads"], "clip_buffer_km", allow_zero=True, hi=MAX_CLIP_BUFFER_KM)
    _positive(path, "roads", raw["roads"], "timeout_s")
    _positive(path, "roads", raw["roads"], "retries", allow_zero=True)
    _positive(path, "speeds", raw["speeds"], "default_kph", hi=200.0)
    for cls, kph in raw["speeds"]["road_class"].items():
        if not isinstance(kph, (int, float)) or isinstance(kph, bool) or not 0 < kph <= 200:
            raise ConfigError(path, f"[speeds.road_class] {cls} = {kph!r}: a speed must be a number in (0, 200] km/h")
    _positive(path, "offroad", raw["offroad"], "max_offroad_km", "grid_buffer_km", hi=MAX_CLIP_BUFFER_KM)
    _positive(path, "offroad", raw["offroad"], "direct_km", "road_legs_km", allow_zero=True)
    if raw["offroad"]["grid_moves"] not in (8, 16):
        raise ConfigError(path, f"[offroad] grid_moves = {raw['offroad']['grid_moves']!r}: must be 8 or 16")
    pos = raw["positions"]
    q = pos["range_quantiles"]
    if len(q) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in q) \
            or not 0 <= q[0] <= 0.5 <= q[1] <= 1:
        raise ConfigError(path, f"[positions] range_quantiles = {q!r}: must be [low, high] with 0 ≤ low ≤ 0.5 ≤ high ≤ 1")
    if not 0 < pos["habitable_quantile"] <= 1:
        raise ConfigError(path, f"[positions] habitable_quantile = {pos['habitable_quantile']!r}: must be in (0, 1]")
    _positive(path, "positions", pos, "habitable_max_altitude_m", "habitable_max_slope", allow_zero=True)
    if not isinstance(pos["samples_per_area"], int) or pos["samples_per_area"] < 1:
        raise ConfigError(path, f"[positions] samples_per_area = {pos['samples_per_area']!r}: must be a whole number ≥ 1")
    th = raw["thresholds"]
    _positive(path, "thresholds", th, "clinic", "thc", "county", "county_severe", "pref", hi=MAX_MINUTES,
              why="no travel-time standard is longer than a week")
    check_threshold_order(th, path)
    th["bands"] = check_bands(th["bands"], path)
    st = raw["standards"]
    _positive(path, "standards", st, "village_share_within_min", "relocation_clinic_within_min", hi=MAX_MINUTES)
    _positive(path, "standards", st, "village_share_population_below", "county_hospitals_required", allow_zero=True)
    _positive(path, "siting", raw["siting"], "centre_threshold_min", "clinic_threshold_min", hi=MAX_MINUTES)
    _positive(path, "siting", raw["siting"], "time_limit_s")
    _positive(path, "siting", raw["siting"], "candidate_max_slope", "candidate_max_altitude_m", "candidate_max_road_km",
              allow_zero=True)
    if not all(isinstance(v, str) and v.strip() for v in raw["siting"]["exclusion_areas"]):
        raise ConfigError(path, "[siting] exclusion_areas must be a list of polygon file paths")
    if raw["standards"]["county_hospital_scope"] not in ("all", "poor"):
        raise ConfigError(path, "[standards] county_hospital_scope must be 'all' or 'poor'")
    acc = raw["access"]
    _positive(path, "access", acc, "gravity_beta", "gravity_min_minutes", "own_county_limit_min",
              "own_township_limit_min", "grid_spread_km")
    for key in ("e2sfca_bands_min", "e2sfca_weights"):
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in acc[key]):
            raise ConfigError(path, f"[access] {key} = {_show(acc[key])}: must be a list of numbers")
    if acc["e2sfca_bands_min"]:
        from .access import check_e2sfca_bands

        check_e2sfca_bands(acc["e2sfca_bands_min"], acc["e2sfca_weights"], path)
    elif not acc["e2sfca_weights"] or any(w < 0 for w in acc["e2sfca_weights"]):
        raise ConfigError(path, f"[access] e2sfca_weights = {_show(acc['e2sfca_weights'])}: must be one or more "
                                "non-negative weights")
    if raw["terrain"]:
        from .terrain import TerrainParams

        try:
            TerrainParams.from_dict(raw["terrain"])
        except ConfigError as exc:
            raise ConfigError(path, exc.problem) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(path, f"[terrain] {exc}") from None
    if raw["scenarios"] or raw["modes"]:
        from .scenarios import parse_modes, parse_scenarios

        parse_scenarios(raw, path)
        parse_modes(raw, path)


def _positive(path: Path, section: str, values: dict, *keys: str, allow_zero: bool = False,
              hi: float | None = None, why: str = "") -> None:
    """Each key a finite number > 0 (≥ 0 with allow_zero) and ≤ hi; stored as float. ConfigError otherwise."""
    for key in keys:
        v = values[key]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and (v >= 0 if allow_zero else v > 0)
        if not ok:
            raise ConfigError(path, f"[{section}] {key} = {v!r}: must be a finite "
                                    f"{'non-negative' if allow_zero else 'positive'} number")
        if hi is not None and v > hi:
            raise ConfigError(path, f"[{section}] {key} = {v!r}: at most {hi:g}" + (f" ({why})" if why else ""))
        values[key] = float(v)


def check_threshold_order(th: dict, path: Path | None = None, where: str = "[thresholds]") -> None:
    """ConfigError unless clinic ≤ thc ≤ county ≤ county_severe and county ≤ pref (minutes).

    The levels nest (a clinic-or-better facility is never farther than a township centre or better),
    so a threshold lower than the one below it is a typo or swapped values, not a standard.
    """
    for low, high in THRESHOLD_ORDER:
        if th[low] > th[high]:
            raise ConfigError(path, f"{where} {low} = {th[low]:g} min is above {high} = {th[high]:g} min: thresholds must "
                                    "rise with the level (clinic ≤ thc ≤ county ≤ county_severe, county ≤ pref)")


def check_bands(bands, path: Path | None = None) -> list[float]:
    """Coverage bands as sorted floats: finite, positive, at most MAX_MINUTES, no repeats; ConfigError otherwise."""
    if not bands or any(not isinstance(b, (int, float)) or isinstance(b, bool) for b in bands):
        raise ConfigError(path, "[thresholds] bands must be a list of positive minutes")
    bad = [b for b in bands if not (math.isfinite(b) and 0 < b <= MAX_MINUTES)]
    if bad:
        raise ConfigError(path, f"[thresholds] bands: {bad[0]!r} is not a number of minutes in (0, {MAX_MINUTES:g}]")
    from .coverage import minutes_key

    out = sorted(float(b) for b in bands)
    same = [(a, b) for a, b in zip(out, out[1:]) if minutes_key(a) == minutes_key(b)]
    if same:
        a, b = same[0]
        raise ConfigError(path, f"[thresholds] bands: {a!r} appears twice" if a == b else
                          f"[thresholds] bands: {a!r} and {b!r} would both be reported as '{minutes_key(a)} min'")
    return out


def resolve_data_dir(cli_value: str | Path | None = None) -> tuple[Path, str]:
    """The data directory: --data, else $GEOACCESS_DATA, else ../shared/data, else the project's data/."""
    if cli_value:
        p, how = Path(cli_value), "--data"
    elif os.environ.get("GEOACCESS_DATA"):
        p, how = Path(os.environ["GEOACCESS_DATA"]), "$GEOACCESS_DATA"
    else:
        for cand in (Path.cwd().parent / "shared" / "data", PROJECT_ROOT.parent / "shared" / "data"):
            if cand.is_dir():
                return cand.resolve(), "../shared/data"
        p, how = PROJECT_ROOT / "data", "project data/"
    if not p.is_dir():
        raise ConfigError(p, f"data directory not found (from {how})")
    return p.resolve(), how
