"""Input loaders: gazetteer settlements, settlement tables, relocation sites, facility registers,
boundaries and census population — each returned in WGS84 with the schema in docs/DESIGN.md."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from ._io import check_unique, data_row, numeric_column, read_table, require_columns
from .config import RegionConfig
from .coords import normalise_system, to_wgs84
from .errors import ConfigError, InputError
from .progress import counted, step
from .schema import COUNTY_HOSPITAL_LEVELS, SETTLEMENT_KINDS, normalise_level

log = logging.getLogger("geoaccess")

GAZETTEER_COLUMNS = ["code", "parent", "name", "level", "rank", "adcode", "post", "area", "ur_code", "muni",
                     "virtual", "dummy", "lon", "lat", "wkb", "province", "city", "county", "town", "village"]
GAZETTEER_LEVELS = ("province", "city", "county", "town", "village")
#: 城乡分类代码: 111 主城区, 112 城乡结合区, 121 镇中心区, 122 镇乡结合区, 123 特殊区域 (urban); 210 乡中心区, 220 村庄.
URBAN_UR_CODES = ("111", "112", "121", "122", "123")
RURAL_UR_CODES = ("210", "220")
_SUFFIXES = ("土家族苗族自治县", "苗族土家族自治县", "土家族自治县", "傣族自治州", "自治县", "自治旗", "特区", "林区",
             "县", "区", "市", "旗")
_UNIT_SUFFIXES = ("社区居民委员会", "村民委员会", "社区居委会", "村委会", "居委会", "委会", "办事处")


@dataclass
class LoadReport:
    """What was loaded, converted, approximated and assumed, layer by layer (for logs and summaries)."""

    layers: dict[str, dict] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    #: Problems in the inputs the run went on with, each naming the file, the rows and the effect (rows,
    #: people); printed by every command and kept in summary.json "warnings".
    warnings: list[str] = field(default_factory=list)

    def add(self, layer: str, **facts) -> None:
        self.layers.setdefault(layer, {}).update(facts)

    def warn(self, text: str) -> None:
        """Record (once) and log a problem with the inputs that the run goes on with."""
        if text not in self.warnings:
            self.warnings.append(text)
            log.warning(text)

    def assume(self, text: str) -> None:
        if text not in self.assumptions:
            self.assumptions.append(text)
            log.debug("assumed: %s", text)  # every report prints its assumptions: logged in detail mode only


@dataclass
class Inputs:
    """Every input layer of a region run, in WGS84, plus the load report."""

    settlements: gpd.GeoDataFrame
    facilities: gpd.GeoDataFrame | None
    counties: gpd.GeoDataFrame | None
    prefectures: gpd.GeoDataFrame | None
    population: pd.DataFrame | None
    gazetteer: pd.DataFrame | None
    county_codes: pd.DataFrame  # 2016 code -> current code, with the method that matched
    report: LoadReport
    paths: dict[str, Path] = field(default_factory=dict)


#: What a position of exactly (0, 0) is: an empty cell written as 0, not a place in China.
NULL_ISLAND = "not a real position (an empty cell exported as 0?): leave lon/lat empty when unknown"


def _warn(report: LoadReport | None, text: str) -> None:
    """A warning into the load report when there is one (summary.json), else the log."""
    if report is not None:
        report.warn(text)
    else:
        log.warning(text)


def _check_null_island(lon: np.ndarray, lat: np.ndarray, path: Path, df: pd.DataFrame) -> None:
    """InputError naming the first row at exactly lon 0, lat 0."""
    zero = np.flatnonzero((lon == 0) & (lat == 0))
    if zero.size:
        raise InputError(path, f"lon 0, lat 0 is {NULL_ISLAND}", row=data_row(df, zero[0]), column="lon")


# --------------------------------------------------------------------------- gazetteer

def load_gazetteer(folder: str | Path, prefix: str, *, repairs: list[str] | None = None,
                   report: LoadReport | None = None) -> pd.DataFrame:
    """All gazetteer rows whose code starts with `prefix`, from `{folder}/{prefix}*.csv` (no header).

    Every row of those files must hold a 12-digit code (a damaged row is an error, never dropped), and
    in a file named by a code (`540121.csv`) every row must belong to that unit: a code outside it (a
    typo) is an error naming the file and row, not a row that silently leaves the region. Rows of files
    with other names whose code is outside the region are reported (count and first row), not used.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "gazetteer folder not found")
    files = sorted(folder.glob(f"{prefix[:2]}*.csv"))
    if not files:
        raise InputError(folder, f"no gazetteer files {prefix[:2]}*.csv for admin prefix {prefix}")
    frames = []
    for f in counted(files, "gazetteer files read"):
        df = read_table(f, header=False, names=GAZETTEER_COLUMNS, repairs=repairs).drop(columns="wkb")  # = lon/lat
        df["_file"] = f.name
        df["_line"] = df.index.to_numpy()  # line in the file (blank lines skipped)
        frames.append(df)
    gaz = pd.concat(frames, ignore_index=True)
    bad_code = ~gaz["code"].astype(str).str.fullmatch(r"\d{12}")
    if bad_code.any():
        r = gaz[bad_code].iloc[0]
        raise InputError(folder / r["_file"], f"code '{r['code']}' is not a 12-digit statistical code", row=int(r["_line"]))
    unit = gaz["_file"].str.removesuffix(".csv").str.replace(r"(00)+$", "", regex=True)
    named = unit.str.fullmatch(r"\d+")
    codes = gaz["code"].astype(str)
    inside = pd.Series(False, index=gaz.index)
    for n in unit.str.len().unique():  # vectorised per prefix length (a row loop costs seconds at 679,000 rows)
        sel = unit.str.len().eq(n)
        inside[sel] = codes[sel].str[:n].eq(unit[sel])
    misplaced = named & ~inside
    if misplaced.any():
        r = gaz[misplaced].iloc[0]
        u = unit[misplaced].iloc[0]
        raise InputError(folder / r["_file"], f"code {r['code']} ({r['name']}) does not belong to this file, whose codes "
                                              f"start {u}: a mistyped code would leave the region unnoticed",
                         row=int(r["_line"]))
    mine = gaz["code"].astype(str).str.startswith(prefix)
    stray = ~named & ~mine
    if stray.any():
        r = gaz[stray].iloc[0]
        _warn(report, f"{folder / r['_file']}: {int(stray.sum())} rows have codes outside the region's prefix {prefix} "
                      f"and are not used (first: row {int(r['_line'])}, code {r['code']})")
    gaz = gaz[mine].reset_index(drop=True)
    if gaz.empty:
        raise InputError(folder, f"no gazetteer rows with codes starting {prefix}")
    bad_level = ~gaz["level"].isin(GAZETTEER_LEVELS)
    if bad_level.any():
        r = gaz[bad_level].iloc[0]
        raise InputError(folder / r["_file"], f"unknown level '{r['level']}'", row=int(r["_line"]))
    for col, lo, hi in (("lon", -180, 180), ("lat", -90, 90)):
        vals = pd.to_numeric(gaz[col], errors="coerce")
        bad = gaz[col].notna() & (vals.isna() | (vals < lo) | (vals > hi))
        if bad.any():
            r = gaz[bad].iloc[0]
            raise InputError(folder / r["_file"], f"{col} '{r[col]}' is not a coordinate in [{lo}, {hi}]",
                             row=int(r["_line"]), column=col)
        gaz[col] = vals
    zero = (gaz["lon"] == 0) & (gaz["lat"] == 0)
    if zero.any():
        r = gaz[zero].iloc[0]
        raise InputError(folder / r["_file"], f"{r['name']} ({r['code']}) is at lon 0, lat 0: {NULL_ISLAND}",
                         row=int(r["_line"]), column="lon")
    dup = gaz["code"].duplicated(keep=False)
    if dup.any():
        r = gaz[dup].iloc[0]
        raise InputError(folder / r["_file"], f"duplicate code {r['code']}", row=int(r["_line"]))
    gaz["ur_code"] = gaz["ur_code"].fillna("").astype(str)
    return gaz


