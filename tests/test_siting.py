"""Siting models on toys whose optimum is known by hand, determinism, sparse scale, the plan's county list."""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pulp
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

from geoaccess import siting
from geoaccess.errors import InputError

CENTRES_CSV = Path(__file__).resolve().parents[1] / "geoaccess" / "data" / "tibet_regional_centres.csv"


def reach_matrix(pairs: dict[tuple[int, int], float], shape: tuple[int, int]) -> sp.csr_matrix:
    """Sparse settlements × candidates minutes from {(settlement, candidate): minutes}; zeros stay stored."""
    rows, cols = zip(*pairs)
    return sp.csr_matrix((np.array(list(pairs.values()), float), (rows, cols)), shape=shape)


# ---------------------------------------------------------------- set covering

# s0:{a}  s1:{a,b}  s2:{b,c}  s3:{c,d}  s4:{} — the only 2-site cover is {a, c}; s4 is out of reach.
COVER = reach_matrix({(0, 0): 10, (1, 0): 12, (1, 1): 5, (2, 1): 14, (2, 2): 3, (3, 2): 9, (3, 3): 2,
                      (4, 3): 40}, (5, 4))
COVER_IDS = ["a", "b", "c", "d"]


def test_set_cover_finds_the_unique_two_site_optimum_and_reports_the_unreachable_target():
    res = siting.propose_temporary_points(COVER, np.ones(5), COVER_IDS, threshold_min=15)
    assert res.site_ids == ["a", "c"]
    assert res.status == "optimal"
    assert res.summary["uncoverable"]["ids"] == [4]
    assert res.summary["coverage"]["after"]["settlements"] == 4
    sites, assignments = res.to_frames()
    assert assignments["site_id"].tolist() == ["a", "a", "c", "c", None]   # s1: a 12 min vs c unreachable
    assert sites.set_index("site_id")["n_new"].to_dict() == {"a": 2, "c": 2}


def test_set_cover_skips_settlements_already_covered():
    existing = np.array([True, True, False, False, False])
    res = siting.propose_temporary_points(COVER, np.ones(5), COVER_IDS, threshold_min=15, existing_cover=existing)
    assert res.site_ids == ["c"]                      # c alone reaches s2 and s3
    assert res.summary["coverage"]["before"]["settlements"] == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_set_cover_agrees_with_spopt_lscp():
    from spopt.locate import LSCP
    dense = np.where(COVER[:4].toarray() > 0, COVER[:4].toarray(), 999.0)     # coverable targets only
    ref = LSCP.from_cost_matrix(dense, service_radius=15).solve(pulp.HiGHS(msg=False))
    ours = siting.propose_temporary_points(COVER, np.ones(5), COVER_IDS, threshold_min=15)
    assert ours.objective == pulp.value(ref.problem.objective) == 2


def test_a_stored_zero_is_within_reach_and_an_absent_pair_is_not():
    cost = sp.csr_matrix((np.array([0.0]), (np.array([0]), np.array([1]))), shape=(2, 2))
    assert cost.nnz == 1
    res = siting.propose_temporary_points(cost, np.ones(2), ["a", "b"], threshold_min=15)
    assert res.site_ids == ["b"]
    assert res.assignments["time_min"].tolist()[0] == 0.0
    assert res.summary["uncoverable"]["ids"] == [1]


def test_threshold_filters_stored_pairs():
    res = siting.propose_temporary_points(COVER, np.ones(5), COVER_IDS, threshold_min=10)
    # within 10 min: s0:{a} s1:{b} s2:{c} s3:{c,d} → a, b, c
    assert res.site_ids == ["a", "b", "c"]


# ---------------------------------------------------------------- maximal covering

# populations s0..s4 = 100, 60, 50, 40, 30; a:{s0}=100  b:{s1,s2}=110  c:{s2,s3,s4}=120  d:{s0,s3}=140
MAX = reach_matrix({(0, 0): 5, (1, 1): 5, (2, 1): 5, (2, 2): 5, (3, 2): 5, (4, 2): 5, (0, 3): 5, (3, 3): 5},
                   (5, 4))
MAX_POP = np.array([100.0, 60, 50, 40, 30])


@pytest.mark.parametrize("k, expected, people", [(1, ["d"], 140.0), (2, ["b", "d"], 250.0)])
def test_max_cover_picks_the_hand_optimum(k, expected, people):
    res = siting.propose_temporary_points(MAX, MAX_POP, COVER_IDS, threshold_min=15, mode="max_cover", max_sites=k)
    assert res.site_ids == expected
    assert res.objective == people
    assert res.status == "optimal"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["HiGHS", "PULP_CBC_CMD"])
