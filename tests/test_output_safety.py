"""Never lose a user's file: real `python cli.py gaps` processes killed, refused and starved of disk (issue 13).

Kills use the test seam `$GEOACCESS_TEST_PAUSE` (geoaccess._atomic.test_pause): the process stops at a
named point of the write, the test signals it there, then checks the folder against its manifest.
Processes run side by side (2 cores) to keep the module near a minute.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geoaccess._atomic import verify_set
from geoaccess.cli import main

PROJECT = Path(__file__).resolve().parents[1]
KILL_POINTS = ["before-write", "during-write", "mid-swap", "after-swap"]  # (before-swap: the SIGHUP case)


def cli(args, data_dir, *, pause=None, flag=None, cwd=None) -> subprocess.Popen:
    env = {**os.environ, "GEOACCESS_DATA": str(data_dir), "PYTHONPATH": str(PROJECT)}
    env.pop("GEOACCESS_TEST_PAUSE", None)
    if pause:
        env.update(GEOACCESS_TEST_PAUSE=pause, GEOACCESS_TEST_PAUSE_FLAG=str(flag))
    return subprocess.Popen([sys.executable, str(PROJECT / "cli.py"), "-q", *map(str, args)], env=env,
                            cwd=cwd or PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_paused(flag: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before pausing: {proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("process never reached its pause point")
        time.sleep(0.05)


def tree(folder: Path) -> dict[str, str]:
    """Every entry under folder: file checksums, link targets, folders."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def debris(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def previous(data_dir, tmp_path_factory) -> Path:
    """A complete gaps output set of Tibet (the 'previous outputs' every scenario starts from)."""
    out = tmp_path_factory.mktemp("previous") / "tibet"
    p = cli(["gaps", "--region", "tibet", "--out", out], data_dir)
    assert p.wait(timeout=600) == 0, p.stderr.read()
    assert verify_set(out) == []
    return out


def scenario(root: Path, previous: Path) -> Path:
    target = root / "tibet"
    root.mkdir(parents=True)
    shutil.copytree(previous, target)
    return target


# ----------------------------------------------------------------------------- SIGKILL at every point of the write

TERM_CASES = {"before-write": signal.SIGTERM, "during-write": signal.SIGTERM, "before-swap": signal.SIGHUP,
              "mid-swap": signal.SIGTERM}


@pytest.fixture(scope="module")
def stopped(previous, data_dir, tmp_path_factory):
    """gaps runs paused at each point, all at once: SIGKILLed ones (then rerun) and SIGTERM/SIGHUP ones.

    While the first of them holds its folder, a second run on that folder is started (it must be refused).
    """
    base = tmp_path_factory.mktemp("stopped")
    runs = {}
    for kind, points in (("kill", KILL_POINTS), ("term", list(TERM_CASES))):
        for point in points:
            target = scenario(base / kind / point, previous)
            flag = base / f"{kind}-{point}.flag"
            runs[kind, point] = (target, flag, cli(["gaps", "--region", "tibet", "--out", target], data_dir,
                                                   pause=point, flag=flag))
    state = {}
    for (kind, point), (target, flag, proc) in runs.items():
        wait_paused(flag, proc)
        s = state[kind, point] = {"target": target}
        if kind == "kill":
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
            s.update(target_exists=target.exists(), debris=debris(target.parent))
            continue
        if point == "before-write":
            second = cli(["gaps", "--region", "tibet", "--out", target], data_dir)
            s["second"] = (second.wait(timeout=120), second.stderr.read())
        proc.send_signal(TERM_CASES[point])
        if point == "mid-swap":
            flag.unlink()  # the signal is held back during the swap: let it finish
    reruns = {key: cli(["gaps", "--region", "tibet", "--out", runs[key][0]], data_dir) for key in runs if key[0] == "kill"}
    for key, (target, flag, proc) in runs.items():
        if key[0] == "term":
            state[key].update(code=proc.wait(timeout=120), stderr=proc.stderr.read(), debris=debris(target.parent))
    for key, proc in reruns.items():
        state[key].update(rerun=proc.wait(timeout=600), stderr=proc.stderr.read())
    return state


