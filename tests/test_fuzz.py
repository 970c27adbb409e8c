"""Hostile inputs: every loader, fed truncated, mis-encoded, mistyped, oversized and junk files.

Each case must end in (a) a `GeoaccessError` whose message names the file (and the row, where the case
puts the fault on a known row), or (b) a successful load — a documented repair (GBK decoded, BOM
stripped, …; the result must equal the clean file's) or a file the mutation left valid. Never any other
exception. Cases are generated from fixed seeds, so the run is deterministic; the outcome table is printed
at the end (`pytest -s tests/test_fuzz.py`) and reproduced in docs/reliability.md.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geoaccess import _io, config as config_mod
from geoaccess.cli import main as cli_main
from geoaccess.config import load_region
from geoaccess.errors import GeoaccessError
from geoaccess.loaders import (load_boundaries, load_facilities, load_gazetteer, load_population,
                               load_relocation_sites, load_settlement_table, reconcile_county_codes,
                               settlements_from_gazetteer)

PROJECT = Path(__file__).resolve().parents[1]
N_TRUNC, N_FLIP = 10, 14  # random cuts and random byte flips per input kind
TEN_MB = 10 * 2**20
#: clear error: a GeoaccessError naming the file (and row); repair: loaded after a documented repair, equal to the
#: clean file; warned: loaded with a warning that the data may be incomplete (cut without a final line break, no
#: .prj); unchanged / changed: the mutation left a valid file (same data, or different but valid data — a flipped
#: digit — which no reader can detect); OTHER: any other exception (must be zero).
OUTCOMES = ("clear error", "repair", "warned", "unchanged", "changed", "OTHER")


@dataclass
class Case:
    label: str
    files: dict[str, bytes]          # name -> bytes, written into a fresh folder
    expect: str | None = None        # "repair": must load equal to the clean input; "error": must be a clear error
    row: int | None = None           # the row a clear error must name
    patch_limit: bool = False        # run with the size limit lowered (no GB files written)
    cut: tuple[str, int] | None = None  # (file, offset) of a truncation: a CSV cut inside a line must warn


@dataclass
class Kind:
    name: str
    entry: str                                       # file (or folder ".") the loader is given
    load: Callable[[Path, list], object]
    key: Callable[[object], object]                  # what must be equal between a repair and the clean load
    clean: dict[str, bytes]
    cases: list[Case]


# ----------------------------------------------------------------------------- mutations

def _rng(name: str) -> random.Random:
    return random.Random(f"geoaccess-fuzz-{name}")


def truncations(rng: random.Random, files: dict[str, bytes], target: str, n: int) -> list[Case]:
    data = files[target]
    return [Case(f"truncate {target} @{k}", {**files, target: data[:k]}, cut=(target, k))
            for k in sorted(rng.sample(range(1, len(data)), min(n, len(data) - 1)))]


def flips(rng: random.Random, files: dict[str, bytes], target: str, n: int) -> list[Case]:
    out = []
    for _ in range(n):
        b = bytearray(files[target])
        where = [rng.randrange(len(b)) for _ in range(rng.randint(1, 3))]
        for w in where:
            b[w] ^= rng.randint(1, 255)
        out.append(Case(f"flip {target} @{','.join(map(str, where))}", {**files, target: bytes(b)}))
    return out


def text_mutations(rng: random.Random, files: dict[str, bytes], target: str, *, csv: bool = True) -> list[Case]:
    """Encodings, line endings, junk: the same mutations for every text input."""
    data = files[target]
    text = data.decode("utf-8")
    lines = text.split("\n")
    cases = [
        Case("GBK (GB18030) encoded", {**files, target: text.encode("gb18030")}, expect="repair"),
        Case("UTF-8 with BOM", {**files, target: b"\xef\xbb\xbf" + data}, expect="repair"),
        Case("CRLF line endings", {**files, target: text.replace("\n", "\r\n").encode()}, expect="repair"),
        Case("empty file", {**files, target: b""}, expect="error"),
        Case("binary junk (with NUL)", {**files, target: bytes(rng.randrange(256) for _ in range(3000))}, expect="error"),
        Case("oversized file (limit lowered)", files, expect="error", patch_limit=True),
    ]
    if csv:
        cases += [
            Case("bare CR line endings", {**files, target: text.replace("\n", "\r").encode()}, expect="repair"),
            Case("UTF-16 with BOM (Excel 'Unicode text')", {**files, target: text.encode("utf-16")}, expect="repair"),
            Case("high-byte junk (no NUL)", {**files, target: bytes(rng.randrange(128, 256) for _ in range(3000))},
                 expect="error"),
        ]
    # A Chinese line damaged in GBK: not GBK any more, not UTF-8 either.
    cn = next(i for i, ln in enumerate(lines) if not ln.isascii())
    gbk = bytearray(text.encode("gb18030"))
    pos = gbk.index(lines[cn].encode("gb18030")) + len(lines[cn].encode("gb18030")) // 2
    gbk[pos:pos] = b"\xff"
    cases.append(Case("GBK with an undecodable byte", {**files, target: bytes(gbk)}, expect="error", row=cn + 1))
    # UTF-8 file with one line in GBK (pasted from another file): an error naming that line.
    cn_lines = [i for i, ln in enumerate(lines) if not ln.isascii()]
    if len(cn_lines) >= 3:
        k = cn_lines[len(cn_lines) // 2]
        mixed = "\n".join(lines[:k]).encode() + b"\n" + lines[k].encode("gb18030") + b"\n" + "\n".join(lines[k + 1:]).encode()
        cases.append(Case("UTF-8 with one GBK line", {**files, target: mixed}, expect="error", row=k + 1))
    # Cut inside a multi-byte character: an error, never a silent misreading as GBK.
    last_cn = max(cn_lines)
    start = len("\n".join(lines[:last_cn]).encode()) + 1
    first_mb = start + next(j for j, ch in enumerate(lines[last_cn]) if not ch.isascii())
    first_mb = start + len(lines[last_cn][: first_mb - start].encode())
    cases.append(Case("cut inside a UTF-8 character", {**files, target: data[: first_mb + 1]}, expect="error",
                      row=last_cn + 1))
    cases += truncations(rng, files, target, N_TRUNC)
    cases += flips(rng, files, target, N_FLIP)
    return cases


def replace_cell(text: str, line: int, column: int | tuple, value: str | tuple, sep: str = ",") -> str:
    """`text` with the cell(s) at (line, column) replaced (columns before any quoted comma only)."""
    lines = text.split("\n")
    cells = lines[line - 1].split(sep)
    for c, v in zip(column, value) if isinstance(column, tuple) else [(column, value)]:
        cells[c] = v
    lines[line - 1] = sep.join(cells)
    return "\n".join(lines)


def csv_table_mutations(text: str, target: str, files: dict[str, bytes], typed: list[tuple[str, int, int, str]]
                        ) -> list[Case]:
    """Spreadsheet artefacts and wrongly typed cells for a CSV with a header."""
    lines = text.rstrip("\n").split("\n")
    width = lines[0].count(",") + 1
    enc = {**files}
    cases = [
        Case("header only", {**enc, target: (lines[0] + "\n").encode()}, expect="error"),
        Case("rows of empty cells and trailing empty columns (spreadsheet export)",
             {**enc, target: ("\n".join(ln + ",," for ln in lines) + "\n" + ("," * (width + 1) + "\n") * 3).encode()},
             expect="repair"),
        Case("blank lines between rows", {**enc, target: ("\n\n".join(lines) + "\n").encode()}, expect="repair"),
        Case("a 10 MB field", {**enc, target: replace_cell(text, 3, 1, "x" * TEN_MB).encode()}, expect="error", row=3),
        Case("a row with too many fields", {**enc, target: replace_cell(text, 4, 1, "a,b,c").encode()},
             expect="error", row=4),
        Case("an unclosed quote", {**enc, target: replace_cell(text, 5, 1, '"abc').encode()}, expect="error", row=5),
    ]
    if not any("\t" in ln or '"' in ln for ln in lines):  # (quoted commas would become tabs)
        cases.append(Case("tab-separated", {**enc, target: ("\n".join(ln.replace(",", "\t") for ln in lines)
                                                             + "\n").encode()}, expect="repair"))
    for label, line, col, value in typed:
        cases.append(Case(f"typed: {label}", {**enc, target: replace_cell(text, line, col, value).encode()},
                          expect="error", row=line))
    # Row numbers survive blank lines: the fault on file line L after two blank lines is on line L + 2.
    label, line, col, value = typed[0]
    bad = replace_cell(text, line, col, value).split("\n")
    bad[1:1] = ["", ""]
    cases.append(Case(f"typed after blank lines: {label}", {**enc, target: "\n".join(bad).encode()},
                      expect="error", row=line + 2))
    return cases


# ----------------------------------------------------------------------------- the input kinds

@pytest.fixture(scope="module")
def village_names(data_dir) -> list[str]:
    gaz = (data_dir / "gazetteer" / "adcode" / "540102.csv").read_text(encoding="utf-8").splitlines()
    return [ln.split(",")[2] for ln in gaz if ",village," in ln][:24]


def settlements_frame(names: list[str]) -> gpd.GeoDataFrame:
    n = len(names)
    lon = 91.05 + 0.01 * np.arange(n)
    lat = 29.60 + 0.005 * (np.arange(n) % 7)
    return gpd.GeoDataFrame({"id": [f"S{i:02d}" for i in range(n)], "name": names, "kind": "village",
                             "population": 100 + 10 * np.arange(n)},
                            geometry=gpd.points_from_xy(lon, lat), crs=4326)


def settlement_key(s) -> pd.DataFrame:
    return s[["settlement_id", "name", "kind", "lon", "lat", "population"]].round(9).reset_index(drop=True)


def settlement_csv_kind(names) -> Kind:
    g = settlements_frame(names)
    df = pd.DataFrame({"id": g["id"], "name": g["name"], "kind": g["kind"], "lon": g.geometry.x.round(6),
                       "lat": g.geometry.y.round(6), "population": g["population"]})
    text = df.to_csv(index=False, lineterminator="\n")
    files = {"s.csv": text.encode()}
    typed = [("lon is text", 6, 3, "东经91度"), ("lat overflows", 7, 4, "1e999"), ("negative population", 8, 5, "-5"),
             ("empty id", 9, 0, ""), ("unknown kind", 10, 2, "castle"), ("duplicate id", 11, 0, "S00"),
             ("lat out of range", 12, 4, "91.2"), ("lat missing", 13, 4, ""), ("lon is a date", 14, 3, "2020-01-01")]
    cases = text_mutations(_rng("settlement_csv"), files, "s.csv") + csv_table_mutations(text, "s.csv", files, typed)
    return Kind("settlements CSV", "s.csv", lambda p, r: load_settlement_table(p, repairs=r), settlement_key, files, cases)


def settlement_geojson_kind(names, tmp: Path) -> Kind:
    g = settlements_frame(names)
    g.to_file(tmp / "s.geojson", driver="GeoJSON")
    data = (tmp / "s.geojson").read_bytes()
    files = {"s.geojson": data}
    rng = _rng("settlement_geojson")
    text = data.decode()
    cases = text_mutations(rng, files, "s.geojson", csv=False)

    def variant(label, change, expect="error", row=None):
        o = json.loads(text)
        change(o)
        cases.append(Case(label, {"s.geojson": json.dumps(o, ensure_ascii=False).encode()}, expect=expect, row=row))

    variant("typed: population is text", lambda o: o["features"][4]["properties"].update(population="many"), row=5)
    # One list makes GDAL read the whole column as lists: the first feature is the first bad row.
    variant("typed: population is a list", lambda o: o["features"][4]["properties"].update(population=[1, 2]), row=1)
    variant("a line instead of a point", lambda o: o["features"][2].update(
        geometry={"type": "LineString", "coordinates": [[91, 29], [91.1, 29.1]]}), row=3)
    variant("null geometry", lambda o: o["features"][6].update(geometry=None), row=7)
    variant("duplicate id", lambda o: o["features"][3]["properties"].update(id="S00"), row=1)
    variant("no features", lambda o: o.update(features=[]))
    variant("a 10 MB name", lambda o: o["features"][1]["properties"].update(name="x" * TEN_MB), expect=None)
    variant("bogus crs member", lambda o: o.update(crs={"type": "name", "properties": {"name": "EPSG:999999"}}),
            expect=None)
    cases.append(Case("not JSON at all", {"s.geojson": b"id,name\n1,a\n"}, expect="error"))
    return Kind("settlements GeoJSON", "s.geojson", lambda p, r: load_settlement_table(p, repairs=r), settlement_key,
                files, cases)


def shapefile_files(g: gpd.GeoDataFrame, tmp: Path, encoding: str) -> dict[str, bytes]:
    d = tmp / f"shp-{encoding}"
    d.mkdir(exist_ok=True)
    g.to_file(d / "s.shp", encoding=encoding)
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def settlement_shapefile_kind(names, tmp: Path) -> Kind:
    g = settlements_frame(names)
    files = shapefile_files(g, tmp, "UTF-8")
    gbk = shapefile_files(g, tmp, "GBK")
    rng = _rng("settlement_shapefile")
    no_cpg = {k: v for k, v in gbk.items() if not k.endswith(".cpg")}
    cases = [Case("GBK .dbf without .cpg", no_cpg, expect="repair"),
             Case("GBK .dbf with .cpg", gbk, expect="repair"),
             Case("empty .shp", {**files, "s.shp": b""}, expect="error"),
             Case("oversized .shp (limit lowered)", files, expect="error", patch_limit=True),
             Case(".shp is junk", {**files, "s.shp": bytes(rng.randrange(256) for _ in range(2000))}, expect="error")]
    for part in ("s.dbf", "s.shx", "s.prj"):
        cases.append(Case(f"missing {part}", {k: v for k, v in files.items() if k != part}))
    for part in ("s.shp", "s.shx", "s.dbf", "s.prj"):
        cases += truncations(rng, files, part, 4)
        cases += flips(rng, files, part, 5)
    return Kind("settlements shapefile", "s.shp", lambda p, r: load_settlement_table(p, repairs=r), settlement_key,
                files, cases)


def settlement_gpkg_kind(names, tmp: Path) -> Kind:
    g = settlements_frame(names)
    g.to_file(tmp / "s.gpkg", driver="GPKG")
    files = {"s.gpkg": (tmp / "s.gpkg").read_bytes()}
    rng = _rng("settlement_gpkg")
    cases = [Case("empty file", {"s.gpkg": b""}, expect="error"),
             Case("oversized (limit lowered)", files, expect="error", patch_limit=True),
             Case("junk", {"s.gpkg": bytes(rng.randrange(256) for _ in range(4096))}, expect="error"),
             Case("a CSV named .gpkg", {"s.gpkg": b"id,name,lon,lat\n1,a,91,29\n"}, expect="error")]
    cases += truncations(rng, files, "s.gpkg", N_TRUNC)
    cases += flips(rng, files, "s.gpkg", N_FLIP)
    return Kind("settlements GeoPackage", "s.gpkg", lambda p, r: load_settlement_table(p, repairs=r), settlement_key,
                files, cases)


def facility_kind(data_dir: Path) -> Kind:
    lines = (data_dir / "facilities" / "tibet_facilities.csv").read_text(encoding="utf-8").split("\n")[:40]
    text = "\n".join(lines) + "\n"
    files = {"f.csv": text.encode()}
    typed = [("unknown level", 6, 2, "hospital"), ("lon is text", 7, 5, "东经91"), ("lat out of range", 8, 6, "291.6"),
             ("unknown coord_sys", 9, 7, "utm"), ("duplicate id", 10, 0, lines[1].split(",")[0]),
             ("no coordinates, no gazetteer", 11, 5, "")]
    cases = text_mutations(_rng("facilities"), files, "f.csv") + csv_table_mutations(text, "f.csv", files, typed)
    return Kind("facility register CSV", "f.csv", lambda p, r: load_facilities(p, default_system="gcj02", repairs=r),
                lambda f: f[["facility_id", "name", "level", "lon", "lat"]].round(9).reset_index(drop=True), files, cases)


def population_kind(data_dir: Path) -> Kind:
    text = (data_dir / "facts" / "tibet_county_population_2020.csv").read_text(encoding="utf-8")
    files = {"p.csv": text.encode()}
    typed = [("population is text", 5, 4, "many"), ("negative urban population", 6, 5, "-3"),
             ("population missing", 7, 4, ""), ("duplicate adcode", 8, 0, "540000")]
    cases = text_mutations(_rng("population"), files, "p.csv") + csv_table_mutations(text, "p.csv", files, typed)
    return Kind("census population CSV", "p.csv", lambda p, r: load_population(p, repairs=r),
                lambda p: p[["population_2020", "urban_population_2020"]], files, cases)


def relocation_kind(data_dir: Path, context) -> Kind:
    text = (data_dir / "facts" / "tibet_relocation_sites.csv").read_text(encoding="utf-8")
    files = {"r.csv": text.encode()}
    typed = [("host county and prefecture unknown", 4, (3, 4), ("火星地区", "火星县")), ("people is text", 5, 9, "many"),
             ("negative households", 6, 8, "-3"), ("duplicate site_id", 7, 0, "R01"), ("empty site_id", 8, 0, "")]
    gaz_settlements, gaz, county_codes, counties, population = context

    def load(p, r):
        return load_relocation_sites(p, gaz_settlements, gaz, county_codes, counties, "gcj02", population, repairs=r)

    cases = text_mutations(_rng("relocation"), files, "r.csv") + csv_table_mutations(text, "r.csv", files, typed)
    return Kind("relocation sites CSV", "r.csv", load,
                lambda r: r[["settlement_id", "name", "lon", "lat", "population"]].round(9).reset_index(drop=True),
                files, cases)


@pytest.fixture(scope="module")
def tibet_context(data_dir):
    """What relocation sites are located through: the gazetteer, reconciled counties, census."""
    gaz = load_gazetteer(data_dir / "gazetteer" / "adcode", "54")
    counties = load_boundaries(data_dir / "boundaries" / "tibet_counties.geojson")
    county_codes = reconcile_county_codes(gaz[gaz["level"] == "county"], counties)
    settlements = settlements_from_gazetteer(gaz, "gcj02", county_codes)
    population = load_population(data_dir / "facts" / "tibet_county_population_2020.csv")
    return settlements, gaz, county_codes, counties, population


GAZ_FILES = ("540000.csv", "540100.csv", "540102.csv", "540121.csv")


def gazetteer_kind(data_dir: Path) -> Kind:
    src = data_dir / "gazetteer" / "adcode"
    files = {f"gaz/{n}": (src / n).read_bytes() for n in GAZ_FILES}
    target = "gaz/540121.csv"
    text = files[target].decode()
    rng = _rng("gazetteer")
    cases = text_mutations(rng, files, target)
    lines = text.split("\n")
    for label, line, col, value in [("code not 12 digits", 5, 0, "54012100X001"), ("unknown level", 6, 3, "hamlet"),
                                    ("lon is text", 2, 12, "abc"), ("lat out of range", 3, 13, "129.5"),
                                    ("code of another row", 7, 0, lines[5].split(",")[0]),
                                    ("a missing field", 8, 2, "a,b")]:
        mutated = replace_cell(text, line, col, value)
        if label == "a missing field":
            mutated = "\n".join(ln if i != line - 1 else ",".join(ln.split(",")[:-1]) for i, ln in enumerate(lines))
        cases.append(Case(f"typed: {label}", {**files, target: mutated.encode()}, expect="error",
                          row=line if label != "code of another row" else 6))
    cases.append(Case("a 10 MB field", {**files, target: replace_cell(text, 4, 2, "x" * TEN_MB).encode()},
                      expect=None))
    cases.append(Case("blank lines, then a bad level", {**files, target: replace_cell(
        "\n\n" + text, 8, 3, "hamlet").encode()}, expect="error", row=8))
    return Kind("gazetteer folder (mangled 540121.csv)", "gaz", lambda p, r: load_gazetteer(p, "54", repairs=r),
                lambda g: g[["code", "name", "level", "lon", "lat"]].reset_index(drop=True), files, cases)


def boundaries_kind(data_dir: Path, tmp: Path) -> Kind:
    counties = gpd.read_file(data_dir / "boundaries" / "tibet_counties.geojson").head(6)
    counties["geometry"] = counties.geometry.simplify(0.02)
    counties.to_file(tmp / "b.geojson", driver="GeoJSON")
    data = (tmp / "b.geojson").read_bytes()
    files = {"b.geojson": data}
    text = data.decode()
    cases = text_mutations(_rng("boundaries"), files, "b.geojson", csv=False)

    def variant(label, change, expect="error", row=None):
        o = json.loads(text)
        change(o)
        cases.append(Case(label, {"b.geojson": json.dumps(o, ensure_ascii=False).encode()}, expect=expect, row=row))

    variant("null geometry", lambda o: o["features"][2].update(geometry=None), row=3)
    variant("a point instead of a polygon", lambda o: o["features"][3].update(
        geometry={"type": "Point", "coordinates": [91, 29]}), row=4)
    variant("adcode missing", lambda o: o["features"][1]["properties"].pop("adcode"), row=2)
    variant("adcode is a number", lambda o: o["features"][1]["properties"].update(adcode=540102), expect=None)
    variant("self-intersecting polygon", lambda o: o["features"][0].update(geometry={
        "type": "Polygon", "coordinates": [[[91, 29], [92, 30], [92, 29], [91, 30], [91, 29]]]}), expect=None)
    variant("no name property", lambda o: [f["properties"].pop("name") for f in o["features"]])
    variant("no features", lambda o: o.update(features=[]))
    variant("bogus crs member", lambda o: o.update(crs={"type": "name", "properties": {"name": "EPSG:999999"}}),
            expect=None)
    return Kind("boundaries GeoJSON", "b.geojson", lambda p, r: load_boundaries(p, repairs=r),
                lambda b: b[["adcode", "name"]].assign(area=shapely.area(b.geometry.to_numpy()).round(9)), files, cases)


def config_kind() -> Kind:
    text = (PROJECT / "geoaccess" / "regions" / "tibet.toml").read_text(encoding="utf-8")
    files = {"r.toml": text.encode()}
    cases = text_mutations(_rng("config"), files, "r.toml", csv=False)
    bad_values = [  # (label, the line starting with, its replacement)
        ("key is a number", "key =", "key = 123"),
        ("working_crs is a list", "working_crs =", "working_crs = [1, 2]"),
        ("working_crs is an EPSG code that does not exist", "working_crs =", "working_crs = 999999"),
        ("working_crs is geographic", "working_crs =", 'working_crs = "EPSG:4326"'),
        ("admin_prefix is not digits", "admin_prefix =", 'admin_prefix = "5x"'),
        ("an input path is a number", "facilities =", "facilities = 7"),
        ("an unknown placeholder in a path", "facilities =", 'facilities = "facilities/{country}.csv"'),
        ("an unbalanced brace in a path", "facilities =", 'facilities = "facilities/{region.csv"'),
        ("bands is a number", "bands =", "bands = 5"),
        ("a boolean given as a string", "county_may_rely_on_prefecture =", 'county_may_rely_on_prefecture = "yes"'),
        ("road paths is a string", "paths =", 'paths = "roads"'),
        ("a road path is a number", "paths =", "paths = { national = 5 }"),
        ("settlement_tables is a string", "relocation =", 'relocation = ""\nsettlement_tables = "x.csv"'),
        ("a settlement table without a path", "relocation =", 'relocation = ""\nsettlement_tables = [{ crs = "gcj02" }]'),
        ("a speed is text", "national =", 'national = "fast"'),
        ("a threshold is negative", "county = 60", "county = -60.0"),
        ("a terrain factor is text", "offroad_speed_factor =", 'offroad_speed_factor = "fast"'),
        ("a section is a value", "[offroad]", "offroad = 5\n[offroadx]"),
        ("a 10 MB string value", "name =", 'name = "' + "x" * TEN_MB + '"'),
    ]
    for label, start, new in bad_values:
        lines = text.split("\n")
        k = next(i for i, ln in enumerate(lines) if ln.startswith(start))
        lines[k] = new
        cases.append(Case(f"typed: {label}", {"r.toml": "\n".join(lines).encode()}, expect="error"))
    return Kind("region config TOML", "r.toml", lambda p, r: load_region(p),
                lambda c: json.dumps(c.raw, sort_keys=True, default=str), files, cases)


# ----------------------------------------------------------------------------- running a case

class _Notes(logging.Handler):
    """Repairs logged by loaders that take no `repairs` list (the config)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


