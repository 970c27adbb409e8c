"""Road graph builders: road shapefiles, OSM files and OSM online, in osmnx format."""
from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import Geod, Transformer
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoaccess.errors import ConfigError, GeoaccessError, InputError

log = logging.getLogger("geoaccess")

WGS84 = "EPSG:4326"
# File stem → road class for the China 2000 road layers (国道, 省道, 高速).
DEFAULT_CLASSES = {"gd": "national", "sd": "provincial", "hiway": "expressway"}
# Route-number prefix added to purely numeric refs: RDNAME "318" on a national road → "G318".
DEFAULT_REF_PREFIXES = {"national": "G", "provincial": "S"}
_NODE_MERGE_M = 0.01  # piece ends closer than this are one node (floating-point noise only)
_EPS_M = 0.01  # a split closer than this to a line's end does not split it
_GEOD = Geod(ellps="WGS84")
NETWORK_TYPES = ("drive", "drive_service", "walk", "bike", "all", "all_public")  # osmnx names


# ---------------------------------------------------------------------------
# Road shapefiles
# ---------------------------------------------------------------------------

def graph_from_road_shapefiles(
    paths: list[str | Path] | dict[str, str | Path],
    *,
    classes: dict[str, str] | None = None,
    snap_tolerance_m: float = 50.0,
    bbox: tuple[float, float, float, float] | None = None,
    polygon: shapely.Geometry | None = None,
    working_crs: str,
    clip_buffer_m: float = 10_000.0,
    ref_field: str = "RDNAME",
    name_field: str = "NAME",
    ref_prefixes: dict[str, str] | None = None,
    encoding: str | None = None,
) -> nx.MultiDiGraph:
    """Build a road graph from line shapefiles, making the topology from the geometry.

    Lines are clipped to ``polygon`` (or ``bbox``) grown by ``clip_buffer_m``, so a road
    that briefly leaves the region stays whole while long stretches outside are dropped.
    In ``working_crs`` line ends within ``snap_tolerance_m`` of each other are merged
    (transitively), a line end within the tolerance of another line's interior is moved
    onto the nearest such line and splits it (T-junction), and lines are split where they
    cross or touch, and where a line crosses or touches itself. ``length`` is geodesic (WGS84 ellipsoid).

    Parameters
    ----------
    paths
        Shapefiles; a list (road class from the file stem through ``classes``) or a dict
        ``{road_class: path}``.
    classes
        File stem → road class; default ``DEFAULT_CLASSES`` (gd, sd, hiway).
    snap_tolerance_m
        Snapping distance in metres.
    bbox, polygon
        Region in WGS84 (lon/lat); roads are clipped to it (both: their intersection).
    working_crs
        Metric CRS for snapping, noding and clipping.
    clip_buffer_m
        Margin around the region kept when clipping, metres.
    ref_field, name_field
        Attribute fields holding the route number (edge ``ref``) and name (edge ``name``).
    ref_prefixes
        Road class → prefix for purely numeric refs; default ``DEFAULT_REF_PREFIXES``.
    encoding
        Text encoding of the attribute tables; default: the ``.cpg`` file, else UTF-8 or
        GBK, whichever decodes.

    Returns
    -------
    networkx.MultiDiGraph
        Road graph per the DESIGN contract; ``G.graph["build_report"]`` holds counts.
    """
    t0 = time.perf_counter()
    items = _road_file_classes(paths, classes or DEFAULT_CLASSES)
    prefixes = DEFAULT_REF_PREFIXES if ref_prefixes is None else ref_prefixes
    frames = [_read_road_file(p, cls, ref_field, name_field, prefixes, encoding) for p, cls in items]
    arcs_read = {f.attrs["source"]: f.attrs["features"] for f in frames}
    if not any(arcs_read.values()):
        raise InputError(", ".join(str(p) for p, _ in items), "no roads: the road files hold no features")
    lines = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=WGS84).to_crs(working_crs)
    region = _region(bbox, polygon, working_crs, clip_buffer_m)
    if region is not None:
        lines = _clip_lines(lines, region)
    arcs_kept = lines["source"].value_counts().reindex(arcs_read.keys(), fill_value=0).to_dict()
    if lines.empty:
        raise InputError(", ".join(str(p) for p, _ in items), "no road lies inside the region")

    pieces, nodes_xy, u, v, counts = _build_topology(
        np.asarray(lines.geometry.array), snap_tolerance_m
    )
    attrs = lines.drop(columns="geometry").iloc[pieces["line"]].reset_index(drop=True)
    G = _assemble_graph(pieces["geometry"], nodes_xy, u, v, attrs, working_crs)
    report = {"arcs_read": arcs_read, "arcs_kept": arcs_kept, **counts, **graph_summary(G),
              "seconds": round(time.perf_counter() - t0, 3)}
    G.graph["build_report"] = report
    log.info(
        "road graph from %s: %d arcs kept of %d, %d pieces, %d nodes, %d edges, "
        "%d line ends moved by snapping, %d T-junctions, %d crossings noded, %d components "
        "(largest %.1f%% of length), %.1f s",
        ", ".join(arcs_read), sum(arcs_kept.values()), sum(arcs_read.values()), counts["pieces"],
        G.number_of_nodes(), G.number_of_edges(), counts["endpoints_snapped"],
        counts["t_junctions"], counts["crossings_noded"], report["components"],
        100 * report["largest_component_length_share"], report["seconds"],
    )
    return G