# --------------------------------------------------------------------------- boundaries

def load_boundaries(path: str | Path, *, what: str = "boundaries", repairs: list[str] | None = None) -> gpd.GeoDataFrame:
    """County or prefecture polygons with `adcode` (6-digit str) and `name`, in EPSG:4326."""
    path = Path(path)
    df = read_table(path, repairs=repairs)
    if not isinstance(df, gpd.GeoDataFrame):
        raise InputError(path, f"{what} must be a vector file with polygons")
    require_columns(df, ["adcode", "name"], path, what)
    if df.empty:
        raise InputError(path, f"{what} file has no features")
    gdf = df[["adcode", "name", "geometry"]].copy()
    no_code = gdf["adcode"].isna() | gdf["adcode"].astype(str).str.strip().eq("")
    if no_code.any():
        raise InputError(path, "adcode is missing", row=data_row(gdf, np.flatnonzero(no_code)[0]), column="adcode")
    gdf["adcode"] = gdf["adcode"].astype(str).str.strip().str[:6]
    null = gdf.geometry.isna() | gdf.geometry.is_empty
    if null.any():
        raise InputError(path, "feature has no geometry", row=data_row(gdf, np.flatnonzero(null)[0]))
    not_poly = ~gdf.geom_type.isin(["Polygon", "MultiPolygon"])
    if not_poly.any():
        i = np.flatnonzero(not_poly)[0]
        raise InputError(path, f"{what} must be polygons, found a {gdf.geom_type.iloc[i]}", row=data_row(gdf, i))
    gdf["name"] = gdf["name"].fillna("").astype(str)
    if gdf.crs is None:
        _assume_wgs84(path, repairs)
        gdf = gdf.set_crs(4326)
    elif gdf.crs.to_epsg() == 4490:  # CGCS2000 is within centimetres of WGS84
        gdf = gdf.set_crs(4326, allow_override=True)
    else:
        gdf = _to_wgs84(gdf, path)
    gdf["geometry"] = gdf.geometry.make_valid()
    return gdf.reset_index(drop=True)


def name_stem(name: str) -> str:
    """A county name without its administrative suffix (米林县 / 米林市 → 米林)."""
    name = str(name).strip()
    for suf in _SUFFIXES:
        if name.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return name


def unit_stem(name: str) -> str:
    """A township/village name without committee suffixes (噶冲村委会 → 噶冲村)."""
    name = str(name).strip()
    for suf in _UNIT_SUFFIXES:
        if name.endswith(suf) and len(name) > len(suf):
            name = name[: -len(suf)]
            break
    if not name.endswith(("村", "社区", "乡", "镇", "居")) and len(name) >= 2:
        name = name + "村" if suf in ("村委会", "村民委员会") else name  # type: ignore[possibly-undefined]
    return name


def reconcile_county_codes(gaz_counties: pd.DataFrame, counties: gpd.GeoDataFrame | None) -> pd.DataFrame:
    """Map each gazetteer county (2016 code) to a current county code: by code, then name, then location.

    Returns a frame indexed by the 6-digit 2016 code with `county_code`, `county_name`, `method`
    (`code`, `name`, `name_stem`, `location`, `unmatched`).
    """
    g = gaz_counties.assign(code6=gaz_counties["code"].str[:6]).set_index("code6")
    out = pd.DataFrame(index=g.index, data={"gaz_name": g["name"], "county_code": pd.NA, "county_name": pd.NA,
                                             "method": "unmatched"})
    if counties is None:
        out["county_code"] = out.index
        out["county_name"] = out["gaz_name"]
        out["method"] = "code"
        return out
    by_code = dict(zip(counties["adcode"], counties["name"]))
    gaz_name = out["gaz_name"].to_dict()
    same = [c for c in out.index if c in by_code and name_stem(by_code[c]) == name_stem(gaz_name[c])]
    _assign_codes(out, same, same, [by_code[c] for c in same], "code")  # bulk: one .loc per step, not per county
    taken: set[str] = set(same)
    free = counties[~counties["adcode"].isin(taken)]
    for method, key in (("name", lambda s: str(s).strip()), ("name_stem", name_stem)):
        lookup = free.assign(k=free["name"].map(key)).drop_duplicates("k", keep=False).set_index("k")
        got: dict[str, tuple[str, str]] = {}
        for code in out.index[out["method"] == "unmatched"]:
            k = key(gaz_name[code])
            if k in lookup.index and lookup.at[k, "adcode"] not in taken:
                got[code] = (lookup.at[k, "adcode"], lookup.at[k, "name"])
                taken.add(lookup.at[k, "adcode"])
        _assign_codes(out, list(got), [v[0] for v in got.values()], [v[1] for v in got.values()], method)
        free = counties[~counties["adcode"].isin(taken)]
    rest = out.index[out["method"] == "unmatched"]
    if len(rest):
        seats = g.loc[rest, ["lon", "lat"]].dropna()
        if len(seats):
            pts = gpd.GeoDataFrame(index=seats.index, geometry=gpd.points_from_xy(seats["lon"], seats["lat"]), crs=4326)
            hit = gpd.sjoin(pts, counties[["adcode", "name", "geometry"]], predicate="within", how="inner")
            hit = hit[~hit.index.duplicated()]
            _assign_codes(out, list(hit.index), hit["adcode"].tolist(), hit["name"].tolist(), "location")
    # Codes whose current county is still at the same code but whose name changed (rare)
    still = [c for c in out.index[(out["method"] == "unmatched") & out.index.isin(list(by_code))]]
    _assign_codes(out, still, still, [by_code[c] for c in still], "code")
    return out


def _assign_codes(out: pd.DataFrame, codes: list, county_codes: list, county_names: list, method: str) -> None:
    """Set the current county (code, name) and the matching method of the 2016 codes ``codes``, in one step."""
    if codes:
        out.loc[codes, ["county_code", "county_name", "method"]] = \
            np.column_stack([np.asarray(county_codes, dtype=object), np.asarray(county_names, dtype=object),
                             np.full(len(codes), method, dtype=object)])


# --------------------------------------------------------------------------- settlements