LAST_ERROR = [""]  # the last error message (printed with GEOACCESS_FUZZ_VERBOSE=1)


def run_case(kind: Kind, case: Case, folder: Path, baseline, monkeypatch) -> tuple[str, str]:
    """(outcome, problem): problem is '' when the case behaved as required."""
    write_files(folder, case.files)
    LAST_ERROR[0] = ""
    entry = folder / kind.entry
    repairs: list[str] = []
    notes = _Notes()
    log = logging.getLogger("geoaccess")
    log.addHandler(notes)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        with monkeypatch.context() as m, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if case.patch_limit:
                m.setattr(_io, "MAX_TABLE_BYTES", 64)
                m.setattr(config_mod, "MAX_CONFIG_BYTES", 64)
            result = kind.load(entry, repairs)
    except GeoaccessError as exc:
        msg = str(exc)
        LAST_ERROR[0] = msg.replace(str(folder) + "/", "")
        names = {str(entry)} | ({str(folder / n) for n in case.files} if kind.entry in ("gaz", "s.shp") else set())
        names |= {str(entry.parent)} if kind.entry == "gaz" else set()
        if not any(n in msg for n in names):
            return "OTHER", f"error does not name the file: {msg[:200]}"
        if "\n" in msg:
            return "OTHER", f"error message spans lines: {msg[:200]!r}"
        if case.row is not None and f"row {case.row}" not in msg and f"line {case.row})" not in msg:
            return "clear error", f"error should name row {case.row}: {msg[:200]}"
        if case.expect == "repair":
            return "clear error", f"expected a repair, got: {msg[:200]}"
        return "clear error", ""
    except Exception as exc:  # noqa: BLE001 - the point of the test
        LAST_ERROR[0] = f"{type(exc).__name__}: {exc}"
        return "OTHER", f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        log.removeHandler(notes)
        log.setLevel(old_level)
    messages = repairs + notes.messages
    warned = any(("no line break" in m or "no coordinate system" in m) for m in messages)
    repaired = any(("read as" in m or "removed" in m or "skipped" in m) for m in messages)
    try:
        got, want = kind.key(result), kind.key(baseline)
        if isinstance(want, pd.DataFrame):
            pd.testing.assert_frame_equal(got, want)
        else:
            assert got == want
        same, diff = True, ""
    except AssertionError as exc:
        same, diff = False, str(exc)[:300]
    outcome = "warned" if warned else "repair" if repaired else "unchanged" if same else "changed"
    if case.expect == "error":
        return outcome, "expected a clear error, but it loaded"
    if case.expect == "repair":
        return "repair", "" if same else f"repaired load differs from the clean file: {diff}"
    if case.cut is not None and case.cut[0].endswith((".csv", ".toml")):
        if not case.files[case.cut[0]].endswith(b"\n") and not warned:
            return outcome, "a file cut inside a line loaded without a warning"
    return outcome, ""