def test_any_pulp_solver_gives_the_same_optimum(name):
    solver = pulp.getSolver(name, msg=False)
    res = siting.propose_temporary_points(MAX, MAX_POP, COVER_IDS, threshold_min=15, mode="max_cover",
                                          max_sites=2, solver=solver)
    assert res.site_ids == ["b", "d"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_max_cover_agrees_with_spopt_mclp():
    from spopt.locate import MCLP
    dense = np.where(MAX.toarray() > 0, MAX.toarray(), 999.0)
    ref = MCLP.from_cost_matrix(dense, MAX_POP, service_radius=15, p_facilities=2).solve(pulp.HiGHS(msg=False))
    ours = siting.propose_temporary_points(MAX, MAX_POP, COVER_IDS, threshold_min=15, mode="max_cover", max_sites=2)
    assert ours.objective == pulp.value(ref.problem.objective)


# village s0 (500 people) reached only by x; relocation site s1 (100 people) only by y; one point to place
PRIO = reach_matrix({(0, 0): 5, (1, 1): 5}, (2, 2))
PRIO_POP = np.array([500.0, 100.0])
RELOCATION = np.array([False, True])


@pytest.mark.parametrize("factor, expected", [(None, ["y"]), (3.0, ["x"]), (10.0, ["y"])])
def test_relocation_first_lexicographic_or_by_weight(factor, expected):
    res = siting.propose_temporary_points(PRIO, PRIO_POP, ["x", "y"], threshold_min=15, mode="max_cover",
                                          max_sites=1, priority=RELOCATION, priority_factor=factor)
    assert res.site_ids == expected


def test_without_priority_the_bigger_village_wins():
    res = siting.propose_temporary_points(PRIO, PRIO_POP, ["x", "y"], threshold_min=15, mode="max_cover", max_sites=1)
    assert res.site_ids == ["x"]


def test_max_cover_drops_sites_that_add_nothing():
    res = siting.propose_temporary_points(MAX, MAX_POP, COVER_IDS, threshold_min=15, mode="max_cover", max_sites=4)
    assert res.objective == MAX_POP.sum()
    assert res.site_ids == ["a", "b", "c"]     # {a,b,c} and {b,c,d} cover all; a fourth adds nothing; ids break the tie


# ---------------------------------------------------------------- regional centres

# counties A: a1, a2; B: b1, b2; C: c1, c2; D: d1 (not a plan county)
CENTRE_IDS = ["a1", "a2", "b1", "b2", "c1", "c2", "d1"]
CENTRE_COUNTY = ["A", "A", "B", "B", "C", "C", "D"]
# settlements s0..s8; s5 is already within reach of a prefecture hospital
CENTRE_POP = np.array([100.0, 100, 80, 80, 70, 1000, 50, 10, 90])
SETTLEMENT_COUNTY = ["A", "B", "A", "A", "C", "C", "C", "B", "D"]
EXISTING = np.zeros(9, bool)
EXISTING[5] = True
REACH = {"a1": [0, 1], "a2": [2, 3, 7], "b1": [0, 1], "b2": [4], "c1": [2, 3, 5], "c2": [4, 6, 7],
         "d1": [0, 1, 2, 3, 8]}
CENTRE_COST = reach_matrix({(s, j): 30.0 for j, c in enumerate(CENTRE_IDS) for s in REACH[c]}
                           | {(7, 1): 40.0, (7, 5): 20.0}, (9, 7))


def covered_people(sites, existing=EXISTING):
    reached = set().union(*(REACH[s] for s in sites)) - set(np.flatnonzero(existing))
    return float(CENTRE_POP[sorted(reached)].sum())


def sequential_greedy(counties=("A", "B", "C")):
    chosen = []
    for _ in counties:
        open_ = [c for c, k in zip(CENTRE_IDS, CENTRE_COUNTY)
                 if k in counties and k not in {CENTRE_COUNTY[CENTRE_IDS.index(s)] for s in chosen}]
        chosen.append(max(open_, key=lambda c: (covered_people(chosen + [c]), -CENTRE_IDS.index(c))))
    return sorted(chosen)


def plan_centres(**kw):
    return siting.site_regional_centres(CENTRE_COST, CENTRE_POP, CENTRE_IDS, CENTRE_COUNTY, ["A", "B", "C"],
                                        kw.pop("existing", EXISTING), threshold_min=120,
                                        settlement_county=SETTLEMENT_COUNTY, **kw)


def test_toy_centres_hand_optimum_beats_greedy():
    combos = {c: covered_people(c) for c in itertools.product(["a1", "a2"], ["b1", "b2"], ["c1", "c2"])}
    best = max(combos.values())
    assert [c for c, v in combos.items() if v == best] == [("a2", "b1", "c2")] and best == 490
    assert sequential_greedy() == ["a1", "b2", "c1"] and covered_people(sequential_greedy()) == 430


def test_regional_centres_one_per_county_at_the_hand_optimum():
    res = plan_centres()
    assert res.site_ids == ["a2", "b1", "c2"]
    assert res.sites["county_code"].tolist() == ["A", "B", "C"]
    assert res.objective == 490.0
    assert res.status == "optimal"


def test_regional_centres_report_gain_marginal_and_catchment():
    sites = plan_centres().sites.set_index("site_id")
    assert sites["pop_new"].to_dict() == {"a2": 170.0, "b1": 200.0, "c2": 130.0}
    assert sites["pop_only"].to_dict() == {"a2": 160.0, "b1": 200.0, "c2": 120.0}     # s7 is shared
    assert sites["n_catch"].to_dict() == {"a2": 2, "b1": 2, "c2": 3}                  # s7 is nearer c2
    assert sites["new_counties"].to_dict() == {"a2": "A;B", "b1": "A;B", "c2": "B;C"}


def test_people_already_covered_add_nothing():
    assert "c1" not in plan_centres().site_ids                 # c1's big settlement s5 is already covered
    without_existing = plan_centres(existing=np.zeros(9, bool))
    assert without_existing.site_ids == ["a1", "b2", "c1"]     # hand optimum when s5 counts: 1430
    assert without_existing.objective == 1430.0


def test_a_required_county_without_candidates_is_an_input_error():
    with pytest.raises(InputError, match="E"):
        siting.site_regional_centres(CENTRE_COST, CENTRE_POP, CENTRE_IDS, CENTRE_COUNTY, ["A", "E"], EXISTING)


# ---------------------------------------------------------------- plan versus optimum

def test_unconstrained_optimum_beats_the_plan_and_names_added_and_dropped_counties():
    plan = plan_centres()
    opt = siting.site_unconstrained(CENTRE_COST, CENTRE_POP, CENTRE_IDS, 3, EXISTING, threshold_min=120,
                                    candidate_county=CENTRE_COUNTY, initial_sites=plan.site_ids)
    assert opt.site_ids == ["c2", "d1"]              # covers all 580 people; a third centre would add nothing
    assert opt.objective == 580.0 >= plan.objective
    cmp = siting.compare_plan_to_optimum(plan, opt, dict(zip(CENTRE_IDS, CENTRE_COUNTY)))
    assert cmp["share_of_optimum"] == pytest.approx(490 / 580)
    assert cmp["added_counties"] == ["D"]
    assert cmp["dropped_counties"] == ["A", "B"]
    assert cmp["kept_counties"] == ["C"]
    json.dumps(cmp)


# ---------------------------------------------------------------- determinism

def without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "solve_seconds"}


