"""Command line: parses arguments and calls the library; every error is one line and a non-zero exit."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .errors import GeoaccessError
from .schema import LEVEL_GROUPS

log = logging.getLogger("geoaccess")


def _log_flags(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """-v / -q / --debug, accepted before or after the subcommand (a subcommand's copy leaves an earlier one alone)."""
    default = False if top else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="log details")
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="log warnings only")
    p.add_argument("--debug", action="store_true", default=default,
                   help="show Python tracebacks for internal errors")


def _common(p: argparse.ArgumentParser, *, out: bool = True) -> None:
    _log_flags(p)
    p.add_argument("--region", required=True, help="region name (tibet, chongqing, liaoning, xishuangbanna) or a .toml path")
    p.add_argument("--data", help="data directory (default: $GEOACCESS_DATA, else ../shared/data, else ./data)")
    if out:
        p.add_argument("--out", help="run folder (default: output/{region}/): gaps writes it, every other command "
                                     "a subfolder of its own in it")


def _thresholds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", action="append", default=[], metavar="LEVEL=MIN",
                   help="override a travel-time threshold in minutes, e.g. county=90 (levels: clinic, thc, county, "
                        "county_severe, pref); repeatable")


def _engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["combined", "network", "raster"], default=None,
                   help="combined: roads and terrain in one search (default); "
                        "network: roads only, off-road legs to the nearest road; raster: friction-surface cost distance")
    p.add_argument("--no-terrain", action="store_true", help="ignore the DEM (flat travel times)")


