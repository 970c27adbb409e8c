"""Reading user tables robustly: encodings (UTF-8, GBK, UTF-16), formats, and row-level validation.

Repairs performed on CSV text (each is logged and appended to `repairs`, and listed in docs/reliability.md):
GBK/GB18030 text is decoded as such; a UTF-8 byte-order mark is removed; UTF-16 text with a byte-order
mark (Excel's "Unicode text") is decoded; CRLF and bare-CR line breaks become LF; a header with tabs
and no commas is read as tab-separated; rows holding nothing but separators are skipped; trailing empty
fields beyond the header are dropped. Everything else that cannot be read is an `InputError` naming the
file and, where there is one, the line.
"""
from __future__ import annotations

import csv
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger("geoaccess")

#: Encodings tried in order; GB18030 is a superset of GBK/GB2312, which Chinese registers often use.
ENCODINGS = ("utf-8-sig", "gb18030")
TABLE_SUFFIXES = {".csv", ".txt", ".tsv", ".geojson", ".json", ".shp", ".gpkg", ".fgb"}
MAX_TABLE_BYTES = 2 * 1024**3
#: Name of the index of tables read from CSV: the 1-based line in the file where each row starts.
LINE_INDEX = "line"
#: Name of the index of tables read from vector files: the 1-based feature number.
FEATURE_INDEX = "feature"


