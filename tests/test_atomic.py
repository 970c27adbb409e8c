"""Output sets: written whole or not at all, never over the user's files, repaired after a kill."""
import errno
import json
import os
import stat

import pytest

from geoaccess import _atomic
from geoaccess._atomic import atomic_output_dir, claim_output, recover, verify_set
from geoaccess.errors import OutputError


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_set(target, files, **kw):
    with atomic_output_dir(target, **kw) as d:
        for name, text in files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(text)


def test_success_replaces_outputs_and_writes_a_manifest(tmp_path):
    target = tmp_path / "out"
    src = tmp_path / "input.csv"
    src.write_text("a\n1\n")
    write_set(target, {"settlements.csv": "x\n"}, inputs={"settlements": src}, command="gaps",
              parameters={"engine": "network"})
    manifest = json.loads((target / "manifest.json").read_text())
    assert set(manifest["outputs"]) == {"settlements.csv"}
    assert manifest["inputs"]["settlements"]["sha256"] == _atomic.sha256_file(src)
    assert manifest["command"] == "gaps" and manifest["parameters"] == {"engine": "network"}
    assert manifest["code"]["geoaccess"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.csv", "out"], "debris left beside the folder"
    assert verify_set(target) == []


def test_failure_mid_write_leaves_previous_outputs_intact(tmp_path):
    target = tmp_path / "out"
    write_set(target, {"settlements.csv": "good\n"})
    before = snapshot(target)
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target) as d:
            (d / "settlements.csv").write_text("half")
            raise RuntimeError("boom")
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_interrupt_mid_write_leaves_previous_outputs_intact(tmp_path):
    target = tmp_path / "out"
    write_set(target, {"a.csv": "good\n"})
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(target) as d:
            (d / "a.csv").write_text("ha")
            raise KeyboardInterrupt
    assert (target / "a.csv").read_text() == "good\n"


def test_files_of_an_earlier_run_do_not_survive_into_the_next(tmp_path):
    """gaps --engine raster, then gaps: the raster run's traveltime_*.tif must go (issue 12)."""
    target = tmp_path / "out"
    write_set(target, {"settlements.csv": "raster\n", "traveltime_county.tif": "tif"})
    write_set(target, {"settlements.csv": "network\n"})
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "settlements.csv"]


