"""Typed sections of a region config: attribute access (``cfg.sections.roads.source``) over the validated values.

`config.load_region` validates the TOML (one-line errors with "did you mean") and fills in the defaults
of `config.DEFAULTS`; these dataclasses are that result, one per section, so options travel as one object
(a `RegionConfig`, pickled as is to Dask workers) through the serial, distributed and CLI paths. Each
section also reads like the mapping it was built from (``cfg.sections.roads["source"]``, ``dict(...)``,
``.to_dict()``), so code written against ``cfg.section("roads")`` keeps working.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Iterator


class Record(Mapping):
    """A dataclass that also reads as a mapping of its fields, in order (config sections, result summaries)."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the section as a plain dict (the shape of the TOML table)."""
        return {k: copy.deepcopy(getattr(self, k)) for k in self._names()}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]):
        """Build from a mapping holding every field (a validated section, as `config.load_region` leaves it)."""
        return cls(**{k: copy.deepcopy(values[k]) for k in cls._names()})


@dataclass(frozen=True)
class RegionSection(Record):
    """[region]: what the region is and the projected CRS (metres) for metric work."""

    key: str
    name: str
    admin_prefix: str
    working_crs: str
    coord_note: str = ""


@dataclass(frozen=True)
class InputsSection(Record):
    """[inputs]: input layers, as paths relative to the data directory (``{region}`` filled in)."""

    dem: str
    gazetteer: str
    gazetteer_crs: str  # wgs84 | gcj02 | bd09
    facilities: str
    facilities_crs: str
    counties: str
    prefectures: str
    population: str
    relocation: str
    population_raster: str
    settlement_tables: list = field(default_factory=list)


@dataclass(frozen=True)
class RoadsSection(Record):
    """[roads]: where the road network comes from and how it is cleaned."""

    source: str  # shapefile | osm_file | osm_online
    paths: Any  # name → path table, or a list of paths
    snap_tolerance_m: float
    clip_buffer_km: float
    network_type: str
    cache_dir: str
    offline: bool
    timeout_s: float
    retries: float


@dataclass(frozen=True)
class SpeedsSection(Record):
    """[speeds]: km/h by road class (or OSM highway tag), the default, and where the figures come from."""

    default_kph: float
    use_maxspeed: bool
    road_class: dict
    source: str


@dataclass(frozen=True)
class OffroadSection(Record):
    """[offroad]: off-road legs and the combined engine's grid (km; moves per cell)."""

    max_offroad_km: float
    direct_km: float
    road_legs_km: float
    grid_moves: int
    grid_buffer_km: float


@dataclass(frozen=True)
class PositionsSection(Record):
    """[positions]: ranges for settlements without their own coordinates (docs/engine.md)."""

    range_quantiles: list
    habitable_quantile: float
    habitable_max_altitude_m: float
    habitable_max_slope: float
    samples_per_area: int


@dataclass(frozen=True)
class ThresholdsSection(Record):
    """[thresholds]: the standards' travel-time thresholds (minutes) and the reporting bands."""

    clinic: float
    thc: float
    county: float
    county_severe: float
    pref: float
    bands: list


@dataclass(frozen=True)
class StandardsSection(Record):
    """[standards]: the institutional rules of the blank-spot audit."""

    document: str
    name_zh: str
    county_hospitals_required: float
    county_hospital_scope: str  # all | poor
    poor_counties: list
    county_may_rely_on_prefecture: bool
    township_health_centre_required: bool
    township_exempt_urban_districts: bool
    village_clinic_required: bool
    village_share_population_below: float
    village_share_within_min: float
    township_seat_village_exempt: bool
    relocation_clinic_within_min: float


@dataclass(frozen=True)
class SitingSection(Record):
    """[siting]: defaults of `propose clinics` and `propose centres` (minutes, seconds)."""

    regional_centres: str
    centre_threshold_min: float
    clinic_threshold_min: float
    time_limit_s: float
    candidates: list
    exclusion_areas: list  # polygon files: no candidate inside
    candidate_max_slope: float  # 0: no limit
    candidate_max_altitude_m: float  # 0: no limit
    candidate_max_road_km: float  # 0: no limit


@dataclass(frozen=True)
class AccessSection(Record):
    """[access]: supply–demand accessibility, own-unit limits and the population grid (docs/access.md)."""

    e2sfca_bands_min: list
    e2sfca_weights: list
    gravity_beta: float
    gravity_min_minutes: float
    own_county_limit_min: float
    own_township_limit_min: float
    grid_spread_km: float


#: Sections of named tables whose keys the user chooses (scenario and mode names): read-only mappings, checked by
#: `geoaccess.scenarios`.
FREE_FORM_SECTIONS = ("scenarios", "modes")

#: Section name → its dataclass ([terrain] is `terrain.TerrainParams`).
SECTION_TYPES: dict[str, type[Record]] = {
    "region": RegionSection, "inputs": InputsSection, "roads": RoadsSection, "speeds": SpeedsSection,
    "offroad": OffroadSection, "positions": PositionsSection, "thresholds": ThresholdsSection,
    "standards": StandardsSection, "siting": SitingSection, "access": AccessSection,
}


@dataclass(frozen=True)
class Sections:
    """Every section of a validated region config, typed; ``terrain`` is the full `TerrainParams`."""

    region: RegionSection
    inputs: InputsSection
    roads: RoadsSection
    speeds: SpeedsSection
    terrain: Any  # terrain.TerrainParams
    offroad: OffroadSection
    positions: PositionsSection
    thresholds: ThresholdsSection
    standards: StandardsSection
    siting: SitingSection
    access: AccessSection
    scenarios: Mapping[str, Any] = field(default_factory=dict)  # [scenarios.NAME] tables as given (free-form)
    modes: Mapping[str, Any] = field(default_factory=dict)  # [modes.NAME] tables as given (free-form)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Mapping[str, Any]]) -> Sections:
        """The typed view of `RegionConfig.raw` (validated, defaults filled in)."""
        from .terrain import TerrainParams

        typed = {name: kind.from_mapping(raw[name]) for name, kind in SECTION_TYPES.items()}
        free = {name: MappingProxyType(copy.deepcopy(dict(raw.get(name) or {}))) for name in FREE_FORM_SECTIONS}
        return cls(terrain=TerrainParams.from_dict(raw["terrain"]), **typed, **free)
