"""Shared fixtures: the real data directory beside the project, tiny graphs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real input data: $GEOACCESS_DATA, else ../shared/data beside the project."""
    env = os.environ.get("GEOACCESS_DATA")
    if env:
        return Path(env)
    return PROJECT_ROOT.parent / "shared" / "data"


#: Folders the test run may change in the work tree: caches of Python and the test tools, and virtualenvs.
WORK_TREE_SKIP = {".git", "__pycache__", ".pytest_cache", ".hypothesis", "build", "dist"}


def work_tree_snapshot(root: Path = PROJECT_ROOT) -> dict[str, tuple[int, int]]:
    """Every file under `root` (but caches, virtualenvs and egg-info) → (size, mtime in ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in WORK_TREE_SKIP and not d.startswith(".venv")
                       and not d.endswith(".egg-info")]
        for name in filenames:
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def work_tree_changes(before: dict, after: dict) -> list[str]:
    """Files added, removed or rewritten between two snapshots, sorted."""
    return sorted({k for k in before.keys() | after.keys() if before.get(k) != after.get(k)})


def pytest_sessionstart(session):
    session.config._work_tree_before = work_tree_snapshot()


def pytest_sessionfinish(session, exitstatus):
    """Tests write only to temporary folders: a run that added, removed or rewrote a file of the work tree fails."""
    before = getattr(session.config, "_work_tree_before", None)
    if before is None or os.environ.get("GEOACCESS_ALLOW_WORK_TREE_WRITES"):
        return
    changed = work_tree_changes(before, work_tree_snapshot())
    if changed:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = f"tests changed {len(changed)} file(s) in the work tree (tests must write to tmp_path): " + \
            ", ".join(changed[:10])
        (tr.write_line(msg, red=True) if tr else print(msg))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"real data not found at {path}: set GEOACCESS_DATA or place shared/ beside the project")
    return path


@pytest.fixture(scope="session")
def tibet_gaps(data_dir, tmp_path_factory):
    """One real Tibet `gaps` run through the CLI, shared by the suite: its output folder and what it printed."""
    import contextlib
    import io

    from geoaccess.cli import main

    out = tmp_path_factory.mktemp("tibet")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["-q", "gaps", "--region", "tibet", "--data", str(data_dir), "--out", str(out)])
    assert code == 0
    return out, printed.getvalue()


def assert_every_column_documented(folder: Path) -> int:
    """Every column of every CSV and GeoPackage layer in `folder` has a schema entry: a non-empty
    description and a ≤10-character shapefile alias, unique within its layer. Returns the layers checked."""
    import pandas as pd
    import pyogrio

    from geoaccess.schema import column_info

    layers: dict[str, list[str]] = {}
    for gpkg in sorted(folder.glob("*.gpkg")):
        for name, _ in pyogrio.list_layers(gpkg):
            layers[f"{gpkg.name}:{name}"] = list(pyogrio.read_info(gpkg, layer=name)["fields"])
    for csv in sorted(folder.glob("*.csv")):
        if not csv.stem.endswith("_fields"):
            layers[csv.name] = list(pd.read_csv(csv, nrows=0, encoding="utf-8-sig").columns)
    assert layers, f"no layers in {folder}"
    for where, columns in layers.items():
        layer = where.split(":")[-1].removesuffix(".csv")
        aliases = []
        for col in columns:
            info = column_info(col, layer)
            assert info is not None, f"{where}: column {col!r} has no schema entry"
            assert info.description.strip(), f"{where}: column {col!r} has an empty description"
            assert 0 < len(info.alias) <= 10, f"{where}: alias {info.alias!r} of {col!r}"
            aliases.append(info.alias)
        dup = sorted({a for a in aliases if aliases.count(a) > 1})
        assert not dup, f"{where}: shapefile aliases used twice: {dup}"
    return len(layers)
