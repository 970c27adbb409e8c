#!/usr/bin/env python
"""geoaccess command line: `python cli.py gaps --region tibet` (see README for every command)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from geoaccess.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
