"""GIS exports: shapefile and GeoPackage round trips, field mapping, encodings, CRS, atomicity."""
from __future__ import annotations

import importlib
import logging
import sqlite3

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import Point, box

from geoaccess.errors import InputError
from geoaccess.schema import SETTLEMENT_COLUMNS

# the GIS writer module: the attribute `geoaccess.export` is the API call `ga.export(result, folder, formats=…)`
export = importlib.import_module("geoaccess.export")

LONG_NAME = "扎西岗乡" * 30  # 120 characters = 360 bytes of UTF-8
FORMATS_ALL = ("gpkg", "shp", "csv", "geojson")


@pytest.fixture
def settlements() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({
        "settlement_id": ["540102001001", "540102001002", "540124100201", "R01"],
        "name": ["八廓街道冲赛康社区", "拉萨河村", "曲水县达嘎乡", "森布日极高海拔生态搬迁安置区"],
        "kind": ["village", "village", "township_seat", "relocation"],
        "loc_quality": ["exact", "township", "exact", "village"],
        "population": [1200.0, np.nan, 830.0, 4058.0],
        "t_clinic_min": [4.5, 12.25, np.nan, 30.0],
        "t_county_min": [10.0, 55.5, np.nan, 95.0],
        "nearest_clinic_id": ["F540102000000", "F540102000000", None, "F540122100000"],
        "nearest_county_id": ["F540102000000", "F540102000000", None, "F540122000000"],
        "status": ["ok", "ok", "unreachable", "ok"],
        "gap_county": [False, False, True, True],
        "remark_for_planners": ["", "位置近似", None, "易地扶贫搬迁"],
    }, geometry=[Point(91.1325, 29.6531), Point(91.0, 29.6), Point(90.7382, 29.3545), Point(90.9765, 29.3011)],
        crs="EPSG:4326")


@pytest.fixture
def layers(settlements) -> dict:
    county = gpd.GeoDataFrame({"county_code": ["540102"], "county_name": ["城关区"], "share_county_60": [0.82]},
                              geometry=[box(90.9, 29.5, 91.3, 29.8)], crs="EPSG:4326")
    blank = pd.DataFrame({"unit_code": ["540124100000"], "unit_name": ["达嘎乡"], "unit_level": ["township"],
                          "rule": ["thc_per_township 乡镇卫生院全覆盖"], "detail": ["no township health centre"]})
    return {"settlements": settlements, "county_summary": county, "blank_spots": blank}


def back_to_columns(shp: gpd.GeoDataFrame, fields_csv) -> gpd.GeoDataFrame:
    mapping = pd.read_csv(fields_csv, encoding="utf-8-sig", dtype=str)
    return shp.rename(columns=dict(zip(mapping["field"], mapping["column"])))


def test_shapefile_round_trip_keeps_rows_values_and_chinese(tmp_path, settlements):
    export.export_layers({"settlements": settlements}, tmp_path, formats=("shp",))
    back = back_to_columns(pyogrio.read_dataframe(tmp_path / "settlements.shp"), tmp_path / "settlements_fields.csv")
    assert len(back) == len(settlements)
    assert list(back.columns) == list(settlements.columns)
    assert back["name"].tolist() == settlements["name"].tolist()
    for col in ("population", "t_clinic_min", "t_county_min"):
        np.testing.assert_allclose(back[col].astype(float), settlements[col], equal_nan=True)
    assert back["gap_county"].tolist() == [0, 0, 1, 1]
    assert back.geometry.geom_equals_exact(settlements.geometry, 1e-9).all()


def test_shapefile_field_names_come_from_the_schema(tmp_path, settlements):
    export.export_layers({"settlements": settlements}, tmp_path, formats=("shp",))
    fields = list(pyogrio.read_info(tmp_path / "settlements.shp")["fields"])
    assert all(len(f) <= 10 for f in fields) and len(set(fields)) == len(fields)
    assert fields[:3] == [SETTLEMENT_COLUMNS[c].alias for c in ("settlement_id", "name", "kind")]
    assert "near_clin" in fields and "t_clinic" in fields and "remark_for" in fields