def _road_file_classes(paths: Any, classes: dict[str, str]) -> list[tuple[Path, str]]:
    """(path, road_class) for each road file."""
    if isinstance(paths, dict):
        return [(Path(p), str(cls)) for cls, p in paths.items()]
    if isinstance(paths, (str, Path)):
        paths = [paths]
    items = []
    for p in map(Path, paths):
        stem = p.name.split(".")[0]
        cls = classes.get(stem) or classes.get(stem.lower())
        if cls is None:
            log.warning("%s: no road class for file stem %r; using %r", p, stem, stem)
            cls = stem
        items.append((p, cls))
    return items


def _read_road_file(
    path: Path, road_class: str, ref_field: str, name_field: str,
    prefixes: dict[str, str], encoding: str | None,
) -> gpd.GeoDataFrame:
    """One road file as WGS84 LineStrings with road_class, ref, name, source."""
    if not path.is_file():
        raise InputError(path, "road file not found")
    try:
        df = pyogrio.read_dataframe(path, encoding=encoding)
        file_encoding = encoding or pyogrio.read_info(path)["encoding"]
    except Exception as exc:  # pyogrio raises several GDAL error types
        raise InputError(path, f"cannot read road file ({exc})") from exc
    if df.crs is None:
        log.warning("%s: no CRS (.prj); assuming WGS84 lon/lat", path)
        df = df.set_crs(WGS84)
    features = len(df)
    source = path.name.split(".")[0]
    if features == 0:  # a legitimately empty layer (e.g. no expressways in the region): zero roads of its class
        log.info("%s: no features: zero %r roads", path, road_class)
        out = gpd.GeoDataFrame({"road_class": pd.Series(dtype=object), "ref": pd.Series(dtype="string"),
                                "name": pd.Series(dtype="string"), "source": pd.Series(dtype=object)},
                               geometry=gpd.GeoSeries([], crs=WGS84), crs=WGS84)
        out.attrs.update(source=source, features=0)
        return out
    kinds = df.geometry.geom_type.value_counts(dropna=False).to_dict()
    df = df.explode(index_parts=False)
    geoms = df.geometry.array
    usable = (df.geom_type == "LineString").to_numpy() & ~shapely.is_empty(geoms) & shapely.is_valid(geoms)
    usable &= shapely.length(geoms) > 0
    if not usable.any():
        found = ", ".join(f"{n} {k if isinstance(k, str) else 'null'}" for k, n in kinds.items()) or "no features"
        raise InputError(path, f"no usable line geometries (found: {found})")
    if features > usable.sum():
        log.warning("%s: dropped %d null, empty, invalid or non-line geometries", path, features - int(usable.sum()))
    df = df[usable].to_crs(WGS84)

    needs_redecode = encoding is None and not path.with_suffix(".cpg").is_file() and (
        str(file_encoding).upper().replace("_", "-") in {"ISO-8859-1", "LATIN1"}
    )
    text = {}
    for field, out in ((ref_field, "ref"), (name_field, "name")):
        if field in df.columns:
            col = df[field].astype("string").str.strip().replace("", pd.NA)
            text[out] = _redecode(col, path) if needs_redecode else col
        else:
            text[out] = pd.Series(pd.NA, index=df.index, dtype="string")
    ref = text["ref"].str.replace(r"\.0$", "", regex=True)
    if road_class in prefixes:
        ref = ref.mask(ref.str.fullmatch(r"\d+").fillna(False), prefixes[road_class] + ref)
    out = gpd.GeoDataFrame(
        {"road_class": road_class, "ref": ref.to_numpy(), "name": text["name"].to_numpy(), "source": source},
        geometry=df.geometry.to_numpy(), crs=WGS84,
    )
    out.attrs.update(source=source, features=features)
    log.info("%s: %d road lines read as %r (text encoding %s)", path, len(out), road_class,
             encoding or ("redecoded" if needs_redecode else file_encoding))
    return out


def _redecode(col: pd.Series, path: Path) -> pd.Series:
    """Re-decode text a DBF without code page was read as Latin-1: UTF-8, else GBK."""
    present = col.dropna()
    if present.map(str.isascii).all():
        return col
    raw = present.map(lambda s: s.encode("latin-1"))
    for enc in ("utf-8", "gbk"):
        try:
            decoded = raw.map(lambda b: b.decode(enc))
        except UnicodeDecodeError:
            continue
        log.info("%s: attribute text decoded as %s (no .cpg file)", path, enc)
        return col.astype(object).where(col.isna(), decoded).astype("string")
    log.warning("%s: attribute text is neither UTF-8 nor GBK; kept as Latin-1", path)
    return col


def _region(bbox: Any, polygon: Any, working_crs: str, buffer_m: float) -> shapely.Geometry | None:
    """The clipping region in the working CRS, grown by ``buffer_m``."""
    region = polygon
    if bbox is not None:
        box = shapely.box(*bbox)
        region = box if region is None else shapely.intersection(region, box)
    if region is None:
        return None
    region = gpd.GeoSeries([region], crs=WGS84).to_crs(working_crs).iloc[0]
    if buffer_m > 0:
        # simplify well below the margin first, so buffering and clipping stay fast
        region = shapely.buffer(shapely.simplify(region, buffer_m / 20), buffer_m, quad_segs=4)
    return shapely.make_valid(region)