def read_table(path: str | Path, *, header: bool = True, names: list[str] | None = None,
               dtype=str, repairs: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV or a vector file into a DataFrame of strings (CSV) or values, with clear errors.

    CSV is decoded as UTF-8, else GB18030 (GBK), and parsed with the `csv` module; cells are strings,
    empty cells NaN, and the index (named "line") is the line on which each row starts, so errors can
    name it (`data_row`). Vector formats (GeoJSON, shapefile, GeoPackage) are read with pyogrio and keep
    their geometry; their index (named "feature") is the 1-based feature number. Repairs are logged and
    appended to `repairs`. `dtype` is accepted for compatibility: CSV cells are always strings.
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
        raise InputError(path, f"file is {human_size(size)}, larger than the {human_size(MAX_TABLE_BYTES)} a table may be "
                               "(wrong file?)")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return _read_csv(path, header=header, names=names, repairs=repairs)
    if suffix in (".geojson", ".json", ".shp", ".gpkg", ".fgb"):
        return _read_vector(path, repairs)
    raise InputError(path, f"unsupported table format '{suffix}' (use CSV, GeoJSON, shapefile or GeoPackage)")


def human_size(n: float) -> str:
    """Bytes as '512 B', '3.2 MB', '2.0 GB'."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _repaired(repairs: list[str] | None, path: Path, what: str, *, level: int = logging.WARNING) -> None:
    msg = f"{path.name}: {what}"
    log.log(level, msg)
    if repairs is not None and msg not in repairs:
        repairs.append(msg)


def _line_at(raw: bytes, offset: int) -> int:
    return raw[:offset].count(b"\n") + 1


def decode_text(raw: bytes, path: Path, repairs: list[str] | None = None) -> str:
    """Text of a file: UTF-8 (BOM removed), UTF-16 with a BOM, or GB18030/GBK; else an InputError.

    A UTF-8 file cut inside a character, or one with a few lines in another encoding, is an error naming
    the line, not a silent misreading as GBK.
    """
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            raise InputError(path, "starts like UTF-16 text (byte-order mark) but is not valid UTF-16: "
                                   "cut short or damaged?") from None
        _repaired(repairs, path, "read as UTF-16 (Excel 'Unicode text'), not UTF-8")
        return text.lstrip("\ufeff")
    if b"\x00" in raw[:65536]:
        raise InputError(path, "looks like a binary file, not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf8_error = exc
    else:
        if text.startswith("\ufeff"):
            _repaired(repairs, path, "UTF-8 byte-order mark removed", level=logging.INFO)
            text = text[1:]
        return text
    prefix_is_utf8 = not raw[: utf8_error.start].isascii()
    if utf8_error.reason == "unexpected end of data" and utf8_error.end == len(raw) and prefix_is_utf8:
        raise InputError(path, "file ends in the middle of a UTF-8 character: it looks cut short "
                               "(incomplete download or copy)", row=_line_at(raw, utf8_error.start))
    utf8_lines, other_lines = 0, []
    for i, line in enumerate(raw.split(b"\n"), 1):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
            utf8_lines += 1
        except UnicodeDecodeError:
            other_lines.append(i)
    if utf8_lines > len(other_lines):
        raise InputError(path, f"line {other_lines[0]} is not UTF-8 although {utf8_lines} other lines are: mixed "
                               "encodings or a damaged byte (re-save the file as UTF-8)", row=other_lines[0])
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError as exc:
        line = _line_at(raw, exc.start)
        raise InputError(path, f"text is neither UTF-8 nor GBK/GB18030 (undecodable byte at line {line})",
                         row=line) from None
    _repaired(repairs, path, "read as GB18030 (GBK family), not UTF-8")
    return text.lstrip("\ufeff")


def _read_csv(path: Path, *, header: bool, names, repairs) -> pd.DataFrame:
    text = decode_text(path.read_bytes(), path, repairs)
    if "\x00" in text:
        raise InputError(path, "looks like a binary file, not CSV text (NUL character)",
                         row=text[: text.index("\x00")].count("\n") + 1)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            _repaired(repairs, path, "bare CR line breaks (old Mac style) read as line breaks")
            text = text.replace("\r", "\n")
    if not text.strip():
        raise InputError(path, "file has no rows (only blank lines)")
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    first = text.lstrip("\n").split("\n", 1)[0]
    if sep == "," and "\t" in first and "," not in first:
        sep = "\t"
        _repaired(repairs, path, "read as tab-separated (the header has tabs, no commas)")
    cut = not text.endswith("\n")
    if cut:
        _repaired(repairs, path, f"no line break after the last line ({text.count(chr(10)) + 1}): if the file "
                                 "was cut short, its last row is incomplete")

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    n_empty, prev = 0, 0
    try:
        for rec in reader:
            start, prev = prev + 1, reader.line_num
            if not any(f.strip() for f in rec):
                n_empty += len(rec) > 1  # a row of separators only (spreadsheet export); blank lines are silent
                continue
            rows.append(rec)
            lines.append(start)
    except csv.Error as exc:
        msg = str(exc)
        if "field limit" in msg:
            problem = (f"a field is longer than {csv.field_size_limit()} characters: damaged file or not a "
                       "table of this kind?")
        elif "unexpected end of data" in msg:
            problem = "malformed CSV: a quoted field that starts on this line is never closed (file cut short, or a stray '\"')"
        elif "expected after" in msg:
            problem = ("malformed CSV: a '\"' inside a field (a field with quotes must be quoted whole, its inner quotes "
                       "doubled)")
        else:
            problem = f"malformed CSV: {msg}"
        raise InputError(path, problem, row=prev + 1) from None
    if n_empty:
        _repaired(repairs, path, f"{n_empty} row(s) with no values (only separators) skipped")
    if not rows:
        raise InputError(path, "file has no rows")

    if header:
        columns = _header_names(rows.pop(0), path)
        lines.pop(0)
    else:
        columns = list(names) if names is not None else list(range(max(map(len, rows))))
    width = len(columns)
    if header and cut and rows and len(rows[-1]) < width:
        raise InputError(path, f"the last line has {len(rows[-1])} of the header's {width} fields and no line break: "
                               "the file looks cut short (incomplete download or copy)", row=lines[-1])
    for k, rec in enumerate(rows):
        if len(rec) == width:
            continue
        if header and len(rec) > width and not any(f.strip() for f in rec[width:]):
            del rec[width:]  # trailing empty fields (spreadsheet export)
        elif header and len(rec) < width:
            rec.extend([""] * (width - len(rec)))  # missing trailing cells are empty cells
        elif header:
            raise InputError(path, f"malformed CSV: {len(rec)} fields, but the header has {width}", row=lines[k])
        else:
            raise InputError(path, f"expected {width} fields, found {len(rec)}", row=lines[k])
    df = pd.DataFrame(rows, columns=pd.Index(columns, dtype=object), dtype=object,
                      index=pd.Index(np.asarray(lines, dtype=np.int64), name=LINE_INDEX))
    return df.where(df.ne(""), np.nan) if len(df) else df


def _header_names(fields: list[str], path: Path) -> list[str]:
    """Column names as pandas would give them: stripped, 'Unnamed: i' for blanks, '.1' for repeats."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, f in enumerate(fields):
        name = f.strip() or f"Unnamed: {i}"
        if name in seen:
            seen[name] += 1
            log.warning("%s: column '%s' appears more than once; the repeat is read as '%s.%d'",
                        path.name, name, name, seen[name])
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        out.append(name)
    return out


def _read_vector(path: Path, repairs: list[str] | None = None) -> pd.DataFrame:
    import pyogrio

    kwargs: dict = {}
    source: Path | str = path
    tmp = None
    suffix = path.suffix.lower()
    try:
        if suffix in (".geojson", ".json"):
            raw = path.read_bytes()
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                text = decode_text(raw, path, repairs)  # GBK repair, else a clear error
                tmp = tempfile.NamedTemporaryFile("w", suffix=suffix, encoding="utf-8", delete=False)
                with tmp:
                    tmp.write(text)
                source = tmp.name
        elif suffix == ".shp":
            _check_prj(path)
            if not path.with_suffix(".cpg").exists() and _dbf_ldid(path) == 0:
                # No .cpg and no code page in the DBF: GDAL would read Latin-1. Try UTF-8, then GBK.
                kwargs["encoding"] = "UTF-8"
        try:
            df = pyogrio.read_dataframe(source, **kwargs)
        except UnicodeDecodeError:
            if kwargs.get("encoding") != "UTF-8":
                raise
            df = pyogrio.read_dataframe(source, encoding="GB18030")
            _repaired(repairs, path, "attribute table (.dbf, no .cpg) read as GB18030 (GBK family)")
    except InputError:
        raise
    except UnicodeDecodeError as exc:
        raise InputError(path, f"attribute text is not valid {exc.encoding} (damaged file, or a wrong .cpg "
                               "code page?)") from None
    except Exception as exc:  # pyogrio raises DataSourceError / DataLayerError / GEOS errors
        raise InputError(path, _vector_problem(path, exc)) from None
    finally:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
    df.index = pd.RangeIndex(1, len(df) + 1, name=FEATURE_INDEX)
    return df


def _vector_problem(path: Path, exc: Exception) -> str:
    """GDAL's complaint in a planner's words (first line, SQL and hints left out)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    what = {".shp": "shapefile (.shp with its .shx and .dbf)", ".gpkg": "GeoPackage", ".geojson": "GeoJSON",
            ".json": "GeoJSON", ".fgb": "FlatGeobuf"}.get(path.suffix.lower(), "vector file")
    if "not recognized as being in a supported file format" in first or "not recognised" in first:
        return f"cannot read as a {what}: not recognised as one (wrong format or damaged)"
    if "malformed" in first or "not a database" in first or "disk I/O error" in first:
        return f"cannot read as a {what}: the database is damaged (cut short or corrupted)"
    if len(first) > 200:
        first = first[:200] + "…"
    return f"cannot read as a {what}: {first}"


def _check_prj(shp: Path) -> None:
    """A shapefile's .prj, when present, must be a coordinate system pyproj understands."""
    prj = next((p for p in (shp.with_suffix(".prj"), shp.with_suffix(".PRJ")) if p.exists()), None)
    if prj is None:
        return
    from pyproj import CRS

    try:
        CRS.from_wkt(prj.read_bytes().decode("utf-8", errors="replace").strip())
    except Exception as exc:  # CRSError, UnicodeDecodeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(prj, f"the shapefile's coordinate system (.prj) is not valid: {first[:160]}") from None


def _dbf_ldid(shp: Path) -> int | None:
    """The DBF language driver id (byte 29) of a shapefile's attribute table; None without a .dbf."""
    dbf = next((p for p in (shp.with_suffix(".dbf"), shp.with_suffix(".DBF")) if p.exists()), None)
    if dbf is None:
        return None
    with open(dbf, "rb") as fh:
        head = fh.read(32)
    return head[29] if len(head) > 29 else None


def numeric_column(df: pd.DataFrame, column: str, path: Path, *, required: bool = True,
                   lo: float | None = None, hi: float | None = None, header: bool = True) -> np.ndarray:
    """A column as float, with an InputError naming the first bad row (its line in the file)."""
    col = df[column]
    if col.dtype == object:  # cells may be lists or other objects (vector files): anything not scalar is bad
        col = col.map(lambda v: v if np.ndim(v) == 0 else "<list>")
    values = np.array(pd.to_numeric(col, errors="coerce"), dtype=float)
    given = df[column].notna().to_numpy()
    bad = np.flatnonzero(given & ~np.isfinite(values))
    if bad.size:
        i = bad[0]
        raise InputError(path, f"'{_short(df[column].iloc[i])}' is not a number", row=data_row(df, i, header),
                         column=column)
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


def _short(value, limit: int = 60) -> str:
    s = str(value)
    return s if len(s) <= limit else s[:limit] + f"… ({len(s)} characters)"


def data_row(df: pd.DataFrame | pd.Series, position: int, header: bool = True) -> int:
    """The row number an error names for the row at `position`: its line in a CSV file (the index of
    `read_table` tables), its feature number in a vector file, else position + 2 (header) / + 1."""
    if df.index.name in (LINE_INDEX, FEATURE_INDEX):
        return int(df.index[position])
    return int(position) + (2 if header else 1)


def check_unique(values: pd.Series, path: Path, column: str, header: bool = True) -> None:
    """InputError naming both rows of the first duplicated value."""
    dup = values.duplicated(keep=False).to_numpy() & values.notna().to_numpy()
    if dup.any():
        idx = np.flatnonzero(dup)
        first_val = values.iloc[idx[0]]
        rows = np.flatnonzero((values == first_val).to_numpy())
        raise InputError(path, f"duplicate id '{_short(first_val)}' (also on line {data_row(values, rows[1], header)})",
                         row=data_row(values, rows[0], header), column=column)


def require_columns(df: pd.DataFrame, columns, path: Path, what: str) -> None:
    """InputError listing the required columns a table lacks and the columns it has."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        have = ", ".join(_short(c, 40) for c in df.columns[:15])
        raise InputError(path, f"{what} lacks column(s) {', '.join(missing)} (it has: {have})")
