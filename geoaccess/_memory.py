"""Memory measurement: the process's peak resident memory, and the peak rise of one call (Linux /proc)."""
from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")


def status_mb(field: str) -> float | None:
    """A /proc/self/status field (VmRSS, VmHWM, …) in MB; None where /proc is not available."""
    try:
        line = next(x for x in _STATUS.read_text().splitlines() if x.startswith(field + ":"))
    except (OSError, StopIteration):
        return None
    return float(line.split()[1]) / 1024.0


#: The highest VmHWM seen before a `reset_peak` (MB): the process's peak survives per-step resets.
_peak_before_reset = [0.0]


def reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (to measure one step), keeping the process's peak for `peak_memory_mb`."""
    peak = status_mb("VmHWM")
    if peak is None:
        return
    _peak_before_reset[0] = max(_peak_before_reset[0], peak)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb() -> float | None:
    """Peak resident memory of this process so far (MB): VmHWM on Linux (across `reset_peak`), else ru_maxrss."""
    peak = status_mb("VmHWM")
    if peak is not None:
        return round(max(peak, _peak_before_reset[0]), 1)
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0, 1)
    except (ImportError, OSError):
        return None


def measure(fn, *args, **kwargs) -> tuple[object, float, float | None]:
    """Run ``fn``: its result, wall seconds and the rise of the peak RSS over the RSS before (MB; Linux)."""
    gc.collect()
    try:  # hand freed heap back to the OS so the rise is this call's own
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    reset_peak()  # reset the peak-RSS mark
    before = status_mb("VmRSS")
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - t
    peak = status_mb("VmHWM")
    return out, seconds, None if before is None or peak is None else max(0.0, peak - before)