def _clip_lines(lines: gpd.GeoDataFrame, region: shapely.Geometry) -> gpd.GeoDataFrame:
    """Lines cut to the region, exploded to LineStrings."""
    shapely.prepare(region)
    geoms = lines.geometry.array
    hit = shapely.intersects(region, geoms)
    lines = lines[hit].copy()
    inside = shapely.contains(region, lines.geometry.array)
    clipped = lines.geometry.array.copy()
    clipped[~inside] = shapely.intersection(lines.geometry.array[~inside], region)
    lines = lines.set_geometry(clipped).explode(index_parts=False)
    keep = (lines.geom_type == "LineString") & (lines.length > 0)
    return lines[keep].reset_index(drop=True)


def _build_topology(
    geoms: np.ndarray, tol: float
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Snap and node metric LineStrings; return pieces, node coordinates, piece ends, counts."""
    n = len(geoms)
    ends = np.vstack([shapely.get_coordinates(shapely.get_point(geoms, 0)),
                      shapely.get_coordinates(shapely.get_point(geoms, -1))])
    # 1. line ends within the tolerance of each other become one point
    label = _cluster(ends, tol)
    target = _representatives(ends, label)
    # 2. a cluster within the tolerance of another line's interior moves onto that line
    geoms = _set_ends(geoms, target[label[:n]], target[label[n:]])
    pts = shapely.points(target)
    pi, li = shapely.STRtree(geoms).query(pts, predicate="dwithin", distance=tol)
    attached = (label[li] == pi) | (label[n + li] == pi)
    pi, li = pi[~attached], li[~attached]
    dist = shapely.distance(pts[pi], geoms[li])
    first = np.lexsort((li, dist, pi))
    first = first[np.r_[True, pi[first][1:] != pi[first][:-1]]] if len(first) else first
    pi, li = pi[first], li[first]
    on_line = shapely.line_interpolate_point(geoms[li], shapely.line_locate_point(geoms[li], pts[pi]))
    target[pi] = shapely.get_coordinates(on_line)
    moved = np.hypot(*(target[label] - ends).T) > 0
    geoms = _set_ends(geoms, target[label[:n]], target[label[n:]])
    splits_line, splits_xy = [li], [target[pi]]
    # 3. lines are split where they cross, touch or overlap (at the overlap's ends)
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    i, j = i[i < j], j[i < j]
    parts, pidx = shapely.get_parts(shapely.intersection(geoms[i], geoms[j]), return_index=True)
    real = ~shapely.is_empty(parts)
    parts, pidx = parts[real], pidx[real]
    is_line = shapely.get_type_id(parts) == 1
    cross = np.concatenate([parts[~is_line], shapely.get_point(parts[is_line], 0),
                            shapely.get_point(parts[is_line], -1)])
    owner = np.concatenate([pidx[~is_line], pidx[is_line], pidx[is_line]])
    cross_xy = shapely.get_coordinates(cross)
    splits_line += [i[owner], j[owner]]
    splits_xy += [cross_xy, cross_xy]
    s_line = np.concatenate(splits_line)
    s_xy = np.concatenate(splits_xy)
    s_d = shapely.line_locate_point(geoms[s_line], shapely.points(s_xy))
    # 3b. a line crossing or touching itself is split there too, at every pass through the point
    # (locating the point along the line would find its first pass only)
    self_line, self_d, self_xy = _self_crossings(geoms)
    s_line, s_d, s_xy = np.r_[s_line, self_line], np.r_[s_d, self_d], np.vstack([s_xy, self_xy])
    interior = (s_d > _EPS_M) & (s_d < shapely.length(geoms)[s_line] - _EPS_M)
    n_snap, n_cross = len(pi), len(cross_xy)
    # a crossing proper lies inside both lines (not a line end touching the other)
    both = interior[n_snap:n_snap + n_cross] & interior[n_snap + n_cross:n_snap + 2 * n_cross]
    crossing_xy = cross_xy[both]
    pieces = _split_lines(geoms, s_line[interior], s_d[interior], s_xy[interior])

    # 4. piece ends become nodes; snapping artefacts (short self-loops) are dropped
    p_ends = np.vstack([shapely.get_coordinates(shapely.get_point(pieces["geometry"], 0)),
                        shapely.get_coordinates(shapely.get_point(pieces["geometry"], -1))])
    node_label = _cluster(p_ends, _NODE_MERGE_M)
    m = len(pieces["line"])
    u, v = node_label[:m], node_label[m:]
    keep = (u != v) | (shapely.length(pieces["geometry"]) > tol)
    pieces = {k: a[keep] for k, a in pieces.items()}
    used, inverse = np.unique(np.concatenate([u[keep], v[keep]]), return_inverse=True)
    nodes_xy = _representatives(p_ends, node_label)[used]
    counts = {
        "pieces": int(keep.sum()),
        "endpoints_snapped": int(moved.sum()),
        "t_junctions": int(n_snap),
        "crossings_noded": int(len(np.unique(crossing_xy, axis=0))),
        "self_crossings_noded": int(len(np.unique(self_xy, axis=0))),
    }
    return pieces, nodes_xy, inverse[: keep.sum()], inverse[keep.sum():], counts


def _self_crossings(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each non-simple line crosses or touches itself: (line index, distance along, xy) per pass.

    A point the line passes twice gets two rows (one per pass), so both passes are split there and
    the pieces meet at one node: a road that loops back across itself is a junction, as a crossing
    of two roads is. Distances are along the line in the working CRS (metres).
    """
    lines: list[int] = []
    along: list[float] = []
    xys: list[np.ndarray] = []
    for k in np.flatnonzero(~shapely.is_simple(geoms)):
        parts = shapely.get_parts(shapely.node(geoms[k]))
        ends = shapely.get_coordinates(np.r_[shapely.get_point(parts, 0), shapely.get_point(parts, -1)])
        coords = shapely.get_coordinates(geoms[k])
        a, b = coords[:-1], coords[1:]
        seg = b - a
        seg_len = np.hypot(seg[:, 0], seg[:, 1])
        start = np.r_[0.0, np.cumsum(seg_len)[:-1]]
        for p in np.unique(ends, axis=0):
            t = np.clip(((p - a) * seg).sum(axis=1) / np.maximum(seg_len**2, 1e-18), 0.0, 1.0)
            off = np.hypot(*(a + t[:, None] * seg - p).T)
            d = np.unique(np.round(start[off < _EPS_M] + t[off < _EPS_M] * seg_len[off < _EPS_M], 3))
            d = d[np.r_[True, np.diff(d) >= _EPS_M]] if d.size else d
            if d.size < 2 and not (d.size == 1 and 0 < d[0] < seg_len.sum()):
                continue  # a plain end of the line
            lines += [k] * d.size
            along += d.tolist()
            xys += [p] * d.size
    if not lines:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 2))
    return np.asarray(lines, dtype=np.int64), np.asarray(along), np.vstack(xys)


