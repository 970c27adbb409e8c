"""The suite's guard: a test that writes into the work tree makes the run fail (conftest.pytest_sessionfinish)."""
import os
import subprocess
import sys

from conftest import PROJECT_ROOT, work_tree_changes, work_tree_snapshot


def test_snapshot_sees_a_new_file_and_a_rewritten_one(tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "a.png").write_bytes(b"1")
    before = work_tree_snapshot(tmp_path)
    (tmp_path / "maps" / "a.png").write_bytes(b"22")
    (tmp_path / "new.txt").write_text("x")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.pyc").write_bytes(b"")
    assert work_tree_changes(before, work_tree_snapshot(tmp_path)) == ["maps/a.png", "new.txt"]


def test_a_test_writing_into_the_work_tree_fails_the_run(tmp_path):
    """A one-test suite with the project's session hooks, whose test writes beside the project's files."""
    stray = PROJECT_ROOT / "tests" / f"_stray_{os.getpid()}.txt"
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('project_conftest', {str(PROJECT_ROOT / 'tests' / 'conftest.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(mod)\n"
        "pytest_sessionstart, pytest_sessionfinish = mod.pytest_sessionstart, mod.pytest_sessionfinish\n",
        encoding="utf-8")
    (tmp_path / "test_writes.py").write_text(f"def test_writes():\n    open({str(stray)!r}, 'w').write('x')\n",
                                             encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "GEOACCESS_ALLOW_WORK_TREE_WRITES"}
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                            str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    finally:
        stray.unlink(missing_ok=True)
    assert r.returncode != 0 and "tests changed 1 file(s) in the work tree" in r.stdout + r.stderr, r.stdout
    assert "1 passed" in r.stdout  # the test itself passed: the guard failed the run
