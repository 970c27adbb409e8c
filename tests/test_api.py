"""The library API (`import geoaccess as ga`): the same results as the CLI, overrides, typed config, the tutorial."""
import dataclasses
import io
import json
import os
import sys
import types

import numpy as np
import pandas as pd
import pytest

import geoaccess as ga
from geoaccess.config import DEFAULTS
from geoaccess.errors import ConfigError
from geoaccess.export import csv_table

from conftest import PROJECT_ROOT

API = ["load_region", "load_inputs", "travel_times", "travel_times_at", "gaps", "propose_clinics", "propose_centres",
       "accessibility", "own_unit", "referral", "capacity_coverage", "catchment_areas", "population_grid", "coverage_map",
       "export", "regions", "to_wgs84", "Region", "GapsResult", "GapsSummary"]
CODES = {c: str for c in ("settlement_id", "county_code", "prefecture_code", "township_code", "admin_code", "ur_code",
                          "nearest_clinic_id", "nearest_thc_id", "nearest_county_id", "nearest_pref_id")}


def read_csv(source) -> pd.DataFrame:
    return pd.read_csv(source, dtype=CODES, encoding="utf-8-sig", keep_default_na=True)


def as_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """A (Geo)DataFrame as settlements.csv reads back (the CSV writer of `gaps`)."""
    buf = io.StringIO()
    csv_table(frame).to_csv(buf, index=False)
    buf.seek(0)
    return read_csv(buf)


@pytest.fixture(scope="module")
def tibet(data_dir):
    return ga.load_region("tibet", data=data_dir)


@pytest.fixture(scope="module")
def stricter(data_dir):
    """`gaps` through the API with the county threshold raised to 90 minutes (a config override)."""
    return ga.gaps(ga.load_region("tibet", data=data_dir, thresholds={"county": 90}))


def test_dir_lists_the_public_api_with_numpy_docstrings():
    names = dir(ga)
    assert set(API) <= set(names)
    stray = [n for n in names if not n.startswith("_") and n not in ga.__all__
             and not isinstance(getattr(ga, n), types.ModuleType)]  # submodules once imported are attributes too
    assert not stray
    import geoaccess.catchments  # noqa: F401  (a submodule of the same name as an API call never replaces it)
    import geoaccess.export  # noqa: F401

    assert callable(ga.export) and ga.export.__module__ == "geoaccess.api"
    assert callable(ga.catchment_areas) and ga.catchment_areas.__module__ == "geoaccess.analyses"
    for name in ("load_region", "travel_times", "gaps", "coverage_map", "export", "accessibility"):
        doc = getattr(ga, name).__doc__
        assert "Returns\n    -------" in doc, name


def test_travel_times_equal_the_cli_settlements_csv_row_for_row(tibet, tibet_gaps):
    times = ga.travel_times(tibet)
    cli = read_csv(tibet_gaps[0] / "settlements.csv")
    assert list(times.columns.drop("geometry")) == list(cli.columns)
    assert times.crs.to_epsg() == 4326 and len(times) == len(cli) == 6182
    assert times["settlement_id"].tolist() == cli["settlement_id"].tolist()
    for col in ("t_clinic_min", "t_thc_min", "t_county_min", "t_pref_min", "t_county_low_min", "t_county_high_min"):
        np.testing.assert_allclose(times[col].to_numpy(float), cli[col].to_numpy(float), rtol=0, atol=1e-9,
                                   err_msg=col)
    pd.testing.assert_frame_equal(as_csv(times), cli)


def test_gaps_result_holds_the_tables_and_a_typed_summary(stricter, tibet_gaps):
    s = stricter.summary
    assert isinstance(s, ga.GapsSummary) and not [k for k in s.to_dict() if k.startswith("_")]
    assert s.thresholds_min["county"] == 90.0 and s["region"] == "tibet"
    assert list(stricter.counties.columns[:2]) == ["county_code", "county_name"]
    assert stricter.counties.geometry.notna().all() and len(stricter.counties) == 74
    assert {"settlements", "county_summary", "prefecture_summary", "blank_spots"} <= set(stricter.layers())


def test_the_typed_summary_keeps_entries_it_has_no_field_for(stricter):
    document = {**stricter.summary.to_dict(), "referral": {"median_min": 42.0}}
    summary = ga.GapsSummary.from_mapping(document)
    assert summary.to_dict() == document and summary["referral"] == {"median_min": 42.0}
    assert list(summary)[-1] == "referral" and "extra" not in summary


def test_a_threshold_override_changes_the_gaps_and_shares_not_the_times(stricter, tibet_gaps):
    cli_dir = tibet_gaps[0]
    cli = read_csv(cli_dir / "settlements.csv")
    ours = stricter.settlements
    np.testing.assert_allclose(ours["t_county_min"].to_numpy(float), cli["t_county_min"].to_numpy(float), atol=1e-9)
    t = cli["t_county_min"].to_numpy(float)
    assert ours["gap_county"].to_numpy().tolist() == (~(t <= 90)).tolist()
    assert ours["gap_county"].sum() < cli["gap_county"].sum()
    counties_60 = pd.read_csv(cli_dir / "county_summary.csv", dtype={"county_code": str})
    assert "share_county_90" in stricter.counties and "share_county_90" not in counties_60
    assert "share_county_60" in counties_60 and "share_county_60" not in stricter.counties
    more = stricter.counties.set_index("county_code")["share_county_90"]
    less = counties_60.set_index("county_code")["share_county_60"]
    assert (more.loc[less.index].fillna(0) >= less.fillna(0) - 1e-12).all() and (more.sum() > less.sum())


