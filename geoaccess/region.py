"""Regions for the library API: a validated config (overrides applied) with its data folder, and its inputs.

`load_region` is ``ga.load_region``; `as_region`, `engine_name` and `terrain_flag` are the checks every
call of `geoaccess.api` and `geoaccess.analyses` shares.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import pandas as pd

from . import config as _config
from .config import RegionConfig
from .errors import ConfigError
from .loaders import Inputs

Engine = Literal["combined", "network", "raster"]
Mode = Literal["terrain", "flat"] | None


# ----------------------------------------------------------------------------- regions and inputs

@dataclass(frozen=True)
class Region:
    """A region ready to analyse: its validated config (overrides applied) and the data folder it reads.

    Attributes
    ----------
    config : RegionConfig
        The config; typed sections at ``config.sections`` (``region.config.sections.thresholds.county``).
    data_dir : Path
        The data folder the config's input paths are relative to.
    data_from : str
        Where `data_dir` came from (``data=``, ``$GEOACCESS_DATA``, ``../shared/data``, ``project data/``).
    """

    config: RegionConfig
    data_dir: Path
    data_from: str = "data="

    @property
    def key(self) -> str:
        """The region's short name, e.g. ``tibet``."""
        return self.config.key

    @property
    def name(self) -> str:
        """The region's display name."""
        return self.config.name

    def __repr__(self) -> str:
        return f"Region({self.key!r}: {self.name}; config {self.config.source}; data {self.data_dir})"


def regions() -> pd.DataFrame:
    """The region configs a name reaches (``$GEOACCESS_REGIONS``, ``./regions``, then the shipped ones).

    Returns
    -------
    DataFrame
        ``name`` (what `load_region` takes) and ``config`` (the file).
    """
    files = _config.region_files()
    return pd.DataFrame({"name": list(files), "config": [str(p) for p in files.values()]})


def load_region(name_or_path: str | os.PathLike | RegionConfig | Region, data: str | os.PathLike | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None, **sections: Mapping[str, Any]) -> Region:
    """Load a region config by name or path, with its data folder and any overrides.

    Parameters
    ----------
    name_or_path : str, path, RegionConfig or Region
        A region name (``"tibet"``, ``"chongqing"``; `regions` lists them) or a ``.toml`` file.
    data : path, optional
        The data folder. Default: ``$GEOACCESS_DATA``, else ``../shared/data``, else ``./data``.
    overrides : dict, optional
        Section → {key: value} replacing values of the config, e.g. ``{"thresholds": {"county": 90}}``.
    **sections : dict
        The same per section as keywords: ``thresholds={"county": 90}``, ``speeds={"default_kph": 25}``,
        ``terrain={"offroad_speed_factor": 0.8}``, ``offroad={"grid_moves": 8}``.

    Returns
    -------
    Region

    Raises
    ------
    ConfigError
        One line naming an unknown region, section or key (with "did you mean"), or a bad value.
    """
    if isinstance(name_or_path, Region):
        cfg, data = name_or_path.config, data or name_or_path.data_dir
    elif isinstance(name_or_path, RegionConfig):
        cfg = name_or_path
    else:
        cfg = _config.load_region(name_or_path)
    cfg = cfg.with_overrides(dict(overrides or {}), **sections)
    data_dir, how = _config.resolve_data_dir(data)
    return Region(cfg, data_dir, how)


def load_inputs(region: Region | str) -> Inputs:
    """Every input layer of a region, validated and in WGS84.

    Returns
    -------
    Inputs
        ``settlements`` (GeoDataFrame, one row per village / community / seat / relocation site),
        ``facilities`` (GeoDataFrame), ``counties`` and ``prefectures`` (polygons), ``population``,
        ``gazetteer``, ``county_codes`` (DataFrames), ``report`` (what was loaded, assumed, repaired,
        warned) and ``paths`` (the files read).
    """
    from .loaders import load_inputs as _load

    region = as_region(region)
    return _load(region.config, region.data_dir)


def as_region(region: Region | str | RegionConfig) -> Region:
    """`region` as a Region (a name or config is loaded with its defaults)."""
    return region if isinstance(region, Region) else load_region(region)


def terrain_flag(mode: Mode) -> bool:
    """Whether the DEM slows travel: `mode` None / "terrain" (yes) or "flat" (no); ConfigError otherwise."""
    if mode not in (None, "terrain", "flat"):
        raise ConfigError(None, f"mode={mode!r}: use 'terrain' (the default: grade and altitude from the DEM) or "
                                "'flat' (ignore the DEM)")
    return mode != "flat"


def engine_name(engine: str | None, allowed: Sequence[str] = ("combined", "network", "raster")) -> str:
    """`engine` (default combined) if it is one of `allowed`; ConfigError otherwise."""
    engine = engine or "combined"
    if engine not in allowed:
        raise ConfigError(None, f"engine={engine!r}: use {', '.join(allowed)}")
    return engine