def test_two_solves_give_identical_outputs():
    one, two = plan_centres(), plan_centres()
    pd.testing.assert_frame_equal(one.sites, two.sites)
    pd.testing.assert_frame_equal(one.assignments, two.assignments)
    assert without_timing(one.summary) == without_timing(two.summary)
    json.dumps(one.summary)


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_ties_go_to_the_lowest_candidate_id_whatever_the_column_order(order):
    # "k" and "m" reach the same settlement; "z" reaches another one of equal population
    ids = np.array(["z", "m", "k"])[order]
    reach = {"z": 1, "m": 0, "k": 0}
    cost = reach_matrix({(reach[c], j): 5.0 for j, c in enumerate(ids)}, (2, 3))
    res = siting.propose_temporary_points(cost, np.array([50.0, 50.0]), ids, threshold_min=15, mode="max_cover",
                                          max_sites=1)
    assert res.site_ids == ["k"]


def test_settlement_ties_go_to_the_lowest_site_id():
    cost = reach_matrix({(0, 0): 5, (0, 1): 5, (1, 0): 5, (2, 1): 5}, (3, 2))
    res = siting.propose_temporary_points(cost, np.ones(3), ["q", "p"], threshold_min=15)
    assert res.site_ids == ["p", "q"]
    assert res.assignments["site_id"].tolist() == ["p", "q", "p"]