# ----------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def table():
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    yield counts
    if counts:
        print("\n\nFuzz outcomes (tests/test_fuzz.py; fixed seeds)")
        print(format_table(counts))


def format_table(counts) -> str:
    head = f"| {'input kind':40s} | cases | " + " | ".join(f"{o:>11s}" for o in OUTCOMES) + " |"
    rule = "|" + "-" * 42 + "|------:|" + "|".join("-" * 12 + ":" for _ in OUTCOMES) + "|"
    rows = [head, rule]
    total = dict.fromkeys(OUTCOMES, 0)
    for kind, c in counts.items():
        rows.append(f"| {kind:40s} | {sum(c.values()):5d} | " + " | ".join(f"{c[o]:11d}" for o in OUTCOMES) + " |")
        for o in OUTCOMES:
            total[o] += c[o]
    rows.append(f"| {'total':40s} | {sum(total.values()):5d} | " + " | ".join(f"{total[o]:11d}" for o in OUTCOMES) + " |")
    return "\n".join(rows)


KIND_NAMES = ["settlements CSV", "settlements GeoJSON", "settlements shapefile", "settlements GeoPackage",
              "facility register CSV", "census population CSV", "gazetteer folder", "boundaries GeoJSON",
              "relocation sites CSV", "region config TOML"]


