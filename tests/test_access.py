"""Accessibility measures: hand-computed cases, PySAL `access` on the same matrices, and the CLI on Tibet."""
import json
import os
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from geoaccess.access import Decay, Pairs, decay_from_config, floating_catchment, supply_demand_access
from geoaccess.config import DEFAULTS

from conftest import PROJECT_ROOT, assert_every_column_documented

ACCESS_DEFAULTS = DEFAULTS["access"]


class MatrixModel:
    """A travel model whose cost matrix is given: settlements × facilities minutes (NaN = no path)."""

    def __init__(self, minutes):
        self.minutes = np.asarray(minutes, float)

    def cost_matrix(self, settlements, facilities, limit_min):
        m = self.minutes[: len(settlements), : len(facilities)]
        r, c = np.nonzero(np.isfinite(m) & (m <= limit_min))
        return sp.csr_matrix((m[r, c], (r, c)), shape=m.shape)


def toy_world():
    """Three settlements (100, 200, 300 people; A and B in county 1, C in county 2), two facilities."""
    s = pd.DataFrame({"settlement_id": ["A", "B", "C"], "name": ["a", "b", "c"], "kind": "village",
                      "county_code": ["540001", "540001", "540002"], "county_name": ["一县", "一县", "二县"],
                      "population": [100.0, 200.0, 300.0]})
    f = pd.DataFrame({"facility_id": ["X", "Y"], "name": ["x", "y"], "level": "county_hospital",
                      "county_code": ["540001", "540002"]})
    # A–X 10, B–X 20, B–Y 25, C–Y 40 (beyond a 30-minute catchment), C–X 50
    minutes = [[10, np.nan], [20, 25], [50, 40]]
    return s, f, MatrixModel(minutes)


def test_two_step_fca_by_hand_three_settlements_two_facilities():
    s, f, model = toy_world()
    run = supply_demand_access(model, s, f, "county", Decay("2sfca", 30.0), supply=np.array([1.0, 2.0]))
    # R_X = 1 / (100 + 200), R_Y = 2 / 200 (C is beyond 30 min of Y)
    assert run.facilities["supply_ratio"].tolist() == pytest.approx([1 / 300, 1 / 100], abs=1e-15)
    assert run.facilities["demand_potential"].tolist() == [300.0, 200.0]
    # A reaches X; B reaches X and Y; C nothing
    assert run.settlements["access_score"].tolist() == pytest.approx([1 / 300, 1 / 300 + 1 / 100, 0.0], abs=1e-15)
    assert run.settlements["n_in_catch"].tolist() == [1, 2, 0]
    # county 1, population-weighted: (100 · 1/300 + 200 · 4/300) / 300 = 0.01; county 2: 0
    assert run.counties["access_score"].tolist() == pytest.approx([0.01, 0.0], abs=1e-15)
    assert run.counties["supply"].tolist() == [1.0, 2.0]
    assert run.summary["population_with_no_facility_in_catchment"] == 300.0
    # the matrix written holds exactly the three pairs within the catchment
    assert run.od.to_dict("records") == [{"settlement_id": "A", "facility_id": "X", "minutes": 10.0},
                                         {"settlement_id": "B", "facility_id": "X", "minutes": 20.0},
                                         {"settlement_id": "B", "facility_id": "Y", "minutes": 25.0}]


def test_gaussian_and_step_weights_by_hand():
    dai = Decay("g2sfca", 60.0)
    e = np.exp(-0.5)
    assert dai.weights(np.array([0.0, 30.0, 60.0, 60.1])).tolist() == pytest.approx(
        [1.0, (np.exp(-0.125) - e) / (1 - e), 0.0, 0.0])
    step = Decay("e2sfca", 60.0, (20.0, 40.0, 60.0), (1.0, 0.68, 0.22))
    assert step.weights(np.array([0.0, 20.0, 20.5, 40.0, 59.0, 60.0, 61.0])).tolist() == [1, 1, .68, .68, .22, .22, 0]
    grav = Decay("gravity", 60.0, beta=2.0, min_minutes=5.0)
    assert grav.weights(np.array([0.0, 10.0, 70.0])).tolist() == [1 / 25, 1 / 100, 0.0]


def random_matrix(seed=3, n=40, m=7):
    rng = np.random.default_rng(seed)
    minutes = rng.uniform(0, 100, (n, m))
    minutes[rng.random((n, m)) < 0.3] = np.nan  # no path
    minutes[0, 0] = 0.0  # a facility in the settlement (explicit zero)
    pop = rng.integers(0, 5000, n).astype(float)
    pop[5] = 0.0
    supply = rng.integers(1, 300, m).astype(float)
    return minutes, pop, supply


def pysal_frames(minutes, pop, supply):
    r, c = np.nonzero(np.isfinite(minutes))
    cost = pd.DataFrame({"origin": r, "dest": c, "cost": minutes[r, c]})
    demand = pd.DataFrame({"pop": pop}, index=pd.RangeIndex(len(pop), name="geoid"))
    sup = pd.DataFrame({"beds": supply}, index=pd.RangeIndex(len(supply), name="geoid"))
    return cost, demand, sup


def ours(minutes, pop, supply, decay):
    r, c = np.nonzero(np.isfinite(minutes))
    pairs = Pairs(r.astype(np.int64), c.astype(np.int64), minutes[r, c], *minutes.shape)
    return floating_catchment(pairs, pop, supply, decay)


