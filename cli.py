#!/usr/bin/env python
"""geoaccess command line: `python cli.py gaps --region tibet` (see README for every command)."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from geoaccess.cli import main  # noqa: E402

if __name__ == "__main__":
    code = main()
    # Everything is written, fsynced and published by now, and every pool and cluster closed. Leave without the
    # interpreter's teardown, which only frees memory: on a Tibet run its final garbage collection takes ~1 s.
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
