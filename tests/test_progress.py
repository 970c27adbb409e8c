"""The progress lines of a run: a step that took a second or more is printed when it ends, with its peak memory;
a shorter one is only recorded (summary.json "steps"); a stopped step says so."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from geoaccess import progress


@pytest.fixture
def clock(monkeypatch):
    """A fake perf_counter the test advances by hand (seconds), seen by the progress module only."""
    now = [100.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def test_a_long_step_prints_its_time_and_a_short_one_is_only_recorded(clock, caplog):
    progress.clear()
    with caplog.at_level(logging.INFO, logger="geoaccess"):
        with progress.step("road network"):
            clock[0] += 2.5
        with progress.step("config"):
            clock[0] += 0.4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("road network: 2.5 s")
    steps = progress.recorded()
    assert [(s["step"], s["seconds"]) for s in steps] == [("road network", 2.5), ("config", 0.4)]


def test_a_nested_step_is_indented_under_its_parent_and_a_failed_step_says_it_stopped(clock, caplog):
    progress.clear()
    with caplog.at_level(logging.INFO, logger="geoaccess"):
        with progress.step("travel times"):
            with progress.step("engine"):
                clock[0] += 1.5
            clock[0] += 0.5
        with pytest.raises(ValueError):
            with progress.step("export"):
                clock[0] += 0.2
                raise ValueError("disk full")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("  engine: 1.5 s")
    assert lines[1].startswith("travel times: 2.0 s")
    assert lines[2] == "export: stopped after 0.2 s"