def settlements_from_gazetteer(gaz: pd.DataFrame, system: str, county_codes: pd.DataFrame,
                               source: str = "gazetteer", report: LoadReport | None = None) -> gpd.GeoDataFrame:
    """Village rows and township seats as settlements; unlocated rows take their township's, else county's,
    else prefecture's, else province's seat (`loc_quality` says which; the last two are reported)."""
    system = normalise_system(system)
    units = gaz[gaz["level"].isin(["town", "village"])].copy()
    seats = gaz.set_index("code")[["lon", "lat"]]
    town_of = np.where(units["level"] == "village", units["parent"], units["code"])
    county12 = units["code"].str[:6] + "000000"
    # Fallback chain: own position, township seat (villages), county, prefecture, province seat.
    chain = [("exact", units[["lon", "lat"]].to_numpy(dtype=float)),
             ("township", np.where((units["level"] == "village").to_numpy()[:, None],
                                   seats.reindex(town_of).to_numpy(dtype=float), np.nan)),
             ("county", seats.reindex(county12).to_numpy(dtype=float)),
             ("prefecture", seats.reindex(units["code"].str[:4] + "00000000").to_numpy(dtype=float)),
             ("province", seats.reindex(units["code"].str[:2] + "0000000000").to_numpy(dtype=float))]
    quality = np.full(len(units), "none", dtype=object)
    xy = np.full((len(units), 2), np.nan)
    for name, cand in chain:
        take = (quality == "none") & np.isfinite(cand).all(axis=1)
        quality[take], xy[take] = name, cand[take]
    if (quality == "none").any():
        r = units[quality == "none"].iloc[0]
        raise InputError(r["_file"], f"{r['name']} ({r['code']}) has no coordinates and neither has its township, "
                                     f"county, prefecture or province seat", row=int(r["_line"]))
    far = np.isin(quality, ["prefecture", "province"])
    if far.any() and report is not None:
        r = units[far].iloc[0]
        report.warn(f"{int(far.sum())} gazetteer settlements have no coordinates and neither has their township or "
                    f"county seat: placed at their prefecture ({int((quality == 'prefecture').sum())}) or province "
                    f"({int((quality == 'province').sum())}) seat, loc_quality says which; their times are their "
                    f"county's area (first: {r['_file']}, row {int(r['_line'])}, {r['name']} {r['code']})")
    lon, lat = to_wgs84(xy[:, 0], xy[:, 1], system)
    towns_with_urban_core = set(units.loc[units["ur_code"].isin(["111", "112"]), "parent"])
    kind = np.where(units["level"] == "village", "village",
                    np.where(units["code"].isin(towns_with_urban_core), "county_seat", "township_seat"))
    code6 = units["code"].str[:6]
    cc = county_codes.reindex(code6)
    out = pd.DataFrame({
        "settlement_id": units["code"].to_numpy(),
        "name": units["name"].to_numpy(),
        "kind": kind,
        "admin_code": units["code"].to_numpy(),
        "township_code": town_of,
        "county_code": cc["county_code"].fillna(code6.reset_index(drop=True).set_axis(cc.index)).to_numpy(dtype=object),
        "county_name": cc["county_name"].fillna("").to_numpy(dtype=object),
        "ur_code": units["ur_code"].to_numpy(),
        "lon": lon, "lat": lat,
        "loc_quality": quality,
        "coord_source": f"{source} {system}" + ("→wgs84" if system != "wgs84" else ""),
    })
    gdf = gpd.GeoDataFrame(out, geometry=gpd.points_from_xy(out["lon"], out["lat"]), crs=4326)
    _set_provenance(gdf, units["_file"].to_numpy(), units["_line"].to_numpy())
    return gdf


class _Provenance:
    """Each row's file and row number, kept in a frame's attrs. Shared, never copied: pandas deep-copies attrs
    on every operation, and a per-row tuple there costs minutes at national size (676,000 rows)."""

    __slots__ = ("files", "rows")

    def __init__(self, files: np.ndarray, rows: np.ndarray):
        self.files, self.rows = files, rows

    def __deepcopy__(self, memo):
        return self

    def __len__(self) -> int:
        return len(self.rows)


def _set_provenance(frame: pd.DataFrame, files, rows) -> None:
    """Remember each row's file and row number (frame.attrs), for errors that name two rows of two inputs."""
    n = len(frame)
    frame.attrs["provenance"] = _Provenance(np.broadcast_to(np.asarray(files, dtype=object), (n,)).copy(),
                                            np.asarray(rows, dtype=np.int64).ravel())


