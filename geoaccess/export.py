"""GIS exports: GeoPackage, shapefiles with the schema's ≤10-character field names, CSV and GeoJSON."""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from pathlib import Path
from typing import Mapping

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from pyproj import CRS
from pyproj.exceptions import CRSError

from geoaccess._atomic import atomic_files, test_pause
from geoaccess.errors import InputError
from geoaccess.schema import column_info, shapefile_aliases

log = logging.getLogger("geoaccess")

FORMATS = ("gpkg", "shp", "csv", "geojson")
GPKG_NAME = "geoaccess.gpkg"
DBF_TEXT_BYTES = 254
#: Sidecar files a GIS may have built for an older shapefile of the same name; stale ones are removed.
STALE_SIDECARS = (".qix", ".sbn", ".sbx", ".fix", ".shp.xml", ".cpg", ".prj")
_GEOMETRY_FAMILY = {"MultiPoint": "Point", "MultiLineString": "LineString", "MultiPolygon": "Polygon"}


def export_layers(
    layers: Mapping[str, pd.DataFrame],
    out_dir: str | os.PathLike,
    *,
    formats=FORMATS,
    crs: str | int | CRS = "EPSG:4326",
    region: str | None = None,
) -> list[Path]:
    """Write every layer in every format into ``out_dir``, all or nothing.

    Files: ``geoaccess.gpkg`` (one layer per key, full column names); ``{layer}.shp`` with its
    ``.shx/.dbf/.prj/.cpg`` (field names ≤10 characters from ``schema.shapefile_aliases``, UTF-8) and
    ``{layer}_fields.csv`` (field → column, unit, meaning); ``{layer}.csv`` (UTF-8 with BOM so Excel opens
    Chinese correctly; point layers carry WGS84 ``lon``/``lat``, other geometry is left out);
    ``{layer}.geojson``. A layer without geometry becomes a GeoPackage table, a ``.dbf`` and a CSV.

    Parameters
    ----------
    layers : dict
        Layer name → GeoDataFrame (or DataFrame for tables). A layer without a CRS is taken as WGS84.
    out_dir : path
        Output folder (created). Files are written into a temporary folder beside it, then moved in
        (inside a staging folder of ``_atomic.atomic_output_dir`` they are written in place).
    formats : sequence of str
        Any of ``gpkg``, ``shp``, ``csv``, ``geojson``.
    crs : CRS-like
        Output coordinate reference system for gpkg, shp and geojson (default WGS84).
    region : str, optional
        Region key, recorded as the GeoPackage layers' description.

    Returns
    -------
    list of Path
        The files written, in ``out_dir``.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise InputError(None, f"unknown export format {', '.join(unknown)} (use {', '.join(FORMATS)})")
    target = output_crs(crs)
    out_dir = Path(out_dir)
    with atomic_files(out_dir, stale=_stale_sidecars) as tmp:
        before = {p.name for p in tmp.iterdir()}
        for k, (name, layer) in enumerate(layers.items()):
            if k == 1:
                test_pause("during-write")
            frame = _project(layer, target, name)
            spatial = isinstance(frame, gpd.GeoDataFrame)
            if "gpkg" in formats:
                options = {"DESCRIPTION": f"geoaccess {region}: {name}"} if region else None
                with _unsynced_sqlite():
                    pyogrio.write_dataframe(frame, tmp / GPKG_NAME, layer=name, driver="GPKG", layer_options=options)
            if "shp" in formats:
                write_shapefile(frame, tmp, name)
            if "csv" in formats:
                write_csv(csv_table(layer), tmp / f"{name}.csv")
            if "geojson" in formats and spatial:
                rfc = {"RFC7946": "YES"} if target.to_epsg() == 4326 else None
                pyogrio.write_dataframe(frame, tmp / f"{name}.geojson", driver="GeoJSON", layer_options=rfc)
        written = sorted({p.name for p in tmp.iterdir()} - before)
    log.info("export: %d layers → %s (%s)", len(layers), out_dir, ", ".join(formats))
    return [out_dir / n for n in written]


#: A layer of at least this many rows has its shapefile written in a second process while the caller writes the
#: rest (GDAL's shapefile writer holds the GIL: the national settlements take ~40 s).
SHAPEFILE_BESIDE_ROWS = 100_000


@contextlib.contextmanager
def shapefile_beside(frame: pd.DataFrame, folder: str | os.PathLike, name: str, crs="EPSG:4326"):
    """Write ``{name}.shp`` (:func:`write_shapefile`) into ``folder`` while the caller writes other files.

    At :data:`SHAPEFILE_BESIDE_ROWS` rows or more it is written in a spawned process, else here and now. Yields a
    function that waits for it and raises its error; the block never ends with the process still writing.
    """
    import concurrent.futures as cf
    import multiprocessing

    frame = _project(frame, output_crs(crs), name)
    if len(frame) < SHAPEFILE_BESIDE_ROWS:
        write_shapefile(frame, Path(folder), name)
        yield lambda: None
        return
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = pool.submit(write_shapefile, frame, Path(folder), name)
        yield done.result
        done.result()


@contextlib.contextmanager
def _unsynced_sqlite():
    """GeoPackage writes without SQLite's own fsync per transaction (twice as fast).

    Safe here: a GeoPackage is written into a staging folder, and the one atomic writer fsyncs every file
    before it publishes the set (``_atomic``), so a crash never leaves a half-written file in view.
    """
    before = pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS")
    pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": "OFF"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": before})


def _project(layer: pd.DataFrame, crs: CRS, name: str) -> pd.DataFrame:
    """The layer in ``crs``; a plain DataFrame when it has no geometry."""
    if not isinstance(layer, gpd.GeoDataFrame) or layer.geometry.name not in layer or layer.geometry.isna().all():
        return pd.DataFrame(layer).drop(columns="geometry", errors="ignore")
    if layer.crs is None:
        log.info("export: layer %s has no CRS; taken as WGS84", name)
        layer = layer.set_crs("EPSG:4326")
    return layer.to_crs(crs)


def shapefile_table(frame: pd.DataFrame, name: str = "layer") -> tuple[pd.DataFrame, dict[str, str]]:
    """The layer as a shapefile can hold it, and its column → field-name mapping.

    Field names from ``schema.shapefile_aliases`` (≤10 characters, unique); booleans become 0/1 integers;
    text is cut to 254 bytes of UTF-8 (a Chinese character is 3 bytes) with a warning; no column is lost.
    """
    geometry = frame.geometry.name if isinstance(frame, gpd.GeoDataFrame) else None
    aliases = shapefile_aliases([c for c in frame.columns if c != geometry], name)
    out = frame.copy()
    for col in aliases:
        values = out[col]
        if pd.api.types.infer_dtype(values, skipna=True) == "boolean":
            out[col] = pd.array(values, dtype="boolean").astype("Int8")
        elif not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_datetime64_any_dtype(values):
            text = values.where(values.isna(), values.astype(str))
            longest = text.str.len().max()  # characters (NaN when the column is empty)
            if not longest * 4 > DBF_TEXT_BYTES:  # UTF-8 takes at most 4 bytes a character: none can be too long
                out[col] = text
                continue
            encoded = text.dropna().str.encode("utf-8")
            long = encoded[encoded.str.len() > DBF_TEXT_BYTES]
            if len(long):
                log.warning("shapefile %s: %d values of '%s' exceed %d bytes of UTF-8 and were cut "
                            "(the GeoPackage and CSV keep them whole)", name, len(long), col, DBF_TEXT_BYTES)
                text.loc[long.index] = long.str[:DBF_TEXT_BYTES].str.decode("utf-8", errors="ignore")
            out[col] = text
    return out.rename(columns=aliases), aliases


def fields_table(aliases: Mapping[str, str], layer: str) -> pd.DataFrame:
    """``field, column, unit, description`` for every shapefile field, from the schema where it is known."""
    info = {col: column_info(col, layer) for col in aliases}
    rows = [(alias, col, info[col].unit if info[col] else "", info[col].description if info[col] else "")
            for col, alias in aliases.items()]
    return pd.DataFrame(rows, columns=["field", "column", "unit", "description"])


def write_shapefile(frame: pd.DataFrame, folder: Path, name: str) -> list[Path]:
    """``{name}.shp`` (+ ``.shx .dbf .prj .cpg``, UTF-8) and ``{name}_fields.csv`` in ``folder``.

    A layer mixing points, lines and polygons is split into ``{name}_point.shp`` etc., since a shapefile
    holds one kind. Returns the ``.shp`` (or ``.dbf`` for a table) paths.
    """
    table, aliases = shapefile_table(frame, name)
    write_csv(fields_table(aliases, name), folder / f"{name}_fields.csv")
    if not isinstance(table, gpd.GeoDataFrame):
        pyogrio.write_dataframe(table, folder / f"{name}.dbf", driver="ESRI Shapefile", encoding="UTF-8")
        return [folder / f"{name}.dbf"]
    kinds = table.geom_type.map(lambda t: _GEOMETRY_FAMILY.get(t, t))
    families = list(kinds.dropna().unique())
    if len(families) <= 1:
        parts = {name: table}
    else:  # rows without geometry go with the first kind, so none is lost
        parts = {f"{name}_{k.lower()}": table[(kinds == k) | (kinds.isna() & (k == families[0]))] for k in families}
    for stem, part in parts.items():
        pyogrio.write_dataframe(part, folder / f"{stem}.shp", driver="ESRI Shapefile", encoding="UTF-8")
    return [folder / f"{stem}.shp" for stem in parts]


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """``table`` as CSV: UTF-8 with a BOM (Excel reads Chinese correctly), no index, empty cells for missing values.

    The bytes are those of ``table.to_csv(path, index=False, encoding="utf-8-sig")`` (tested), written about
    four times faster: each column's distinct values are formatted once (the national settlements table has
    13.5 M numbers but 1.7 M distinct ones). Columns of other kinds (dates, categories) take pandas' own writer.
    """
    columns = [_csv_column(table.iloc[:, j]) for j in range(table.shape[1])]
    if table.shape[1] < 2 or any(c is None for c in columns):  # (one column: csv quotes an empty row as "")
        table.to_csv(path, index=False, encoding="utf-8-sig")
        return
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        fh.write(",".join(map(_csv_field, map(str, table.columns))) + "\n")
        if len(table):
            fh.writelines(",".join(row) + "\n" for row in zip(*columns))


def _csv_column(values: pd.Series) -> list[str] | None:
    """The column's cells as CSV text ('' for missing), or None for a kind left to pandas."""
    kind = values.dtype.kind
    if kind not in "fiubOT" or (kind == "f" and values.dtype != np.float64) or isinstance(values.dtype, pd.CategoricalDtype):
        return None
    v = values.to_numpy()
    if kind in "fiub" and v.dtype.kind in "fiub":
        distinct, index = np.unique(v, return_inverse=True)
        text = [("" if kind == "f" and np.isnan(x) else repr(x) if kind == "f" else str(x)) for x in distinct.tolist()]
        out = list(map(text.__getitem__, index.ravel().tolist()))
        if kind == "f":  # np.unique takes -0.0 and 0.0 as one value; pandas writes each as it is
            for i in np.flatnonzero(v == 0).tolist():
                out[i] = repr(v[i].item())
        return out
    if kind in "fiub":  # a nullable integer or boolean column: pandas' writer
        return None
    missing = pd.isna(values).to_numpy()
    out = list(map(_csv_field, map(str, v.tolist())))
    for i in np.flatnonzero(missing).tolist():
        out[i] = ""
    return out


