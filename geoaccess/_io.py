"""Reading user tables robustly: encodings (UTF-8, GBK), formats, and row-level validation."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger("geoaccess")

#: Encodings tried in order; GB18030 is a superset of GBK/GB2312, which Chinese registers often use.
ENCODINGS = ("utf-8-sig", "gb18030")
TABLE_SUFFIXES = {".csv", ".txt", ".tsv", ".geojson", ".json", ".shp", ".gpkg", ".fgb"}
MAX_TABLE_BYTES = 2 * 1024**3


def read_table(path: str | Path, *, header: bool = True, names: list[str] | None = None,
               dtype=str, repairs: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV or a vector file into a DataFrame of strings (CSV) or values, with clear errors.

    CSV is tried as UTF-8, then GB18030 (GBK); a repair is logged and appended to `repairs`.
    Vector formats (GeoJSON, shapefile, GeoPackage) are read with pyogrio and keep their geometry.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(path, "file is empty")
    if size > MAX_TABLE_BYTES:
        raise InputError(path, f"file is {size / 1e9:.1f} GB, larger than the {MAX_TABLE_BYTES / 1e9:.0f} GB a table may be")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return _read_csv(path, header=header, names=names, dtype=dtype, repairs=repairs)
    if suffix in (".geojson", ".json", ".shp", ".gpkg", ".fgb"):
        return _read_vector(path)
    raise InputError(path, f"unsupported table format '{suffix}' (use CSV, GeoJSON, shapefile or GeoPackage)")


def _read_csv(path: Path, *, header: bool, names, dtype, repairs) -> pd.DataFrame:
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise InputError(path, "looks like a binary file, not CSV text")
    text, used = None, None
    for enc in ENCODINGS:
        try:
            text = raw.decode(enc)
            used = enc
            break
        except UnicodeDecodeError as exc:
            last = exc
    if text is None:
        line = raw[: last.start].count(b"\n") + 1  # type: ignore[possibly-undefined]
        raise InputError(path, f"text is neither UTF-8 nor GBK/GB18030 (undecodable byte at line {line})")
    if used != "utf-8-sig":
        msg = f"{path.name}: read as {used.upper()} (GBK family), not UTF-8"
        log.warning(msg)
        if repairs is not None:
            repairs.append(msg)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    import io

    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, header=0 if header else None, names=names, dtype=dtype,
                         keep_default_na=False, na_values=[""], skip_blank_lines=True, on_bad_lines="error",
                         engine="python" if names is None else "c")
    except pd.errors.EmptyDataError:
        raise InputError(path, "file has no rows") from None
    except pd.errors.ParserError as exc:
        raise InputError(path, f"malformed CSV: {_parser_message(exc)}") from None
    if names is not None and not header:
        # C engine pads short rows with NaN silently and errors on long ones: check field counts.
        counts = np.fromiter((ln.count(sep) + 1 for ln in text.splitlines() if ln.strip()), dtype=int)
        bad = np.flatnonzero(counts != len(names))
        if bad.size:
            raise InputError(path, f"expected {len(names)} fields, found {counts[bad[0]]}", row=int(bad[0]) + 1)
    if header:
        df.columns = [str(c).strip() for c in df.columns]
    return df


def _parser_message(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return msg.replace("Error tokenizing data. C error: ", "")


def _read_vector(path: Path) -> pd.DataFrame:
    import pyogrio

    try:
        return pyogrio.read_dataframe(path)
    except Exception as exc:  # pyogrio raises DataSourceError / DataLayerError / GEOS errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"cannot read as a vector file: {first}") from None


def numeric_column(df: pd.DataFrame, column: str, path: Path, *, required: bool = True,
                   lo: float | None = None, hi: float | None = None, header: bool = True) -> np.ndarray:
    """A column as float, with an InputError naming the first bad row (1-based data row)."""
    values = np.array(pd.to_numeric(df[column], errors="coerce"), dtype=float)
    given = df[column].notna().to_numpy()
    bad = np.flatnonzero(given & ~np.isfinite(values))
    if bad.size:
        i = bad[0]
        raise InputError(path, f"'{df[column].iloc[i]}' is not a number", row=data_row(df, i, header), column=column)
    if required:
        missing = np.flatnonzero(~given)
        if missing.size:
            raise InputError(path, "value is missing", row=data_row(df, missing[0], header), column=column)
    for bound, cmp, word in ((lo, np.less, "below"), (hi, np.greater, "above")):
        if bound is None:
            continue
        out = np.flatnonzero(np.isfinite(values) & cmp(values, bound))
        if out.size:
            i = out[0]
            raise InputError(path, f"{values[i]} is {word} the allowed range [{lo}, {hi}]", row=data_row(df, i, header),
                             column=column)
    return values


def data_row(df: pd.DataFrame, position: int, header: bool = True) -> int:
    """1-based line number in the file of the row at `position` (counting the header line)."""
    return int(position) + (2 if header else 1)


def check_unique(values: pd.Series, path: Path, column: str, header: bool = True) -> None:
    """InputError naming both rows of the first duplicated value."""
    dup = values.duplicated(keep=False).to_numpy() & values.notna().to_numpy()
    if dup.any():
        idx = np.flatnonzero(dup)
        first_val = values.iloc[idx[0]]
        rows = np.flatnonzero((values == first_val).to_numpy())
        raise InputError(path, f"duplicate id '{first_val}' (also on line {data_row(values, rows[1], header)})",
                         row=data_row(values, rows[0], header), column=column)


def require_columns(df: pd.DataFrame, columns, path: Path, what: str) -> None:
    """InputError listing the required columns a table lacks and the columns it has."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        have = ", ".join(map(str, df.columns[:15]))
        raise InputError(path, f"{what} lacks column(s) {', '.join(missing)} (it has: {have})")