def _cluster(xy: np.ndarray, tol: float) -> np.ndarray:
    """Label points so that points within ``tol`` of each other (transitively) share a label."""
    pts = shapely.points(xy)
    i, j = shapely.STRtree(pts).query(pts, predicate="dwithin", distance=tol)
    adj = coo_matrix((np.ones(len(i), dtype=bool), (i, j)), shape=(len(xy), len(xy)))
    return connected_components(adj, directed=False)[1]


def _representatives(xy: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per label, the most frequent exact coordinate among its points (first on ties)."""
    df = pd.DataFrame({"label": label, "x": xy[:, 0], "y": xy[:, 1], "order": np.arange(len(xy))})
    counts = df.groupby(["label", "x", "y"], sort=False)["order"].agg(["size", "min"]).reset_index()
    best = counts.sort_values(["label", "size", "min"], ascending=[True, False, True]).drop_duplicates("label")
    return best.set_index("label")[["x", "y"]].reindex(np.arange(label.max() + 1)).to_numpy()


def _set_ends(geoms: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Replace the first and last vertex of each LineString."""
    coords, idx = shapely.get_coordinates(geoms, return_index=True)
    first = np.searchsorted(idx, np.arange(len(geoms)))
    last = np.r_[first[1:], len(idx)] - 1
    coords[first] = start
    coords[last] = end
    return shapely.linestrings(coords, indices=idx)


def _split_lines(
    geoms: np.ndarray, s_line: np.ndarray, s_d: np.ndarray, s_xy: np.ndarray
) -> dict[str, np.ndarray]:
    """Split lines at points given by line index, distance along and coordinates.

    A split point becomes the last vertex of one piece and the first of the next.
    """
    order = np.lexsort((s_d, s_line))
    s_line, s_d, s_xy = s_line[order], s_d[order], s_xy[order]
    dup = np.zeros(len(s_line), dtype=bool)
    dup[1:] = (s_line[1:] == s_line[:-1]) & (np.diff(s_d) < _EPS_M)
    s_line, s_d, s_xy = s_line[~dup], s_d[~dup], s_xy[~dup]

    v_xy, v_line = shapely.get_coordinates(geoms, return_index=True)
    step = np.r_[0.0, np.hypot(*np.diff(v_xy, axis=0).T)]
    first = np.searchsorted(v_line, np.arange(len(geoms)))
    step[first] = 0.0
    along = np.cumsum(step)
    v_d = along - along[first][v_line]

    # merge vertices and splits along each line; k = splits strictly before each row
    line = np.r_[v_line, s_line]
    d = np.r_[v_d, s_d]
    is_split = np.r_[np.zeros(len(v_line), bool), np.ones(len(s_line), bool)]
    xy = np.vstack([v_xy, s_xy])
    o = np.lexsort((is_split, d, line))
    line, d, is_split, xy = line[o], d[o], is_split[o], xy[o]
    before = np.cumsum(is_split) - is_split
    k = before - before[np.searchsorted(line, line)]
    # each split row ends piece k (sub 2) and starts piece k+1 (sub 0)
    sp = np.flatnonzero(is_split)
    line = np.r_[line, line[sp]]
    piece = np.r_[k, k[sp] + 1]
    d = np.r_[d, d[sp]]
    sub = np.r_[np.where(is_split, 2, 1), np.zeros(len(sp), int)]
    xy = np.vstack([xy, xy[sp]])
    o = np.lexsort((sub, d, piece, line))
    line, piece, xy = line[o], piece[o], xy[o]
    new = np.r_[True, (line[1:] != line[:-1]) | (piece[1:] != piece[:-1])]
    pid = np.cumsum(new) - 1
    # drop repeated vertices, then pieces left with fewer than two
    rep = np.r_[False, (pid[1:] == pid[:-1]) & np.all(xy[1:] == xy[:-1], axis=1)]
    pid, xy, line = pid[~rep], xy[~rep], line[~rep]
    ok = np.bincount(pid) >= 2
    rows = ok[pid]
    pid = np.unique(pid[rows], return_inverse=True)[1]
    geometry = shapely.linestrings(xy[rows], indices=pid)
    starts = np.r_[True, pid[1:] != pid[:-1]]
    return {"geometry": geometry, "line": line[rows][starts]}


def _assemble_graph(
    geoms: np.ndarray, nodes_xy: np.ndarray, u: np.ndarray, v: np.ndarray,
    attrs: pd.DataFrame, working_crs: str,
) -> nx.MultiDiGraph:
    """Two directed edges per piece, WGS84 geometry oriented u→v, geodesic length."""
    to_wgs = Transformer.from_crs(working_crs, WGS84, always_xy=True)
    lon, lat = to_wgs.transform(nodes_xy[:, 0], nodes_xy[:, 1])
    order = np.lexsort((lat, lon))  # node ids in lon, lat order: stable for the same input
    node_id = np.empty(len(order), dtype=np.int64)
    node_id[order] = np.arange(len(order))
    u, v = node_id[u], node_id[v]
    node_lon, node_lat = np.empty_like(lon), np.empty_like(lat)
    node_lon[node_id], node_lat[node_id] = lon, lat

    coords, pid = shapely.get_coordinates(geoms, return_index=True)
    x, y = to_wgs.transform(coords[:, 0], coords[:, 1])
    first = np.searchsorted(pid, np.arange(len(geoms)))
    last = np.r_[first[1:], len(pid)] - 1
    x[first], y[first] = node_lon[u], node_lat[u]
    x[last], y[last] = node_lon[v], node_lat[v]
    forward = shapely.linestrings(np.column_stack([x, y]), indices=pid)
    backward = shapely.reverse(forward)
    same = pid[1:] == pid[:-1]
    _, _, seg = _GEOD.inv(x[:-1][same], y[:-1][same], x[1:][same], y[1:][same])
    length = np.bincount(pid[1:][same], weights=seg, minlength=len(geoms))

    G = nx.MultiDiGraph(crs=WGS84)
    G.add_nodes_from((i, {"x": float(node_lon[i]), "y": float(node_lat[i])}) for i in range(len(order)))
    records = attrs.to_dict("records")
    edges = []
    for k, rec in enumerate(records):
        base = {key: val for key, val in rec.items() if not pd.isna(val)}
        base.update(length=float(length[k]), oneway=False)
        edges.append((int(u[k]), int(v[k]), {**base, "geometry": forward[k], "reversed": False}))
        edges.append((int(v[k]), int(u[k]), {**base, "geometry": backward[k], "reversed": True}))
    G.add_edges_from(edges)
    return G


def _component_stats(G: nx.MultiDiGraph) -> dict[str, Any]:
    """Weakly connected components: count, largest by nodes, its share of road length."""
    if G.number_of_nodes() == 0:
        return {"components": 0, "largest_component_nodes": 0, "largest_component_length_share": 0.0}
    u, v, length = (np.array(a) for a in zip(*G.edges(data="length", default=0.0)))
    n = G.number_of_nodes()
    index = {node: i for i, node in enumerate(G.nodes)}
    ui = np.fromiter((index[a] for a in u), int, len(u))
    vi = np.fromiter((index[a] for a in v), int, len(v))
    ncomp, label = connected_components(coo_matrix((np.ones(len(ui)), (ui, vi)), shape=(n, n)), directed=False)
    sizes = np.bincount(label, minlength=ncomp)
    biggest = int(np.argmax(sizes))
    total = float(length.sum())
    share = float(length[label[ui] == biggest].sum() / total) if total > 0 else 0.0
    return {"components": int(ncomp), "largest_component_nodes": int(sizes[biggest]),
            "largest_component_length_share": round(share, 4)}


# ---------------------------------------------------------------------------
# OpenStreetMap
# ---------------------------------------------------------------------------

def graph_from_osm_file(
    path: str | Path, *, network_type: str = "drive", retain_all: bool = True
) -> nx.MultiDiGraph:
    """Build a road graph from an OSM file: ``.osm`` XML (osmnx) or ``.osm.pbf`` (pyrosm).

    Parameters
    ----------
    path
        OSM XML (``.osm``, ``.xml``) or PBF (``.pbf``) file.
    network_type
        osmnx network type (``drive``, ``drive_service``, ``walk``, ``bike``, ``all``,
        ``all_public``); selects ways as osmnx's Overpass filter does.
    retain_all
        Keep every connected component (default), else only the largest.

    Returns
    -------
    networkx.MultiDiGraph
        Road graph per the DESIGN contract (``road_class`` = OSM ``highway``).
    """
    _check_network_type(network_type)
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "OSM file not found")
    name = path.name.lower()
    if not name.endswith((".pbf", ".osm", ".xml")):
        raise InputError(path, "not an OSM file: expected .osm, .xml or .osm.pbf")
    try:
        if name.endswith(".pbf"):
            G = _graph_from_pbf(path, network_type, retain_all)
        else:
            G = _graph_from_xml(path, network_type, retain_all)
    except Exception as exc:  # parsers raise many types; the user needs the file and the reason
        raise InputError(path, f"cannot read OSM data ({type(exc).__name__}: {exc})") from exc
    if G.number_of_edges() == 0:
        raise InputError(path, f"no roads of network type {network_type!r}")
    G = _normalise_osm_graph(G)
    log.info("%s: OSM %s graph, %d nodes, %d edges, %d components", path, network_type,
             G.number_of_nodes(), G.number_of_edges(), _component_stats(G)["components"])
    return G


