"""Scenarios and travel modes: monotone effects on real Tibet times, folders, and one-line refusals."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geoaccess.cli import main
from geoaccess.config import REGIONS_DIR, load_region
from geoaccess.errors import ConfigError
from geoaccess.pipeline import prepare_region
from geoaccess.scenarios import variant_folder, with_variant
from geoaccess.travel import TravelModel

LEVELS = ("clinic", "thc", "county", "pref")

EXTRA = """
[scenarios.cut_national]
description = "national roads at half speed"
[scenarios.cut_national.speed_by_class]
national = 0.5

[scenarios.shut_high]
description = "every road segment above 4,800 m closed"
[scenarios.shut_high.close]
above_m = 4800

[scenarios.shut_g318]
[scenarios.shut_g318.close]
roads = ["G318"]

[scenarios.new_hospital]
[scenarios.new_hospital.facilities]
add = "added.csv"
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenario_config")
    (folder / "tibet.toml").write_text((REGIONS_DIR / "tibet.toml").read_text(encoding="utf-8") + EXTRA,
                                       encoding="utf-8")
    return folder / "tibet.toml"


@pytest.fixture(scope="module")
def times(config_file, data_dir):
    """Settlement times (road-only engine, a few seconds each) under the baseline and each variant."""
    cfg = load_region(config_file)
    base = prepare_region(cfg, data_dir)
    s = base.inputs.settlements
    out = {}
    base_t, _ = TravelModel(base, "network").times(s, base.facilities)
    far = s.assign(t=base_t["t_county_min"].to_numpy())[s["loc_quality"].eq("exact").to_numpy()]
    far = far[np.isfinite(far["t"])].sort_values("t").iloc[-1]  # a county hospital at the farthest located village
    (config_file.parent / "added.csv").write_text("facility_id,name,level,admin_code,county,lon,lat,coord_sys\n"
                                                  f"NEW1,新县医院,county_hospital,,,{far['lon']},{far['lat']},wgs84\n",
                                                  encoding="utf-8")
    for name, scenario, mode in (("baseline", None, None), ("cut", "cut_national", None),
                                 ("faster", "g219_upgraded", None), ("added", "new_hospital", None),
                                 ("walking", None, "walking")):
        v = with_variant(cfg, scenario, mode, data_dir)
        prep = prepare_region(v, data_dir, inputs=base.inputs if scenario != "new_hospital" else None)
        t, _ = TravelModel(prep, "network").times(s, prep.facilities)
        out[name] = (t, prep)
    return out


@pytest.fixture(scope="module")
def combined_times(config_file, data_dir):
    """Baseline and winter (closures above 5,200 m, slower roads and legs) on the default combined engine.

    Closures are checked on the combined engine: the road-only engine joins each point to the *nearest* road,
    and closing that road can move the join to a road point that is faster to reach (a heuristic, not a path)."""
    cfg = load_region(config_file)
    base = prepare_region(cfg, data_dir)
    s = base.inputs.settlements
    out = {}
    for name in ("baseline", "winter"):
        prep = base if name == "baseline" else prepare_region(with_variant(cfg, name, None, data_dir), data_dir,
                                                              inputs=base.inputs)
        out[name] = (TravelModel(prep, "combined").times(s, prep.facilities)[0], prep)
    return out


def _minutes(t) -> np.ndarray:
    v = np.column_stack([t[f"t_{lv}_min"].to_numpy(float) for lv in LEVELS])
    return np.where(np.isnan(v), np.inf, v)


def test_a_speed_cut_never_shortens_a_time(times):
    base, other = _minutes(times["baseline"][0]), _minutes(times["cut"][0])
    assert (other >= base - 1e-6).all()
    assert (other > base + 1e-3).any()  # and it does change something


def test_a_closure_never_shortens_a_time(combined_times):
    """Winter: segments above 5,200 m closed, roads above 4,000 m and the off-road legs slower."""
    base, other = _minutes(combined_times["baseline"][0]), _minutes(combined_times["winter"][0])
    assert combined_times["winter"][1].graph.graph["scenario"]["km_closed"] > 100
    assert (other >= base - 1e-6).all()
    assert (other > base + 1e-3).any()


