"""geoaccess: travel time to health care, coverage gaps and facility siting for remote regions.

The library API (docs/api.md), in the manner of osmnx::

    import geoaccess as ga

    tibet = ga.load_region("tibet")
    result = ga.gaps(tibet)
    result.counties.head()
    ga.coverage_map(result)

The names below are loaded on first use (``import geoaccess`` stays light for the command line).
"""

import sys
import types

__version__ = "0.1.0"

#: The public API: name → the module defining it.
_API = {name: "api" for name in (
    "Region", "GapsResult", "GapsSummary", "TravelTimesResult", "TableResult", "ProposalResult", "MapInputs",
    "regions", "load_region", "load_inputs", "travel_times", "travel_time_result", "travel_times_at", "gaps",
    "propose_clinics", "propose_centres", "accessibility", "own_unit", "referral", "capacity_coverage",
    "catchment_areas", "population_grid", "coverage_map", "map_inputs", "export",
)} | {"to_wgs84": "coords", "RegionConfig": "config", "Inputs": "loaders",
      "GeoaccessError": "errors", "InputError": "errors", "ConfigError": "errors", "OutputError": "errors"}

__all__ = sorted(_API)


class _Package(types.ModuleType):
    """The package, whose API names a submodule of the same name never replaces: importing
    ``geoaccess.export`` (the GIS writer) leaves ``geoaccess.export`` the function (``from geoaccess.export
    import …`` still reads the module)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'geoaccess' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"geoaccess.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted((set(globals()) - {"sys", "types"}) | set(_API))