#: The osmnx releases whose internals below are tested; pyproject.toml pins osmnx to this range (≥ first, < second).
OSMNX_TESTED = ("2.0", "2.2")
#: The osmnx internals geoaccess uses, none of them public in osmnx 2: the Overpass way filter of a network type
#: (to filter OSM XML files as a download would be), the Overpass request and its cache lookup (offline mode
#: answers from the cache only) and two error classes. `osmnx_internals` checks them all at once.
OSMNX_INTERNALS = ("_overpass._get_network_filter", "_overpass._overpass_request", "_http._retrieve_from_cache",
                   "_errors.InsufficientResponseError", "_errors.ResponseStatusCodeError")


def osmnx_internals() -> dict[str, Any]:
    """The osmnx internals of `OSMNX_INTERNALS` by name, or one GeoaccessError line naming the release and the
    missing one (instead of an AttributeError deep in a run when a newer osmnx renames them)."""
    import osmnx as ox

    out = {}
    for dotted in OSMNX_INTERNALS:
        obj: Any = ox
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            lo, hi = OSMNX_TESTED
            raise GeoaccessError(f"osmnx {ox.__version__} has no {dotted}: geoaccess reads OSM files and the offline "
                                 f"cache through it and is tested with osmnx >={lo},<{hi} (pip install 'osmnx>={lo},<{hi}')")
        out[dotted] = obj
    return out