def build_kind(name: str, data_dir: Path, names: list[str], tmp: Path, request) -> Kind:
    return {
        "relocation sites CSV": lambda: relocation_kind(data_dir, request.getfixturevalue("tibet_context")),
        "settlements CSV": lambda: settlement_csv_kind(names),
        "settlements GeoJSON": lambda: settlement_geojson_kind(names, tmp),
        "settlements shapefile": lambda: settlement_shapefile_kind(names, tmp),
        "settlements GeoPackage": lambda: settlement_gpkg_kind(names, tmp),
        "facility register CSV": lambda: facility_kind(data_dir),
        "census population CSV": lambda: population_kind(data_dir),
        "gazetteer folder": lambda: gazetteer_kind(data_dir),
        "boundaries GeoJSON": lambda: boundaries_kind(data_dir, tmp),
        "region config TOML": config_kind,
    }[name]()


@pytest.mark.parametrize("kind_name", KIND_NAMES)
def test_hostile_inputs_end_in_a_clear_error_or_a_repair(kind_name, data_dir, village_names, tmp_path, monkeypatch,
                                                         table, request):
    kind = build_kind(kind_name, data_dir, village_names, tmp_path, request)
    clean_dir = tmp_path / "clean"
    write_files(clean_dir, kind.clean)
    baseline = kind.load(clean_dir / kind.entry, [])
    problems = []
    for i, case in enumerate(kind.cases):
        outcome, problem = run_case(kind, case, tmp_path / f"case{i}", baseline, monkeypatch)
        shutil.rmtree(tmp_path / f"case{i}", ignore_errors=True)  # (some cases hold a 10 MB field)
        table[kind.name][outcome] += 1
        if os.environ.get("GEOACCESS_FUZZ_VERBOSE"):
            print(f"  {kind.name:24.24s} {outcome:12s} {case.label[:60]:60s} {problem[:100]}")
            print(f"      {LAST_ERROR[0][:300]}")
        if problem:
            problems.append(f"{case.label}: {problem}")
    assert not problems, f"{kind.name}: {len(problems)} of {len(kind.cases)} cases misbehaved:\n" + "\n".join(problems)
    assert table[kind.name]["OTHER"] == 0