def dai(t0):
    e = np.exp(-0.5)
    return lambda t: (np.exp(-0.5 * (t / t0) ** 2) - e) / (1 - e)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_equal_pysal_access_on_the_same_matrix(seed):
    access = pytest.importorskip("access")
    from access import fca, weights

    minutes, pop, supply = random_matrix(seed)
    cost, demand, sup = pysal_frames(minutes, pop, supply)
    n = len(pop)

    def pysal_2sfca(weight_fn, max_cost):
        out = fca.two_stage_fca(demand.reset_index(), sup, cost, max_cost=max_cost, demand_index="geoid",
                                demand_name="pop", supply_name="beds", weight_fn=weight_fn)
        return out.reindex(range(n)).fillna(0.0).to_numpy()

    # 2SFCA: PySAL's two_stage_fca without a weight
    got = ours(minutes, pop, supply, Decay("2sfca", 60.0)).score
    np.testing.assert_allclose(got, pysal_2sfca(None, 60.0), rtol=0, atol=1e-9)
    # E2SFCA: PySAL's Access.enhanced_two_stage_fca with the same step bands
    step = {20: 1.0, 40: 0.68, 60: 0.22}
    acc = access.Access(demand_df=demand, demand_value="pop", supply_df=sup, supply_value="beds", cost_df=cost,
                        cost_origin="origin", cost_dest="dest", cost_name="cost")
    e2 = acc.enhanced_two_stage_fca(name="e2", weight_fn=weights.step_fn(step), max_cost=60.0)
    want = e2.iloc[:, 0].reindex(range(n)).fillna(0.0).to_numpy()
    got = ours(minutes, pop, supply, Decay("e2sfca", 60.0, tuple(step), tuple(step.values()))).score
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # Gaussian 2SFCA (Dai's kernel) and gravity: PySAL's two_stage_fca with the same weight function
    got = ours(minutes, pop, supply, Decay("g2sfca", 60.0)).score
    np.testing.assert_allclose(got, pysal_2sfca(dai(60.0), 60.0), rtol=0, atol=1e-9)
    got = ours(minutes, pop, supply, Decay("gravity", 90.0, beta=1.5, min_minutes=2.0))
    np.testing.assert_allclose(got.score, pysal_2sfca(weights.gravity(1.0, -1.5, 2.0), 90.0), rtol=0, atol=1e-9)
    # the gravity denominator is PySAL's weighted_catchment of the demand
    potential = fca.weighted_catchment(demand.reset_index(), cost, 90.0, cost_source="origin", cost_dest="dest",
                                       cost_cost="cost", loc_index="geoid", loc_value="pop",
                                       weight_fn=weights.gravity(1.0, -1.5, 2.0))
    np.testing.assert_allclose(got.demand_potential, potential.reindex(range(len(supply))).fillna(0).to_numpy(),
                               rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("method", ["2sfca", "e2sfca", "g2sfca", "gravity"])
def test_every_unit_of_supply_reached_by_demand_is_shared_out(method):
    """Σ_i P_i A_i = Σ_j S_j over the facilities some demand reaches, whatever the decay."""
    minutes, pop, supply = random_matrix(7, n=60, m=9)
    decay = decay_from_config(ACCESS_DEFAULTS, method, 50.0)
    res = ours(minutes, pop, supply, decay)
    assert (pop * res.score).sum() == pytest.approx(supply[res.demand_potential > 0].sum(), rel=1e-12)


def test_bad_decay_parameters_are_one_clear_error():
    from geoaccess.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--bands \[20, 40\] and --weights \[1, 0.5, 0.2\]: one weight per band"):
        decay_from_config(ACCESS_DEFAULTS, "e2sfca", 60.0, bands=[20, 40], weights=[1, 0.5, 0.2])
    with pytest.raises(ConfigError, match="increasing"):
        decay_from_config(ACCESS_DEFAULTS, "e2sfca", 60.0, bands=[40, 20, 60])
    with pytest.raises(ConfigError, match="catchment"):
        decay_from_config(ACCESS_DEFAULTS, "2sfca", 0.0)
    with pytest.raises(ConfigError, match="--min-minutes 0"):
        decay_from_config(ACCESS_DEFAULTS, "gravity", 60.0, min_minutes=0)


def test_the_config_access_section_is_validated(tmp_path):
    from geoaccess.config import load_region
    from geoaccess.errors import ConfigError

    base = (PROJECT_ROOT / "geoaccess" / "regions" / "tibet.toml").read_text(encoding="utf-8")
    for text, problem in (("[access]\ne2sfca_bands_min = [30, 20, 60]\n", "increasing"),
                          ("[access]\ngravity_beta = -1\n", "positive"),
                          ("[access]\ne2sfca_weights = ['a']\n", "list of numbers"),
                          ("[access]\ngravity_betta = 2\n", "did you mean 'gravity_beta'")):
        p = tmp_path / "r.toml"
        p.write_text(base + "\n" + text, encoding="utf-8")
        with pytest.raises(ConfigError, match=problem):
            load_region(p)
    p.write_text(base + "\n[access]\ne2sfca_bands_min = [15, 30, 60]\n", encoding="utf-8")
    assert load_region(p).section("access")["e2sfca_bands_min"] == [15, 30, 60]


def one_error_line(r) -> bool:
    """The run ended in exactly one `error:` line and no traceback (warnings may come before it)."""
    lines = r.stderr.strip().splitlines()
    return sum(line.startswith("error:") for line in lines) == 1 and lines[-1].startswith("error:") \
        and "Traceback" not in r.stderr


def cli(*args, cwd=PROJECT_ROOT):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "cli.py"), "-q", *args], capture_output=True,
                          text=True, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def beds_data(data_dir, tmp_path_factory):
    """The real data with a register that has a `beds` column (a folder of links; the register a copy)."""
    root = tmp_path_factory.mktemp("beds_data")
    for entry in data_dir.iterdir():
        if entry.name != "facilities":
            (root / entry.name).symlink_to(entry)
    (root / "facilities").mkdir()
    reg = pd.read_csv(data_dir / "facilities" / "tibet_facilities.csv", dtype=str)
    reg["beds"] = np.where(reg["level"].eq("county_hospital"), "100", np.where(reg["level"].eq("prefecture_hospital"),
                                                                              "500", "20"))
    reg.to_csv(root / "facilities" / "tibet_facilities.csv", index=False)
    return root