def _check_network_type(network_type: str) -> None:
    if network_type not in NETWORK_TYPES:
        raise ConfigError(None, f"network_type {network_type!r} is not one of {', '.join(NETWORK_TYPES)}")


def _graph_from_pbf(path: Path, network_type: str, retain_all: bool) -> nx.MultiDiGraph:
    """osmnx-style graph from a PBF through pyrosm (simplified, one-way aware)."""
    import pyrosm

    osm = pyrosm.OSM(str(path))
    nodes, edges = osm.get_network(network_type=network_type, nodes=True)
    if edges is None or len(edges) == 0:
        return nx.MultiDiGraph(crs=WGS84)
    return osm.to_graph(nodes, edges, graph_type="networkx", network_type=network_type,
                        retain_all=retain_all, osmnx_compatible=True, progress=False)


def _graph_from_xml(path: Path, network_type: str, retain_all: bool) -> nx.MultiDiGraph:
    """osmnx graph from OSM XML, ways filtered as osmnx's Overpass filter for the type."""
    import osmnx as ox

    way_filter = osmnx_internals()["_overpass._get_network_filter"](network_type)
    bidirectional = network_type in ox.settings.bidirectional_network_types
    G = ox.graph_from_xml(path, bidirectional=bidirectional, simplify=False, retain_all=True)
    rules = [(key, re.compile(pattern)) for key, pattern in re.findall(r'\["([^"]+)"!~"([^"]+)"\]', way_filter)]
    drop = [
        (a, b, k) for a, b, k, d in G.edges(keys=True, data=True)
        if "highway" not in d or any(key in d and rx.search(str(d[key])) for key, rx in rules)
    ]
    G.remove_edges_from(drop)
    G.remove_nodes_from([n for n, deg in G.degree() if deg == 0])
    if drop:
        log.info("%s: left out %d way segments not part of the %r network", path, len(drop), network_type)
    if not retain_all and G.number_of_nodes():
        G = ox.truncate.largest_component(G, strongly=False)
    if G.number_of_edges():
        G = ox.simplify_graph(G, edge_attrs_differ=["highway", "maxspeed"])
    return G


