"""Region configs: loading by name or path, validation errors, data directory resolution."""

import pytest

from geoaccess.config import available_regions, load_region, resolve_data_dir
from geoaccess.errors import ConfigError

MINIMAL = """
[region]
key = "testland"
name = "Testland"
admin_prefix = "54"
working_crs = "EPSG:32645"
"""


def test_the_four_regions_ship_and_load():
    assert {"tibet", "chongqing", "liaoning", "xishuangbanna"} <= set(available_regions())
    prefixes = {r: load_region(r).admin_prefix for r in ("tibet", "chongqing", "liaoning", "xishuangbanna")}
    assert prefixes == {"tibet": "54", "chongqing": "50", "liaoning": "21", "xishuangbanna": "5328"}


def test_paths_follow_the_region_layout():
    cfg = load_region("liaoning")
    assert cfg.raw["inputs"]["dem"] == "dem/liaoning_dem_30s.tif"
    assert cfg.raw["inputs"]["facilities"] == "facilities/liaoning_facilities.csv"


def test_a_user_adds_a_region_by_writing_one_file(tmp_path):
    p = tmp_path / "testland.toml"
    p.write_text(MINIMAL)
    cfg = load_region(p)
    assert cfg.key == "testland" and cfg.raw["thresholds"]["county"] == 60.0


def test_unknown_region_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown region 'atlantis'.*tibet"):
        load_region("atlantis")


def test_a_misspelt_key_is_named_with_a_suggestion(tmp_path):
    p = tmp_path / "typo.toml"
    p.write_text(MINIMAL + "\n[thresholds]\ncountry = 60\n")
    with pytest.raises(ConfigError, match=r"unknown key 'country' in \[thresholds\].*did you mean 'county'"):
        load_region(p)


def test_an_unknown_section_is_rejected(tmp_path):
    p = tmp_path / "sec.toml"
    p.write_text(MINIMAL + "\n[roadz]\nsource = 'shapefile'\n")
    with pytest.raises(ConfigError, match=r"unknown section \[roadz\].*did you mean 'roads'"):
        load_region(p)


@pytest.mark.parametrize("extra,message", [
    ("\n[thresholds]\ncounty = -5\n", "county = -5"),
    ("\n[speeds.road_class]\nnational = 'fast'\n", "national = 'fast'"),
    ("\n[roads]\nsource = 'carrier pigeon'\n", "source must be"),
    ("\n[terrain]\noffroad_detour_factor = 0.5\n", "offroad_detour_factor = 0.5: must be"),
    ("\n[terrain]\nuphil_loss_per_grade = 2\n", "unknown key 'uphil_loss_per_grade'.*uphill_loss_per_grade"),
    ("\n[inputs]\ngazetteer_crs = 'utm'\n", "unknown coordinate system"),
])
def test_bad_values_are_named(tmp_path, extra, message):
    p = tmp_path / "bad.toml"
    p.write_text(MINIMAL + extra)
    with pytest.raises(ConfigError, match=message):
        load_region(p)


def test_geographic_working_crs_is_rejected(tmp_path):
    p = tmp_path / "geo.toml"
    p.write_text(MINIMAL.replace("EPSG:32645", "EPSG:4326"))
    with pytest.raises(ConfigError, match="projected CRS"):
        load_region(p)


def test_missing_required_key(tmp_path):
    p = tmp_path / "nokey.toml"
    p.write_text(MINIMAL.replace('admin_prefix = "54"\n', ""))
    with pytest.raises(ConfigError, match="missing required key 'admin_prefix'"):
        load_region(p)


def test_broken_toml_is_one_clear_error(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[region\nkey=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_region(p)


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOACCESS_DATA", str(tmp_path))
    assert resolve_data_dir(None) == (tmp_path.resolve(), "$GEOACCESS_DATA")
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_data_dir(other)[0] == other.resolve()
    monkeypatch.delenv("GEOACCESS_DATA")
    path, how = resolve_data_dir(None)
    assert how in ("../shared/data", "project data/") and path.is_dir()


def test_missing_data_dir_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="data directory not found"):
        resolve_data_dir(tmp_path / "nowhere")