def test_access_on_tibet_writes_its_own_set_and_the_matrix_recomputes_the_scores(beds_data, tmp_path):
    out = tmp_path / "run"
    r = cli("access", "--region", "tibet", "--data", str(beds_data), "--out", str(out), "--level", "county",
            "--method", "g2sfca", "--supply", "beds", "--write-matrix")
    assert r.returncode == 0, r.stderr
    folder = out / "access" / "g2sfca_county_60min_beds"
    assert "score/10k" in r.stdout and str(folder) in r.stdout
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["command"] == "access" and manifest["parameters"]["supply"] == "beds"
    assert assert_every_column_documented(folder) == 4
    s = pd.read_csv(folder / "access_g2sfca_county.csv", dtype={"settlement_id": str, "county_code": str})
    f = pd.read_csv(folder / "access_g2sfca_county_facilities.csv", dtype={"facility_id": str})
    od = pd.read_csv(folder / "od_county.csv", dtype={"settlement_id": str, "facility_id": str})
    assert len(s) == 5467 + 695 + 20 and set(f["level"]) == {"county_hospital", "prefecture_hospital"}
    assert set(f["supply"]) == {100.0, 500.0} and (od["minutes"] <= 60).all()
    # anyone can recompute the scores from what was written: the matrix, the supply and the population
    pairs = Pairs(pd.Index(s["settlement_id"]).get_indexer(od["settlement_id"]),
                  pd.Index(f["facility_id"]).get_indexer(od["facility_id"]), od["minutes"].to_numpy(), len(s), len(f))
    res = floating_catchment(pairs, s["population"].to_numpy(), f["supply"].to_numpy(), Decay("g2sfca", 60.0))
    np.testing.assert_allclose(res.score, s["access_score"], rtol=1e-9, atol=1e-15)
    c = pd.read_csv(folder / "access_g2sfca_county_counties.csv", dtype={"county_code": str})
    assert len(c) == 74 and c["access_score"].notna().all()
    # the population-weighted county means add up to the region's
    summary = json.loads((folder / "access_summary.json").read_text())
    region = (c["access_score"] * c["population"]).sum() / c["population"].sum() * 1e4
    assert region == pytest.approx(summary["region_score_per_10k"], rel=1e-9)


def test_a_missing_or_bad_supply_column_is_one_line_naming_the_file(beds_data, tmp_path):
    r = cli("access", "--region", "tibet", "--data", str(beds_data), "--out", str(tmp_path / "o"), "--level",
            "county", "--method", "2sfca", "--supply", "doctors")
    assert r.returncode == 2 and one_error_line(r)
    assert "tibet_facilities.csv" in r.stderr and "doctors" in r.stderr
    bad = tmp_path / "bad_data"
    bad.mkdir()
    for entry in beds_data.iterdir():
        if entry.name != "facilities":
            (bad / entry.name).symlink_to(entry.resolve())
    (bad / "facilities").mkdir()
    reg = pd.read_csv(beds_data / "facilities" / "tibet_facilities.csv", dtype=str)
    reg.loc[3, "beds"] = "-5"
    reg.to_csv(bad / "facilities" / "tibet_facilities.csv", index=False)
    r = cli("access", "--region", "tibet", "--data", str(bad), "--out", str(tmp_path / "o2"), "--level",
            "county", "--method", "2sfca", "--supply", "beds")
    assert r.returncode == 2 and one_error_line(r), r.stderr
    assert "row 5" in r.stderr and "beds" in r.stderr
    assert not (tmp_path / "o2" / "access").exists()
    r = cli("access", "--region", "tibet", "--out", str(tmp_path / "o3"), "--level", "county", "--method", "e2sfca",
            "--bands", "20,x")
    assert r.returncode == 2 and "--bands" in r.stderr and one_error_line(r)


class IdMatrixModel:
    """A travel model given by a settlements × facilities minutes table (by id; NaN = no path)."""

    def __init__(self, minutes: pd.DataFrame):
        self.minutes = minutes

    def _m(self, settlements, facilities):
        return self.minutes.loc[settlements["settlement_id"], facilities["facility_id"]].to_numpy(float)

    def cost_matrix(self, settlements, facilities, limit_min):
        m = self._m(settlements, facilities)
        r, c = np.nonzero(np.isfinite(m) & (m <= limit_min))
        return sp.csr_matrix((m[r, c], (r, c)), shape=m.shape)

    def times(self, settlements, facilities, groups):
        out = {}
        for g, levels in groups.items():
            f = facilities[facilities["level"].isin(levels)]
            m = np.where(np.isnan(self._m(settlements, f)), np.inf, self._m(settlements, f))
            j = m.argmin(axis=1)
            t = m[np.arange(len(m)), j]
            out[f"t_{g}_min"] = np.where(np.isfinite(t), t, np.nan)
            out[f"nearest_{g}_id"] = np.where(np.isfinite(t), f["facility_id"].to_numpy()[j], None)
        return pd.DataFrame(out), None