@pytest.mark.parametrize("point", KILL_POINTS)
def test_after_a_sigkill_the_next_run_leaves_one_complete_set_and_no_debris(stopped, point):
    s = stopped["kill", point]
    assert s["debris"], "the kill left nothing to recover: the pause point was not reached"
    if point == "mid-swap":  # killed between the two renames: the folder itself was moved aside
        assert not s["target_exists"]
    assert s["rerun"] == 0, s["stderr"]
    target = s["target"]
    assert verify_set(target) == []
    assert debris(target.parent) == [], "hidden folders left beside the outputs"
    listed = set(json.loads((target / "manifest.json").read_text())["outputs"]) | {"manifest.json"}
    assert {p.name for p in target.iterdir()} == listed, "files in the folder that its manifest does not list"


@pytest.mark.parametrize("point", list(TERM_CASES))
def test_sigterm_and_sighup_stop_like_ctrl_c_leaving_no_debris(stopped, previous, point):
    s = stopped["term", point]
    sig = TERM_CASES[point]
    err = s["stderr"].strip().splitlines()
    assert s["code"] == 128 + sig, err
    assert err[-1] == f"interrupted by {signal.Signals(sig).name}: no output was left half-written"
    assert s["debris"] == [], "debris left without any rerun"
    assert verify_set(s["target"]) == []
    if point == "mid-swap":  # the swap was completed, then the run stopped
        assert tree(s["target"]) != tree(previous)
    else:
        assert tree(s["target"]) == tree(previous), "previous outputs changed"


def test_a_second_run_on_a_folder_being_written_is_refused_in_one_line(stopped):
    s = stopped["term", "before-write"]
    code, err = s["second"]
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "another geoaccess run (pid" in lines[0] and str(s["target"]) in lines[0]


# ----------------------------------------------------------------------------- --out at the wrong place

def linked_data(data_dir: Path, tmp_path: Path) -> Path:
    """A data folder for Tibet: the small files copied, the big ones linked (so a test can see it moved)."""
    d = tmp_path / "data"
    for sub in ("facilities", "facts", "boundaries"):
        (d / sub).mkdir(parents=True)
        for f in (data_dir / sub).glob("tibet_*"):
            shutil.copy(f, d / sub / f.name)
    for sub in ("gazetteer", "roads"):
        (d / sub).symlink_to(data_dir / sub)
    (d / "dem").mkdir()
    (d / "dem" / "tibet_dem_30s.tif").symlink_to(data_dir / "dem" / "tibet_dem_30s.tif")
    return d


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def no_work(monkeypatch):
    """Refusals come before any work: computing travel times fails the test."""
    from geoaccess import pipeline

    def never(*a, **k):
        raise AssertionError("the run started working before refusing its output folder")

    monkeypatch.setattr(pipeline, "compute_region_times", never)


@pytest.mark.parametrize("where", ["data", "data/facilities", "data/gazetteer", "."])
def test_out_at_or_inside_the_data_folder_is_refused_and_the_data_untouched(data_dir, tmp_path, capsys, no_work,
                                                                             where):
    d = linked_data(data_dir, tmp_path)
    before = tree(tmp_path)
    out = tmp_path / where
    assert main(["gaps", "--region", "tibet", "--data", str(d), "--out", str(out)]) == 2
    assert "input of this run" in one_error_line(capsys)
    assert tree(tmp_path) == before


def test_out_naming_the_region_config_or_its_folder_is_refused(data_dir, tmp_path, capsys, no_work):
    cfg = tmp_path / "cfg" / "tibet.toml"
    cfg.parent.mkdir()
    shutil.copy(PROJECT / "geoaccess" / "regions" / "tibet.toml", cfg)
    for out in (cfg, cfg.parent):
        assert main(["gaps", "--region", str(cfg), "--data", str(data_dir), "--out", str(out)]) == 2
        line = one_error_line(capsys)
        assert "tibet.toml" in line or "not a folder" in line
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["tibet.toml"]