# ----------------------------------------------------------------------------- the CLI on hostile inputs

@pytest.fixture(autouse=True)
def _restore_root_logging():
    """`cli.main` calls logging.basicConfig, which binds a handler to this test's captured stderr."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for h in root.handlers[:]:
        if h not in before:
            root.removeHandler(h)


def cli_region(tmp: Path, data_dir: Path, **inputs) -> Path:
    gaz = tmp / "gaz"
    if not gaz.exists():
        gaz.mkdir()
        for n in GAZ_FILES:
            shutil.copy(data_dir / "gazetteer" / "adcode" / n, gaz / n)
    paths = {"gazetteer": str(gaz), "facilities": str(data_dir / "facilities" / "tibet_facilities.csv"),
             "counties": "", "prefectures": "", "population": "", "relocation": "", "dem": ""}
    paths.update({k: str(v) for k, v in inputs.items()})
    body = "\n".join(f'{k} = {json.dumps(v, ensure_ascii=False)}' for k, v in paths.items())
    p = tmp / "hostile.toml"
    p.write_text(f'[region]\nkey = "hostile"\nname = "测试 hostile"\nadmin_prefix = "5401"\n'
                 f'working_crs = "EPSG:32646"\n\n[inputs]\n{body}\n', encoding="utf-8")
    return p


def hostile_facility_files(data_dir: Path) -> dict[str, bytes]:
    good = (data_dir / "facilities" / "tibet_facilities.csv").read_bytes()
    rng = _rng("cli")
    text = good.decode()
    return {
        "cut inside a character": good[: good.index("医院".encode()) + 1],
        "binary junk": bytes(rng.randrange(256) for _ in range(5000)),
        "level mistyped": replace_cell(text, 3, 2, "hospital").encode(),
        "GBK with an undecodable byte": text.encode("gb18030")[:300] + b"\xff" + text.encode("gb18030")[300:],
        "header only": text.split("\n")[0].encode() + b"\n",
    }


@pytest.mark.parametrize("command", [["data", "check"], ["traveltime"]])
def test_cli_on_hostile_registers_prints_one_error_line_and_exits_2(command, data_dir, tmp_path, capsys, table):
    for label, data in hostile_facility_files(data_dir).items():
        bad = tmp_path / "register.csv"
        bad.write_bytes(data)
        region = cli_region(tmp_path, data_dir, facilities=bad)
        argv = command + ["--region", str(region), "--data", str(data_dir)]
        if command == ["traveltime"]:
            argv += ["--out", str(tmp_path / "out")]
        code = cli_main(argv)
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert code == 2, f"{label}: exit {code}, stderr: {err[-500:]}"
        assert len(errors) == 1 and str(bad) in errors[0], f"{label}: {err[-500:]}"
        assert "Traceback" not in err
        assert not (tmp_path / "out").exists()
        table[f"CLI {' '.join(command)}: hostile register"]["clear error"] += 1


def test_cli_on_hostile_configs_and_gazetteers(data_dir, tmp_path, capsys, table):
    region = cli_region(tmp_path, data_dir)
    good = region.read_text(encoding="utf-8")
    mangled = tmp_path / "gaz2"
    shutil.copytree(tmp_path / "gaz", mangled)
    (mangled / "540102.csv").write_bytes((mangled / "540102.csv").read_bytes()[:777])
    cases = {
        "config with an unknown placeholder": good.replace('dem = ""', 'dem = "{nope}.tif"'),
        "config cut short": good[: len(good) // 2] + "[inputs\n",
        "config with a wrongly typed value": good.replace('admin_prefix = "5401"', "admin_prefix = [54]"),
        "gazetteer with a file cut short": good.replace(str(tmp_path / "gaz"), str(mangled)),
    }
    for label, text in cases.items():
        p = tmp_path / f"{label.replace(' ', '_')}.toml"
        p.write_text(text, encoding="utf-8")
        code = cli_main(["data", "check", "--region", str(p), "--data", str(data_dir)])
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert code == 2, f"{label}: exit {code}, stderr: {err[-500:]}"
        assert len(errors) == 1 and "Traceback" not in err, f"{label}: {err[-500:]}"
        named = str(p) if label.startswith("config") else str(mangled)
        assert named in errors[0], f"{label}: {errors[0]}"
        table["CLI data check: hostile config/gazetteer"]["clear error"] += 1


def test_clean_cli_region_loads(data_dir, tmp_path, capsys):
    """The hostile-input region is valid when its inputs are: the errors above come from the mutations."""
    region = cli_region(tmp_path, data_dir)
    assert cli_main(["data", "check", "--region", str(region), "--data", str(data_dir)]) == 0
    assert "error" not in capsys.readouterr().err