def test_a_road_closed_by_name_is_closed_along_its_length(config_file, data_dir):
    prep = prepare_region(with_variant(load_region(config_file), "shut_g318", None, data_dir), data_dir)
    refs = {str(d.get("ref")) for *_, d in prep.graph.edges(data=True)}
    closed = [d for *_, d in prep.graph.edges(data=True) if d.get("ref") == "G318"]
    assert closed and all(d["travel_time"] >= 1e7 for d in closed)
    assert all(d["travel_time"] < 1e7 for *_, d in prep.graph.edges(data=True) if d.get("ref") == "G219")


def test_a_faster_road_never_lengthens_a_time(times):
    base, other = _minutes(times["baseline"][0]), _minutes(times["faster"][0])
    assert (other <= base + 1e-6).all() and (other < base - 1e-3).any()


def test_adding_a_facility_never_lengthens_a_time(times):
    base, other = _minutes(times["baseline"][0]), _minutes(times["added"][0])
    assert (other <= base + 1e-6).all()
    assert (other[:, 2] < base[:, 2] - 1).sum() > 0  # some settlements are nearer a county hospital now
    assert "NEW1" in set(times["added"][1].facilities["facility_id"])


def test_walking_is_never_shorter_than_motorised(times):
    base, walk = _minutes(times["baseline"][0]), _minutes(times["walking"][0])
    assert (walk >= base - 1e-6).all()
    ok = np.isfinite(base[:, 2]) & (base[:, 2] > 1)
    assert np.median(walk[ok, 2] / base[ok, 2]) > 2  # on foot several times longer to a county hospital


def test_a_closure_closes_the_segments_not_the_whole_road(config_file, data_dir):
    """Only the segments above 4,800 m are closed: the stretches below stay drivable, and the raster engine
    burns in exactly those stretches."""
    from geoaccess.scenarios import CLOSED_SEGMENT_S

    prep = prepare_region(with_variant(load_region(config_file), "shut_high", None, data_dir), data_dir)
    report = prep.graph.graph["scenario"]
    assert 0 < report["km_closed"] < report["road_km"] and report["edges_with_closures"] > 0
    for *_, d in prep.graph.edges(data=True):
        cum_d, cum_t = d["time_profile"]
        seg = np.diff(cum_t)
        n_closed = int((seg >= CLOSED_SEGMENT_S).sum())
        assert n_closed < seg.size or d["elev_mean"] > 4800  # an edge wholly closed lies high
    burned = sum(shapely_length_km(g) for g, _ in prep.graph.graph["raster_roads"]) / 2
    assert burned == pytest.approx(report["road_km"] - report["km_closed"], rel=0.02)


def shapely_length_km(g) -> float:
    from pyproj import Geod

    return Geod(ellps="WGS84").geometry_length(g) / 1000.0


def test_the_scenario_folder_sits_beside_the_baseline(config_file, data_dir):
    cfg = load_region(config_file)
    run = Path("output") / "tibet"
    assert variant_folder(run, with_variant(cfg, "winter", None, data_dir)) == Path("output") / "tibet_winter"
    assert variant_folder(run, with_variant(cfg, None, "walking", data_dir)) == Path("output") / "tibet_walking"
    assert variant_folder(run, with_variant(cfg, None, None, data_dir)) == run