def test_out_naming_an_existing_file_is_refused_and_the_file_kept(data_dir, tmp_path, capsys, no_work):
    report = tmp_path / "report.xlsx"
    report.write_bytes(b"PK\x03\x04 the planner's spreadsheet")
    digest = hashlib.sha256(report.read_bytes()).hexdigest()
    run = ["--out", str(tmp_path / "run")]
    for command in (["gaps", "--out", str(report)], ["traveltime", "--out", str(report)],
                    ["map", *run, "--maps-dir", str(report)], ["export", *run, "--dest", str(report)]):
        assert main([command[0], "--region", "tibet", "--data", str(data_dir), *command[1:]]) == 2, command
        line = one_error_line(capsys)
        assert f"{report}: exists and is not a folder" in line, line
    assert hashlib.sha256(report.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.xlsx"], "the user's file was moved or hidden"


def test_out_on_a_mount_point_or_too_long_a_name_is_one_line(data_dir, tmp_path, capsys, no_work):
    assert main(["gaps", "--region", "tibet", "--data", str(data_dir), "--out", "/proc"]) == 2
    assert "mount point" in one_error_line(capsys) or "input" in capsys.readouterr().err
    assert main(["gaps", "--region", "tibet", "--data", str(data_dir), "--out", str(tmp_path / ("n" * 250))]) == 2
    assert "too long" in one_error_line(capsys)


# ----------------------------------------------------------------------------- disk full and read-only, for real

def can_mount() -> bool:
    return sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path, previous):
    """A tmpfs 1.5 times the size of a previous output set: that set fits, a second one beside it does not."""
    if not can_mount():
        pytest.skip("needs root to mount a small tmpfs (the injected ENOSPC tests in test_atomic.py run anyway)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    size_mb = int(sum(f.stat().st_size for f in previous.rglob("*") if f.is_file()) * 1.5 / 2**20) + 2
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_disk_full_mid_write_is_one_line_and_the_previous_set_intact(previous, data_dir, small_disk):
    target = small_disk / "tibet"
    shutil.copytree(previous, target)  # two thirds of the disk: the new set cannot fit beside it
    before = tree(target)
    p = cli(["gaps", "--region", "tibet", "--out", target], data_dir)
    assert p.wait(timeout=600) == 2
    lines = p.stderr.read().strip().splitlines()
    assert lines[-1].startswith(f"error: {target}: cannot write the outputs") and "no space left" in lines[-1]
    assert not any("internal error" in ln or "Traceback" in ln for ln in lines)
    assert tree(target) == before and verify_set(target) == []
    assert debris(small_disk) == []


def test_a_read_only_target_is_one_line_and_the_previous_set_intact(previous, data_dir, small_disk, capsys):
    target = small_disk / "tibet"
    shutil.copytree(previous, target)
    before = tree(target)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["gaps", "--region", "tibet", "--data", str(data_dir), "--out", str(target)]) == 2
    line = one_error_line(capsys)
    assert str(target) in line and "read-only file system" in line
    assert tree(target) == before
    assert main(["gaps", "--region", "tibet", "--data", str(data_dir), "--out", str(small_disk)]) == 2
    assert "mount point" in one_error_line(capsys) or "read-only" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one folder, one run (issues 12, 18)

def listed_exactly(folder: Path) -> bool:
    """The folder holds exactly its manifest's files (and the nested sets it names), all matching."""
    m = json.loads((folder / "manifest.json").read_text())
    top = {p.name for p in folder.iterdir()}
    expected = {n.split("/")[0] for n in m["outputs"]} | {"manifest.json"} | {n.split("/")[0] for n in m["sets"]}
    return top == expected and verify_set(folder) == []