def _normalise_osm_graph(G: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """Bring an osmnx/pyrosm graph to the contract: road_class, geometry, length, oneway, source."""
    for _, data in G.nodes(data=True):
        data.pop("geometry", None)
    for u, v, data in G.edges(data=True):
        data["road_class"] = str(_first(data.get("highway", "unclassified")))
        if data.get("geometry") is None:
            data["geometry"] = shapely.LineString([(G.nodes[u]["x"], G.nodes[u]["y"]),
                                                   (G.nodes[v]["x"], G.nodes[v]["y"])])
        if "length" not in data:
            data["length"] = float(_GEOD.geometry_length(data["geometry"]))
        data["oneway"] = bool(_first(data.get("oneway", False)))
        for key in ("ref", "name"):
            if isinstance(data.get(key), list):
                data[key] = ";".join(map(str, data[key]))
        data["source"] = "osm"
        data.pop("u", None)
        data.pop("v", None)
    G.graph["crs"] = WGS84
    return G


def _first(value: Any) -> Any:
    """The first element of a list (osmnx merges differing tags into lists), else the value."""
    return value[0] if isinstance(value, list) and value else value


class _CacheMiss(Exception):
    """osmnx needed a request that is not in its cache."""


def graph_from_osm_online(
    polygon: shapely.Geometry,
    *,
    network_type: str = "drive",
    cache_dir: str | Path | None = None,
    timeout: float = 180,
    retries: int = 3,
    backoff_s: float = 5.0,
    offline: bool = False,
) -> nx.MultiDiGraph:
    """Download the OSM road graph inside a WGS84 polygon through osmnx, cached on disk.

    The osmnx cache is tried first without any network access; with ``offline=True``
    a cache miss is an error, otherwise the Overpass API is asked, with ``retries``
    attempts and exponential backoff (``backoff_s``, ``2 × backoff_s``, …).

    Parameters
    ----------
    polygon
        Region (Multi)Polygon in WGS84.
    network_type
        osmnx network type.
    cache_dir
        osmnx cache folder; default osmnx's ``settings.cache_folder``.
    timeout
        HTTP timeout in seconds.
    retries
        Download attempts before giving up.
    backoff_s
        Pause after the first failed attempt, doubled after each further one.
    offline
        Never touch the network; raise if the cache has no answer.

    Returns
    -------
    networkx.MultiDiGraph
        Road graph per the DESIGN contract, all components kept.
    """
    import osmnx as ox

    _check_network_type(network_type)
    settings = {"use_cache": True, "requests_timeout": timeout}
    if cache_dir is not None:
        settings["cache_folder"] = str(cache_dir)
    with _osmnx_settings(ox, **settings):
        cache = ox.settings.cache_folder
        try:
            try:
                with _osmnx_cache_only(ox):
                    G = ox.graph_from_polygon(polygon, network_type=network_type, retain_all=True)
                log.info("OSM %s network read from the cache in %s", network_type, cache)
            except _CacheMiss:
                if offline:
                    raise GeoaccessError(
                        f"offline: the OSM cache in {cache} holds no answer for this region and network "
                        f"type {network_type!r}; run once online or point cache_dir at a filled cache"
                    ) from None
                G = _download_with_retries(ox, polygon, network_type, retries, backoff_s, timeout)
        except osmnx_internals()["_errors.InsufficientResponseError"] as exc:
            raise GeoaccessError(f"OpenStreetMap has no {network_type!r} roads in this region ({exc})") from exc
    return _normalise_osm_graph(G)


def _download_with_retries(
    ox: Any, polygon: Any, network_type: str, retries: int, backoff_s: float, timeout: float
) -> nx.MultiDiGraph:
    """ox.graph_from_polygon with a fast reachability check, retries and backoff."""
    import requests

    last: Exception | None = None
    for attempt in range(1, retries + 1):
        try:
            status_url = ox.settings.overpass_url.rstrip("/") + "/status"
            requests.get(status_url, timeout=min(timeout, 15), **ox.settings.requests_kwargs)
            return ox.graph_from_polygon(polygon, network_type=network_type, retain_all=True)
        except (OSError, osmnx_internals()["_errors.ResponseStatusCodeError"]) as exc:  # requests errors are OSErrors
            last = exc
            log.warning("OSM download attempt %d of %d failed: %s", attempt, retries, exc)
            if attempt < retries:
                time.sleep(backoff_s * 2 ** (attempt - 1))
    raise GeoaccessError(
        f"OpenStreetMap download failed after {retries} attempts ({last}); check the network or "
        "use an OSM file (source = \"osm_file\") or a filled cache (offline = true)"
    )


@contextlib.contextmanager
def _osmnx_settings(ox: Any, **values: Any) -> Iterator[None]:
    """Temporarily set osmnx settings."""
    old = {key: getattr(ox.settings, key) for key in values}
    for key, value in values.items():
        setattr(ox.settings, key, value)
    try:
        yield
    finally:
        for key, value in old.items():
            setattr(ox.settings, key, value)


@contextlib.contextmanager
def _osmnx_cache_only(ox: Any) -> Iterator[None]:
    """Answer osmnx's Overpass requests from its cache only; raise _CacheMiss otherwise.

    Relies on osmnx 2's private ``_overpass._overpass_request`` and ``_http._retrieve_from_cache``
    (`osmnx_internals`).
    """
    import requests

    hooks = osmnx_internals()
    overpass, retrieve = ox._overpass, hooks["_http._retrieve_from_cache"]
    original = overpass._overpass_request

    def cached_request(data: Any) -> dict[str, Any]:
        url = ox.settings.overpass_url.rstrip("/") + "/interpreter"
        prepared = str(requests.Request("GET", url, params=data).prepare().url)
        response = retrieve(prepared)
        if not isinstance(response, dict):
            raise _CacheMiss(prepared)
        return response

    overpass._overpass_request = cached_request
    try:
        yield
    finally:
        overpass._overpass_request = original


# ---------------------------------------------------------------------------
# Speeds, summary, dispatcher
# ---------------------------------------------------------------------------

def assign_speeds(
    G: nx.MultiDiGraph, speeds_kph: dict[str, float], default_kph: float, *, use_maxspeed: bool = True
) -> nx.MultiDiGraph:
    """Set ``speed_kph`` on every edge from its road class (and OSM ``maxspeed``).

    A class missing from ``speeds_kph`` falls back from ``x_link`` to ``x``, then to
    ``default_kph``. With ``use_maxspeed`` a parseable OSM ``maxspeed`` (number, ``mph``
    converted, several values averaged) replaces the class speed.

    Parameters
    ----------
    G
        Road graph; changed in place.
    speeds_kph
        Road class → speed in km/h.
    default_kph
        Speed for classes not in ``speeds_kph``.
    use_maxspeed
        Prefer the edge's ``maxspeed`` tag where present and parseable.

    Returns
    -------
    networkx.MultiDiGraph
        The same graph.
    """
    keys = list(G.edges(keys=True))
    if not keys:
        return G
    classes = pd.Series([str(_first(c)) for *_, c in G.edges(keys=True, data="road_class", default="")])
    speed = classes.map(speeds_kph)
    speed = speed.fillna(classes.str.removesuffix("_link").map(speeds_kph))
    unknown = classes[speed.isna()].value_counts()
    if len(unknown):
        log.info("default speed %.0f km/h assumed for road classes %s", default_kph, unknown.to_dict())
    speed = speed.fillna(default_kph)
    if use_maxspeed:
        posted = _parse_maxspeed([d for *_, d in G.edges(keys=True, data="maxspeed")])
        if posted.notna().any():
            log.info("posted maxspeed used on %d of %d edges", int(posted.notna().sum()), len(keys))
        speed = posted.fillna(speed)
    nx.set_edge_attributes(G, dict(zip(keys, speed.astype(float))), "speed_kph")
    return G


def _parse_maxspeed(values: list[Any]) -> pd.Series:
    """km/h from OSM maxspeed values ("50", "30 mph", "50;70", lists); NaN if none."""
    text = pd.Series([";".join(map(str, v)) if isinstance(v, list) else v for v in values], dtype="string")
    found = text.str.extractall(r"(?P<num>\d+(?:\.\d+)?)\s*(?P<mph>mph)?")
    if found.empty:
        return pd.Series(np.nan, index=text.index)
    kph = found["num"].astype(float) * np.where(found["mph"].notna(), 1.609344, 1.0)
    kph = kph.groupby(level=0).mean()
    return kph[kph > 0].reindex(text.index)


def graph_summary(G: nx.MultiDiGraph) -> dict[str, Any]:
    """Nodes, edges, road km by class (each two-way road counted once) and components.

    Parameters
    ----------
    G
        Road graph.

    Returns
    -------
    dict
        ``nodes``, ``edges``, ``km``, ``km_by_class``, ``components``,
        ``largest_component_nodes``, ``largest_component_length_share``.
    """
    rows = [(str(_first(d.get("road_class"))), d.get("length", 0.0), bool(d.get("oneway", False)))
            for *_, d in G.edges(data=True)]
    df = pd.DataFrame(rows, columns=["road_class", "length", "oneway"])
    km = df["length"] * np.where(df["oneway"], 1.0, 0.5) / 1000.0
    by_class = km.groupby(df["road_class"]).sum().round(1).sort_values(ascending=False)
    return {
        "nodes": G.number_of_nodes(),
        "edges": G.number_of_edges(),
        "km": round(float(km.sum()), 1),
        "km_by_class": {str(k): float(v) for k, v in by_class.items()},
        **_component_stats(G),
    }


def load_road_network(
    spec: dict[str, Any], data_dir: Path, polygon: shapely.Geometry | None, working_crs: str
) -> nx.MultiDiGraph:
    """Build the road graph a region config's network section describes.

    ``spec["source"]`` is ``shapefile`` (``paths``: list or ``{road_class: path}``;
    optional ``classes``, ``snap_tolerance_m``, ``clip_buffer_m``, ``ref_field``,
    ``name_field``, ``encoding``), ``osm_file`` (``paths``: one or more OSM files;
    ``network_type``) or ``osm_online`` (``network_type``, ``cache_dir``, ``timeout``,
    ``retries``, ``offline``). Relative paths are under ``data_dir``.

    Parameters
    ----------
    spec
        The network section of the region config.
    data_dir
        Data directory the paths are relative to.
    polygon
        Region in WGS84 (clips shapefile roads; the download area online).
    working_crs
        Metric CRS of the region.

    Returns
    -------
    networkx.MultiDiGraph
        Road graph per the DESIGN contract.
    """
    data_dir = Path(data_dir)
    source = spec.get("source")
    given = {k: v for k, v in spec.items() if v is not None}

    def resolve(p: str | Path) -> Path:
        return Path(p) if Path(p).is_absolute() else data_dir / p

    def path_list(paths: Any) -> list[Path]:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        elif isinstance(paths, dict):
            paths = list(paths.values())
        return [resolve(p) for p in paths]

    if source not in ("shapefile", "osm_file", "osm_online"):
        raise ConfigError(None, f"network: unknown source {source!r}; use 'shapefile', 'osm_file' or 'osm_online'")
    if source != "osm_online" and not given.get("paths"):
        raise ConfigError(None, f"network: source {source!r} needs 'paths'")
    if source == "shapefile":
        paths = given["paths"]
        paths = {cls: resolve(p) for cls, p in paths.items()} if isinstance(paths, dict) else path_list(paths)
        options = {k: given[k] for k in ("classes", "snap_tolerance_m", "clip_buffer_m", "ref_field",
                                         "name_field", "ref_prefixes", "encoding") if k in given}
        return graph_from_road_shapefiles(paths, polygon=polygon, working_crs=working_crs, **options)
    if source == "osm_file":
        graphs = [graph_from_osm_file(p, network_type=given.get("network_type", "drive"))
                  for p in path_list(given["paths"])]
        return graphs[0] if len(graphs) == 1 else nx.compose_all(graphs)
    if polygon is None:
        raise ConfigError(None, "network: source 'osm_online' needs the region polygon")
    options = {k: given[k] for k in ("network_type", "timeout", "retries", "offline") if k in given}
    if "cache_dir" in given:
        options["cache_dir"] = resolve(given["cache_dir"])
    return graph_from_osm_online(polygon, **options)