def _cli(args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    return code, err.getvalue().strip()


def _bad_config(tmp_path, text: str) -> Path:
    p = tmp_path / "tibet.toml"
    p.write_text((REGIONS_DIR / "tibet.toml").read_text(encoding="utf-8") + text, encoding="utf-8")
    return p


@pytest.mark.parametrize("args, expected", [
    (["gaps", "--region", "tibet", "--scenario", "wintr"], "unknown scenario 'wintr' (did you mean 'winter'?)"),
    (["gaps", "--region", "tibet", "--mode", "walkng"], "unknown travel mode 'walkng' (did you mean 'walking'?)"),
    (["compare", "--region", "tibet", "--scenario", "winter"], "compare needs --scenario twice"),
    (["propose", "clinics", "--region", "tibet", "--model", "p_median"], "needs --max-sites"),
])
def test_bad_names_get_one_line_and_exit_2(args, expected, data_dir, tmp_path):
    code, err = _cli(args + ["--data", str(data_dir), "--out", str(tmp_path / "o")])
    assert code == 2 and expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists() and not (tmp_path / "o_wintr").exists()


@pytest.mark.parametrize("text, expected", [
    ("\n[scenarios.x.speed_by_class]\nnationl = 0.5\n", "unknown road class 'nationl' (did you mean 'national'?)"),
    ("\n[scenarios.x.speed_by_class]\nnational = 0\n", "a speed factor must be a number"),
    ("\n[scenarios.x]\ndescription = 'nothing'\n", "changes nothing"),
    ("\n[scenarios.x.close]\nabove = 5000\n", "unknown key 'above' (did you mean 'above_m'?)"),
    ("\n[scenarios.x.thresholds]\ncounty = 500\n", "thresholds must rise with the level"),
])
def test_bad_scenario_tables_are_refused_when_the_config_loads(tmp_path, text, expected, data_dir):
    path = _bad_config(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_region(path)
    assert expected in str(exc.value) and str(path) in str(exc.value)
    code, err = _cli(["gaps", "--region", str(path), "--data", str(data_dir), "--out", str(tmp_path / "o")])
    assert code == 2 and expected in err and len(err.splitlines()) == 1


def test_a_missing_polygon_file_is_refused_before_any_run(tmp_path, data_dir):
    path = _bad_config(tmp_path, "\n[scenarios.flood]\n[[scenarios.flood.speed_by_area]]\npolygon = 'nowhere.geojson'"
                                 "\nfactor = 0.5\n")
    code, err = _cli(["gaps", "--region", str(path), "--scenario", "flood", "--data", str(data_dir),
                      "--out", str(tmp_path / "o")])
    assert code == 2 and "nowhere.geojson not found" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o_flood").exists()


def test_an_unknown_road_name_is_refused_with_a_suggestion(config_file, data_dir, tmp_path):
    path = _bad_config(tmp_path, "\n[scenarios.typo.speed_by_road]\nG381 = 1.2\n")
    cfg = with_variant(load_region(path), "typo", None, data_dir)
    with pytest.raises(ConfigError) as exc:
        prepare_region(cfg, data_dir)
    assert "no road 'G381' in the network" in str(exc.value) and "did you mean" in str(exc.value)


def test_gaps_and_compare_write_their_own_folders_and_record_the_scenario(data_dir, tmp_path):
    """`gaps --scenario` beside the baseline; `compare` per settlement, county, prefecture and a map (road-only
    engine, to stay fast); a faster road moves nobody beyond a line."""
    out = tmp_path / "tibet"
    code, err = _cli(["-q", "gaps", "--region", "tibet", "--data", str(data_dir), "--out", str(out),
                      "--scenario", "g219_upgraded", "--engine", "network"])
    assert code == 0, err
    folder = tmp_path / "tibet_g219_upgraded"
    assert not out.exists() and (folder / "settlements.csv").is_file()
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["parameters"]["scenario"]["name"] == "g219_upgraded"
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["scenario"]["roads"]["km_faster"] > 1000
    assert any(a.startswith("scenario g219_upgraded") for a in summary["assumptions"])

    code, err = _cli(["-q", "compare", "--region", "tibet", "--data", str(data_dir), "--out", str(out),
                      "--scenario", "baseline", "--scenario", "g219_upgraded", "--engine", "network"])
    assert code == 0, err
    cmp_dir = out / "compare_baseline_g219_upgraded"
    for name in ("compare_baseline_g219_upgraded.csv", "compare_baseline_g219_upgraded_counties.csv",
                 "compare_baseline_g219_upgraded_prefectures.csv", "compare_baseline_g219_upgraded.html",
                 "compare_summary.json", "manifest.json"):
        assert (cmp_dir / name).is_file(), name
    ch = pd.read_csv(cmp_dir / "compare_baseline_g219_upgraded.csv", dtype={"settlement_id": str}, keep_default_na=False)
    assert len(ch) == 6182 and ch["settlement_id"].is_unique
    assert (pd.to_numeric(ch["change_t_county_min"]) <= 1e-6).all()
    assert set(ch["crosses_60"]) <= {"", "newly_within"}
    s = json.loads((cmp_dir / "compare_summary.json").read_text(encoding="utf-8"))
    assert s["no_time_shorter"]["slower"] == 0 and s["no_time_shorter"]["faster"] > 0
    prefs = pd.read_csv(cmp_dir / "compare_baseline_g219_upgraded_prefectures.csv", dtype={"prefecture_code": str})
    assert len(prefs) == 7 and prefs["n_newly_beyond_60"].sum() == 0
