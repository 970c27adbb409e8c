"""Coverage maps: an offline folium map of travel-time bands, facilities and gaps; static PNG figures."""
from __future__ import annotations

import base64
import html
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Mapping

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from branca.element import Element, MacroElement
from jinja2 import Template

from geoaccess._atomic import atomic_file
from geoaccess.errors import InputError
from geoaccess.map_points import MAX_SETTLEMENT_MARKERS, settlement_band_images
from geoaccess.schema import FACILITY_LEVEL_NAMES, FACILITY_LEVELS, LEVEL_GROUPS, column_info

log = logging.getLogger("geoaccess")

STATIC = Path(__file__).with_name("static")
#: County outlines of a national map are simplified by this many degrees (~1 km) to keep the page light.
COUNTY_SIMPLIFY_DEG = 0.01
BANDS = (15, 30, 60, 120, 240)
LEVELS = tuple(LEVEL_GROUPS)
UNREACHABLE_COLOUR = "#404040"
NO_DATA_COLOUR = "#d9d9d9"
SHARE_BINS = (0.2, 0.4, 0.6, 0.8)

LEVEL_NAMES = {
    "clinic": ("卫生室及以上", "clinic or better"),
    "thc": ("乡镇卫生院及以上", "township health centre or better"),
    "county": ("县级医院及以上", "county hospital or better"),
    "pref": ("地市级医院", "prefecture hospital"),
}
FACILITY_NAMES = {level: f"{zh} {en}" for level, (zh, en, _) in FACILITY_LEVEL_NAMES.items()}
#: CSS class (geoaccess_map.css) and icon size in pixels per facility level.
FACILITY_ICONS = {
    "village_clinic": ("ga-village_clinic", 9),
    "temporary_point": ("ga-temporary_point", 12),
    "township_health_centre": ("ga-township_health_centre", 9),
    "county_hospital": ("ga-county_hospital ga-cross", 15),
    "county_regional_centre": ("ga-county_regional_centre ga-cross", 17),
    "prefecture_hospital": ("ga-prefecture_hospital ga-cross", 19),
}
KIND_NAMES = {
    "village": "村 village",
    "township_seat": "乡镇驻地 township seat",
    "county_seat": "县城 county seat",
    "relocation": "搬迁安置点 relocation settlement",
}
QUALITY_NAMES = {
    "exact": "精确 exact",
    "village": "所在村 at host village",
    "township": "乡镇驻地 at township seat (approx.)",
    "county": "县城 at county seat (approx.)",
}
STATUS_NAMES = {"ok": "正常 ok", "unreachable": "不可达 unreachable", "outside_region": "区外 outside region"}
TIME_BASIS_NAMES = {
    "measured": "实测位置 measured at its own position",
    "township_worst": "近似：本乡镇已定位村的最长时间 approximated: worst of its township's located villages",
    "county_median": "近似：本县已定位村的中位时间 approximated: median of its county's located villages",
    "position_lower_bound": "近似位置的时间，仅为下限 approximated position's own time: a lower bound",
}
#: Blank-spot and site attributes as popups show them (Chinese and English); others by their schema meaning.
POPUP_LABELS = {
    "unit_code": "单位代码 unit code", "unit_name": "单位 unit", "unit_level": "层级 level", "rule": "标准 rule",
    "detail": "依据 evidence", "county_code": "县代码 county code", "county_name": "县 county",
    "site_id": "选址编号 site id", "candidate_id": "候选点 candidate", "facility_id": "机构编号 facility id",
    "source": "来源 source", "n_reach": "可达居民点 settlements within reach", "n_new": "新覆盖居民点 newly covered",
    "pop_new": "新覆盖人口 people newly covered", "n_only": "仅此点覆盖 only this site covers",
    "pop_only": "仅此点覆盖人口 people only this site covers", "n_catch": "服务居民点 catchment settlements",
    "pop_catch": "服务人口 catchment people", "n_prio_new": "新覆盖安置点 relocation settlements newly covered",
    "new_counties": "受益县 counties gaining", "covers": "覆盖 covers", "covers_population": "覆盖人口 people covered",
}
UNIT_LEVEL_NAMES = {"county": "县 county", "township": "乡镇 township", "village": "村 village",
                    "relocation": "搬迁安置点 relocation settlement", "region": "全区 region"}
ROAD_STYLES = {
    "expressway": {"color": "#b35806", "weight": 2.2, "opacity": 0.75},
    "motorway": {"color": "#b35806", "weight": 2.2, "opacity": 0.75},
    "national": {"color": "#e08214", "weight": 1.6, "opacity": 0.7},
    "trunk": {"color": "#e08214", "weight": 1.6, "opacity": 0.7},
    "provincial": {"color": "#fdb863", "weight": 1.2, "opacity": 0.7},
    "other": {"color": "#999999", "weight": 0.8, "opacity": 0.6},
}
UNCERTAIN_STYLE = {"fillColor": "#bdbdbd", "color": "#333", "weight": 1.2, "dashArray": "4 3", "fillOpacity": 0.6}
CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
    "Microsoft YaHei", "SimHei", "PingFang SC", "Noto Sans CJK JP",
)


# ---------------------------------------------------------------- bands and colours