def test_a_folder_holding_the_users_files_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.xlsx").write_text("mine")
    with pytest.raises(OutputError, match="notes.xlsx"):
        write_set(target, {"settlements.csv": "x\n"})
    assert snapshot(target) == {"notes.xlsx": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_user_file_added_to_an_output_set_is_never_deleted(tmp_path):
    target = tmp_path / "out"
    write_set(target, {"settlements.csv": "x\n"})
    (target / "my_notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="my_notes.txt"):
        write_set(target, {"settlements.csv": "y\n"})
    assert (target / "my_notes.txt").read_text() == "mine" and (target / "settlements.csv").read_text() == "x\n"


def test_an_existing_file_is_refused_not_turned_into_a_folder(tmp_path):
    report = tmp_path / "report.xlsx"
    report.write_bytes(b"PK\x03\x04 spreadsheet")
    with pytest.raises(OutputError, match="not a folder"):
        write_set(report, {"a.csv": "x"})
    assert report.read_bytes() == b"PK\x03\x04 spreadsheet"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.xlsx"], "the user's file was hidden or moved"


@pytest.mark.parametrize("where", ["same", "inside", "holding"])
def test_an_output_folder_that_is_holds_or_lies_in_an_input_is_refused(tmp_path, where):
    data = tmp_path / "data"
    (data / "facilities").mkdir(parents=True)
    (data / "facilities" / "f.csv").write_text("facility_id\n1\n")
    before = snapshot(tmp_path)
    target = {"same": data, "inside": data / "facilities", "holding": tmp_path}[where]
    with pytest.raises(OutputError, match="input of this run"):
        write_set(target, {"a.csv": "x"}, protected=[data])
    assert snapshot(tmp_path) == before


def test_the_folder_keeps_its_mode(tmp_path):
    target = tmp_path / "out"
    write_set(target, {"a.csv": "x"})
    os.chmod(target, 0o750)
    write_set(target, {"a.csv": "y"})
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    fresh = tmp_path / "fresh"
    old = os.umask(0o022)
    try:
        write_set(fresh, {"a.csv": "y"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o755


def test_a_symlinked_folder_is_written_through_and_the_link_kept(tmp_path):
    shared = tmp_path / "shared_drive" / "tibet"
    shared.mkdir(parents=True)
    link = tmp_path / "out"
    link.symlink_to(shared)
    write_set(link, {"a.csv": "x"})
    assert link.is_symlink() and os.readlink(link) == str(shared)
    assert (shared / "a.csv").read_text() == "x"
    write_set(link, {"b.csv": "y"})
    assert sorted(p.name for p in shared.iterdir()) == ["b.csv", "manifest.json"]


def test_sets_of_their_own_are_kept_and_derived_ones_dropped_when_the_folder_is_replaced(tmp_path):
    run = tmp_path / "tibet"
    write_set(run, {"settlements.csv": "1\n"}, command="gaps")
    write_set(run / "proposals" / "clinics_30min", {"proposed_points.csv": "p\n"}, command="propose clinics")
    write_set(run / "export", {"settlements.shp": "s"}, command="export", derived_from=run)
    write_set(run, {"settlements.csv": "2\n"}, command="gaps")
    assert (run / "proposals" / "clinics_30min" / "proposed_points.csv").read_text() == "p\n"
    assert not (run / "export").exists(), "an export of the replaced outputs survived"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["sets"] == {"proposals/clinics_30min": "propose clinics"}
    assert verify_set(run) == []


def test_a_folder_of_another_command_is_refused(tmp_path):
    run = tmp_path / "tibet"
    write_set(run, {"settlements.csv": "1\n", "geoaccess.gpkg": "g"}, command="gaps")
    before = snapshot(run)
    with pytest.raises(OutputError, match="`gaps`"):
        write_set(run, {"geoaccess.gpkg": "export"}, command="export")
    assert snapshot(run) == before


def test_disk_full_is_one_output_error_and_the_previous_set_is_intact(tmp_path, monkeypatch):
    target = tmp_path / "out"
    write_set(target, {"settlements.csv": "good\n"})

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    with monkeypatch.context() as m:
        m.setattr(type(target), "write_text", full)
        with pytest.raises(OutputError) as exc:
            with atomic_output_dir(target) as d:
                (d / "settlements.csv").write_text("new")
    assert "no space left on device" in str(exc.value) and str(target) in str(exc.value)
    assert ".tmp-" not in str(exc.value), "the message names the hidden staging folder"
    assert verify_set(target) == [] and (target / "settlements.csv").read_text() == "good\n"


def test_a_library_reporting_disk_full_as_text_is_an_output_error(tmp_path):
    """GDAL and SQLite say 'No space left on device' / 'database or disk is full' in their own exceptions."""
    class FeatureError(Exception):
        pass

    with pytest.raises(OutputError, match="no space left"):
        with atomic_output_dir(tmp_path / "out"):
            raise FeatureError("failed to write feature: sqlite3_step() failed: database or disk is full")
    assert list(tmp_path.iterdir()) == []


def test_a_gdal_write_failure_on_a_full_disk_is_an_output_error(tmp_path, monkeypatch):
    """rasterio's RasterioIOError ('Write failed. See previous exception') is an OSError without errno, and
    GDAL's own words ('No space left on device') go to its log only: the full disk itself names the cause."""
    import collections

    from rasterio.errors import RasterioIOError

    from geoaccess import _atomic

    with pytest.raises(RasterioIOError):  # a disk with room: the library's error is not ours to rename
        with atomic_output_dir(tmp_path / "a"):
            raise RasterioIOError("Write failed. See previous exception for details.")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(_atomic.shutil, "disk_usage", lambda p: usage(10 << 20, (10 << 20) - 4096, 4096))
    with pytest.raises(OutputError, match="no space left"):
        with atomic_output_dir(tmp_path / "b"):
            raise RasterioIOError("Write failed. See previous exception for details.")
    assert not (tmp_path / "b").exists()


def test_a_name_too_long_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(OutputError, match="too long"):
        write_set(tmp_path / ("x" * 240), {"a.csv": "x"})
    assert list(tmp_path.iterdir()) == []


def test_a_folder_made_of_dots_is_an_ordinary_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_set("...", {"a.csv": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["..."]


# --------------------------------------------------------------------------- recovery from what is on disk

def killed_mid_swap(tmp_path, *, new_complete: bool):
    """The disk as a SIGKILL between the two renames leaves it: target moved aside, new folder beside it."""
    target = tmp_path / "out"
    write_set(target, {"a.csv": "old\n"})
    new = tmp_path / ".out.tmp-abcd1234"
    write_set(new, {"a.csv": "new\n"})
    (new / _atomic.STAGING_MARK).write_text("pid 1\n")
    if not new_complete:
        (new / "a.csv").write_text("ne")
    old = tmp_path / ".out.old-1-abcdef"
    os.rename(target, old)
    (tmp_path / ".out.swap").write_text(json.dumps({"new": new.name, "old": old.name}))
    return target


def test_recovery_completes_a_swap_whose_new_set_is_complete(tmp_path):
    target = killed_mid_swap(tmp_path, new_complete=True)
    with claim_output(target):
        pass
    assert (target / "a.csv").read_text() == "new\n" and verify_set(target) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_recovery_rolls_back_a_swap_whose_new_set_is_incomplete(tmp_path):
    target = killed_mid_swap(tmp_path, new_complete=False)
    recover(target)
    assert (target / "a.csv").read_text() == "old\n" and verify_set(target) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staging_debris_is_removed_but_a_users_hidden_folder_is_not(tmp_path):
    target = tmp_path / "out"
    write_set(target, {"a.csv": "x"})
    debris = tmp_path / ".out.tmp-zz99zz99"
    debris.mkdir()
    (debris / _atomic.STAGING_MARK).write_text("pid 1")
    (debris / "settlements.csv").write_text("half")
    mine = tmp_path / ".out.backup"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    write_set(target, {"a.csv": "y"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.backup", "out"]


def test_a_swap_whose_rollback_fails_too_is_put_back_by_the_next_run(tmp_path, monkeypatch):
    target = tmp_path / "out"
    write_set(target, {"a.csv": "old\n"})
    real = os.rename
    calls = {"n": 0}

    def rename(src, dst):
        calls["n"] += 1
        if calls["n"] >= 2:  # the new folder cannot be moved in, nor the previous one back (a flaky network share)
            raise PermissionError("rename refused")
        return real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(_atomic.os, "rename", rename)
        with pytest.raises(PermissionError):
            write_set(target, {"a.csv": "new\n"})
    assert not target.exists() and any(p.name.startswith(".out.old-") for p in tmp_path.iterdir())
    with claim_output(target):
        pass
    assert (target / "a.csv").read_text() == "old\n" and verify_set(target) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_run_leaves_no_folders_made_for_its_lock(tmp_path):
    with pytest.raises(RuntimeError):
        with claim_output(tmp_path / "output" / "tibet"):
            raise RuntimeError("bad register")
    assert list(tmp_path.iterdir()) == []


def test_a_checksum_prefetched_before_a_file_changed_is_not_used(tmp_path):
    src = tmp_path / "inputs"
    src.mkdir()
    (src / "a.csv").write_text("id\n1\n")
    (src / "b.csv").write_text("id\n2\n")
    _atomic.prefetch_checksums([src])
    before = _atomic.sha256_inputs({"folder": src})
    (src / "a.csv").write_text("id\n9\n")  # same size, new content and mtime
    os.utime(src / "a.csv", ns=(1, 1))
    after = _atomic.sha256_inputs({"folder": src, "file": src / "a.csv"})
    assert after["folder"]["sha256"] != before["folder"]["sha256"]
    assert after["file"]["sha256"] == _atomic.sha256_file(src / "a.csv")


def test_a_stop_signal_whose_exception_was_lost_still_stops_the_run_before_anything_is_published(tmp_path,
                                                                                                   monkeypatch):
    """Python prints and drops an exception raised while the main thread runs a C callback (numba's compiler calls
    back into Python): a SIGTERM taken there was lost and the run went on to publish its outputs. The handler also
    records the signal; the next step and the publishing raise it."""
    from geoaccess import progress
    from geoaccess.errors import Interrupted

    target = tmp_path / "out"
    write_set(target, {"a.csv": "old"})
    monkeypatch.setattr(_atomic, "received", [])
    with pytest.raises(Interrupted):
        with atomic_output_dir(target) as d:
            (d / "a.csv").write_text("new")
            try:  # as inside a ctypes callback: the handler's exception goes nowhere
                _atomic.stop_signal_handler(15, None)
            except Interrupted:
                pass
    assert (target / "a.csv").read_text() == "old"  # the previous outputs stay, the new ones never appear
    with pytest.raises(Interrupted):
        with progress.step("next step"):
            pass
    _atomic.received.clear()
    with progress.step("a step after the run"):  # no signal: nothing raised
        pass