def _variant(p: argparse.ArgumentParser, *, scenario: bool = True) -> None:
    if scenario:
        p.add_argument("--scenario", metavar="NAME", help="a [scenarios.NAME] table of the region config "
                       "(docs/scenarios.md); outputs go to a folder of their own beside the baseline's")
    p.add_argument("--mode", metavar="MODE", help="travel mode: motorised (default), walking (Tobler's hiking "
                   "function on and off road), a [modes.NAME] of the config, or both (gaps)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `python cli.py` / `geoaccess`."""
    parser = argparse.ArgumentParser(prog="geoaccess", description="Travel time to health care, coverage gaps "
                                     "and facility siting under the 基本医疗有保障 standards.")
    _log_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    _log_flags(sub.add_parser("regions", help="list the region configs (shipped, ./regions/, $GEOACCESS_REGIONS)"))

    data = sub.add_parser("data", help="inspect the inputs").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="load and validate every input layer; print what was loaded")
    _common(check, out=False)
    check.add_argument("--json", action="store_true", help="print the report as JSON")

    tt = sub.add_parser("traveltime", help="travel time from every settlement to each facility level")
    _common(tt)
    _engine(tt)

    gaps = sub.add_parser("gaps", help="the whole pipeline: travel times, coverage gaps, blank spots (空白点)")
    _log_flags(gaps)
    gaps.add_argument("--region", required=True, action="append",
                      help="region name or .toml path; repeat to run several regions (in parallel with Dask)")
    gaps.add_argument("--data", help="data directory (default: $GEOACCESS_DATA, else ../shared/data, else ./data)")
    gaps.add_argument("--out", help="output directory (default: output/{region}/; with several regions, "
                                    "the folder holding one subfolder per region)")
    _thresholds(gaps)
    _engine(gaps)
    gaps.add_argument("--map", action="store_true", help="also write the map into maps/ of the run folder")
    _variant(gaps)
    dist = gaps.add_argument_group("distributed runs (Dask; docs/distributed.md)")
    dist.add_argument("--scheduler", metavar="ADDRESS", help="run on a Dask cluster, e.g. tcp://host:8786")
    dist.add_argument("--workers", type=int, metavar="N", help="run on a local Dask cluster of N worker processes")
    dist.add_argument("--partition", choices=["province", "prefecture", "county"],
                      help="search the region's provinces, prefectures or counties in parallel windows (results identical)")
    dist.add_argument("--buffer-km", type=float, default=100.0, help="grid and roads kept around each partition's window (km; default 100)")

    cmp_ = sub.add_parser("compare", help="two scenarios side by side: per settlement, county and prefecture, and a "
                                         "map of the change (compare_{A}_{B}/ in the run folder)")
    _common(cmp_)
    cmp_.add_argument("--scenario", action="append", required=True, metavar="NAME",
                      help="give it twice: the two scenarios (baseline = the unchanged run)")
    cmp_.add_argument("--mode", metavar="MODE", help="travel mode of both runs (default motorised)")
    _engine(cmp_)

    prop = sub.add_parser("propose", help="propose sites").add_subparsers(dest="propose_command", required=True)
    pc = prop.add_parser("clinics", help="temporary medical points (临时医疗点) for settlements beyond the threshold")
    _common(pc)
    pc.add_argument("--threshold", type=float, help="minutes to a clinic (default: the config's, 30)")
    pc.add_argument("--max-sites", type=int, help="best K points (maximal covering); default: fewest covering all")
    pc.add_argument("--candidates", action="append", choices=["targets", "settlements", "roads"],
                    help="candidate sites, repeatable (default: targets and settlements)")
    pc.add_argument("--time-limit", type=float, help="solver time limit in seconds (default 60)")
    pc.add_argument("--model", choices=["cover", "max_cover", "p_median", "p_center"],
                    help="siting model (default: cover, or max_cover with --max-sites); p_median / p_center need "
                         "--max-sites (docs/siting.md)")
    pc.add_argument("--limit", type=float, metavar="MIN", help="p_median / p_center: the cost matrix reaches this far; "
                                                              "longer times count as this (default twice the threshold)")
    pc.add_argument("--capacity", type=float, metavar="PEOPLE", help="cover / max_cover: a point serves at most "
                                                                    "this many people")
    _variant(pc)
    pc.add_argument("--robust", metavar="A,B,…", help="cover the targets under every listed scenario at once "
                                                     "(baseline allowed), e.g. winter,baseline")
    pce = prop.add_parser("centres", help="sites for the plan's county-level regional medical centres")
    _common(pce)
    pce.add_argument("--threshold", type=float, help="minutes to a centre (default: the config's, 120)")
    pce.add_argument("--time-limit", type=float, help="solver time limit in seconds (default 60)")
    _variant(pce)

    ac = sub.add_parser("access", help="supply–demand accessibility (2SFCA, E2SFCA, Gaussian 2SFCA, gravity) per "
                                       "settlement and county")
    _common(ac)
    ac.add_argument("--level", choices=list(LEVEL_GROUPS), required=True,
                    help="facility level (that level or higher)")
    ac.add_argument("--method", choices=["2sfca", "e2sfca", "g2sfca", "gravity"], required=True)
    ac.add_argument("--catchment", type=float, metavar="MIN", help="catchment in minutes (default: the level's threshold)")
    ac.add_argument("--supply", metavar="COLUMN", help="register column giving each facility's supply (beds, "
                                                     "doctors); default one unit per facility")
    ac.add_argument("--write-matrix", action="store_true", help="also write od_{level}.csv, the pairs within the "
                                                                "catchment")
    ac.add_argument("--engine", choices=["combined", "network"], default=None, help="travel model (default combined)")
    ac.add_argument("--bands", metavar="MIN,MIN,…", help="e2sfca band upper ends (default [access] e2sfca_bands_min, "
                                                        "else equal bands over the catchment)")
    ac.add_argument("--weights", metavar="W,W,…", help="e2sfca band weights (default [access] e2sfca_weights)")
    ac.add_argument("--beta", type=float, help="gravity: power of the decay (default [access] gravity_beta)")
    ac.add_argument("--min-minutes", type=float, help="gravity: trips shorter count as this long "
                                                      "(default [access] gravity_min_minutes)")

    ou = sub.add_parser("own-unit", help="care in one's own county / township (就地就医) against the nearest across "
                                         "borders (就近就医)")
    _common(ou)
    ou.add_argument("--engine", choices=["combined", "network"], default=None, help="travel model (default combined)")

    rf = sub.add_parser("referral", help="referral times between facility levels and each settlement's chain "
                                         "(settlement → township centre → county hospital)")
    _common(rf)
    rf.add_argument("--engine", choices=["combined", "network"], default=None, help="travel model (default combined)")

    cv = sub.add_parser("coverage", help="capacity-aware coverage (AccessMod): each facility serves the nearest "
                                         "people until its capacity or the time limit")
    _common(cv)
    cv.add_argument("--level", choices=list(LEVEL_GROUPS), required=True,
                    help="facility level (that level or higher)")
    cv.add_argument("--capacity", required=True, metavar="COLUMN|PEOPLE",
                    help="people each facility can serve: a number (inf: no limit) or a register column")
    cv.add_argument("--max-minutes", type=float, metavar="MIN", help="time limit (default: the level's threshold)")
    cv.add_argument("--order", choices=["register", "population"], default="register",
                    help="which facility takes its people first: register order, or most people within the limit")
    cv.add_argument("--engine", choices=["combined", "network"], default=None, help="travel model (default combined)")

    ct = sub.add_parser("catchments", help="polygons of the area each facility serves (nearest of its level), cut "
                                           "by travel-time band, with people and settlements inside")
    _common(ct)
    ct.add_argument("--level", choices=list(LEVEL_GROUPS), required=True,
                    help="facility level (that level or higher)")
    ct.add_argument("--minutes", metavar="MIN,MIN,…", help="band upper ends (default 15,30,60,120)")
    ct.add_argument("--engine", choices=["combined", "raster"], default=None, help="grid engine (default combined)")
    ct.add_argument("--facility-rasters", metavar="IDS|all",
                    help="also write one travel-time GeoTIFF per facility (minutes from every cell to it alone): "
                         "facility ids separated by commas, or all (every facility of the level)")

    pg = sub.add_parser("population-grid", help="coverage from every cell's travel time and a population grid "
                                                "([inputs] population_raster, else one built from the census)")
    _common(pg)
    pg.add_argument("--raster", help="people-per-cell raster, any CRS (default: [inputs] population_raster)")
    pg.add_argument("--engine", choices=["combined", "raster"], default=None, help="grid engine (default combined)")

    mp = sub.add_parser("map", help="folium coverage map (offline) and report figures from the gaps outputs")
    _common(mp)
    mp.add_argument("--level", choices=list(LEVEL_GROUPS), default="county",
                    help="facility level shown at start (all levels are layers)")
    mp.add_argument("--tiles", default="offline", help="offline (no basemap requests, default), osm, or a tile URL")
    mp.add_argument("--maps-dir", help="folder for the HTML and PNGs (default: maps/ in the run folder)")
    mp.add_argument("--catchments", choices=list(LEVEL_GROUPS), metavar="LEVEL",
                    help="draw this level's catchments (from catchments/ of the run folder, else computed); "
                         "default: the --level's catchments when that command has run")

    ex = sub.add_parser("export", help="shapefile / GeoPackage / CSV / GeoJSON exports of every layer")
    _common(ex)
    ex.add_argument("--format", action="append", choices=["shp", "gpkg", "csv", "geojson"], dest="formats",
                    help="repeatable; default: all four")
    ex.add_argument("--crs", default="EPSG:4326", help="output CRS, projected or geographic (default WGS84)")
    ex.add_argument("--dest", help="folder of its own for the export (default: export/ in the run folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input or output folder, 1 internal error,
    128 + signal when stopped: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    # other libraries (pyogrio's "Created N records", rasterio's and numba's debug) only at WARNING and above
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("geoaccess").setLevel(level)
    previous = _handle_stop_signals()
    try:
        return _dispatch(args)
    except GeoaccessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"interrupted by {signal.Signals(signum).name}: no output was left half-written", file=sys.stderr)
        return 128 + signum
    except Exception as exc:  # an internal error: one line unless --debug
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"internal error: {type(exc).__name__}: {first} (rerun with --debug for details)", file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _handle_stop_signals() -> dict:
    """SIGTERM and SIGHUP (kill, systemd, a closed terminal) stop a run the way Ctrl-C does: outputs untouched."""
    from . import _atomic
    from ._atomic import stop_signal_handler as stop

    _atomic.received.clear()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                signum = getattr(signal, name)
                previous[signum] = signal.signal(signum, stop)
    return previous


