"""p-median, p-center and capacitated covering on toys, cross-checked with spopt and by hand."""
import numpy as np
import pulp
import pytest
import scipy.sparse as sp

from geoaccess import siting

RNG = np.random.default_rng(7)
XY_S = RNG.uniform(0, 100, (14, 2))
XY_C = RNG.uniform(0, 100, (9, 2))
DENSE = np.hypot(*(XY_S[:, None, :] - XY_C[None, :, :]).transpose(2, 0, 1))
POP = RNG.integers(1, 50, 14).astype(float)
IDS = [f"c{j}" for j in range(9)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("p", [1, 2, 3])
def test_p_median_agrees_with_spopt(p):
    from spopt.locate import PMedian

    ref = PMedian.from_cost_matrix(DENSE, POP, p_facilities=p).solve(pulp.HiGHS(msg=False))
    ours = siting.site_p_median(sp.csr_matrix(DENSE), POP, IDS, p, limit_min=1000.0)
    assert ours.objective == pytest.approx(pulp.value(ref.problem.objective), rel=1e-6)
    assert ours.status == "optimal" and len(ours.site_ids) == p


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("p", [1, 2, 3])
def test_p_center_agrees_with_spopt(p):
    from spopt.locate import PCenter

    ref = PCenter.from_cost_matrix(DENSE, p_facilities=p).solve(pulp.HiGHS(msg=False))
    ours = siting.site_p_center(sp.csr_matrix(DENSE), POP, IDS, p, limit_min=1000.0)
    assert ours.objective == pytest.approx(pulp.value(ref.problem.objective), rel=1e-6)
    assert ours.summary["mip_gap"] == 0.0
    assert ours.summary["after"]["worst_min"] == pytest.approx(ours.objective)


def test_existing_facilities_are_kept_in_p_median():
    # s0 (10 people) is 2 min from a facility: a point at s0 saves 10 person-minutes, one at s1 (1 person, 60 min
    # from its facility) saves 59; without the existing facility the point would go to s0 (saving 490)
    cost = sp.csr_matrix(np.array([[1.0, 50.0], [50.0, 1.0]]))
    res = siting.site_p_median(cost, np.array([10.0, 1.0]), ["a", "b"], 1, existing_time=np.array([2.0, 60.0]),
                               limit_min=120.0)
    assert res.site_ids == ["b"]
    assert res.objective == pytest.approx(10 * 2.0 + 1 * 1.0)
    alone = siting.site_p_median(cost, np.array([10.0, 1.0]), ["a", "b"], 1, limit_min=120.0)
    assert alone.site_ids == ["a"]
    assert res.summary["after"]["worst_min"] <= res.summary["before"]["worst_min"]


def test_p_center_reports_a_floor_no_candidate_can_lower():
    # s2 is 90 min from its facility and no candidate reaches it: the worst time cannot drop below 90
    cost = sp.csr_matrix(np.array([[5.0, 0], [0, 5.0], [0, 0]]))
    cost.eliminate_zeros()
    res = siting.site_p_center(cost, np.ones(3), ["a", "b"], 2, existing_time=np.array([100.0, 30.0, 90.0]),
                               limit_min=240.0)
    assert res.summary["floor_min"] == 90.0 and res.objective == 90.0
    assert res.site_ids == ["a"]  # s0 must drop from 100 to 5; s1 at 30 is already under 90


def test_capacity_forces_more_points_in_set_covering():
    cost = sp.csr_matrix(np.full((3, 3), 5.0))  # every point reaches every settlement
    pop = np.array([60.0, 60.0, 60.0])
    free = siting.propose_temporary_points(cost, pop, ["a", "b", "c"], threshold_min=15)
    capped = siting.propose_temporary_points(cost, pop, ["a", "b", "c"], threshold_min=15, capacity=100.0)
    assert free.summary["n_sites"] == 1 and capped.summary["n_sites"] == 2
    assert capped.summary["capacity"]["served_population"] == pytest.approx(180.0)
    assert capped.sites["served_people"].max() <= 100.0 + 1e-6


def test_capacity_caps_maximal_covering():
    cost = sp.csr_matrix(np.full((2, 1), 5.0))
    res = siting.propose_temporary_points(cost, np.array([80.0, 80.0]), ["a"], threshold_min=15, mode="max_cover",
                                          max_sites=1, capacity=100.0)
    assert res.summary["objective"] == pytest.approx(100.0)


def test_exclusion_areas_and_road_distance_remove_candidates(tmp_path):
    """[siting] exclusion_areas and candidate_max_road_km drop candidates before any cost is computed."""
    import types

    import geopandas as gpd
    import networkx as nx
    import pandas as pd
    import shapely

    from geoaccess.config import REGIONS_DIR, load_region
    from geoaccess.suitability import filter_candidates

    gpd.GeoDataFrame(geometry=[shapely.box(90.0, 30.0, 90.5, 30.5)], crs=4326).to_file(tmp_path / "reserve.geojson")
    text = (REGIONS_DIR / "tibet.toml").read_text(encoding="utf-8").replace(
        "[siting]\n", "[siting]\nexclusion_areas = ['reserve.geojson']\ncandidate_max_road_km = 20.0\n", 1)
    (tmp_path / "tibet.toml").write_text(text, encoding="utf-8")
    cfg = load_region(tmp_path / "tibet.toml")
    G = nx.MultiDiGraph()
    G.add_edge(0, 1, geometry=shapely.LineString([(91.0, 29.0), (92.0, 29.0)]))
    run = types.SimpleNamespace(config=cfg, dem=None, graph=G, data_dir=tmp_path)
    cand = pd.DataFrame({"candidate_id": ["in_reserve", "near_road", "far"], "lon": [90.2, 91.5, 91.5],
                         "lat": [30.2, 29.05, 30.0]})
    kept, facts = filter_candidates(run, cand, tmp_path)
    assert kept["candidate_id"].tolist() == ["near_road"]
    assert facts["removed"] == {"inside reserve.geojson": 1, "farther than 20 km from a mapped road": 1}