def test_each_run_folder_holds_exactly_what_its_run_wrote(data_dir, tmp_path, capsys):
    run = tmp_path / "tibet"
    base = ["--region", "tibet", "--data", str(data_dir), "--out", str(run)]
    assert main(["-q", "gaps", *base, "--engine", "raster"]) == 0
    assert (run / "traveltime_county.tif").exists()
    assert main(["-q", "traveltime", *base, "--engine", "raster"]) == 0
    tt = run / "traveltime_raster"
    assert {"traveltime_clinic.tif", "traveltime_county.tif"} <= {p.name for p in tt.iterdir()}
    assert (tt / "settlements.csv").read_bytes()[:3] == b"\xef\xbb\xbf", "no UTF-8 BOM (Excel garbles Chinese)"
    assert verify_set(run) == [], "traveltime left the gaps manifest stale"
    assert main(["-q", "export", *base, "--format", "csv"]) == 0
    assert (run / "export" / "settlements.csv").exists()
    assert main(["-q", "gaps", *base, "--engine", "network"]) == 0  # no surfaces this time
    assert not list(run.glob("*.tif")), "the raster run's surfaces survived into the network run"
    assert not (run / "export").exists(), "an export of the previous run survived"
    assert listed_exactly(run)
    assert listed_exactly(tt), "traveltime's own set was not kept whole"


def test_export_never_writes_over_a_gaps_folder_and_refuses_a_geocentric_crs(previous, data_dir, tmp_path, capsys):
    run = tmp_path / "tibet"
    shutil.copytree(previous, run)
    before = tree(run)
    base = ["export", "--region", "tibet", "--data", str(data_dir), "--out", str(run)]
    assert main([*base, "--dest", str(run)]) == 2
    assert "holds the outputs of `gaps`" in one_error_line(capsys)
    assert main([*base, "--crs", "EPSG:4978"]) == 2
    assert "geocentric" in one_error_line(capsys)
    assert tree(run) == before


def fake_proposals(run: Path, name: str, inputs: dict, lon: float) -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    from geoaccess._atomic import atomic_output_dir

    points = gpd.GeoDataFrame({"site_id": [name], "name": [name]}, geometry=[Point(lon, 30.0)], crs=4326)
    with atomic_output_dir(run / "proposals" / name, inputs=inputs, command="propose clinics") as tmp:
        points.to_file(tmp / "proposed_points.gpkg", layer="proposed_points")


def test_map_writes_into_the_run_folder_and_draws_only_proposals_of_the_same_inputs(previous, data_dir, tmp_path,
                                                                                 monkeypatch, capsys):
    run = tmp_path / "run"  # (not "tibet": run from tmp_path, --region tibet would name that folder)
    shutil.copytree(previous, run)
    gaps_inputs = {k: Path(v["path"]) for k, v in json.loads((run / "manifest.json").read_text())["inputs"].items()}
    other = tmp_path / "other_register.csv"
    other.write_text("facility_id\nX\n")
    fake_proposals(run, "same_inputs_site", gaps_inputs, 91.0)
    fake_proposals(run, "other_inputs_site", {**gaps_inputs, "facilities": other}, 92.0)
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "map", "--region", "tibet", "--data", str(data_dir), "--out", str(run)]) == 0
    assert not (tmp_path / "maps").exists(), "map wrote ./maps whatever --out said"
    html = (run / "maps" / "tibet_coverage.html").read_text(encoding="utf-8")
    assert "same_inputs_site" in html and "other_inputs_site" not in html
    assert listed_exactly(run / "maps") and verify_set(run) == []
    maps_file = tmp_path / "maps.txt"
    maps_file.write_text("mine")
    assert main(["map", "--region", "tibet", "--data", str(data_dir), "--out", str(run), "--maps-dir",
                 str(maps_file)]) == 2
    assert "not a folder" in one_error_line(capsys) and maps_file.read_text() == "mine"


def test_propose_runs_sit_side_by_side(previous, data_dir, tmp_path):
    run = tmp_path / "tibet"
    shutil.copytree(previous, run)
    base = ["-q", "propose", "clinics", "--region", "tibet", "--data", str(data_dir), "--out", str(run)]
    assert main([*base, "--max-sites", "3"]) == 0
    assert main([*base, "--max-sites", "5"]) == 0
    sets = sorted(p.name for p in (run / "proposals").iterdir())
    assert sets == ["clinics_30min_best3_settlements+targets", "clinics_30min_best5_settlements+targets"]
    for name in sets:
        assert listed_exactly(run / "proposals" / name)
    assert verify_set(run) == []