def band_colours(bands=BANDS) -> list[str]:
    """Hex colour per travel-time band (green = near … red = far), then grey for unreachable."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["RdYlGn_r"]
    return [to_hex(cmap(x)) for x in np.linspace(0.05, 0.95, len(bands) + 1)] + [UNREACHABLE_COLOUR]


def band_labels(bands=BANDS, *, chinese: bool = True) -> list[str]:
    """Label per band, e.g. ``≤15 min``, ``15–30 min``, ``>240 min``, ``unreachable``."""
    edges = [f"≤{bands[0]} min"] + [f"{a}–{b} min" for a, b in zip(bands, bands[1:])] + [f">{bands[-1]} min"]
    return edges + ["不可达 unreachable" if chinese else "unreachable"]


def band_index(minutes, bands=BANDS) -> np.ndarray:
    """Band number per time: 0 for ≤ bands[0], …, len(bands) beyond the last, len(bands)+1 when NaN."""
    t = np.asarray(minutes, dtype=float)
    idx = np.searchsorted(np.asarray(bands, dtype=float), t, side="left")
    return np.where(np.isnan(t), len(bands) + 1, idx)


def _share_colour(share: float) -> str:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if share is None or np.isnan(share):
        return NO_DATA_COLOUR
    k = int(np.searchsorted(SHARE_BINS, share, side="right"))
    return to_hex(colormaps["YlGnBu"](0.15 + 0.8 * k / len(SHARE_BINS)))


# ---------------------------------------------------------------- the interactive map

class _Raw(Element):
    """Literal text (inlined assets, legend HTML) that Jinja must not interpret."""

    _template = Template("{{ this.text }}")

    def __init__(self, text: str):
        super().__init__()
        self.text = text


class _Script(MacroElement):
    """A block of JavaScript run after the layers it names have been created."""

    _template = Template("{% macro script(this, kwargs) %}{{ this.code }}{% endmacro %}")

    def __init__(self, code: str):
        super().__init__()
        self._name = "GeoaccessScript"
        self.code = code


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _leaflet_css() -> str:
    css = _static("leaflet/leaflet.css")
    for png in sorted((STATIC / "leaflet" / "images").glob("*.png")):
        uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
        css = css.replace(f"url(images/{png.name})", f"url({uri})")
    return css


def _make_offline(m: folium.Map) -> None:
    """Replace folium's CDN links (Leaflet, jQuery, Bootstrap, fonts) by inlined Leaflet and our assets."""
    m.default_js = []
    m.default_css = []
    js = _static("leaflet/leaflet.js").replace("//# sourceMappingURL=leaflet.js.map", "")
    header = m.get_root().header
    header.add_child(_Raw(f"<style>{_leaflet_css()}</style>"), name="leaflet_css")
    header.add_child(_Raw(f"<script>{js}</script>"), name="leaflet")
    header.add_child(_Raw(f"<style>{_static('geoaccess_map.css')}</style>"), name="geoaccess_css")
    header.add_child(_Raw(f"<script>{_static('geoaccess_map.js')}</script>"), name="geoaccess_js")


