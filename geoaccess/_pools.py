"""Thread pools that let an interrupted run stop at once."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def thread_pool(workers: int, name: str = "geoaccess") -> Iterator[ThreadPoolExecutor]:
    """A ``ThreadPoolExecutor`` that waits for its work when the block ends normally, but not when it is left by
    an exception (Ctrl-C, SIGTERM, an error in another task): queued tasks are cancelled and the running ones are
    left to finish in the background while the exception goes on. A compiled search cannot be interrupted and
    takes ~30 s at national size; the CLI then exits without waiting for it (``cli.py`` ends with ``os._exit``)."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