def _csv_field(text: str) -> str:
    """One field as the csv module writes it (quoted only when it holds a delimiter, quote or line break)."""
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([text])
        return buf.getvalue()[:-1]
    return text


def csv_table(layer: pd.DataFrame) -> pd.DataFrame:
    """The layer as a table: point layers get WGS84 ``lon``/``lat`` (if missing); other geometry is dropped."""
    if not isinstance(layer, gpd.GeoDataFrame) or layer.geometry.name not in layer or layer.geometry.isna().all():
        return pd.DataFrame(layer).drop(columns="geometry", errors="ignore")
    table = pd.DataFrame(layer.drop(columns=layer.geometry.name))
    if layer.geom_type.dropna().eq("Point").all() and not {"lon", "lat"} <= set(table.columns):
        pts = layer.geometry if layer.crs is None else layer.geometry.to_crs("EPSG:4326")
        table["lon"], table["lat"] = pts.x, pts.y
    return table


def output_crs(crs: str | int | CRS) -> CRS:
    """The CRS to export in: projected or geographic only (a geocentric or vertical CRS has no map coordinates)."""
    try:
        target = CRS.from_user_input(crs)
    except CRSError as exc:
        raise InputError(None, f"unknown CRS {crs!r}: {exc}") from None
    if not (target.is_projected or target.is_geographic):
        kind = "geocentric" if target.is_geocentric else target.type_name
        raise InputError(None, f"--crs {crs}: a {kind} CRS ({target.name}) has no map coordinates; use a projected "
                               f"or geographic CRS, e.g. EPSG:4326 or a UTM zone")
    return target


def _stale_sidecars(new: set[str]) -> list[str]:
    """Sidecars a GIS may have built for an older shapefile of a name now rewritten (e.g. a ``.qix`` index)."""
    return [shp[:-4] + ext for shp in new if shp.endswith(".shp") for ext in STALE_SIDECARS
            if shp[:-4] + ext not in new]