def _js(value) -> str:
    """Compact JSON safe to embed in a <script> block."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def _wgs84(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if gdf.crs is None:
        return gdf.set_crs("EPSG:4326")
    return gdf.to_crs("EPSG:4326")


def _located(gdf: gpd.GeoDataFrame, what: str) -> gpd.GeoDataFrame:
    """WGS84 rows with a usable point (others cannot be drawn and are logged), index 0..n-1."""
    gdf = _wgs84(gdf)
    ok = gdf.geometry.notna() & ~gdf.geometry.is_empty
    if not ok.all():
        log.info("map: %d %s without a position are not drawn", int((~ok).sum()), what)
    return gdf[ok].reset_index(drop=True)


def _column(df: pd.DataFrame, name: str, default="") -> pd.Series:
    return df[name] if name in df else pd.Series(default, index=df.index)


def _codes(values: pd.Series, names: Mapping[str, str]) -> tuple[list[int], list[str]]:
    codes, uniques = pd.factorize(values.fillna("").astype(str))
    return codes.tolist(), [names.get(u, u) for u in uniques]


def _minutes(values: pd.Series) -> list:
    return [None if v != v else int(v) for v in np.round(values.to_numpy(float)).tolist()]


def _lonlat(gdf: gpd.GeoDataFrame) -> dict:
    return {"lat": np.round(gdf.geometry.y.to_numpy(), 5).tolist(),
            "lon": np.round(gdf.geometry.x.to_numpy(), 5).tolist()}


def _settlement_data(s: gpd.GeoDataFrame, levels, level, bands, facilities) -> dict:
    """Columnar arrays for the settlement layers (one copy shared by every level's layer)."""
    kind, kinds = _codes(_column(s, "kind"), KIND_NAMES)
    qual, quals = _codes(_column(s, "loc_quality", "exact"), QUALITY_NAMES)
    status, statuses = _codes(_column(s, "status", "ok"), STATUS_NAMES)
    xy = _lonlat(s)
    stack = pd.DataFrame(xy).groupby(["lat", "lon"])["lat"].transform("size")
    near_cols = {lvl: f"nearest_{lvl}_id" for lvl in levels if f"nearest_{lvl}_id" in s}
    ids = [s[c].dropna().astype(str).to_numpy() for c in near_cols.values()]
    referenced = pd.Index(pd.unique(np.concatenate(ids)) if ids else [])
    names = {}
    if facilities is not None and "facility_id" in facilities:
        names = dict(zip(facilities["facility_id"].astype(str), _column(facilities, "name").astype(str)))
    return {
        **xy,
        "id": _column(s, "settlement_id").astype(str).tolist(),
        "name": _column(s, "name").fillna("").astype(str).tolist(),
        "kind": kind, "kinds": kinds, "qual": qual, "quals": quals, "status": status, "statuses": statuses,
        "approx": (_column(s, "loc_quality", "exact").fillna("exact") != "exact").astype(int).tolist(),
        "stack": stack.astype(int).tolist(),
        "relocation": np.flatnonzero(_column(s, "kind").to_numpy() == "relocation").tolist(),
        "levels": list(levels),
        "level": level,
        "levelNames": {lvl: " ".join(LEVEL_NAMES[lvl]) for lvl in levels},
        "t": {lvl: _minutes(s[f"t_{lvl}_min"]) for lvl in levels},
        "band": {lvl: band_index(s[f"t_{lvl}_min"], bands).tolist() for lvl in levels},
        "near": {lvl: referenced.get_indexer(s[c].astype(str)).tolist() for lvl, c in near_cols.items()},
        "fac": [[i, names.get(i, "")] for i in referenced],
        "colours": band_colours(bands),
        **_time_basis_data(s, levels),
    }


def _time_basis_data(s: gpd.GeoDataFrame, levels) -> dict:
    """How each time may be read: `time_basis` (lower bounds flagged) and the range columns when the run has them."""
    out: dict = {}
    if "time_basis" in s:
        basis = s["time_basis"].fillna("").astype(str)
        out["basis"], out["bases"] = _codes(basis, TIME_BASIS_NAMES)
        out["lower"] = basis.eq("position_lower_bound").astype(int).tolist()
    lo = {lvl: _minutes(s[f"t_{lvl}_low_min"]) for lvl in levels if f"t_{lvl}_low_min" in s}
    hi = {lvl: _minutes(s[f"t_{lvl}_high_min"]) for lvl in levels if f"t_{lvl}_high_min" in s}
    if lo or hi:
        out["lo"], out["hi"] = lo, hi
    return out


def _popup_label(key: str) -> str:
    """A popup's label for an attribute: Chinese and English where known, else its schema meaning, else the key."""
    if key in POPUP_LABELS:
        return POPUP_LABELS[key]
    info = column_info(key)
    return info.description if info is not None else key


def _popup_table(row: pd.Series, title_cols=("name", "unit_name", "site_id")) -> str:
    """Generic popup: the first title column in bold, then every other attribute under a readable label."""
    title = next((row[c] for c in title_cols if c in row and pd.notna(row[c])), "")
    lines = [f"<b>{html.escape(str(title))}</b>"]
    for key, value in row.items():
        if key in ("geometry", "lon", "lat") or (key in title_cols and value == title):
            continue
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            continue
        if key == "unit_level":
            value = UNIT_LEVEL_NAMES.get(str(value), value)
        elif key == "rule":
            value = str(value).split(" ", 1)[-1]  # the standard's name; the rule key stays in the CSV
        elif isinstance(value, float):
            value = f"{value:,.3g}" if abs(value) < 1 else f"{value:,.1f}"
        lines.append(f"{html.escape(_popup_label(str(key)))}: {html.escape(str(value))}")
    return "<br>".join(lines)


def _marker_data(gdf: gpd.GeoDataFrame, icon: tuple[str, int], popups: list[str]) -> dict:
    titles = _column(gdf, "name").fillna("").astype(str).tolist()
    return {**_lonlat(gdf), "icon": icon, "popup": popups, "title": titles}


def _facility_popup(row: pd.Series) -> str:
    level = str(row.get("level", ""))
    lines = [f"<b>{html.escape(str(row.get('name', '')))}</b>", html.escape(FACILITY_NAMES.get(level, level)),
             f"编号 id: {html.escape(str(row.get('facility_id', '')))}"]
    if pd.notna(row.get("basis")):
        lines.append(f"<small>依据 basis: {html.escape(str(row['basis']))}</small>")
    return "<br>".join(lines)


def _county_layer(counties: gpd.GeoDataFrame, summary: pd.DataFrame | None, column: str) -> dict:
    """County polygons (simplified to ~500 m) with the coverage share and the choropleth style."""
    c = counties[["adcode", "name", "geometry"]].copy()
    c["adcode"] = c["adcode"].astype(str)
    if summary is not None:
        s = pd.DataFrame(summary.drop(columns="geometry", errors="ignore")).drop(columns="county_name", errors="ignore")
        s = s.assign(county_code=s["county_code"].astype(str))
        c = c.merge(s, how="left", left_on="adcode", right_on="county_code")
    share = pd.to_numeric(_column(c, column, np.nan), errors="coerce")
    low = pd.to_numeric(_column(c, f"{column}_low", np.nan), errors="coerce")
    high = pd.to_numeric(_column(c, f"{column}_high", np.nan), errors="coerce")
    uncertain = _column(c, "uncertain", False).map(_truthy).to_numpy(bool)
    geoms = shapely.simplify(c.geometry.values, 0.005, preserve_topology=True)
    c["geometry"] = shapely.transform(geoms, lambda xy: np.round(xy, 4))
    c["share"] = [("不确定 uncertain: " if u else "") + (f"{v:.0%}" if pd.notna(v) else "—")
                  + (f" (范围 range {lo:.0%}–{hi:.0%})" if pd.notna(lo) and pd.notna(hi) else "")
                  for v, lo, hi, u in zip(share, low, high, uncertain)]
    c["n"] = [f"{v:.0f}" if pd.notna(v) else "—" for v in pd.to_numeric(_column(c, "n_settlements", np.nan))]
    median = pd.to_numeric(_column(c, "median_t_county_min", np.nan))
    c["median"] = [f"{v:.0f} min" if pd.notna(v) else "—" for v in median]
    c["style"] = [dict(UNCERTAIN_STYLE) if u else
                  {"fillColor": _share_colour(v), "color": "#555", "weight": 0.8, "fillOpacity": 0.55}
                  for v, u in zip(share, uncertain)]
    return json.loads(c[["adcode", "name", "share", "n", "median", "style", "geometry"]].to_json())


def _truthy(value) -> bool:
    """True for True, 1, "True", "true", "1" (a CSV read back gives strings); False for anything else."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if value is not None and value == value else False


def _unit_positions(settlements: gpd.GeoDataFrame) -> pd.Series:
    """Point per unit code: settlement ids, admin codes (a seat's code is its unit's), else township centroids."""
    xy = pd.DataFrame({"x": settlements.geometry.x, "y": settlements.geometry.y,
                       "town": _column(settlements, "township_code").astype(str)})
    towns = xy[~xy["town"].isin(["", "nan", "None"])].groupby("town")[["x", "y"]].mean()
    points = pd.concat([
        pd.Series(settlements.geometry.to_numpy(), index=_column(settlements, "settlement_id").astype(str)),
        pd.Series(settlements.geometry.to_numpy(), index=_column(settlements, "admin_code").astype(str)),
        pd.Series(gpd.points_from_xy(towns["x"], towns["y"]), index=towns.index),
    ])
    return points[~points.index.duplicated()]


def _locate_blank_spots(blank: pd.DataFrame, settlements: gpd.GeoDataFrame, counties: gpd.GeoDataFrame) -> dict:
    """Rings and county outlines for the blank spots: their own geometry, else located by unit code."""
    if isinstance(blank, gpd.GeoDataFrame) and blank.geometry.notna().any():
        geom = _wgs84(blank).geometry.reset_index(drop=True)
    else:
        code = blank["unit_code"].astype(str).reset_index(drop=True)
        points = code.map(_unit_positions(settlements))
        polygons = code.str[:6].map(pd.Series(counties.geometry.to_numpy(), index=counties["adcode"].astype(str)))
        is_county = (_column(blank, "unit_level") == "county").reset_index(drop=True)
        geom = polygons.where(is_county & polygons.notna(), points)
    rows = pd.DataFrame(blank.drop(columns="geometry", errors="ignore")).reset_index(drop=True).assign(_geom=geom)
    missing = int(rows["_geom"].isna().sum())
    if missing:
        log.info("map: %d blank spots have no location and are listed only in the table", missing)
    rows = rows.dropna(subset="_geom")
    if rows.empty:  # e.g. only a register-wide finding, which has no place
        return {"lon": [], "lat": [], "popup": [], "areas": {"type": "FeatureCollection", "features": []},
                "missing": missing}
    key = rows["unit_code"].astype(str) if "unit_code" in rows else rows.index.to_series().astype(str)
    grouped = rows.drop(columns="_geom").groupby(key, sort=False)
    popups = grouped.apply(lambda g: "<b>空白点 blank spot</b><br>"
                           + "<hr>".join(_popup_table(r) for _, r in g.iterrows()),
                           include_groups=False)
    first = rows.groupby(key, sort=False)["_geom"].first()
    units = gpd.GeoDataFrame({"popup": popups.to_numpy()}, geometry=first.to_numpy(), crs="EPSG:4326")
    is_area = units.geom_type.isin(["Polygon", "MultiPolygon"])
    points = units[~is_area].set_geometry(units[~is_area].representative_point())
    areas = units[is_area].set_geometry(units[is_area].simplify(0.005))
    return {**_lonlat(points), "popup": points["popup"].tolist(), "areas": json.loads(areas.to_json()),
            "missing": missing}


def _raster_rgba(path, bands, max_pixels: int = 1600) -> tuple[np.ndarray, list[list[float]]]:
    """Travel-time GeoTIFF → RGBA image in Web Mercator rows (so it lines up in Leaflet) and its bounds."""
    import rasterio
    from rasterio.transform import from_bounds
    from rasterio.warp import Resampling, reproject, transform_bounds

    with rasterio.open(path) as src:
        left, bottom, right, top = transform_bounds(src.crs, "EPSG:3857", *src.bounds)
        width = min(src.width, max_pixels)
        height = max(1, round(width * (top - bottom) / (right - left)))  # square pixels in Web Mercator
        if height > max_pixels:
            width, height = max(1, round(width * max_pixels / height)), max_pixels
        transform = from_bounds(left, bottom, right, top, width, height)
        data = np.full((height, width), np.nan, dtype="float32")
        reproject(rasterio.band(src, 1), data, dst_transform=transform, dst_crs="EPSG:3857",
                  src_nodata=src.nodata, dst_nodata=np.nan, resampling=Resampling.nearest)
    west, south, east, north = transform_bounds("EPSG:3857", "EPSG:4326", left, bottom, right, top)
    colours = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in band_colours(bands)], dtype="uint8")
    rgba = np.zeros((height, width, 4), dtype="uint8")
    valid = np.isfinite(data)
    rgba[..., :3] = colours[band_index(data, bands)]
    rgba[..., 3] = np.where(valid, 200, 0)
    return rgba, [[south, west], [north, east]]


def _referral_data(referral: gpd.GeoDataFrame, bands) -> dict:
    """The referral layer's arrays: each facility below the prefecture level, coloured by the band of its time to
    the nearest facility of the next level; popups with its time to every higher level (bilingual)."""
    from .access import FACILITY_GROUP, GROUP_ORDER

    r = _located(referral, "referral facilities")
    rank = _column(r, "level").map(FACILITY_GROUP).map(GROUP_ORDER.index)
    r = r[rank.notna() & (rank < len(GROUP_ORDER) - 1)].reset_index(drop=True)
    rank = rank[rank.notna() & (rank < len(GROUP_ORDER) - 1)].astype(int).to_numpy()
    names = dict(zip(_column(referral, "facility_id").astype(str), _column(referral, "name").astype(str)))
    nxt = [GROUP_ORDER[k + 1] for k in rank]
    t_next = np.array([r.at[i, f"t_{g}_min"] if f"t_{g}_min" in r else np.nan for i, g in enumerate(nxt)], float)
    popups = []
    for i, row in r.iterrows():
        level = str(row.get("level", ""))
        lines = [f"<b>{html.escape(str(row.get('name', '')))}</b>", html.escape(FACILITY_NAMES.get(level, level)),
                 "转诊 referral: 到上级机构的通行时间 travel time to the higher levels"]
        for g in GROUP_ORDER[rank[i] + 1:]:
            t = row.get(f"t_{g}_min")
            to = str(row.get(f"nearest_{g}_id") or "")
            text = "不可达 unreachable" if t is None or t != t else f"{t:.0f} min"
            where = f" → {html.escape(names.get(to, to))}" if to and to not in ("None", "nan") else ""
            line = f"{html.escape(' '.join(LEVEL_NAMES[g]))}: {text}{where}"
            lines.append(f"<b>{line}</b>" if g == nxt[i] else line)
        popups.append("<br>".join(lines))
    return {**_lonlat(r), "band": band_index(t_next, bands).tolist(), "colours": band_colours(bands),
            "popup": popups}


def _catchment_geojson(polygons: gpd.GeoDataFrame, bands) -> dict:
    """Catchment polygons simplified to ~800 m (about one 30″ DEM cell: their staircase edges) and rounded to ~10 m,
    each with its band colour and a popup."""
    c = _wgs84(polygons).reset_index(drop=True)
    colours = band_colours(bands)
    idx = band_index(pd.to_numeric(_column(c, "band_to_min", np.nan), errors="coerce").to_numpy(float), bands)
    geoms = shapely.simplify(c.geometry.values, 0.008, preserve_topology=True)
    geoms = shapely.transform(geoms, lambda xy: np.round(xy, 4))
    popups = []
    for _, row in c.iterrows():
        level = str(row.get("level", ""))
        popups.append("<br>".join([
            f"<b>{html.escape(str(row.get('name', '')))}</b> ({html.escape(FACILITY_NAMES.get(level, level))})",
            f"服务范围 catchment: {row.get('band_from_min', 0):g}–{row.get('band_to_min', 0):g} min",
            f"居民点 settlements: {int(row.get('n_settlements', 0) or 0)}; 人口 people: "
            f"{float(row.get('population', 0) or 0):,.0f}",
            f"面积 area: {float(row.get('area_km2', 0) or 0):,.0f} km²"]))
    frame = gpd.GeoDataFrame({"c": [colours[k] for k in idx], "popup": popups}, geometry=geoms, crs="EPSG:4326")
    return json.loads(frame[~frame.geometry.is_empty].to_json(drop_id=True))


def _legend_row(symbol: str, text: str, *, cls: str = "ga-centred", style: str = "") -> str:
    return (f'<div class="ga-row"><span class="ga-swatch {cls}" style="{style}">{symbol}</span>'
            f"{html.escape(text)}</div>")


def _caption(lines) -> str:
    """The sources-and-assumptions box (bilingual lines), folded to its heading on small views."""
    if not lines:
        return ""
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    return (f'<div class="ga-caption" id="ga-caption"><details open><summary>数据来源与假设 sources and assumptions'
            f"</summary>{body}</details></div>")


def _legend(title: str, level: str, bands, facility_levels, extras: list[tuple[str, str]], share_label: str,
            uncertain: bool = False) -> str:
    """Title box and legend (HTML; classes from geoaccess_map.css)."""
    rows = [_legend_row("", lab, cls="ga-dot", style=f"background:{c}")
            for c, lab in zip(band_colours(bands), band_labels(bands))]
    rows.append(_legend_row("", "位置近似 approximate position", cls="ga-hollow"))
    fac = []
    for lv in facility_levels:
        css, size = FACILITY_ICONS.get(lv, ("ga-other", 10))
        px = min(size, 14)
        fac.append(_legend_row(f'<span class="ga-icon {css}" style="width:{px}px;height:{px}px;display:inline-block">'
                               "</span>", FACILITY_NAMES.get(lv, lv)))
    extra = [_legend_row(symbol, text) for symbol, text in extras]
    shares = [_legend_row("", f"{lo}–{lo + 20}%", style=f"background:{_share_colour((lo + 10) / 100)};opacity:.8")
              for lo in range(0, 100, 20)]
    shares.append(_legend_row("", "无数据 no data", style=f"background:{NO_DATA_COLOUR}"))
    if uncertain:
        shares.append(_legend_row("", "不确定 uncertain (近似时间多，范围过宽 many approximated times: range too wide)",
                                  cls="ga-uncertain"))
    level_name = html.escape(" ".join(LEVEL_NAMES[level]))
    return (
        f'<div class="ga-title">{html.escape(title)}</div>'
        f'<div class="ga-legend" id="ga-legend"><details open><summary>图例 legend</summary>'
        f'<h4>通行时间 travel time to<br><span id="ga-legend-level">{level_name}</span></h4>' + "".join(rows)
        + (f'<h4>医疗机构 facilities</h4>{"".join(fac)}' if fac else "")
        + (f'<h4>重点 highlights</h4>{"".join(extra)}' if extra else "")
        + f'<h4>县域 county: {html.escape(share_label)}</h4>{"".join(shares)}</details></div>'
    )


def coverage_map(
    layers: Mapping[str, gpd.GeoDataFrame],
    *,
    counties: gpd.GeoDataFrame,
    title: str,
    level: str = "county",
    bands=BANDS,
    rasters: Mapping[str, str | os.PathLike] | None = None,
    tiles: str | None = "offline",
    coverage_column: str = "share_county_60",
    attribution: str | None = None,
    caption=None,
) -> folium.Map:
    """Build the interactive coverage map; it renders with no internet (Leaflet is inlined).

    Parameters
    ----------
    layers : dict
        ``settlements`` (required), and any of ``facilities``, ``county_summary``, ``blank_spots``,
        ``proposed_points``, ``regional_centres``; columns per ``geoaccess.schema``.
    counties : GeoDataFrame
        County polygons with ``adcode`` and ``name``, shaded by ``coverage_column`` of ``county_summary``.
    title : str
        Shown at the top of the map.
    level : str
        Facility level group (``clinic``, ``thc``, ``county``, ``pref``) whose settlement layer, and the
        facility levels that count for it, show at start (the others are one click away).
    bands : sequence of minutes
        Upper edges of the travel-time bands.
    rasters : dict, optional
        Level → travel-time GeoTIFF (minutes); each becomes a toggleable image overlay.
    tiles : str or None
        ``"offline"``/``None``: plain background, no tile requests; ``"osm"``: OpenStreetMap tiles (online);
        any other folium/xyzservices tile name, or a URL template (``…/{z}/{x}/{y}.png``, credited with
        ``attribution``), is passed to ``folium.TileLayer``.
    coverage_column : str
        ``county_summary`` column for the choropleth (a share in 0–1).
    attribution : str, optional
        Data attribution shown in the map corner (e.g. gazetteer and boundary sources).
    caption : list of str, optional
        Sources and assumptions, one bilingual line each (e.g. `caption_lines(summary)`), in a box on the map.

    ``layers["roads"]`` (lines with ``road_class``), when given, is drawn as a roads layer;
    ``layers["referral"]`` (the gaps run's referral table, facility points) as a referral layer and
    ``layers["catchments"]`` (``catchments_{level}.gpkg``; its level in ``attrs["level"]``) as a catchments
    layer, both off at start.

    Returns
    -------
    folium.Map
    """
    settlements = _located(layers["settlements"], "settlements")
    levels = [lv for lv in LEVELS if f"t_{lv}_min" in settlements]
    if level not in levels:
        raise InputError(None, f"map level {level!r} has no t_{level}_min column; choose one of {levels}")
    counties = _wgs84(counties)
    facilities = layers.get("facilities")
    facilities = _located(facilities, "facilities") if facilities is not None and len(facilities) else None

    # A national map: settlements as one image per level, county outlines simplified (geoaccess.map_points)
    as_image = len(settlements) > MAX_SETTLEMENT_MARKERS
    if as_image:
        counties = counties.assign(geometry=counties.geometry.simplify(COUNTY_SIMPLIFY_DEG, preserve_topology=True))
    m = folium.Map(tiles=None, prefer_canvas=True, control_scale=True, zoom_start=6, maxZoom=16)
    _make_offline(m)
    if tiles == "osm":
        folium.TileLayer("OpenStreetMap", name="OpenStreetMap 在线底图 (online)", overlay=True).add_to(m)
    elif tiles not in (None, "offline"):
        attr = (attribution or "map tiles") if "{z}" in tiles else None
        folium.TileLayer(tiles, attr=attr, name="在线底图 online basemap", overlay=True).add_to(m)
    if attribution:
        m.add_child(_Script(f"{m.get_name()}.attributionControl.addAttribution({_js(html.escape(attribution))});"))

    share_label = getattr(column_info(coverage_column, "county_summary"), "description", coverage_column)
    tooltip = folium.GeoJsonTooltip(
        ["name", "adcode", "share", "n", "median"],
        aliases=["县 county", "代码 code", f"覆盖率 share ({coverage_column})", "居民点 settlements",
                 "到县医院中位时间 median to county hospital"])
    county_layer = folium.GeoJson(_county_layer(counties, layers.get("county_summary"), coverage_column),
                                  name=f"县域覆盖率 counties: {share_label}", tooltip=tooltip).add_to(m)
    roads = layers.get("roads")
    bottom = [county_layer.get_name()]
    if roads is not None and len(roads):
        road_group = folium.FeatureGroup(name=f"道路 roads ({_road_label(roads)})").add_to(m)
        bottom.append(road_group.get_name())
        m.add_child(_Script(f"geoaccess.addRoads({road_group.get_name()},{_js(_road_geojson(roads))},"
                            f"{_js(ROAD_STYLES)});"))
    if rasters:
        folium.map.CustomPane("ga-rasters", z_index=350, pointer_events=False).add_to(m)
    for lv, path in (rasters or {}).items():
        rgba, bounds = _raster_rgba(path, bands)
        folium.raster_layers.ImageOverlay(rgba, bounds, name=f"通行时间面 travel-time surface: {' '.join(LEVEL_NAMES[lv])}",
                                          opacity=0.7, show=False, pane="ga-rasters").add_to(m)

    groups = {lv: folium.FeatureGroup(name=f"居民点 settlements: {' '.join(LEVEL_NAMES[lv])}", overlay=False,
                                      show=lv == level).add_to(m) for lv in levels}
    if as_image:
        images, image_bounds = settlement_band_images(settlements, levels, bands, band_colours(bands))
        for lv, g in groups.items():
            folium.raster_layers.ImageOverlay(images[lv], image_bounds, name=f"settlements {lv}", opacity=1.0,
                                              interactive=False).add_to(g)
        data = {"relocation": [], "levelNames": {lvl: " ".join(LEVEL_NAMES[lvl]) for lvl in levels}}
    else:
        data = _settlement_data(settlements, levels, level, bands, facilities)
    relocation = folium.FeatureGroup(name="搬迁安置点 relocation settlements").add_to(m) if data["relocation"] else None
    group_js = "{" + ",".join(f"{_js(lv)}:{g.get_name()}" for lv, g in groups.items()) + "}"
    code = [] if as_image else \
        [f"geoaccess.addSettlements({group_js},{relocation.get_name() if relocation else 'null'},{_js(data)});"]
    extras, front = [], []
    if relocation:
        extras.append(('<span class="ga-swatch ga-ring" style="border:2.5px solid #6a3d9a"></span>',
                       "搬迁安置点 relocation settlement"))
        front.append(relocation.get_name())
    facility_levels = _add_facilities(m, facilities, level, code) if facilities is not None else []
    extras += _add_sites(m, layers, code)
    blank = layers.get("blank_spots")
    if blank is not None and len(blank):
        spots = _locate_blank_spots(blank, settlements, counties)
        missing = f", {spots['missing']} 无位置 without position" if spots["missing"] else ""
        group = folium.FeatureGroup(name=f"空白点 blank spots ({len(blank)}{missing})").add_to(m)
        code.append(f"geoaccess.addBlankSpots({group.get_name()},{_js(spots)});")
        front.append(group.get_name())
        extras.append(('<span class="ga-swatch ga-ring" style="border:3px dashed #e31a1c"></span>',
                       "空白点 blank spot (institutional gap)"))

    referral = layers.get("referral")
    if referral is not None and len(referral):
        d = _referral_data(referral, bands)
        group = folium.FeatureGroup(name=f"转诊 referral: 机构到上一级机构的时间 facility → next level ({len(d['lat'])})",
                                    show=False).add_to(m)
        code.append(f"geoaccess.addReferral({group.get_name()},{_js(d)});")
        front.append(group.get_name())
        extras.append(('<span class="ga-swatch ga-ring" style="border:3px solid #fdae61"></span>',
                       "转诊 referral: 机构到上一级的时间（同色带） facility's time to the next level (same bands)"))
    catchments = layers.get("catchments")
    if catchments is not None and len(catchments):
        present = set(_column(catchments, "level").astype(str))
        lv = catchments.attrs.get("level") or next((g for g in reversed(LEVELS) if present <= set(LEVEL_GROUPS[g])),
                                                   "clinic")
        group = folium.FeatureGroup(name=f"服务范围 catchments: {' '.join(LEVEL_NAMES.get(lv, (lv,)))} "
                                         f"({catchments['facility_id'].nunique()} 机构 facilities)", show=False).add_to(m)
        code.append(f"geoaccess.addCatchments({group.get_name()},{_js(_catchment_geojson(catchments, bands))});")
        bottom.append(group.get_name())
        extras.append(('<span class="ga-swatch ga-catch"></span>',
                       "服务范围 catchment: 最近机构的区域，按通行时间带 area of the nearest facility, by travel-time band"))
    if roads is not None and len(roads):
        extras.append(('<span class="ga-swatch ga-road"></span>', "道路 road"))
    code.append(f"geoaccess.keepOrder({m.get_name()},[{','.join(bottom)}],[{','.join(front)}]);")
    code.append(f"geoaccess.legendFollows({m.get_name()},{_js(data['levelNames'])});")
    code.append(f"geoaccess.facilitiesFollow({m.get_name()},{_js({lv: list(LEVEL_GROUPS[lv]) for lv in levels})});")
    summary = layers.get("county_summary")
    uncertain = summary is not None and "uncertain" in summary and summary["uncertain"].map(_truthy).any()
    m.get_root().html.add_child(_Raw(_legend(title, level, bands, facility_levels, extras, share_label, uncertain)
                                     + _caption(caption)))
    control = folium.LayerControl(collapsed=True).add_to(m)
    code.append(f"geoaccess.compactControls({m.get_name()},{control.get_name()});")
    m.add_child(_Script("\n".join(code)))
    west, south, east, north = (settlements if len(settlements) else counties).total_bounds
    m.fit_bounds([[south, west], [north, east]])
    return m


def _road_geojson(roads: gpd.GeoDataFrame) -> dict:
    """Road lines simplified to ~200 m and rounded to ~10 m, each with its class key (`c`) for the style."""
    r = _wgs84(roads)
    cls = _column(r, "road_class", "other").fillna("other").astype(str)
    geoms = shapely.simplify(r.geometry.values, 0.002)
    geoms = shapely.transform(geoms, lambda xy: np.round(xy, 4))
    frame = gpd.GeoDataFrame({"c": cls.where(cls.isin(list(ROAD_STYLES)), "other").to_numpy()}, geometry=geoms,
                             crs="EPSG:4326")
    return json.loads(frame[~frame.geometry.is_empty].to_json(drop_id=True))


def _road_label(roads: gpd.GeoDataFrame) -> str:
    classes = _column(roads, "road_class", "").fillna("").astype(str)
    names = {"expressway": "高速 expressway", "national": "国道 national", "provincial": "省道 provincial"}
    shown = [names.get(c, c) for c in ("expressway", "national", "provincial") if (classes == c).any()]
    return ", ".join(shown) or f"{len(roads)} lines"


#: A facility level with more icons than this starts hidden (a layer to switch on): the national map's 2,623 county
#: hospitals would bury the counties' shading.
MAX_FACILITY_ICONS_SHOWN = 1_000


def _add_facilities(m: folium.Map, facilities: gpd.GeoDataFrame, level: str, code: list[str]) -> list[str]:
    """One toggleable icon layer per facility level; the levels counting for ``level`` show at start, unless they
    hold more than :data:`MAX_FACILITY_ICONS_SHOWN` icons."""
    level_col = _column(facilities, "level").astype(str)
    ordered = [lv for lv in FACILITY_LEVELS if (level_col == lv).any()] + sorted(set(level_col) - set(FACILITY_LEVELS))
    for lv in reversed(ordered):
        sub = facilities[level_col == lv]
        shown = (lv in LEVEL_GROUPS[level] or lv not in FACILITY_LEVELS) and len(sub) <= MAX_FACILITY_ICONS_SHOWN
        group = folium.FeatureGroup(name=f"{FACILITY_NAMES.get(lv, lv)} ({len(sub)})", show=shown).add_to(m)
        d = _marker_data(sub, FACILITY_ICONS.get(lv, ("ga-other", 10)), [_facility_popup(r) for _, r in sub.iterrows()])
        code.append(f"geoaccess.addMarkers({group.get_name()},{_js(d)},'facilities',{_js(lv)});")
    return ordered


def _add_sites(m: folium.Map, layers: Mapping[str, gpd.GeoDataFrame], code: list[str]) -> list[tuple[str, str]]:
    """Proposed temporary points and regional-centre sites, when present; returns their legend entries."""
    legend = []
    sites = (("proposed_points", "ga-proposed", 15, "拟设临时医疗点 proposed temporary point"),
             ("regional_centres", "ga-centre-site", 26, "区域医疗次中心选址 regional-centre site"))
    for key, css, size, label in sites:
        layer = layers.get(key)
        if layer is None or not len(layer):
            continue
        layer = _located(layer, key)
        group = folium.FeatureGroup(name=f"{label} ({len(layer)})").add_to(m)
        d = _marker_data(layer, (css, size), [_popup_table(r) for _, r in layer.iterrows()])
        code.append(f"geoaccess.addMarkers({group.get_name()},{_js(d)},'other',{_js(key)});")
        symbol = f'<span class="ga-icon {css}" style="width:14px;height:14px;display:inline-block"></span>'
        legend.append((symbol, label))
    return legend


def map_html(m: folium.Map) -> str:
    """The complete, self-contained HTML document of a map."""
    return m.get_root().render()


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_coverage_map(layers: Mapping[str, gpd.GeoDataFrame], path: str | os.PathLike, **kwargs) -> Path:
    """Build the coverage map (``coverage_map`` keywords) and write it atomically as one HTML file.

    The conventional location is ``maps/{region}_coverage.html``. Returns the path written.
    """
    return write_map(coverage_map(layers, **kwargs), path)


def write_map(m: folium.Map, path: str | os.PathLike) -> Path:
    """Write a map atomically as one self-contained HTML file; returns the path written."""
    path = Path(path)
    _write_text_atomic(path, map_html(m))
    log.info("map: wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def caption_lines(summary: dict | None, attribution: str | None = None) -> list[str]:
    """Sources and the assumptions that shape the figures, one bilingual line each, from a `gaps` run summary."""
    lines = [f"数据来源 sources: {attribution}"] if attribution else []
    if not summary:
        return lines
    assumed = " ".join(summary.get("assumptions", []))
    source = (summary.get("engine") or {}).get("road_source", "")
    if source == "shapefile" and "trunk" in assumed:
        lines.append("道路：仅2000年国道、省道干线（无县乡村道路），离路段按地形调整的越野速度估计 / roads: China 2000 "
                     "national and provincial trunk roads only (no county or village roads); off-road legs at an "
                     "assumed terrain-adjusted speed")
    elif source:
        lines.append(f"道路 roads: {source}; 离路段按地形调整的越野速度估计 / off-road legs at an assumed "
                     "terrain-adjusted speed")
    if "derived from the standards" in assumed:
        lines.append("医疗机构：按标准推定（每个已定位行政驻地一所），非实地调查 / facilities: derived from the "
                     "standards (one at each located administrative seat), not a survey of buildings")
    inputs = summary.get("inputs", {})
    n = int(inputs.get("settlements", 0) or 0)
    exact = int((inputs.get("by_loc_quality") or {}).get("exact", 0) or 0)
    if n and exact < n:
        lines.append(f"位置：{n - exact}/{n} 个居民点无自身坐标，置于乡镇或县驻地，其时间为近似值（下限或范围） / "
                     f"positions: {n - exact} of {n} settlements have no coordinates of their own: placed at their "
                     "township or county seat, their times are approximations (lower bounds or ranges)")
    return lines


def _caption_text(fig, lines, font) -> None:
    """The caption under a figure (kept in the saved image by a tight bounding box)."""
    if not lines:
        return
    fig.draw_without_rendering()  # lay the figure out first: the caption goes under everything it drew
    bottom = fig.get_tightbbox().y0 / fig.get_figheight()
    fig.text(0.01, min(0.0, bottom) - 0.004, "\n".join(_wrap(line, 150) for line in lines), ha="left", va="top",
             fontsize=6.5, fontfamily=font or "sans-serif", color="#333333")


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


# ---------------------------------------------------------------- static figures

def cjk_font() -> str | None:
    """Name of an installed font with Chinese glyphs that matplotlib can use, else None."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    found = next((f for f in CJK_FAMILIES if f in names), None)
    if found:
        return found
    try:  # fonts installed after matplotlib built its font cache
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        path = line.strip().rstrip(":")
        if path.lower().endswith((".ttf", ".otf", ".ttc")):
            font_manager.fontManager.addfont(path)
            return font_manager.FontProperties(fname=path).get_name()
    return None


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    font = cjk_font()
    if font is None:
        log.info("figures: no Chinese font found (install fonts-noto-cjk); labels in English only")
    fig = Figure(figsize=(width, height), dpi=150, layout="constrained")
    return fig, font


def _save_figure(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight", pad_inches=0.12)
    return path


def plot_settlement_bands(settlements: gpd.GeoDataFrame, counties: gpd.GeoDataFrame, level: str,
                          path: str | os.PathLike, *, bands=BANDS, title: str | None = None, caption=None) -> Path:
    """PNG map of settlements coloured by travel-time band to ``level``, over county outlines; ``caption``
    (sources and assumptions, e.g. `caption_lines(summary)`) under it.

    Returns the path written.
    """
    column = f"t_{level}_min"
    if column not in settlements:
        raise InputError(None, f"settlements have no {column} column for the figure")
    s, c = _wgs84(settlements), _wgs84(counties)
    west, south, east, north = c.total_bounds if len(c) else s.total_bounds
    stretch = 1 / np.cos(np.radians((south + north) / 2))
    fig, font = _figure(11, min(14.0, 1.6 + 10 * stretch * (north - south) / max(east - west, 1e-9)))
    ax = fig.subplots()
    c.boundary.plot(ax=ax, color="#8a8a8a", linewidth=0.4, zorder=1)
    idx = band_index(s[column], bands)
    labels = band_labels(bands, chinese=font is not None)
    x, y = s.geometry.x.to_numpy(), s.geometry.y.to_numpy()
    for k, colour in enumerate(band_colours(bands)):
        sel = idx == k
        ax.scatter(x[sel], y[sel], s=5, c=colour, linewidths=0, zorder=2 + k, label=f"{labels[k]} ({sel.sum():,})")
    zh, en = LEVEL_NAMES[level]
    heading = title or (f"到{zh}的通行时间 / travel time to {en}" if font else f"Travel time to {en}")
    ax.set_title(heading, fontfamily=font or "sans-serif")
    ax.legend(loc="lower left", markerscale=2.5, prop={"family": font or "sans-serif", "size": 8},
              title=f"{len(s):,} settlements")
    ax.set_aspect(stretch)
    ax.set_xlabel("经度 longitude °E" if font else "longitude °E", fontfamily=font or "sans-serif")
    ax.set_ylabel("纬度 latitude °N" if font else "latitude °N", fontfamily=font or "sans-serif")
    _caption_text(fig, caption, font)
    return _save_figure(fig, path)


def plot_county_coverage(county_summary: pd.DataFrame, path: str | os.PathLike, *,
                         columns=("share_clinic_30", "share_county_60", "share_county_120"),
                         sort_by: str = "share_county_60", title: str | None = None, caption=None) -> Path:
    """PNG bar chart of coverage shares by county, best-covered county at the top; a bilingual legend when a
    Chinese font is installed, and ``caption`` (sources and assumptions) under it.

    Returns the path written.
    """
    cols = [c for c in columns if c in county_summary]
    if not cols:
        raise InputError(None, f"county summary has none of the columns {list(columns)} for the chart")
    key = sort_by if sort_by in county_summary else cols[0]
    df = pd.DataFrame(county_summary.drop(columns="geometry", errors="ignore")).sort_values(key, na_position="first")
    fig, font = _figure(9, max(4.0, 0.24 * len(df) + 2.0))
    ax = fig.subplots()
    names = _column(df, "county_name", np.nan) if font else pd.Series(np.nan, index=df.index)
    labels = names.where(names.notna() & (names != ""), _column(df, "county_code").astype(str))
    pos = np.arange(len(df))
    height = 0.8 / len(cols)
    colours = ["#a6cee3", "#1f78b4", "#08306b", "#b2df8a", "#33a02c"]
    for k, col in enumerate(cols):
        desc = share_label(col, chinese=font is not None)
        ax.barh(pos + (k - (len(cols) - 1) / 2) * height, 100 * df[col].astype(float), height=height,
                color=colours[k % len(colours)], label=desc)
    ax.set_yticks(pos, labels.astype(str).tolist(), fontsize=7, fontfamily=font or "sans-serif")
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.6, len(df) - 0.4)
    ax.set_xlabel("居民点比例 % of settlements" if font else "% of settlements", fontfamily=font or "sans-serif")
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_title(title or ("各县覆盖率 / coverage by county" if font else "Coverage by county"),
                 fontfamily=font or "sans-serif")
    fig.legend(loc="outside upper center", ncols=1, frameon=False, prop={"family": font or "sans-serif", "size": 8})
    _caption_text(fig, caption, font)
    return _save_figure(fig, path)


def share_label(column: str, *, chinese: bool = True) -> str:
    """A coverage-share column in words, e.g. "60分钟内可达县级医院及以上 / share of settlements within 60 min of …"."""
    import re

    info = column_info(column, "county_summary")
    english = info.description if info is not None else column
    m = re.match(r"^(pop_)?share_(exact_)?(clinic|thc|county|pref)_(\d+(?:\.\d+)?)$", column)
    if not chinese or not m:
        return english
    who = ("人口" if m[1] else "居民点") + ("（精确定位）" if m[2] else "")
    return f"{m[4]}分钟内可达{LEVEL_NAMES[m[3]][0]}的{who}比例 / {english}"