def own_unit_world():
    """Two counties: a1, a2 in county 1 (townships 1 and 2; township 2 has no health centre), b1 in county 2."""
    s = pd.DataFrame({"settlement_id": ["a1", "a2", "b1"], "name": ["a1", "a2", "b1"], "kind": "village",
                      "county_code": ["540001", "540001", "540002"], "county_name": ["一县", "一县", "二县"],
                      "township_code": ["540001001000", "540001002000", "540002001000"],
                      "population": [100.0, 50.0, 200.0]})
    f = pd.DataFrame({"facility_id": ["HA", "HB", "t1", "t3"], "name": ["HA", "HB", "t1", "t3"],
                      "level": ["county_hospital", "county_hospital", "township_health_centre", "township_health_centre"],
                      "county_code": ["540001", "540002", "540001", "540002"],
                      "admin_code": ["540001000000", "540002000000", "540001001000", "540002001000"]})
    minutes = pd.DataFrame([[30, 80, 5, 60], [90, 40, 25, 70], [70, 10, 20, 35]], index=s["settlement_id"],
                           columns=f["facility_id"], dtype=float)
    return s, f, IdMatrixModel(minutes)


def test_own_county_and_own_township_against_the_nearest_by_hand():
    from geoaccess.access import own_unit_summary, own_unit_table

    s, f, model = own_unit_world()
    t = own_unit_table(model, s, f, county_limit_min=720, township_limit_min=240).set_index("settlement_id")
    # a2's nearest county hospital is across the border (HB, 40 min); its own county's is HA, 90 min
    assert t["t_county_min"].tolist() == [30, 40, 10] and t["t_county_own_min"].tolist() == [30, 90, 10]
    assert t["own_county_status"].tolist() == ["own", "crossed", "own"]
    assert t["own_county_id"].tolist() == ["HA", "HA", "HB"] and t.loc["a2", "gain_county_min"] == 50
    # health centre or better: b1's nearest is its county hospital HB (10 min, not in a township); its own
    # township's centre t3 is 35 min; a2's township has no centre at all
    assert t["nearest_thc_id"].tolist() == ["t1", "t1", "HB"]
    assert t["own_thc_status"].tolist() == ["own", "none_in_unit", "crossed"]
    assert t.loc["b1", "t_thc_own_min"] == 35 and np.isnan(t.loc["a2", "t_thc_own_min"])
    c = own_unit_summary(t.reset_index(), {"county": 60, "thc": 30}).set_index("county_code")
    assert c.loc["540001", "share_county_60"] == 1.0 and c.loc["540001", "share_county_own_60"] == 0.5
    assert c.loc["540001", "pop_share_county_own_60"] == pytest.approx(100 / 150)
    assert c.loc["540001", "pop_gain_county_60"] == 50 and c.loc["540001", "n_cross_county"] == 1
    assert c.loc["540002", "pop_gain_county_60"] == 0 and c.loc["540002", "pop_gain_thc_30"] == 200
    assert c.loc["540001", "pop_gain_thc_30"] == 50 and c.loc["540001", "share_thc_own_30"] == 0.5
    # beyond the search limit the own time is unknown, not invented
    t = own_unit_table(model, s, f, county_limit_min=60, township_limit_min=240).set_index("settlement_id")
    assert t.loc["a2", "own_county_status"] == "beyond_limit" and np.isnan(t.loc["a2", "t_county_own_min"])