def _provenance(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(file, row) of each row of a loaded frame; position + 1 when unknown."""
    n = len(frame)
    prov = frame.attrs.get("provenance")
    if prov is None or len(prov) != n or len(prov.files) != n:
        return np.full(n, "?", dtype=object), np.arange(1, n + 1)
    return prov.files, prov.rows


def load_settlement_table(path: str | Path, *, system: str = "wgs84", columns: dict[str, str] | None = None,
                          default_kind: str = "village", repairs: list[str] | None = None) -> gpd.GeoDataFrame:
    """Settlements from any CSV/GeoJSON/shapefile/GeoPackage with id, name, [kind], lon, lat, [population].

    `columns` maps our names (id, name, kind, lon, lat, population, county_code) to the file's column names.
    Vector files without lon/lat columns use their point geometry.
    """
    path = Path(path)
    cols = {"id": "id", "name": "name", "kind": "kind", "lon": "lon", "lat": "lat", "population": "population",
            "county_code": "county_code"}
    cols.update(columns or {})
    df = read_table(path, repairs=repairs)
    if len(df) == 0:
        raise InputError(path, "settlement file has no rows")
    if isinstance(df, gpd.GeoDataFrame) and (cols["lon"] not in df.columns or cols["lat"] not in df.columns):
        df = _points_to_lonlat(df, path, cols["lon"], cols["lat"], "settlement", repairs)
    require_columns(df, [cols["id"], cols["name"], cols["lon"], cols["lat"]], path, "settlement table")
    lon = numeric_column(df, cols["lon"], path)
    lat = numeric_column(df, cols["lat"], path)
    check_lonlat_order(lon, lat, path, df=df)
    numeric_column(df, cols["lon"], path, lo=-180, hi=180)
    numeric_column(df, cols["lat"], path, lo=-90, hi=90)
    _check_null_island(lon, lat, path, df)
    ids = df[cols["id"]].astype(str).str.strip()
    blank = (ids == "") | df[cols["id"]].isna()
    if blank.any():
        raise InputError(path, "settlement id is empty", row=data_row(df, np.flatnonzero(blank)[0]), column=cols["id"])
    check_unique(ids, path, cols["id"])
    kind = df[cols["kind"]].astype(str).str.strip() if cols["kind"] in df.columns else pd.Series(default_kind, index=df.index)
    bad = ~kind.isin(SETTLEMENT_KINDS)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise InputError(path, f"unknown kind '{kind.iloc[i]}' (expected one of {', '.join(SETTLEMENT_KINDS)})",
                         row=data_row(df, i), column=cols["kind"])
    pop = numeric_column(df, cols["population"], path, required=False, lo=0) if cols["population"] in df.columns \
        else np.full(len(df), np.nan)
    system = normalise_system(system)
    wlon, wlat = to_wgs84(lon, lat, system)
    out = pd.DataFrame({
        "settlement_id": ids.to_numpy(), "name": df[cols["name"]].fillna("").astype(str).to_numpy(), "kind": kind.to_numpy(),
        "admin_code": "", "township_code": "",
        "county_code": df[cols["county_code"]].astype(str).str[:6].to_numpy() if cols["county_code"] in df.columns else "",
        "county_name": "", "ur_code": "", "lon": wlon, "lat": wlat, "loc_quality": "exact",
        "coord_source": f"{path.name} {system}" + ("→wgs84" if system != "wgs84" else ""),
        "population": pop, "pop_source": np.where(np.isfinite(pop), "data", "missing"),
    })
    gdf = gpd.GeoDataFrame(out, geometry=gpd.points_from_xy(wlon, wlat), crs=4326)
    _set_provenance(gdf, str(path), [data_row(df, i) for i in range(len(df))])
    return gdf


def check_lonlat_order(lon: np.ndarray, lat: np.ndarray, path: Path, header: bool = True,
                       df: pd.DataFrame | None = None) -> None:
    """InputError when longitude and latitude look swapped (latitudes beyond ±60 where longitudes fit China)."""
    suspicious = (np.abs(lat) > 60) & (np.abs(lon) <= 60)
    if suspicious.any():
        i = int(np.flatnonzero(suspicious)[0])
        raise InputError(path, f"lon/lat look swapped (lon={lon[i]}, lat={lat[i]}): longitude comes first",
                         row=data_row(df, i) if df is not None else i + (2 if header else 1))


def _assume_wgs84(path: Path, repairs: list[str] | None) -> None:
    msg = f"{path.name}: no coordinate system (e.g. a missing .prj): assumed WGS84 longitude/latitude"
    log.warning(msg)
    if repairs is not None and msg not in repairs:
        repairs.append(msg)


def _to_wgs84(gdf: gpd.GeoDataFrame, path: Path) -> gpd.GeoDataFrame:
    try:
        return gdf.to_crs(4326)
    except Exception as exc:  # pyproj CRSError / ProjError on an unusable .prj or crs member
        raise InputError(path, f"cannot convert its coordinate system ({gdf.crs.name if gdf.crs else '?'}) to "
                               f"WGS84: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None


def _points_to_lonlat(df: gpd.GeoDataFrame, path: Path, lon_col: str, lat_col: str, what: str,
                      repairs: list[str] | None = None, *, allow_missing: bool = False) -> pd.DataFrame:
    """A vector table of points as a plain table with WGS84 lon/lat columns (error naming a non-point row).

    Features without a geometry are an error, unless `allow_missing` (their lon/lat are then NaN).
    """
    if df.crs is None:
        _assume_wgs84(path, repairs)
    geo = _to_wgs84(df, path) if df.crs is not None else df
    gt = geo.geom_type
    missing = (geo.geometry.isna() | geo.geometry.is_empty).to_numpy()
    if missing.any() and not allow_missing:
        raise InputError(path, f"{what} has no geometry (missing or empty point; a damaged or cut .shp?)",
                         row=data_row(df, np.flatnonzero(missing)[0]))
    bad = ~(gt.eq("Point").to_numpy() | missing)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise InputError(path, f"{what} geometries must be points, found a {gt.iloc[i]}", row=data_row(df, i))
    out = pd.DataFrame(df.drop(columns="geometry"))
    out[lon_col], out[lat_col] = geo.geometry.x.to_numpy(), geo.geometry.y.to_numpy()
    return out


def load_relocation_sites(path: str | Path, gaz_settlements: gpd.GeoDataFrame, gaz: pd.DataFrame,
                          county_codes: pd.DataFrame, counties: gpd.GeoDataFrame | None, system: str,
                          population: pd.DataFrame | None = None, *,
                          repairs: list[str] | None = None, report: LoadReport | None = None) -> gpd.GeoDataFrame:
    """Relocation settlements (no coordinates) located through the gazetteer by host village, township or county.

    A host village or township the gazetteer does not hold falls back to the next unit up, and each such
    site is reported (file, row, the name not found, where the site was placed).
    """
    path = Path(path)
    df = read_table(path, repairs=repairs)
    require_columns(df, ["site_id", "name", "host_county"], path, "relocation table")
    if len(df) == 0:
        raise InputError(path, "relocation table has no rows")
    blank = df["site_id"].isna() | df["site_id"].astype(str).str.strip().eq("")
    if blank.any():
        raise InputError(path, "site_id is empty", row=data_row(df, np.flatnonzero(blank)[0]), column="site_id")
    check_unique(df["site_id"].astype(str), path, "site_id")
    for col in ("people", "households"):  # typed values must be numbers: never silently dropped to "missing"
        if col in df.columns:
            df[col] = numeric_column(df, col, path, required=False, lo=0)
    by_id = gaz_settlements.set_index("settlement_id")
    towns = gaz[gaz["level"] == "town"]
    villages = gaz[gaz["level"] == "village"]
    current = county_codes.reset_index().rename(columns={"index": "code6"})
    if "code6" not in current.columns:
        current = current.rename(columns={current.columns[0]: "code6"})
    cty_seats = gaz[gaz["level"] == "county"].assign(code6=lambda d: d["code"].str[:6]).set_index("code6")
    pref_seats = gaz[gaz["level"] == "city"]
    rows = []
    lines = [data_row(df, i) for i in range(len(df))]
    for i, r in df.reset_index(drop=True).iterrows():
        host_c = str(r["host_county"]).strip()
        site = f"{path}, row {lines[i]}: relocation site {r['site_id']} ({r['name']})"
        fallback = ""  # what was not found, when the site falls back to a larger unit
        match = current[(current["county_name"] == host_c) | (current["gaz_name"] == host_c)
                        | (current["county_name"].map(lambda n: name_stem(n) if isinstance(n, str) else "") == name_stem(host_c))]
        lon = lat = np.nan
        quality, admin, town_code, county_code, county_name = "none", "", "", "", ""
        if len(match):
            m = match.iloc[0]
            code6, county_code, county_name = m["code6"], m["county_code"], m["county_name"]
            admin = code6 + "000000"
            t_name, v_name = _clean(r.get("host_township")), _clean(r.get("host_village"))
            town = towns[(towns["code"].str[:6] == code6) & (towns["name"] == t_name)] if t_name else towns.iloc[0:0]
            if t_name and town.empty:
                town = towns[(towns["code"].str[:6] == code6) & (towns["name"].str.startswith(t_name[:-1]))]
            if t_name and town.empty:
                fallback = f"host township '{t_name}' is not in the gazetteer's {county_name or host_c}"
            if len(town):
                town_code = admin = town.iloc[0]["code"]
                seat = by_id.loc[town_code]
                lon, lat, quality = seat["lon"], seat["lat"], "township" if seat["loc_quality"] == "exact" else seat["loc_quality"]
                if v_name:
                    vil = villages[(villages["parent"] == town_code) & (villages["name"].map(unit_stem) == unit_stem(v_name))]
                    if len(vil):
                        v = by_id.loc[vil.iloc[0]["code"]]
                        admin = vil.iloc[0]["code"]
                        lon, lat = v["lon"], v["lat"]
                        quality = "village" if v["loc_quality"] == "exact" else v["loc_quality"]
                    else:
                        fallback = f"host village '{v_name}' is not in the gazetteer's {town.iloc[0]['name']}"
            elif code6 in cty_seats.index and np.isfinite(cty_seats.at[code6, "lon"]):
                lon, lat = to_wgs84(cty_seats.at[code6, "lon"], cty_seats.at[code6, "lat"], system)
                quality = "county"
            elif not fallback:
                fallback = f"host county '{host_c}' has no located seat in the gazetteer"
        elif host_c:
            fallback = f"host county '{host_c}' is not in the gazetteer"
        if quality == "none":
            pref = pref_seats[pref_seats["name"] == _clean(r.get("host_prefecture"))]
            if len(pref) and np.isfinite(pref.iloc[0]["lon"]):
                lon, lat = to_wgs84(pref.iloc[0]["lon"], pref.iloc[0]["lat"], system)
                quality, admin = "prefecture", pref.iloc[0]["code"]
                hit = _county_at(counties, float(lon), float(lat))
                county_code, county_name = hit if hit else ("", "")
            else:
                raise InputError(path, f"relocation site '{r['name']}': host county '{host_c}' and prefecture "
                                       f"'{r.get('host_prefecture')}' not found in the gazetteer", row=data_row(df, i))
        people = pd.to_numeric(pd.Series([r.get("people")]), errors="coerce").iloc[0]
        households = pd.to_numeric(pd.Series([r.get("households")]), errors="coerce").iloc[0]
        pop, pop_source = people, "data"
        if not np.isfinite(people):
            size = _household_size(population, county_code)
            if np.isfinite(households) and size:
                pop, pop_source = households * size, f"households×{size:.2f} (county census household size)"
            else:
                pop, pop_source = np.nan, "missing"
        if fallback:
            at = {"village": "its host village", "township": "the township seat", "county": "the county seat",
                  "prefecture": "the prefecture seat"}.get(quality, quality)
            who = f"{pop:,.0f} people" if np.isfinite(pop) else "people unknown"
            _warn(report, f"{site}: {fallback}: placed at {at} (loc_quality = {quality}; {who}), so its times are "
                          "that position's")
        rows.append({"settlement_id": str(r["site_id"]), "name": str(r["name"]), "kind": "relocation",
                     "admin_code": admin, "township_code": town_code, "county_code": county_code,
                     "county_name": county_name, "ur_code": "", "lon": float(lon), "lat": float(lat),
                     "loc_quality": quality, "coord_source": f"host unit in gazetteer {normalise_system(system)}→wgs84",
                     "population": pop, "pop_source": pop_source,
                     "program": _clean(r.get("program")), "year": _clean(r.get("year"))})
    out = pd.DataFrame(rows)
    gdf = gpd.GeoDataFrame(out, geometry=gpd.points_from_xy(out["lon"], out["lat"]), crs=4326)
    _set_provenance(gdf, str(path), lines)
    return gdf


def _clean(v) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) or pd.isna(v) else str(v).strip()


def _county_at(counties: gpd.GeoDataFrame | None, lon: float, lat: float):
    if counties is None:
        return None
    from shapely.geometry import Point

    hit = counties[counties.contains(Point(lon, lat))]
    return (hit.iloc[0]["adcode"], hit.iloc[0]["name"]) if len(hit) else None


def _household_size(population: pd.DataFrame | None, county_code: str) -> float | None:
    if population is None or not county_code or county_code not in population.index:
        return None
    row = population.loc[county_code]
    hh = row.get("family_households_2020")
    return float(row["population_2020"]) / float(hh) if hh and float(hh) > 0 else None


# --------------------------------------------------------------------------- facilities

REGISTER_COLUMNS = ["facility_id", "name", "level", "lon", "lat"]


def load_facilities(path: str | Path, *, default_system: str = "wgs84", gazetteer: pd.DataFrame | None = None,
                    county_codes: pd.DataFrame | None = None, repairs: list[str] | None = None,
                    counties: gpd.GeoDataFrame | None = None, region=None, locate_units: bool = False,
                    report: LoadReport | None = None) -> gpd.GeoDataFrame:
    """A facility register (`facility_id,name,level,admin_code,county,lon,lat,coord_sys,...`) in WGS84.

    `level` takes the canonical names or any name in `schema.FACILITY_LEVEL_NAMES` (Chinese names, any
    case or spacing). Rows without coordinates are located at the seat of their `admin_code` unit
    (gazetteer) and say so in `loc_quality`; a row that cannot be located is an error, never dropped.
    With `locate_units` (a region run, whose blank-spot audit needs each facility's unit), a county-level
    or prefecture hospital without `admin_code` takes its county from its position (the county polygon
    holding it, reported); a township health centre or clinic without one is an error (its township
    cannot be told from a point). Facilities outside `region` (a WGS84 polygon, the region
    grown by the road margin) are left out and reported with their rows.
    """
    path = Path(path)
    df = read_table(path, repairs=repairs)
    if isinstance(df, gpd.GeoDataFrame) and ("lon" not in df.columns or "lat" not in df.columns):
        df = _points_to_lonlat(df, path, "lon", "lat", "facility", repairs, allow_missing=True)
    require_columns(df, REGISTER_COLUMNS, path, "facility register")
    if len(df) == 0:
        raise InputError(path, "facility register has no rows")
    ids = df["facility_id"].astype(str).str.strip()
    blank = df["facility_id"].isna().to_numpy() | ids.eq("").to_numpy()
    if blank.any():
        raise InputError(path, "facility_id is empty (results name the nearest facility by its id; an empty one "
                               "would read as 'none reachable')", row=data_row(df, np.flatnonzero(blank)[0]),
                         column="facility_id")
    check_unique(ids, path, "facility_id")
    raw_level = df["level"].astype(str).str.strip()
    names = {}
    for name in raw_level.unique():
        try:
            names[name] = normalise_level(name)
        except ValueError as exc:
            i = int(np.flatnonzero(raw_level.eq(name).to_numpy())[0])
            raise InputError(path, str(exc), row=data_row(df, i), column="level") from None
    level = raw_level.map(names)
    lon = numeric_column(df, "lon", path, required=False)
    lat = numeric_column(df, "lat", path, required=False)
    check_lonlat_order(np.nan_to_num(lon), np.nan_to_num(lat), path, df=df)
    numeric_column(df, "lon", path, required=False, lo=-180, hi=180)
    numeric_column(df, "lat", path, required=False, lo=-90, hi=90)
    _check_null_island(lon, lat, path, df)
    admin = df["admin_code"].astype(str).str.strip() if "admin_code" in df.columns else pd.Series("", index=df.index)
    admin = admin.where(df.get("admin_code", pd.Series(index=df.index)).notna(), "")
    systems = df["coord_sys"].fillna(default_system) if "coord_sys" in df.columns else pd.Series(default_system, index=df.index)
    try:
        systems = systems.map(normalise_system)
    except ValueError:
        for i, s in enumerate(systems):
            try:
                normalise_system(s)
            except ValueError as exc:
                raise InputError(path, str(exc), row=data_row(df, i), column="coord_sys") from None
    quality = np.where(np.isfinite(lon) & np.isfinite(lat), "exact", "none").astype(object)
    missing = np.flatnonzero(quality == "none")
    if missing.size:
        if gazetteer is None:
            raise InputError(path, "facility has no coordinates", row=data_row(df, missing[0]), column="lon")
        seats = gazetteer.set_index("code")
        for i in missing:
            code = admin.iloc[i].ljust(12, "0")[:12]
            if code in seats.index and np.isfinite(seats.at[code, "lon"]):
                lon[i], lat[i] = seats.at[code, "lon"], seats.at[code, "lat"]
                systems.iloc[i] = "gcj02"
                quality[i] = "admin_seat"
            else:
                raise InputError(path, f"facility has no coordinates and admin_code '{admin.iloc[i]}' has no located seat",
                                 row=data_row(df, i), column="lon")
    wlon, wlat = lon.copy(), lat.copy()
    for system in systems.unique():
        sel = (systems == system).to_numpy()
        wlon[sel], wlat[sel] = to_wgs84(lon[sel], lat[sel], system)
    rows = np.array([data_row(df, i) for i in range(len(df))])
    keep = np.ones(len(df), dtype=bool)
    if region is not None:
        import shapely

        keep = shapely.contains_xy(region, wlon, wlat)
        if not keep.all():
            out_i = np.flatnonzero(~keep)
            shown = "; ".join(f"row {rows[i]} {ids.iloc[i]} ({level.iloc[i]}) at lon {wlon[i]:.4f}, lat {wlat[i]:.4f}"
                              for i in out_i[:5]) + (" …" if out_i.size > 5 else "")
            _warn(report, f"{path}: {out_i.size} of {len(df)} facilities lie outside the region (beyond the road margin) "
                          f"and are left out of every result: {shown} — wrong coordinates or coordinate system?")
    admin = admin.copy()
    no_admin = np.flatnonzero(admin.eq("").to_numpy() & keep & locate_units)
    if no_admin.size:
        unit_level = level.iloc[no_admin].isin(COUNTY_HOSPITAL_LEVELS + ("prefecture_hospital",)).to_numpy()
        if not unit_level.all() or counties is None:
            i = no_admin[np.flatnonzero(~unit_level)[0]] if not unit_level.all() else no_admin[0]
            why = "its township cannot be told from its position" if not unit_level.all() else \
                "there are no county boundaries to locate it by its position"
            raise InputError(path, f"admin_code is empty ({level.iloc[i]}): the blank-spot audit needs the 12-digit "
                                   f"code of its unit and {why}", row=data_row(df, i), column="admin_code")
        located = []
        for i in no_admin:
            hit = _county_at(counties, float(wlon[i]), float(wlat[i]))
            if hit is None:
                raise InputError(path, "admin_code is empty and the facility lies in no county of the boundaries",
                                 row=data_row(df, i), column="admin_code")
            admin.iloc[i] = hit[0] + "000000"
            located.append(f"row {rows[i]} → {hit[0]} {hit[1]}")
        _warn(report, f"{path}: {no_admin.size} facilities have no admin_code: their county was taken from their "
                      f"position (the county boundary holding them): {'; '.join(located[:5])}"
                      + (" …" if len(located) > 5 else ""))
    code6 = admin.str[:6]
    if county_codes is not None:
        county = county_codes["county_code"].reindex(code6).to_numpy(dtype=object)
        county = np.where(pd.isna(county), code6.to_numpy(), county)
    else:
        county = code6.to_numpy()
    out = pd.DataFrame({
        "facility_id": ids.to_numpy(), "name": df["name"].fillna("").astype(str).to_numpy(), "level": level.to_numpy(),
        "admin_code": admin.to_numpy(), "county_code": county, "lon": wlon, "lat": wlat,
        "coord_sys": systems.to_numpy(), "loc_quality": quality,
        "basis": df["basis"].astype(str).to_numpy() if "basis" in df.columns else "register",
    })[keep].reset_index(drop=True)
    gdf = gpd.GeoDataFrame(out, geometry=gpd.points_from_xy(out["lon"], out["lat"]), crs=4326)
    gdf.attrs["level_names"] = {k: v for k, v in names.items() if k != v}
    gdf.attrs["outside_region"] = int((~keep).sum())
    _set_provenance(gdf, str(path), rows[keep])
    return gdf


# --------------------------------------------------------------------------- population

POPULATION_COLUMNS = ["adcode", "population_2020", "urban_population_2020", "rural_population_2020"]


def load_population(path: str | Path, *, repairs: list[str] | None = None) -> pd.DataFrame:
    """County census population (7th census 2020), indexed by 6-digit code; only county-level rows."""
    path = Path(path)
    df = read_table(path, repairs=repairs)
    require_columns(df, POPULATION_COLUMNS, path, "census table")
    if len(df) == 0:
        raise InputError(path, "census table has no rows")
    for col in POPULATION_COLUMNS[1:] + (["family_households_2020"] if "family_households_2020" in df.columns else []):
        df[col] = numeric_column(df, col, path, required=col == "population_2020", lo=0)
    df["adcode"] = df["adcode"].astype(str).str.strip()
    check_unique(df["adcode"], path, "adcode")
    return df.set_index("adcode")


def county_level_units(codes: pd.Index) -> np.ndarray:
    """Mask of the census's county-level units: codes not ending in 00, and prefecture-level cities without
    counties (东莞 441900, 中山 442000, 儋州 460400: a XXXX00 code with no county row under it)."""
    codes = pd.Index(codes).astype(str)
    county = ~codes.str.endswith("00")
    with_counties = set(codes[county].str[:4])
    childless = codes.str.endswith("00") & ~codes.str.endswith("0000") & ~codes.str[:4].isin(list(with_counties))
    return np.asarray(county | childless)


#: Census matching below this share of the region's census people (or of the settlements that need a
#: census share) is refused: the codes are shifted or of another vintage, and coverage by population
#: would describe a fraction of the region as if it were all of it.
MIN_CENSUS_MATCH_SHARE = 0.5


def assign_population(settlements: gpd.GeoDataFrame, population: pd.DataFrame | None,
                      report: LoadReport | None = None, *, path: Path | None = None,
                      region_codes: set[str] | None = None) -> gpd.GeoDataFrame:
    """Population per settlement: from the data where given, else the county census split, else missing.

    Census split: a county's rural population is shared equally among its rural-coded village units
    (ur 210/220), its urban population among urban-coded units (ur 111/112/121/122, else its county
    seat). Township-seat rows are places, their people counted in their villages (population 0).

    With `region_codes` (the region's county codes and its admin prefix), the match is checked: census
    units of the region that match no settlement county and settlements whose county has no census row
    are reported with the people involved; InputError (naming `path`) when less than
    MIN_CENSUS_MATCH_SHARE of the region's census people or of the settlements needing a share match.
    """
    s = settlements.copy()
    if "population" not in s.columns:
        s["population"] = np.nan
        s["pop_source"] = "missing"
    need = s["pop_source"].eq("missing") & s["kind"].isin(["village", "township_seat", "county_seat"]) \
        & s["admin_code"].astype(str).str.len().eq(12)
    if population is None or not need.any():
        return s
    urban = need & s["ur_code"].isin(URBAN_UR_CODES)
    rural = need & s["ur_code"].isin(RURAL_UR_CODES)
    seat = need & s["kind"].isin(["township_seat", "county_seat"])
    n_urban = s[urban].groupby("county_code").size()
    n_rural = s[rural].groupby("county_code").size()
    pop = population.reindex(s["county_code"])
    urb_share = pop["urban_population_2020"].to_numpy() / n_urban.reindex(s["county_code"]).to_numpy()
    rur_share = pop["rural_population_2020"].to_numpy() / n_rural.reindex(s["county_code"]).to_numpy()
    # Counties with no urban-coded unit: the urban population goes to the county seat row(s)
    no_urban = ~s["county_code"].isin(n_urban.index)
    seat_urban = seat & s["kind"].eq("county_seat") & no_urban
    n_seat = s[seat_urban].groupby("county_code").size()
    seat_share = pop["urban_population_2020"].to_numpy() / n_seat.reindex(s["county_code"]).to_numpy()
    value = np.select([urban.to_numpy(), rural.to_numpy(), seat_urban.to_numpy(), seat.to_numpy()],
                      [urb_share, rur_share, seat_share, np.zeros(len(s))], default=np.nan)
    ok = need.to_numpy() & np.isfinite(value)
    s.loc[ok, "population"] = value[ok]
    s.loc[ok, "pop_source"] = "census_split"
    if region_codes is not None:
        _check_census_match(s, population, need.to_numpy(), ok, region_codes, path, report)
    if report is not None:
        report.assume("population: each county's 2020 census rural population split equally among its rural "
                      "village units (ur 210/220) and urban population among its urban-coded units (ur 111–122); "
                      "township-seat rows carry 0 (their people are counted in their villages)")
        unmatched = sorted(set(population.index[county_level_units(population.index)]) - set(s["county_code"]))
        if unmatched:
            report.add("population", census_units_without_settlements=unmatched)
    return s


def _check_census_match(s: pd.DataFrame, population: pd.DataFrame, need: np.ndarray, ok: np.ndarray,
                        region_codes: set[str], path: Path | None, report: LoadReport | None) -> None:
    """Report (or refuse) census units of the region that match no settlement county, and the reverse."""
    prefixes = tuple(c for c in region_codes if len(c) < 6)
    county_rows = population[county_level_units(population.index)]
    mine = county_rows.index.isin(list(region_codes)) | county_rows.index.str.startswith(prefixes or ("\0",))
    census = county_rows[mine]["population_2020"].fillna(0)
    counties_needing = set(s.loc[need, "county_code"].astype(str))
    matched = census.index.isin(list(counties_needing))
    people, people_matched = float(census.sum()), float(census[matched].sum())
    lacking = need & ~ok
    lacking_counties = sorted(set(s.loc[lacking, "county_code"].astype(str)))
    facts = {"census_units_in_region": int(len(census)), "census_units_matched": int(matched.sum()),
             "people_in_matched_units": people_matched, "people_in_unmatched_units": people - people_matched,
             "settlements_without_census_population": int(lacking.sum())}
    if report is not None:
        report.add("population", **facts)
    where = str(path) if path else "census table"
    unmatched = census.index[~matched].tolist()
    n_need = int(need.sum())
    if (people > 0 and people_matched < MIN_CENSUS_MATCH_SHARE * people) or len(census) == 0 \
            or (n_need and lacking.sum() > (1 - MIN_CENSUS_MATCH_SHARE) * n_need):
        raise InputError(path, f"the census matches too little of the region: {int(matched.sum())} of {len(census)} census "
                               f"units of the region ({people_matched:,.0f} of {people:,.0f} people) match a county of the "
                               f"settlements, and {int(lacking.sum())} of {n_need} settlements find no census row "
                               f"(counties {', '.join(lacking_counties[:5])}{' …' if len(lacking_counties) > 5 else ''}; "
                               f"census codes {', '.join(unmatched[:5])}{' …' if len(unmatched) > 5 else ''}): "
                               "are the codes shifted or of another vintage?")
    if unmatched:
        _warn(report, f"{where}: {len(unmatched)} census units ({people - people_matched:,.0f} people) match no county "
                      f"of the settlements and are not counted: {', '.join(unmatched[:10])}"
                      + (" …" if len(unmatched) > 10 else ""))
    if lacking.any():
        _warn(report, f"{where}: {int(lacking.sum())} settlements in {len(lacking_counties)} "
                      f"count{'y' if len(lacking_counties) == 1 else 'ies'} have no census row "
                      f"and no population (left out of every population share): "
                      f"{', '.join(lacking_counties[:10])}" + (" …" if len(lacking_counties) > 10 else ""))


# --------------------------------------------------------------------------- everything for a region

#: Facilities this far beyond the region's outline (or the road clip margin, if larger) are outside it, km.
MIN_FACILITY_MARGIN_KM = 10.0


def _facility_region(counties: gpd.GeoDataFrame | None, settlements: gpd.GeoDataFrame, config: RegionConfig):
    """The region (county union, else a hull round the settlements) grown by the road margin, WGS84."""
    import shapely

    if counties is not None and len(counties):
        outline = shapely.union_all(counties.geometry.to_numpy())
    else:
        pts = shapely.points(settlements["lon"].to_numpy(), settlements["lat"].to_numpy())
        outline = shapely.convex_hull(shapely.multipoints(pts[shapely.is_valid(pts) & ~shapely.is_empty(pts)]))
    margin_m = 1000.0 * max(MIN_FACILITY_MARGIN_KM, float(config.section("roads")["clip_buffer_km"]))
    metric = gpd.GeoSeries([outline], crs=4326).to_crs(config.working_crs).iloc[0]
    grown = shapely.buffer(shapely.simplify(metric, margin_m / 20), margin_m, quad_segs=4)
    return gpd.GeoSeries([grown], crs=config.working_crs).to_crs(4326).iloc[0]


def load_inputs(config: RegionConfig, data_dir: Path, *, extra_settlements: list[dict] | None = None) -> Inputs:
    """Load every input layer of a region; optional layers that are absent are skipped and reported."""
    data_dir = Path(data_dir)
    report = LoadReport()
    inp = config.section("inputs")
    prefix = config.admin_prefix
    paths: dict[str, Path] = {}

    def optional(name: str) -> Path | None:
        """A layer's path; a default layer that is absent is skipped, a layer the config names must exist."""
        p = config.input_path(name, data_dir)
        if p is None:
            return None
        if p.exists():
            paths[name] = p
            return p
        if name in config.explicit_inputs:
            raise ConfigError(config.source, f"[inputs] {name} = {config.raw['inputs'][name]!r}: file not found "
                                             f"({p}; paths are relative to the data directory {data_dir})")
        report.skipped.append(f"{name}: {p} not found")
        log.warning("skipped %s: %s not found", name, p)
        return None

    if "dem" in config.explicit_inputs:  # opened later, by the travel-time step: checked here, before any work
        optional("dem")
        paths.pop("dem", None)

    counties_p, prefs_p = optional("counties"), optional("prefectures")
    counties = load_boundaries(counties_p, what="county boundaries", repairs=report.repairs) if counties_p else None
    prefectures = load_boundaries(prefs_p, what="prefecture boundaries", repairs=report.repairs) if prefs_p else None
    if counties is not None:
        counties = counties[counties["adcode"].str.startswith(prefix[:2])].reset_index(drop=True)
        report.add("counties", file=str(counties_p), count=len(counties), crs="EPSG:4490→EPSG:4326 (treated as WGS84)")
    if prefectures is not None:
        prefectures = prefectures[prefectures["adcode"].str.startswith(prefix[:2])].reset_index(drop=True)
        report.add("prefectures", file=str(prefs_p), count=len(prefectures))

    pop_p = optional("population")
    population = load_population(pop_p, repairs=report.repairs) if pop_p else None
    if population is not None:
        population = population[population.index.str.startswith(prefix[:2])]
        report.add("population", file=str(pop_p), units=int(county_level_units(population.index).sum()))

    gaz_p = optional("gazetteer")
    frames: list[gpd.GeoDataFrame] = []
    gaz = None
    county_codes = pd.DataFrame(columns=["gaz_name", "county_code", "county_name", "method"])
    if gaz_p:
        with step("gazetteer"):
            gaz = load_gazetteer(gaz_p, prefix, repairs=report.repairs, report=report)
        county_codes = reconcile_county_codes(gaz[gaz["level"] == "county"], counties)
        if counties is not None:
            # The region's counties: its code block, plus any recoded since the gazetteer (梁平县 500228 → 500155)
            mine = counties["adcode"].str.startswith(prefix) | counties["adcode"].isin(county_codes["county_code"])
            if (~mine).any():
                report.add("counties", outside_region_dropped=int((~mine).sum()))
            counties = counties[mine].reset_index(drop=True)
            report.add("counties", count=len(counties))
        with step("settlements from the gazetteer"):
            sett = settlements_from_gazetteer(gaz, inp["gazetteer_crs"], county_codes, report=report)
        prov = sett.attrs["provenance"]
        names, which = np.unique(prov.files.astype(str), return_inverse=True)
        prov.files = np.array([str(gaz_p / f) for f in names], dtype=object)[which]
        frames.append(sett)
        q = sett.groupby(["kind", "loc_quality"]).size()
        report.add("gazetteer", folder=str(gaz_p), crs=f"{inp['gazetteer_crs']}→wgs84",
                   rows_by_level=gaz["level"].value_counts().to_dict(),
                   settlements_by_kind=sett["kind"].value_counts().to_dict(),
                   location_quality={f"{k}/{l}": int(n) for (k, l), n in q.items()},
                   county_codes_by_method=county_codes["method"].value_counts().to_dict(),
                   county_codes_unmatched=county_codes.index[county_codes["method"] == "unmatched"].tolist(),
                   county_codes_recoded={c: r["county_code"] for c, r in county_codes.iterrows()
                                         if r["method"] not in ("code", "unmatched")})
        if (sett["loc_quality"] != "exact").any():
            report.assume("settlements without their own coordinates are placed at their township seat "
                          "(else county seat); loc_quality says which")
    for spec in (inp.get("settlement_tables") or []) + (extra_settlements or []):
        p = Path(spec["path"]) if Path(spec["path"]).is_absolute() else data_dir / spec["path"]
        t = load_settlement_table(p, system=spec.get("crs", "wgs84"), columns=spec.get("columns"), repairs=report.repairs)
        paths.setdefault("settlement_tables", p)
        frames.append(t)
        report.add(f"table:{p.name}", rows=len(t), crs=f"{spec.get('crs', 'wgs84')}→wgs84")
    reloc_p = optional("relocation")
    if reloc_p and gaz is not None:
        reloc = load_relocation_sites(reloc_p, frames[0], gaz, county_codes, counties, inp["gazetteer_crs"], population,
                                      repairs=report.repairs, report=report)
        frames.append(reloc)
        report.add("relocation", file=str(reloc_p), sites=len(reloc),
                   location_quality=reloc["loc_quality"].value_counts().to_dict(),
                   population_source=reloc["pop_source"].str.split(" ").str[0].value_counts().to_dict())
        report.assume("relocation settlements have no coordinates: each sits at its host village, else township, "
                      "else county seat (loc_quality says which)")
    elif reloc_p:
        report.skipped.append("relocation: needs the gazetteer to locate host units")
    if not frames:
        raise InputError(data_dir, f"region '{config.key}' has no settlement input (gazetteer or settlement table)")
    settlements = pd.concat(frames, ignore_index=True)
    settlements = gpd.GeoDataFrame(settlements, geometry="geometry", crs=4326)
    if "population" not in settlements.columns:
        settlements["population"] = np.nan
    settlements["pop_source"] = settlements.get("pop_source", pd.Series(index=settlements.index, dtype=object)) \
        .astype(object).fillna("missing")
    if settlements.empty:
        raise InputError(data_dir, "no settlements loaded: the settlement inputs are empty")
    dup = settlements["settlement_id"].duplicated(keep=False)
    if dup.any():
        files, rows = (np.concatenate(a) for a in zip(*map(_provenance, frames)))
        i, j = np.flatnonzero(settlements["settlement_id"].eq(settlements.loc[dup, "settlement_id"].iloc[0]))[:2]
        raise InputError(files[i], f"settlement id '{settlements.at[i, 'settlement_id']}' appears twice: here and in "
                                   f"{files[j]}, row {rows[j]} (ids must be unique across every settlement input)",
                         row=int(rows[i]))
    region_codes = {prefix} | (set(counties["adcode"]) if counties is not None else set()) \
        | set(county_codes["county_code"].dropna().astype(str))
    with step("census population"):
        settlements = assign_population(settlements, population, report, path=pop_p, region_codes=region_codes)
    settlements["prefecture_code"] = settlements["county_code"].astype(str).str[:4] + "00"
    if counties is not None:
        names = dict(zip(counties["adcode"], counties["name"]))
        fill = settlements["county_name"].fillna("").eq("")
        settlements.loc[fill, "county_name"] = settlements.loc[fill, "county_code"].map(names).fillna("")
    report.add("settlements", total=len(settlements), by_kind=settlements["kind"].value_counts().to_dict(),
               by_loc_quality=settlements["loc_quality"].value_counts().to_dict(),
               population_source=settlements["pop_source"].value_counts().to_dict())

    fac_p = optional("facilities")
    facilities = None
    if fac_p:
        with step("facilities"):
            facilities = load_facilities(fac_p, default_system=inp["facilities_crs"], gazetteer=gaz,
                                         county_codes=county_codes, repairs=report.repairs, counties=counties,
                                         locate_units=True, report=report,
                                         region=_facility_region(counties, settlements, config))
        if facilities.attrs["level_names"]:
            report.add("facilities", level_names_read=facilities.attrs["level_names"])
        if facilities.attrs["outside_region"]:
            report.add("facilities", outside_region_left_out=facilities.attrs["outside_region"])
        if facilities.empty:
            raise InputError(fac_p, "no facility of the register lies inside the region")
        report.add("facilities", file=str(fac_p), count=len(facilities), by_level=facilities["level"].value_counts().to_dict(),
                   crs_conversions=facilities["coord_sys"].value_counts().to_dict(),
                   basis=facilities["basis"].value_counts().to_dict())
        if facilities["basis"].str.contains("standard-derived").any():
            report.assume("the facility register is derived from the standards (a facility assumed at each "
                          "administrative seat), not a survey of real buildings")
    return Inputs(settlements=settlements, facilities=facilities, counties=counties, prefectures=prefectures,
                  population=population, gazetteer=gaz, county_codes=county_codes, report=report, paths=paths)