def test_fields_mapping_file_is_complete(tmp_path, settlements):
    export.export_layers({"settlements": settlements}, tmp_path, formats=("shp",))
    mapping = pd.read_csv(tmp_path / "settlements_fields.csv", encoding="utf-8-sig", dtype=str).fillna("")
    assert list(mapping.columns) == ["field", "column", "unit", "description"]
    assert mapping["column"].tolist() == [c for c in settlements.columns if c != "geometry"]
    assert mapping["field"].tolist() == list(pyogrio.read_info(tmp_path / "settlements.shp")["fields"])
    row = mapping.set_index("column").loc["t_clinic_min"]
    assert (row["field"], row["unit"]) == ("t_clinic", "minutes") and "primary-care" in row["description"]


def test_shapefile_declares_utf8_and_wgs84(tmp_path, settlements):
    export.export_layers({"settlements": settlements}, tmp_path, formats=("shp",))
    assert (tmp_path / "settlements.cpg").read_text().strip() == "UTF-8"
    assert "WGS_1984" in (tmp_path / "settlements.prj").read_text()
    assert pyogrio.read_info(tmp_path / "settlements.shp")["crs"] == "EPSG:4326"


def test_long_text_is_cut_to_254_bytes_with_a_warning(tmp_path, settlements, caplog):
    settlements.loc[0, "name"] = LONG_NAME
    with caplog.at_level(logging.WARNING, logger="geoaccess"):
        export.export_layers({"settlements": settlements}, tmp_path, formats=("shp", "gpkg"))
    assert "254 bytes" in caplog.text and "'name'" in caplog.text
    cut = pyogrio.read_dataframe(tmp_path / "settlements.shp")["name"][0]
    assert len(cut.encode("utf-8")) <= 254 and LONG_NAME.startswith(cut) and len(cut) == 84
    assert pyogrio.read_dataframe(tmp_path / "geoaccess.gpkg", layer="settlements")["name"][0] == LONG_NAME


def test_geopackage_holds_every_layer_with_full_names(tmp_path, layers, settlements):
    export.export_layers(layers, tmp_path, formats=("gpkg",), region="tibet")
    listed = dict(pyogrio.list_layers(tmp_path / "geoaccess.gpkg").tolist())
    assert listed == {"settlements": "Point", "county_summary": "Polygon", "blank_spots": None}
    back = pyogrio.read_dataframe(tmp_path / "geoaccess.gpkg", layer="settlements")
    assert list(back.columns) == list(settlements.columns) and back.crs == "EPSG:4326"
    assert back["name"].tolist() == settlements["name"].tolist()
    np.testing.assert_allclose(back["t_clinic_min"], settlements["t_clinic_min"], equal_nan=True)
    assert back["gap_county"].tolist() == settlements["gap_county"].tolist()
    table = pyogrio.read_dataframe(tmp_path / "geoaccess.gpkg", layer="blank_spots")
    assert table["rule"][0] == "thc_per_township 乡镇卫生院全覆盖"
    with sqlite3.connect(tmp_path / "geoaccess.gpkg") as con:
        descriptions = dict(con.execute("select table_name, description from gpkg_contents"))
    assert descriptions["settlements"] == "geoaccess tibet: settlements"


