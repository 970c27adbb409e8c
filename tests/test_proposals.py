"""Temporary points and the 19 regional centres on the real Tibet data, checked against the engine."""
import pandas as pd
import pytest

from geoaccess.config import load_region
from geoaccess.pipeline import compute_region_times
from geoaccess.proposals import propose_centres, propose_clinics


@pytest.fixture(scope="module")
def tibet_run(data_dir):
    return compute_region_times(load_region("tibet"), data_dir)


@pytest.fixture(scope="module")
def centres(tibet_run, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("centres")
    return propose_centres(load_region("tibet"), data_dir, out, run=tibet_run) | {"out_dir": out}


def test_nineteen_centres_exactly_one_in_each_named_county(centres):
    from geoaccess.config import package_data

    plan_counties = pd.read_csv(package_data("tibet_regional_centres.csv"), dtype=str)["county_code_current"]
    sites = centres["sites"]
    assert len(sites) == 19
    assert sorted(sites["county_code"]) == sorted(plan_counties)


def test_each_centre_reports_its_gain_and_the_set_is_verified_by_the_engine(centres):
    s = centres["summary"]
    assert s["verified"] and s["coverage_after_engine_rerun"]["same_settlements_covered"]
    sites = centres["sites"]
    assert (sites["pop_new"] >= sites["pop_only"]).all() and (sites["pop_new"] >= 0).all()
    assert s["plan"]["coverage"]["new"]["population"] == pytest.approx(
        s["coverage_after_engine_rerun"]["population_after"] - s["existing_cover"]["population"], rel=1e-9)


def test_the_optimum_is_never_below_the_plan(centres):
    c = centres["summary"]["comparison"]
    assert c["optimum_new_population"] >= c["plan_new_population"] - 1e-6
    assert 0 < c["share_of_optimum"] <= 1
    assert len(c["added_counties"]) == len(c["dropped_counties"]) or centres["summary"]["optimum"]["n_sites"] < 19


def test_set_covering_points_cover_every_target_and_agree_with_the_engine(tibet_run, data_dir, tmp_path):
    res = propose_clinics(load_region("tibet"), data_dir, tmp_path, run=tibet_run)
    s = res["summary"]
    assert s["verified"]
    assert s["solver"]["coverage"]["new"]["settlements"] == s["n_targets"] - s["solver"]["uncoverable"]["settlements"]
    assert s["solver"]["status"] == "optimal"
    assert (tmp_path / "proposed_points.csv").exists() and (tmp_path / "proposed_points.shp").exists()


def test_best_k_points_are_at_most_k_and_deterministic(tibet_run, data_dir, tmp_path):
    a = propose_clinics(load_region("tibet"), data_dir, tmp_path / "a", max_sites=10, run=tibet_run)
    b = propose_clinics(load_region("tibet"), data_dir, tmp_path / "b", max_sites=10, run=tibet_run)
    assert a["summary"]["solver"]["n_sites"] <= 10 and a["summary"]["verified"]
    assert a["result"].site_ids == b["result"].site_ids
    # relocation settlements come first: every coverable relocation target is covered before anything else
    prio = a["summary"]["solver"].get("priority")
    assert prio is None or prio["after"]["settlements"] >= prio["before"]["settlements"]


@pytest.mark.parametrize("argv,message", [
    (["clinics", "--max-sites", "0"], "--max-sites 0: must be a whole number of points, at least 1"),
    (["clinics", "--max-sites", "-3"], "--max-sites -3: must be a whole number"),
    (["clinics", "--threshold", "0"], "--threshold 0: minutes must be a positive number"),
    (["clinics", "--threshold", "-5"], "--threshold -5: minutes must be a positive number"),
    (["clinics", "--time-limit", "0"], "--time-limit 0: seconds must be a positive number"),
    (["centres", "--threshold", "0"], "--threshold 0: minutes must be a positive number"),
])
def test_bad_propose_options_are_one_line_errors(argv, message, capsys, data_dir, tmp_path):
    from geoaccess.cli import main

    code = main(["-q", "propose", argv[0], "--region", "tibet", "--data", str(data_dir), "--out", str(tmp_path / "o"),
                 *argv[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert not (tmp_path / "o").exists()


def test_a_zero_threshold_is_refused_not_replaced_by_the_default(tibet_run, data_dir, tmp_path):
    from geoaccess.errors import ConfigError

    with pytest.raises(ConfigError, match="--threshold 0"):
        propose_clinics(load_region("tibet"), data_dir, tmp_path, threshold_min=0, run=tibet_run)
    with pytest.raises(ConfigError, match="--threshold 0"):
        propose_centres(load_region("tibet"), data_dir, tmp_path, threshold_min=0.0, run=tibet_run)


def test_propose_prints_no_solver_banner_and_no_spurious_level_warning(data_dir, tmp_path):
    """stdout holds the report only (no HiGHS banner); the engine re-run that checks the points routes to every
    register level, so no "facility levels in no group" warning."""
    import subprocess
    import sys

    from conftest import PROJECT_ROOT

    r = subprocess.run([sys.executable, str(PROJECT_ROOT / "cli.py"), "propose", "clinics", "--region", "tibet",
                        "--data", str(data_dir), "--out", str(tmp_path), "--max-sites", "3"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "HiGHS" not in r.stdout and "Copyright" not in r.stdout
    assert r.stdout.lstrip().startswith("临时医疗点")
    assert "in no group" not in r.stderr


def test_every_proposal_output_column_is_in_the_schema(centres, tibet_run, data_dir, tmp_path):
    from conftest import assert_every_column_documented

    propose_clinics(load_region("tibet"), data_dir, tmp_path, max_sites=2, run=tibet_run)
    assert assert_every_column_documented(tmp_path) >= 4
    assert assert_every_column_documented(centres["out_dir"]) >= 6
