"""Progress of a long run a person can follow: a line when each step ends (seconds, peak memory), counts
inside long loops, and the per-step record that goes into summary.json ("steps").

    with step("gazetteer"):            # logs "gazetteer: 12.3 s, peak 1.6 GB" at the end
        for f in counted(files, "gazetteer files"):   # "gazetteer files: 1,200 of 3,227 (37 %), 5 s" every few seconds
            ...

Lines go to the "geoaccess" logger at INFO (shown by default; `-q` hides them). Peak memory per step is
the process's resident peak during the step (Linux /proc; None elsewhere).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from ._memory import reset_peak, status_mb

log = logging.getLogger("geoaccess")
T = TypeVar("T")

#: Seconds between two count lines of one loop.
EVERY_S = 5.0
#: Steps this short are recorded but not printed.
QUIET_BELOW_S = 1.0

_steps: list[dict] = []
_depth = [0]


def recorded() -> list[dict]:
    """The steps recorded since the last `clear()`: name, seconds, peak_mb (list of dicts, in order)."""
    return [dict(s) for s in _steps]


def clear() -> None:
    """Forget the recorded steps (a new run starts)."""
    _steps.clear()


@contextmanager
def step(name: str) -> Iterator[dict]:
    """Time one step and record its peak memory; log a line when it took more than a second."""
    from ._atomic import raise_if_stopped

    raise_if_stopped()  # a stop signal taken inside a C callback (its exception lost) stops the run here
    record = {"step": name, "seconds": None, "peak_mb": None}
    outer = _depth[0] == 0
    if outer:
        reset_peak()  # the step's own peak (the run's overall peak is kept by _memory)
    _depth[0] += 1
    t = time.perf_counter()
    done = False
    try:
        yield record
        raise_if_stopped()
        done = True
    finally:
        _depth[0] -= 1
        record["seconds"] = round(time.perf_counter() - t, 2)
        record["peak_mb"] = None if (p := status_mb("VmHWM")) is None else round(p, 1)
        record["depth"] = _depth[0]
        _steps.append(record)
        if not done:  # an error or an interruption: not a finished step's time
            log.info("%s%s: stopped after %.1f s", "  " * _depth[0], name, record["seconds"])
        elif record["seconds"] >= QUIET_BELOW_S:
            mem = f", peak {record['peak_mb'] / 1024:.1f} GB" if record["peak_mb"] is not None else ""
            log.info("%s%s: %.1f s%s", "  " * _depth[0], name, record["seconds"], mem)


def counted(items: Iterable[T], what: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items``, logging "what: i of n (p %), s" every EVERY_S seconds (only when the loop is slow)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    t0 = last = time.perf_counter()
    i = 0
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= EVERY_S:
            last = now
            share = f" of {total:,} ({i / total:.0%})" if total else ""
            log.info("%s: %s%s, %.0f s", what, f"{i:,}", share, now - t0)