def test_own_unit_on_tibet_is_never_faster_than_the_nearest_and_every_column_documented(tmp_path):
    out = tmp_path / "run"
    r = cli("own-unit", "--region", "tibet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "only by crossing the county border" in r.stdout
    folder = out / "own_unit"
    assert assert_every_column_documented(folder) == 2
    t = pd.read_csv(folder / "own_unit.csv", dtype={"settlement_id": str, "county_code": str})
    assert len(t) == 5467 + 695 + 20
    for level in ("county", "thc"):
        own = t[f"own_{level}_status"]
        assert (t.loc[own.eq("own"), f"gain_{level}_min"] == 0).all()
        assert (t.loc[own.eq("crossed"), f"gain_{level}_min"] >= 0).all()
        assert t.loc[own.isin(["beyond_limit", "none_in_unit"]), f"t_{level}_own_min"].isna().all()
    summary = json.loads((folder / "own_unit_summary.json").read_text())
    c = summary["levels"]["county"]
    assert c["pop_share_own_unit"] <= c["pop_share_nearest"]
    counties = pd.read_csv(folder / "own_unit_counties.csv")
    assert counties["pop_gain_county_60"].sum() == pytest.approx(c["people_gaining_by_crossing"], rel=1e-9)


def test_referral_chain_on_a_toy_graph():
    """s1 – 5 – T1 – 40 – C, s1 – 60 – C; s2 – 10 – T2 – 50 – C, s2 – 30 – C; C – 100 – P (minutes, both ways)."""
    import networkx as nx

    from geoaccess.access import referral_chains, referral_times
    from geoaccess.schema import LEVEL_GROUPS

    G = nx.Graph()
    G.add_weighted_edges_from([("s1", "T1", 5), ("T1", "C", 40), ("s1", "C", 60), ("s2", "T2", 10), ("T2", "C", 50),
                               ("s2", "C", 30), ("C", "P", 100)])
    d = dict(nx.all_pairs_dijkstra_path_length(G))
    nodes = sorted(G)
    model = IdMatrixModel(pd.DataFrame([[d[a].get(b, np.nan) for b in nodes] for a in nodes], index=nodes,
                                       columns=nodes))
    f = pd.DataFrame({"facility_id": ["T1", "T2", "C", "P"], "name": ["T1", "T2", "C", "P"],
                      "level": ["township_health_centre", "township_health_centre", "county_hospital",
                                "prefecture_hospital"], "county_code": "540001", "lon": 0.0, "lat": 0.0})
    ref = referral_times(model, f).set_index("facility_id")
    # T1 → C: the road T1–C (40) beats T1–s1–C (65); T2 → C: T2–s2–C (40) beats its own road (50)
    assert ref.loc["T1", "t_county_min"] == 40 and ref.loc["T2", "t_county_min"] == 40
    assert ref.loc["T1", "nearest_county_id"] == "C" and ref.loc["T1", "t_pref_min"] == 140
    assert ref.loc["C", "t_pref_min"] == 100 and np.isnan(ref.loc["C", "t_county_min"])
    assert ref.loc[["T1", "T2", "C", "P"], "t_thc_min"].isna().all() and ref.loc["P"].drop(
        ["name", "level", "county_code"]).isna().all()
    s = pd.DataFrame({"settlement_id": ["s1", "s2"], "name": ["s1", "s2"], "kind": "village",
                      "county_code": "540001", "county_name": "一县", "population": [10.0, 20.0]})
    times, _ = model.times(s, f, {g: LEVEL_GROUPS[g] for g in ("thc", "county")})
    c = referral_chains(s, times, ref.reset_index()).set_index("settlement_id")
    # s1: 5 to T1, then 40 to C = 45 = its direct trip (through T1); s2: 10 to T2, then 40 = 50 against 30 direct
    assert c["t_chain_min"].tolist() == [45, 50] and c["t_county_min"].tolist() == [45, 30]
    assert c["chain_extra_min"].tolist() == [0, 20] and c["referral_county_id"].tolist() == ["C", "C"]
    assert c["nearest_thc_id"].tolist() == ["T1", "T2"]


def test_the_facilities_riding_along_in_one_pass_give_the_referral_command_s_tables():
    """The gaps run times the facilities as extra origins of its one pass; its tables equal the separate passes'."""
    from geoaccess.access import referral_tables, times_with_facility_origins
    from geoaccess.schema import LEVEL_GROUPS

    ids = ["s1", "s2", "K", "T1", "C", "P"]
    m = pd.DataFrame([[8, 12, 25, 70], [1, 20, 40, 90], [0, 20, 40, 100], [35, 0, 5, 50], [100, 50, 0, 200],
                      [200, 90, 190, 0]], index=ids, columns=["K", "T1", "C", "P"], dtype=float)
    model = IdMatrixModel(m)
    model.engine = "combined"
    f = pd.DataFrame({"facility_id": ["K", "T1", "C", "P"], "name": list("KTCP"),
                      "level": ["village_clinic", "township_health_centre", "county_hospital", "prefecture_hospital"],
                      "county_code": "540001", "lon": 0.0, "lat": 0.0})
    s = pd.DataFrame({"settlement_id": ["s1", "s2"], "name": ["s1", "s2"], "kind": "village", "county_code": "540001",
                      "county_name": "一县", "population": [10.0, 20.0], "lon": 0.0, "lat": 0.0}, index=[7, 3])
    times, _, fac_times = times_with_facility_origins(model, s, f, groups=LEVEL_GROUPS)
    alone, _ = model.times(s, f, LEVEL_GROUPS)
    assert times.index.tolist() == [7, 3] and times.reset_index(drop=True).equals(alone)
    one = referral_tables(model, s, f, settlement_times=times, origin_times=fac_times)
    two = referral_tables(model, s, f)
    for a, b in zip(one, two):
        pd.testing.assert_frame_equal(a, b)
    ref = one[0].set_index("facility_id")
    # K → nearest centre or better: T1 at 20; K → county level: C at 40; T1 → C 5; C → P 200
    assert (ref.loc["K", "t_thc_min"], ref.loc["K", "nearest_thc_id"], ref.loc["K", "t_county_min"]) == (20, "T1", 40)
    assert ref.loc["T1", "t_county_min"] == 5 and ref.loc["C", "t_pref_min"] == 200


def test_referral_on_tibet_writes_both_tables_documented(tmp_path):
    out = tmp_path / "run"
    r = cli("referral", "--region", "tibet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    folder = out / "referral"
    assert assert_every_column_documented(folder) == 2
    ref = pd.read_csv(folder / "referral.csv")
    thc = ref[ref["level"].eq("township_health_centre")]
    assert thc["t_county_min"].notna().all() and thc["t_thc_min"].isna().all()
    assert ref.loc[ref["level"].eq("county_hospital"), "t_county_min"].isna().all()
    c = pd.read_csv(folder / "referral_chains.csv")
    # where the nearest centre is itself county level, the chain is the direct trip
    county_level = c["nearest_thc_id"].isin(ref.loc[ref["level"].isin(["county_hospital", "prefecture_hospital"]),
                                                    "facility_id"])
    assert county_level.any() and (c.loc[county_level, "chain_extra_min"] == 0).all()
    assert (c["t_chain_min"] >= c["t_thc_min"]).all()


def overflow_world(register_order=("X", "Y")):
    """X (150 people) and Y (1000); a: X 5, Y 30 min; b: X 10, Y 20; c: X 35, Y 50 (beyond 40); 100 people each."""
    s = pd.DataFrame({"settlement_id": ["a", "b", "c"], "name": ["a", "b", "c"], "kind": "village",
                      "county_code": ["540001", "540001", "540002"], "county_name": ["一县", "一县", "二县"],
                      "population": [100.0, 100.0, 100.0]})
    minutes = pd.DataFrame({"X": [5, 10, 35], "Y": [30, 20, 50]}, index=s["settlement_id"], dtype=float)
    f = pd.DataFrame({"facility_id": list(register_order), "name": list(register_order), "level": "county_hospital",
                      "county_code": "540001"})
    cap = np.array([{"X": 150.0, "Y": 1000.0}[k] for k in register_order])
    return s, f, IdMatrixModel(minutes), cap


def test_the_second_facility_takes_the_overflow_of_the_first():
    from geoaccess.access import coverage_with_capacity

    s, f, model, cap = overflow_world()
    run = coverage_with_capacity(model, s, f, "county", cap, 40.0, "register")
    fac = run.facilities.set_index("facility_id")
    # X serves a (100) and half of b (50), then is full; Y takes the other 50 of b; c reaches only the full X
    assert fac.loc["X", "people_served"] == 150 and fac.loc["X", "capacity_left"] == 0
    assert fac.loc["X", "n_served"] == 2 and fac.loc["X", "served_max_min"] == 10
    assert fac.loc["Y", "people_served"] == 50 and fac.loc["Y", "capacity_left"] == 950
    st = run.settlements.set_index("settlement_id")
    assert st["people_covered"].tolist() == [100, 100, 0]
    assert st["covered_by"].tolist()[:2] == ["X", "X"] and st.loc["c", "uncovered_reason"] == "capacity"
    c = run.counties.set_index("county_code")
    assert c.loc["540001", "pop_covered"] == 200 and c.loc["540002", "pop_uncov_capacity"] == 100
    assert run.summary["uncovered_for_distance"] == 0 and run.summary["facilities_full"] == 1
    # with a 30-minute limit c is beyond every facility: uncovered for distance
    run = coverage_with_capacity(model, s, f, "county", cap, 30.0, "register")
    assert run.settlements.set_index("settlement_id").loc["c", "uncovered_reason"] == "distance"
    assert run.summary["uncovered_for_distance"] == 100


def test_the_order_decides_who_takes_the_people_first():
    from geoaccess.access import coverage_with_capacity

    s, f, model, cap = overflow_world(("Y", "X"))
    run = coverage_with_capacity(model, s, f, "county", cap, 40.0, "register")  # Y first: a and b, then X: c
    fac = run.facilities.set_index("facility_id")
    assert fac.loc["Y", "people_served"] == 200 and fac.loc["X", "people_served"] == 100
    assert run.summary["covered"] == 300
    run = coverage_with_capacity(model, s, f, "county", cap, 40.0, "population")  # X has 300 within 40 min: first
    fac = run.facilities.set_index("facility_id")
    assert fac["order_rank"].to_dict() == {"Y": 2, "X": 1}
    assert fac.loc["X", "people_served"] == 150 and fac.loc["Y", "people_served"] == 50


@pytest.mark.parametrize("seed", [4, 5])
def test_uncapacitated_coverage_equals_the_plain_coverage_shares(seed):
    from geoaccess.access import capacity_coverage
    from geoaccess.coverage import coverage_shares

    minutes, pop, _ = random_matrix(seed, n=80, m=6)
    r, c = np.nonzero(np.isfinite(minutes) & (minutes <= 45))
    pairs = Pairs(r.astype(np.int64), c.astype(np.int64), minutes[r, c], *minutes.shape)
    res = capacity_coverage(pairs, pop, np.full(6, np.inf), np.arange(6))
    nearest = np.nanmin(np.where(np.isfinite(minutes), minutes, np.inf), axis=1)
    table = pd.DataFrame({f"t_{g}_min": nearest for g in ("clinic", "thc", "county", "pref")} | {"population": pop})
    plain = coverage_shares(table, [45], weight="population")["county"]["45"]
    assert res["covered"].sum() / pop.sum() == pytest.approx(plain, abs=1e-12)


def test_coverage_on_tibet_uncapacitated_equals_the_engines_shares_and_capacity_binds(data_dir, tmp_path):
    from geoaccess.access import coverage_with_capacity
    from geoaccess.config import load_region
    from geoaccess.coverage import coverage_shares
    from geoaccess.pipeline import prepare_region
    from geoaccess.schema import LEVEL_GROUPS
    from geoaccess.travel import TravelModel

    prep = prepare_region(load_region("tibet"), data_dir)
    model = TravelModel(prep)
    s, f = prep.inputs.settlements, prep.facilities
    times, _ = model.times(s, f, groups={"county": LEVEL_GROUPS["county"]})
    table = pd.DataFrame({f"t_{g}_min": times["t_county_min"] for g in ("clinic", "thc", "county", "pref")}
                         | {"population": s["population"].to_numpy()})
    plain = coverage_shares(table, [60], weight="population")["county"]["60"]
    free = coverage_with_capacity(model, s, f, "county", np.full(len(f), np.inf), 60.0)
    assert free.summary["covered_share"] == pytest.approx(plain, abs=1e-9)
    tight = coverage_with_capacity(model, s, f, "county", np.full(len(f), 5000.0), 60.0)
    assert tight.summary["covered"] < free.summary["covered"]
    assert (tight.facilities["people_served"] <= 5000 + 1e-6).all()
    assert tight.summary["uncovered_for_distance"] == pytest.approx(free.summary["uncovered_for_distance"])
    parts = tight.summary["covered"] + tight.summary["uncovered_for_capacity"] + tight.summary["uncovered_for_distance"]
    assert parts == pytest.approx(tight.summary["population"], rel=1e-12)


def test_coverage_cli_writes_its_own_documented_set_and_refuses_a_bad_capacity(tmp_path):
    out = tmp_path / "run"
    r = cli("coverage", "--region", "tibet", "--out", str(out), "--level", "county", "--capacity", "20000",
            "--order", "population")
    assert r.returncode == 0, r.stderr
    folder = out / "coverage" / "county_20000_60min_population"
    assert "for want of capacity" in r.stdout and assert_every_column_documented(folder) == 3
    assert json.loads((folder / "manifest.json").read_text())["command"] == "coverage"
    r = cli("coverage", "--region", "tibet", "--out", str(out), "--level", "county", "--capacity", "-3")
    assert r.returncode == 2 and "--capacity -3" in r.stderr and one_error_line(r)


def test_catchment_polygons_on_a_hand_made_grid():
    from affine import Affine
    from pyproj import Transformer

    from geoaccess.catchments import catchment_polygons
    from geoaccess.positions import AreaGrid
    from geoaccess.travel import CellTimes

    grid = AreaGrid(Affine(1000, 0, 500000, 0, -1000, 3000000), (2, 4), "EPSG:32645", None)
    minutes = np.array([[5, 20, 50, 200], [10, np.nan, 25, 5]], np.float32)
    nearest = np.array([[0, 0, 1, 1], [0, -1, 1, 1]], np.int32)
    cells = CellTimes(grid, {"county": minutes}, {"county": nearest})
    f = pd.DataFrame({"facility_id": ["F0", "F1"], "name": ["零", "一"], "level": "county_hospital",
                      "county_code": ["540001", "540002"]})
    # settlements at the centres of cells (0, 0), (1, 3) and (0, 3) (beyond every band)
    x, y = np.array([500500, 503500, 503500]), np.array([2999500, 2998500, 2999500])
    lon, lat = Transformer.from_crs("EPSG:32645", "EPSG:4326", always_xy=True).transform(x, y)
    s = pd.DataFrame({"lon": lon, "lat": lat, "population": [10.0, 5.0, 7.0]})
    p = catchment_polygons(cells, "county", f, s, [15, 30, 60], "EPSG:32645")
    got = {(r.facility_id, r.band_to_min): (round(r.area_km2, 6), r.n_settlements, r.population)
           for r in p.itertuples()}
    assert got == {("F0", 15): (2.0, 1, 10.0), ("F0", 30): (1.0, 0, 0.0), ("F1", 15): (1.0, 1, 5.0),
                   ("F1", 30): (1.0, 0, 0.0), ("F1", 60): (1.0, 0, 0.0)}
    assert p.crs.to_epsg() == 4326 and set(p.loc[p["band_to_min"].eq(30), "band_from_min"]) == {15.0}


def test_catchments_on_tibet_write_a_documented_geopackage_and_a_facility_s_own_raster(tmp_path, data_dir):
    """`catchments --facility-rasters ID`: minutes from every cell to that facility alone, on the level raster's
    grid: about 0 in its own cell, small next to it, never below the level raster, equal to it in the cells of
    the facility's own catchment (where it is the nearest of its level). An unknown id: one line, exit 2."""
    import rasterio
    from rasterio import features

    from geoaccess.coords import gcj02_to_wgs84

    out = tmp_path / "run"
    fid = "F540102000000"  # 城关区·县级医院, Lhasa (GCJ-02 91.140552, 29.654838 in the register)
    r = cli("catchments", "--region", "tibet", "--out", str(out), "--level", "county", "--minutes", "60,30",
            "--facility-rasters", fid)
    assert r.returncode == 0, r.stderr
    folder = out / "catchments" / "county_30-60min"
    with rasterio.open(folder / f"traveltime_county_{fid}.tif") as src, \
            rasterio.open(folder / "traveltime_county.tif") as lvl:
        assert (src.crs, src.transform, src.shape, src.nodata) == (lvl.crs, lvl.transform, lvl.shape, lvl.nodata)
        own, level, nodata, transform = src.read(1), lvl.read(1), src.nodata, src.transform
        assert src.crs.to_epsg() == 4326
    lon, lat = gcj02_to_wgs84(np.array([91.140552]), np.array([29.654838]))
    row, col = rasterio.transform.rowcol(transform, lon[0], lat[0])
    t = np.where(own == nodata, np.inf, own)
    assert np.unravel_index(np.argmin(t), t.shape) == (row, col) and t[row, col] < 3
    around = t[row - 1:row + 2, col - 1:col + 2]
    assert np.isfinite(around).all() and around.max() < 15
    both = (own != nodata) & (level != nodata)
    assert (own[both] >= level[both] - 1e-4).all()
    polys = gpd.read_file(folder / "catchments_county.gpkg")
    mine = features.rasterize(polys.loc[polys["facility_id"].eq(fid), "geometry"], out_shape=own.shape,
                              transform=transform, fill=0, default_value=1).astype(bool)
    assert mine.sum() > 20 and np.array_equal(own[mine], level[mine])
    assert (own[~mine & both] > level[~mine & both]).any()  # elsewhere another facility is nearer
    # the catchments themselves: a documented GeoPackage, bands that do not overlap
    assert assert_every_column_documented(folder) == 2
    p = polys
    assert set(p["band_to_min"]) == {30.0, 60.0} and p["n_settlements"].sum() <= 5467 + 695 + 20
    metric = p.to_crs("EPSG:32645")
    for _, part in metric.groupby("band_to_min"):  # different facilities' polygons of one band do not overlap
        assert part.union_all().area == pytest.approx(part.area.sum(), rel=1e-6)
    r = cli("catchments", "--region", "tibet", "--out", str(out), "--level", "county", "--minutes", "30,abc")
    assert r.returncode == 2 and "--minutes" in r.stderr
    r = cli("catchments", "--region", "tibet", "--out", str(out), "--level", "county", "--facility-rasters",
            f"{fid},F000")
    assert r.returncode == 2 and one_error_line(r) and "unknown facility id 'F000'" in r.stderr


def _write_tif(path, data, transform, crs):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1,
                       dtype="float64", crs=crs, transform=transform) as dst:
        dst.write(data, 1)


def test_a_population_raster_is_summed_onto_the_engine_grid_in_any_crs(tmp_path):
    from affine import Affine

    from geoaccess.popgrid import read_population_raster
    from geoaccess.positions import AreaGrid

    grid = AreaGrid(Affine(1000, 0, 500000, 0, -1000, 3300000), (4, 4), "EPSG:32645", None)
    fine = np.arange(64, dtype=float).reshape(8, 8)
    _write_tif(tmp_path / "fine.tif", fine, Affine(500, 0, 500000, 0, -500, 3300000), "EPSG:32645")
    got, facts = read_population_raster(tmp_path / "fine.tif", grid)
    # each 1-km cell holds the four 500-m cells inside it
    np.testing.assert_allclose(got, fine.reshape(4, 2, 4, 2).sum(axis=(1, 3)), rtol=1e-9)
    assert facts["raster_people"] == facts["grid_people"] == fine.sum()
    # WGS84 cells well inside a coarser projected grid: every person lands on the grid
    big = AreaGrid(Affine(2000, 0, 725000, 0, -2000, 3370000), (60, 60), "EPSG:32645", None)  # around 89.95° E, 29.9° N
    geo = np.full((20, 20), 3.0)
    _write_tif(tmp_path / "geo.tif", geo, Affine(0.005, 0, 89.9, 0, -0.005, 29.95), "EPSG:4326")
    got, facts = read_population_raster(tmp_path / "geo.tif", big)
    assert facts["grid_people"] == pytest.approx(geo.sum(), rel=0.01)


def test_population_grid_on_tibet_keeps_every_county_total(tmp_path, data_dir):
    import rasterio

    out = tmp_path / "run"
    r = cli("population-grid", "--region", "tibet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    folder = out / "population_grid"
    assert assert_every_column_documented(folder) == 1
    summary = json.loads((folder / "population_grid_summary.json").read_text())
    facts = summary["grid"]
    assert facts["grid_people"] == pytest.approx(facts["settlement_people"], rel=1e-9)
    with rasterio.open(folder / "population_grid.tif") as src:
        assert src.read(1).sum() == pytest.approx(facts["grid_people"], rel=1e-6)
    z = pd.read_csv(folder / "grid_zonal.csv", dtype={"county_code": str})
    county = z[z["level"].eq("county")].set_index("county_code")
    # each county keeps (nearly all of) its settlements' people: only a settlement with no habitable cell near it
    # and its own cell outside the county polygon puts them elsewhere
    gaz = cli_settlement_population(data_dir)
    diff = (county["grid_population"] - gaz.reindex(county.index).fillna(0)).abs().sum()
    assert diff <= 0.01 * gaz.sum()
    assert (county["pop_within_15"] <= county["pop_within_60"] + 1e-6).all()
    assert (county["pop_within_240"] <= county["grid_population"] + 1e-6).all()
    assert set(summary["grid_shares"]) == {"clinic", "thc", "county", "pref"}
    r = cli("population-grid", "--region", "tibet", "--out", str(out), "--raster", str(tmp_path / "none.tif"))
    assert r.returncode == 2 and "none.tif" in r.stderr and one_error_line(r)


def cli_settlement_population(data_dir):
    from geoaccess.config import load_region
    from geoaccess.loaders import load_inputs

    s = load_inputs(load_region("tibet"), data_dir).settlements
    return s.groupby(s["county_code"].astype(str))["population"].sum()


def test_facility_raster_ids_are_checked_against_the_register_and_the_level():
    from geoaccess.catchments import facility_ids_for_rasters
    from geoaccess.errors import ConfigError

    f = pd.DataFrame({"facility_id": ["T1", "C1", "C2", "P1"],
                      "level": ["township_health_centre", "county_hospital", "county_hospital", "prefecture_hospital"]})
    assert facility_ids_for_rasters("all", f, "county") == ["C1", "C2", "P1"]
    assert facility_ids_for_rasters(" C2, C1 ,C2", f, "county") == ["C2", "C1"]
    with pytest.raises(ConfigError, match="unknown facility id 'C9'"):
        facility_ids_for_rasters("C1,C9", f, "county")
    with pytest.raises(ConfigError, match="'T1' is a township_health_centre, not of level county"):
        facility_ids_for_rasters("T1", f, "county")
    with pytest.raises(ConfigError, match="give facility ids"):
        facility_ids_for_rasters(" , ", f, "county")