def test_write_gives_the_cli_output_set(stricter, tmp_path):
    out = stricter.write(tmp_path / "run")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["command"] == "gaps" and manifest["parameters"]["thresholds"]["county"] == 90.0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary == json.loads(json.dumps(stricter.summary.to_dict(), default=str))
    assert "write_s" in summary["timings_s"]
    pd.testing.assert_frame_equal(read_csv(out / "settlements.csv"), as_csv(stricter.settlements))


def test_coverage_map_is_a_folium_map_and_export_writes_shapefiles(stricter, tmp_path):
    import folium

    m = ga.coverage_map(stricter, "county", roads=False)
    assert isinstance(m, folium.Map) and "share_county_90" in m.get_root().render()
    files = ga.export(stricter, tmp_path / "export", formats=["shp"])
    names = {f.name for f in files}
    assert {"settlements.shp", "county_summary.shp", "county_summary_fields.csv"} <= names


def test_travel_times_at_own_points_match_the_settlement_times(stricter):
    s = stricter.settlements
    exact = s[s["loc_quality"].eq("exact")].head(5)
    got = ga.travel_times_at(stricter, exact[["settlement_id", "lon", "lat"]])
    np.testing.assert_allclose(got["t_county_min"].to_numpy(float), exact["t_county_min"].to_numpy(float),
                               rtol=1e-9, atol=1e-6)
    with pytest.raises(ga.InputError, match="point 2 has no valid WGS84"):
        ga.travel_times_at(stricter, pd.DataFrame({"lon": [91.1, np.nan], "lat": [29.6, 29.6]}))


@pytest.mark.parametrize("kwargs, message", [
    ({"thresholds": {"countyy": 90}}, "override: unknown key 'countyy' in [thresholds] (did you mean 'county'?)"),
    ({"thresholdz": {"county": 90}}, "override: unknown section 'thresholdz' (did you mean 'thresholds'?)"),
    ({"terrain": {"tobler_max": 3}}, "[terrain] unknown key 'tobler_max' (did you mean 'tobler_max_kph'?)"),
    ({"thresholds": {"county": "soon"}}, "override of tibet.toml: [thresholds] county = 'soon': must be a number"),
    ({"thresholds": {"county": 20}}, "thc = 30 min is above county = 20 min"),
    ({"speeds": {"default_kph": 900}}, "[speeds] default_kph = 900: at most 200"),
])
def test_bad_overrides_are_one_line_config_errors(kwargs, message, data_dir):
    with pytest.raises(ConfigError) as exc:
        ga.load_region("tibet", data=data_dir, **kwargs)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_overrides_as_a_dict_equal_keywords_and_leave_the_loaded_config_alone(data_dir):
    base = ga.load_region("tibet", data=data_dir)
    a = ga.load_region(base, overrides={"speeds": {"default_kph": 25}, "offroad": {"grid_moves": 8}})
    b = ga.load_region(base, speeds={"default_kph": 25}, offroad={"grid_moves": 8})
    assert a.config.raw == b.config.raw
    assert a.config.sections.speeds.default_kph == 25.0 and a.config.sections.offroad.grid_moves == 8
    assert base.config.sections.speeds.default_kph == 30.0 and base.config.sections.offroad.grid_moves == 16


def test_typed_sections_cover_every_config_key_and_read_as_mappings(tibet):
    sections = tibet.config.sections
    from geoaccess.sections import FREE_FORM_SECTIONS

    for name, defaults in DEFAULTS.items():
        if name == "terrain":
            continue
        if name in FREE_FORM_SECTIONS:  # named tables (scenarios, modes): read-only mappings as the config gives them
            assert dict(getattr(sections, name)) == tibet.config.section(name), name
            continue
        typed = getattr(sections, name)
        assert [f.name for f in dataclasses.fields(typed)] == list(defaults), name
        assert typed.to_dict() == tibet.config.section(name), name
        assert dict(typed) == tibet.config.section(name), name
    assert sections.thresholds.county == sections.thresholds["county"] == tibet.config.thresholds["county"]
    assert sections.terrain.offroad_detour_factor == tibet.config.section("terrain").get("offroad_detour_factor", 1.3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sections.thresholds.county = 5


def test_the_cli_threshold_flag_travels_inside_the_config(data_dir, tmp_path, monkeypatch):
    """`--threshold` becomes a config override, so every path (serial, partitioned, Dask) sees one object."""
    from geoaccess import api, commands

    seen = []
    real = api.gaps

    def spy(region, *args, **kwargs):
        seen.append(region.config.thresholds["county"])
        raise ConfigError(None, "stop here")

    monkeypatch.setattr(api, "gaps", spy)
    with pytest.raises(ConfigError, match="stop here"):
        commands.gaps("tibet", str(data_dir), str(tmp_path / "out"), thresholds=["county=75"])
    assert seen == [75.0] and real is not spy


@pytest.mark.skipif(sys.platform == "win32", reason="the kernel runs under the test interpreter")
def test_the_tutorial_notebook_runs(data_dir, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(PROJECT_ROOT / "docs" / "tutorial.ipynb", as_version=4)
    # the kernel imports this checkout's geoaccess (not another install), reads the real data, writes into tmp_path
    path = os.pathsep.join([str(PROJECT_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env = {"GEOACCESS_DATA": str(data_dir), "GEOACCESS_TUTORIAL_DIR": str(tmp_path / "work"), "PYTHONPATH": path}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                        for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "settlements.shp" in outputs and "t_county_min" in outputs
    assert (tmp_path / "work" / "export" / "county_summary.shp").is_file()