def _dispatch(args: argparse.Namespace) -> int:
    from . import commands

    if args.command == "regions":
        return commands.list_regions()
    if args.command == "data" and args.data_command == "check":
        return commands.data_check(args.region, args.data, as_json=args.json)
    if args.command == "traveltime":
        return commands.traveltime(args.region, args.data, args.out, engine=args.engine, terrain=not args.no_terrain)
    if args.command == "gaps":
        code = commands.gaps(args.region, args.data, args.out, thresholds=args.threshold, engine=args.engine,
                             terrain=not args.no_terrain, scheduler=args.scheduler, workers=args.workers,
                             partition=args.partition, buffer_km=args.buffer_km, scenario=args.scenario,
                             mode=args.mode)
        if args.map and code == 0 and (args.scenario or args.mode):
            from .errors import ConfigError

            raise ConfigError(None, "--map with --scenario / --mode: draw the map with `map` on that run's folder")
        if args.map and code == 0:
            for region in args.region:
                out = args.out if len(args.region) == 1 else (str(Path(args.out or "output") / region))
                code = code or commands.map_command(region, args.data, out)
        return code
    if args.command == "compare":
        return commands.compare_command(args.region, args.data, args.out, scenarios=args.scenario, mode=args.mode,
                                        engine=args.engine, terrain=not args.no_terrain)
    if args.command == "propose" and args.propose_command == "clinics":
        return commands.propose_clinics_command(args.region, args.data, args.out, threshold=args.threshold,
                                                max_sites=args.max_sites, candidates=args.candidates,
                                                time_limit=args.time_limit, model=args.model,
                                                capacity=args.capacity, scenario=args.scenario, mode=args.mode,
                                                robust=args.robust, limit=args.limit)
    if args.command == "propose" and args.propose_command == "centres":
        return commands.propose_centres_command(args.region, args.data, args.out, threshold=args.threshold,
                                                time_limit=args.time_limit, scenario=args.scenario, mode=args.mode)
    if args.command == "access":
        return commands.access_command(args.region, args.data, args.out, level=args.level, method=args.method,
                                       catchment=args.catchment, supply=args.supply, write_matrix=args.write_matrix,
                                       engine=args.engine, bands=args.bands, weights=args.weights, beta=args.beta,
                                       min_minutes=args.min_minutes)
    if args.command == "own-unit":
        return commands.own_unit_command(args.region, args.data, args.out, engine=args.engine)
    if args.command == "referral":
        return commands.referral_command(args.region, args.data, args.out, engine=args.engine)
    if args.command == "coverage":
        return commands.coverage_command(args.region, args.data, args.out, level=args.level, capacity=args.capacity,
                                         max_minutes=args.max_minutes, order=args.order, engine=args.engine)
    if args.command == "catchments":
        return commands.catchments_command(args.region, args.data, args.out, level=args.level, minutes=args.minutes,
                                           engine=args.engine, facility_rasters=args.facility_rasters)
    if args.command == "population-grid":
        return commands.population_grid_command(args.region, args.data, args.out, raster=args.raster,
                                                engine=args.engine)
    if args.command == "map":
        return commands.map_command(args.region, args.data, args.out, level=args.level, tiles=args.tiles,
                                    maps_dir=args.maps_dir, catchments=args.catchments)
    if args.command == "export":
        return commands.export_command(args.region, args.data, args.out,
                                       formats=args.formats or ["shp", "gpkg", "csv", "geojson"], crs=args.crs,
                                       dest=args.dest)
    raise GeoaccessError(f"unknown command {args.command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
