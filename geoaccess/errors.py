"""Errors that reach the user as one clear line (file, row, problem)."""
from __future__ import annotations

from pathlib import Path


class GeoaccessError(Exception):
    """Base class: any error the CLI turns into a one-line message and a non-zero exit."""

    exit_code = 2


class InputError(GeoaccessError):
    """Bad input data: names the file, the row (1-based data row, if any) and the problem."""

    def __init__(self, path: str | Path | None, problem: str, row: int | None = None, column: str | None = None):
        self.path = str(path) if path is not None else None
        self.row = row
        self.column = column
        self.problem = problem
        super().__init__(self.message)

    def __reduce__(self):
        """Pickle by constructor arguments (errors cross process boundaries in distributed runs)."""
        return (self.__class__, (self.path, self.problem, self.row, self.column))

    @property
    def message(self) -> str:
        where = []
        if self.path:
            where.append(self.path)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column '{self.column}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.problem}" if prefix else self.problem


class ConfigError(InputError):
    """A region config that is missing, misspelt or holds a bad value."""


class DataCoverageError(InputError):
    """An input that does not cover the region (e.g. a DEM that misses the settlements)."""


class OutputError(InputError):
    """An output folder geoaccess must not or cannot write: names the folder and the cause."""


class ClusterError(GeoaccessError):
    """A distributed run whose cluster failed under it (a worker lost, its data forgotten): one line saying what
    happened and what to change, exit 1. The inputs were fine and no output was written."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT, SIGTERM, SIGHUP); `signum` says which."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signum)