def test_csv_is_utf8_with_bom_and_lon_lat(tmp_path, layers):
    export.export_layers(layers, tmp_path, formats=("csv",))
    raw = (tmp_path / "settlements.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and "拉萨河村".encode() in raw
    back = pd.read_csv(tmp_path / "settlements.csv", encoding="utf-8-sig")
    assert back.columns[0] == "settlement_id" and {"lon", "lat"} <= set(back.columns)
    assert back["lon"].tolist() == pytest.approx([91.1325, 91.0, 90.7382, 90.9765])
    county = pd.read_csv(tmp_path / "county_summary.csv", encoding="utf-8-sig", dtype={"county_code": str})
    assert list(county.columns) == ["county_code", "county_name", "share_county_60"]


def test_geojson_for_spatial_layers_only(tmp_path, layers):
    written = export.export_layers(layers, tmp_path, formats=("geojson",))
    assert sorted(p.name for p in written) == ["county_summary.geojson", "settlements.geojson"]
    back = gpd.read_file(tmp_path / "settlements.geojson")
    assert back["name"].tolist() == layers["settlements"]["name"].tolist() and back.crs == "EPSG:4326"


def test_table_layer_becomes_a_dbf(tmp_path, layers):
    export.export_layers({"blank_spots": layers["blank_spots"]}, tmp_path, formats=("shp",))
    back = pyogrio.read_dataframe(tmp_path / "blank_spots.dbf")
    assert back["unit_name"].tolist() == ["达嘎乡"] and (tmp_path / "blank_spots_fields.csv").exists()


def test_crs_option_reprojects_every_format(tmp_path, settlements):
    export.export_layers({"settlements": settlements}, tmp_path, crs="EPSG:32646", formats=FORMATS_ALL)
    assert pyogrio.read_info(tmp_path / "settlements.shp")["crs"] == "EPSG:32646"
    back = pyogrio.read_dataframe(tmp_path / "geoaccess.gpkg", layer="settlements")
    expected = settlements.to_crs("EPSG:32646").geometry
    assert back.crs == "EPSG:32646" and back.geometry.geom_equals_exact(expected, 0.01).all()
    assert 300_000 < back.geometry.x[0] < 800_000
    assert gpd.read_file(tmp_path / "settlements.geojson").crs == "EPSG:32646"
    csv = pd.read_csv(tmp_path / "settlements.csv", encoding="utf-8-sig")
    assert csv["lon"][0] == pytest.approx(91.1325)  # CSV coordinates stay WGS84 degrees


def test_mixed_geometry_is_split_into_one_shapefile_per_kind(tmp_path):
    mixed = gpd.GeoDataFrame({"unit_name": ["达嘎乡", "双湖县", "无位置"]},
                             geometry=[Point(90.7, 29.3), box(88, 33, 90, 35), None], crs="EPSG:4326")
    written = export.write_shapefile(mixed, tmp_path, "blank_spots")
    assert sorted(p.name for p in written) == ["blank_spots_point.shp", "blank_spots_polygon.shp"]
    rows = sum(len(pyogrio.read_dataframe(p)) for p in written)
    assert rows == 3


def test_failure_mid_export_leaves_no_half_written_output(tmp_path, layers, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "settlements.csv").write_text("old", encoding="utf-8")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_shapefile", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export_layers(layers, out, formats=FORMATS_ALL)
    assert [p.name for p in out.iterdir()] == ["settlements.csv"]
    assert (out / "settlements.csv").read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(OSError):
        export.export_layers(layers, tmp_path / "new", formats=FORMATS_ALL)
    assert not (tmp_path / "new").exists()


def test_stale_spatial_index_of_an_older_shapefile_is_removed(tmp_path, settlements):
    (tmp_path / "settlements.qix").write_bytes(b"old index")
    export.export_layers({"settlements": settlements}, tmp_path, formats=("shp",))
    assert not (tmp_path / "settlements.qix").exists() and (tmp_path / "settlements.shp").exists()


def test_bad_format_or_crs_is_a_clear_error(tmp_path, layers):
    with pytest.raises(InputError, match="kml"):
        export.export_layers(layers, tmp_path, formats=("kml",))
    with pytest.raises(InputError, match="unknown CRS"):
        export.export_layers(layers, tmp_path, crs="EPSG:999999")


def test_the_field_table_in_the_docs_is_the_schema():
    from conftest import PROJECT_ROOT
    from geoaccess.schema import schema_markdown

    assert schema_markdown() in (PROJECT_ROOT / "docs" / "maps.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- the CSV writer

def _pandas_bytes(frame, tmp_path):
    frame.to_csv(tmp_path / "pandas.csv", index=False, encoding="utf-8-sig")
    return (tmp_path / "pandas.csv").read_bytes()


def test_csv_writer_gives_the_bytes_pandas_gives_on_awkward_values(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    floats = rng.normal(0, 1e3, n) * 10.0 ** rng.integers(-12, 18, n)
    floats[::7] = np.nan
    floats[1], floats[2], floats[3], floats[4], floats[5] = -0.0, 0.0, np.inf, -np.inf, 1e16
    names = rng.choice(["拉萨市", 'say "hi"', "a,b", "line\nbreak", "cr\rhere", "", " lead", "普通", None], n)
    frame = pd.DataFrame({
        "t_min": floats,
        "whole": np.round(floats),                  # integral floats print as 3.0
        "count": rng.integers(-5, 10 ** 12, n),
        "flag": rng.random(n) < 0.5,
        "name": pd.Series(names, dtype=object),
        "text": pd.Series(names).astype("str"),      # pandas' own string dtype, NaN for missing
        "mixed": pd.Series([1.5, "x", None, True] * (n // 4), dtype=object),
        "small": rng.integers(0, 3, n).astype(np.uint8),
        "a,quoted \"name\"": 1.0,
    })
    export.write_csv(frame, tmp_path / "ours.csv")
    assert (tmp_path / "ours.csv").read_bytes() == _pandas_bytes(frame, tmp_path)


def test_csv_writer_hands_other_kinds_to_pandas_unchanged(tmp_path):
    frame = pd.DataFrame({"when": pd.to_datetime(["2026-01-01", None]), "level": pd.Categorical(["a", "b"]),
                          "f32": np.array([0.1, 2.5], np.float32), "n": pd.array([1, None], dtype="Int64")})
    for cols in (["when", "n"], ["level", "n"], ["f32", "n"], ["n"], ["f32"]):
        export.write_csv(frame[cols], tmp_path / "ours.csv")
        assert (tmp_path / "ours.csv").read_bytes() == _pandas_bytes(frame[cols], tmp_path), cols
    empty = frame.iloc[:0]
    export.write_csv(empty, tmp_path / "ours.csv")
    assert (tmp_path / "ours.csv").read_bytes() == _pandas_bytes(empty, tmp_path)


def test_csv_writer_gives_the_bytes_pandas_gives_on_every_layer_of_a_real_run(tmp_path, tibet_gaps):
    out, _ = tibet_gaps
    checked = 0
    for path in sorted(out.glob("*.csv")):
        frame = pd.read_csv(path, keep_default_na=True, low_memory=False)
        export.write_csv(frame, tmp_path / "ours.csv")
        assert (tmp_path / "ours.csv").read_bytes() == _pandas_bytes(frame, tmp_path), path.name
        checked += 1
    assert checked >= 8


def test_a_large_layer_s_shapefile_written_beside_in_a_second_process_is_the_same_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    n = 300
    frame = gpd.GeoDataFrame({"settlement_id": [f"S{i:05d}" for i in range(n)], "name": rng.choice(["拉萨", "a,b"], n),
                              "t_county_min": rng.uniform(0, 500, n)},
                             geometry=gpd.points_from_xy(rng.uniform(80, 99, n), rng.uniform(27, 36, n)), crs=4326)
    (tmp_path / "here").mkdir()
    (tmp_path / "beside").mkdir()
    with export.shapefile_beside(frame, tmp_path / "here", "settlements") as wait:
        wait()
    monkeypatch.setattr(export, "SHAPEFILE_BESIDE_ROWS", 100)  # this layer now goes to a second process
    with export.shapefile_beside(frame, tmp_path / "beside", "settlements") as wait:
        assert callable(wait)
    names = sorted(p.name for p in (tmp_path / "here").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "beside").iterdir())
    assert {"settlements.shp", "settlements.dbf", "settlements_fields.csv"} <= set(names)
    for name in names:
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "beside" / name).read_bytes(), name


def test_a_shapefile_that_fails_beside_raises_its_own_error(tmp_path, monkeypatch):
    frame = gpd.GeoDataFrame({"x": [1.0] * 5}, geometry=gpd.points_from_xy([90.0] * 5, [30.0] * 5), crs=4326)
    monkeypatch.setattr(export, "SHAPEFILE_BESIDE_ROWS", 2)
    with pytest.raises(Exception) as err:
        with export.shapefile_beside(frame, tmp_path / "no such folder", "settlements") as wait:
            wait()
    assert "no such folder" in str(err.value) or "No such file" in str(err.value)