# ---------------------------------------------------------------- sparse scale

def clustered_case(n=5000, m=3000, seed=1):
    """Settlements clustered around 300 seats (as villages along valleys), 3,000 candidates, 30-min reach."""
    rng = np.random.default_rng(seed)
    seats = rng.random((300, 2)) * 300
    pts = seats[rng.integers(0, 300, n)] + rng.normal(0, 3, (n, 2))
    cand = np.vstack([pts[rng.choice(n, m - 500, replace=False)], rng.random((500, 2)) * 300])
    km = cKDTree(pts).sparse_distance_matrix(cKDTree(cand), 10.0, output_type="coo_matrix").tocsr()
    cost = km * 3.0                                   # 20 km/h → minutes
    pop = rng.integers(10, 1000, n).astype(float)
    existing = rng.random(n) < 0.3
    county = np.array([f"{int(x // 60)}{int(y // 60)}" for x, y in cand])
    return cost, pop, existing, np.array([f"c{j:05d}" for j in range(m)]), county


def test_sparse_5000_by_3000_builds_and_solves_in_seconds():
    t0 = time.perf_counter()
    cost, pop, existing, ids, county = clustered_case()
    assert sp.issparse(cost) and cost.nnz < 0.01 * cost.shape[0] * cost.shape[1]
    cover = siting.propose_temporary_points(cost, pop, ids, threshold_min=30, existing_cover=existing)
    best = siting.propose_temporary_points(cost, pop, ids, threshold_min=30, existing_cover=existing,
                                           mode="max_cover", max_sites=100)
    centres = siting.site_regional_centres(cost, pop, ids, county, sorted(set(county))[:19], existing,
                                           threshold_min=30)
    elapsed = time.perf_counter() - t0
    assert [r.status for r in (cover, best, centres)] == ["optimal"] * 3
    assert cover.summary["coverage"]["after"]["settlements"] == 5000 - cover.summary["uncoverable"]["settlements"]
    assert len(centres.site_ids) == 19
    assert elapsed < 20, f"{elapsed:.1f} s"


# ---------------------------------------------------------------- the plan's county list

def test_regional_centres_csv_lists_19_counties_with_real_codes(data_dir):
    table = siting.load_regional_centres(CENTRES_CSV)
    assert len(table) == 19
    assert (table["zutuan"] == "yes").sum() == 13
    features = json.loads((data_dir / "boundaries" / "tibet_counties.geojson").read_text(encoding="utf-8"))["features"]
    current = {str(f["properties"]["adcode"]): f["properties"]["name"] for f in features}
    gazetteer = pd.concat([pd.read_csv(f, header=None, dtype=str)
                           for f in sorted((data_dir / "gazetteer" / "adcode").glob("54*.csv"))])
    counties_2016 = gazetteer[gazetteer[3] == "county"].set_index(5)[2].to_dict()
    for row in table.itertuples():
        assert current.get(row.county_code_current) == row.county_name_current, row
        assert counties_2016.get(row.county_code_2016) == row.county_name_plan, row
    assert table.set_index("county_name_plan").loc["错那县", "county_name_current"] == "错那市"


def test_run_propose_centres_places_one_centre_in_each_plan_county():
    codes = siting.load_regional_centres(CENTRES_CSV)["county_code_current"].tolist() + ["540102"]
    # one settlement per county, two candidates per county: the county seat (reaches it) and a far one
    settlements = pd.DataFrame({"settlement_id": [f"s{c}" for c in codes], "population": 100.0,
                                "county_code": codes})
    candidates = pd.DataFrame({"candidate_id": [f"{c}-{k}" for c in codes for k in "ab"],
                               "county_code": [c for c in codes for _ in "ab"]})
    cost = reach_matrix({(i, 2 * i): 60.0 for i in range(len(codes))}, (len(codes), 2 * len(codes)))
    out = siting.run_propose_centres(cost, settlements, candidates, np.zeros(len(codes), bool), CENTRES_CSV)
    plan = out["plan"]
    assert len(plan.site_ids) == 19 and all(s.endswith("-a") for s in plan.site_ids)
    assert sorted(plan.sites["county_code"]) == sorted(codes[:19])
    assert out["comparison"]["share_of_optimum"] == pytest.approx(19 / 19)
