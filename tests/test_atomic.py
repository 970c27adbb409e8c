"""Outputs are written whole or not at all, with a manifest of checksums."""
import json

import pytest

from geoaccess._atomic import atomic_output_dir


def test_success_replaces_outputs_and_writes_a_manifest(tmp_path):
    target = tmp_path / "out"
    src = tmp_path / "input.csv"
    src.write_text("a\n1\n")
    with atomic_output_dir(target, inputs={"settlements": src}) as d:
        (d / "settlements.csv").write_text("x\n")
    manifest = json.loads((target / "manifest.json").read_text())
    assert set(manifest["outputs"]) == {"settlements.csv"}
    assert manifest["inputs"]["settlements"]["sha256"]
    assert not list(tmp_path.glob(".out.*"))


def test_failure_mid_write_leaves_previous_outputs_intact(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target) as d:
        (d / "settlements.csv").write_text("good\n")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target) as d:
            (d / "settlements.csv").write_text("half")
            raise RuntimeError("disk full")
    assert (target / "settlements.csv").read_text() == "good\n"
    assert not list(tmp_path.glob(".out.*"))


def test_interrupt_mid_write_leaves_previous_outputs_intact(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target) as d:
        (d / "a.csv").write_text("good\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(target) as d:
            (d / "a.csv").write_text("ha")
            raise KeyboardInterrupt
    assert (target / "a.csv").read_text() == "good\n"


def test_files_of_other_commands_are_carried_over(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "proposals.csv").write_text("keep\n")
    with atomic_output_dir(target) as d:
        (d / "settlements.csv").write_text("x\n")
    assert (target / "proposals.csv").read_text() == "keep\n"
