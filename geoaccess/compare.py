"""Two scenarios side by side: per settlement, county and prefecture, and a map of the change.

`python cli.py compare --region R --scenario A --scenario B` runs the region under each scenario
(``baseline`` is the unchanged run), then writes into ``{run folder}/compare_{A}_{B}/``:
``compare_{A}_{B}.csv`` (settlements), ``compare_{A}_{B}_counties.csv``, ``compare_{A}_{B}_prefectures.csv``,
``compare_{A}_{B}.html`` (offline folium map of the change) and ``compare_summary.json``. Columns are
listed in docs/scenarios.md.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .export import write_csv
from .errors import ConfigError

log = logging.getLogger("geoaccess")

LEVELS = ("clinic", "thc", "county", "pref")
ID_COLUMNS = ["settlement_id", "name", "kind", "county_code", "county_name", "prefecture_code", "population",
              "loc_quality", "lon", "lat"]


def compare_folder(run: Path, a: str, b: str) -> Path:
    """``compare_{A}_{B}/`` inside the (baseline) run folder."""
    return run / f"compare_{a}_{b}"


def _scenario_run(config, data_dir, name, mode, engine, terrain):
    from .pipeline import compute_region_times, county_table, run_audit
    from .scenarios import with_variant

    cfg = with_variant(config, name, mode, data_dir)
    run = compute_region_times(cfg, data_dir, terrain=terrain, engine=engine, thresholds=cfg.thresholds)
    audit = run_audit(run)
    return run, county_table(run, audit)


def settlement_changes(ta: pd.DataFrame, tb: pd.DataFrame, a: str, b: str, lines: dict) -> pd.DataFrame:
    """One row per settlement: minutes to each level under A and B and the change (B − A; inf − inf = 0),
    gap flags under both, and whether it crosses each line (minutes to a county hospital) either way."""
    if not ta["settlement_id"].astype(str).equals(tb["settlement_id"].astype(str)):
        raise ConfigError(None, f"scenarios {a} and {b} have different settlement tables: compare needs the same "
                                "settlements (a scenario changes roads, facilities, thresholds, terrain — not them)")
    out = ta[[c for c in ID_COLUMNS if c in ta.columns]].copy()
    for lv in LEVELS:
        va, vb = (t[f"t_{lv}_min"].to_numpy(float) for t in (ta, tb))
        out[f"t_{lv}_min_{a}"] = va
        out[f"t_{lv}_min_{b}"] = vb
        with np.errstate(invalid="ignore"):
            d = np.where(np.isnan(va) & np.isnan(vb), 0.0, np.nan_to_num(vb, nan=np.inf) - np.nan_to_num(va, nan=np.inf))
        out[f"change_t_{lv}_min"] = np.where(np.isnan(d), 0.0, d)
    for col in ("status", "gap_clinic", "gap_thc", "gap_county", "gap_severe"):
        out[f"{col}_{a}"] = ta[col].to_numpy()
        out[f"{col}_{b}"] = tb[col].to_numpy()
    ca, cb = (np.nan_to_num(t["t_county_min"].to_numpy(float), nan=np.inf) for t in (ta, tb))
    for key, m in lines.items():
        out[f"beyond_{m:g}_{a}"] = ca > m
        out[f"beyond_{m:g}_{b}"] = cb > m
        out[f"crosses_{m:g}"] = np.where((ca <= m) & (cb > m), "newly_beyond",
                                         np.where((ca > m) & (cb <= m), "newly_within", ""))
    return out


def _unit_changes(ch: pd.DataFrame, key: str, lines: dict, a: str, b: str, names: dict) -> pd.DataFrame:
    """Per unit: settlements and people crossing each line each way, shares within under A and B."""
    pop = ch["population"].fillna(0.0)
    rows = []
    for code, g in ch.groupby(key, sort=True):
        p = pop.loc[g.index]
        row = {key: code, key.replace("_code", "_name"): names.get(code, ""), "n_settlements": len(g),
               "population": float(p.sum())}
        for m in lines.values():
            c = g[f"crosses_{m:g}"]
            row[f"n_newly_beyond_{m:g}"] = int(c.eq("newly_beyond").sum())
            row[f"pop_newly_beyond_{m:g}"] = float(p[c.eq("newly_beyond")].sum())
            row[f"n_newly_within_{m:g}"] = int(c.eq("newly_within").sum())
            row[f"pop_newly_within_{m:g}"] = float(p[c.eq("newly_within")].sum())
            for s in (a, b):
                within = ~g[f"beyond_{m:g}_{s}"]
                row[f"share_within_{m:g}_{s}"] = float(within.mean())
                row[f"pop_share_within_{m:g}_{s}"] = float(p[within].sum() / p.sum()) if p.sum() > 0 else np.nan
        for s in (a, b):
            row[f"median_t_county_min_{s}"] = float(np.nanmedian(g[f"t_county_min_{s}"])) \
                if g[f"t_county_min_{s}"].notna().any() else np.nan
            row[f"gap_county_{s}"] = int(g[f"gap_county_{s}"].sum())
            row[f"gap_severe_{s}"] = int(g[f"gap_severe_{s}"].sum())
        row["change_median_t_county_min"] = row[f"median_t_county_min_{b}"] - row[f"median_t_county_min_{a}"]
        rows.append(row)
    return pd.DataFrame(rows)


def run_compare(config, data_dir: Path, out_dir: Path, a: str, b: str, *, mode: str | None = None,
                engine: str = "combined", terrain: bool = True) -> dict:
    """Run the region under scenarios ``a`` and ``b`` and write the comparison (one atomic output set)."""
    from ._atomic import atomic_output_dir
    from .outputs import provenance_inputs
    from .pipeline import json_default
    from .scenarios import describe

    if a == b:
        raise ConfigError(None, f"--scenario {a} twice: compare needs two different scenarios")
    t0 = time.perf_counter()
    ra, ca = _scenario_run(config, data_dir, a, mode, engine, terrain)
    rb, cb = _scenario_run(config, data_dir, b, mode, engine, terrain)
    th = ra.thresholds
    lines = {"county": float(th["county"]), "county_severe": float(th["county_severe"])}
    ch = settlement_changes(ra.table, rb.table, a, b, lines)
    counties = ra.inputs.counties
    cnames = dict(zip(counties["adcode"], counties["name"])) if counties is not None else {}
    prefs = ra.inputs.prefectures
    pnames = dict(zip(prefs["adcode"], prefs["name"])) if prefs is not None else {}
    by_county = _unit_changes(ch, "county_code", lines, a, b, cnames)
    by_pref = _unit_changes(ch, "prefecture_code", lines, a, b, pnames)
    total = _unit_changes(ch.assign(region=config.key), "region", lines, a, b, {config.key: config.name})
    summary = {
        "region": config.key, "scenarios": [a, b], "mode": mode or "motorised", "engine": engine,
        "lines_min": lines,
        "definitions": {a: describe(ra.config, ra.graph), b: describe(rb.config, rb.graph)},
        "region_total": total.drop(columns=["region"]).iloc[0].to_dict(),
        "by_prefecture": by_pref.to_dict("records"),
        "no_time_shorter": _never_shorter(ch),
        "wall_time_s": round(time.perf_counter() - t0, 2),
    }
    name = f"compare_{a}_{b}"
    inputs = provenance_inputs(config, data_dir, ra.inputs.paths)
    with atomic_output_dir(out_dir, inputs=inputs, command="compare",
                           parameters={"scenarios": [a, b], "mode": mode or "motorised", "engine": engine,
                                       "terrain": terrain}) as tmp:
        write_csv(ch, tmp / f"{name}.csv")
        write_csv(by_county, tmp / f"{name}_counties.csv")
        write_csv(by_pref, tmp / f"{name}_prefectures.csv")
        change_map(ch, counties, by_county, a, b, lines).save(str(tmp / f"{name}.html"))
        (tmp / "compare_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1,
                                                             default=json_default), encoding="utf-8")
    return {"summary": summary, "settlements": ch, "counties": by_county, "prefectures": by_pref,
            "out_dir": out_dir}


def _never_shorter(ch: pd.DataFrame) -> dict:
    """How many settlements got faster / slower to a county hospital (a closure-only scenario must have 0 faster)."""
    d = ch["change_t_county_min"].to_numpy(float)
    return {"faster": int((d < -1e-6).sum()), "slower": int((d > 1e-6).sum()), "same": int((np.abs(d) <= 1e-6).sum())}


def change_map(ch: pd.DataFrame, counties, by_county: pd.DataFrame, a: str, b: str, lines: dict):
    """Offline folium map: counties by the change in the share within the county line, settlements by the
    change in minutes to a county hospital (red slower, blue faster), crossings ringed."""
    import folium

    from .mapping import _make_offline

    m = folium.Map(tiles=None, prefer_canvas=True, control_scale=True, zoom_start=6)
    _make_offline(m)
    line = lines["county"]
    if counties is not None and len(by_county):
        col_a, col_b = f"share_within_{line:g}_{a}", f"share_within_{line:g}_{b}"
        shares = by_county.set_index("county_code")
        gdf = counties[["adcode", "name", "geometry"]].copy()
        gdf["change_share"] = gdf["adcode"].map(shares[col_b] - shares[col_a]).fillna(0.0).round(3)
        gdf["share_a"] = gdf["adcode"].map(shares[col_a]).round(3)
        gdf["share_b"] = gdf["adcode"].map(shares[col_b]).round(3)

        def style(feature):
            v = feature["properties"]["change_share"] or 0.0
            colour = "#b2182b" if v < -0.05 else "#ef8a62" if v < 0 else "#67a9cf" if v > 0 else "#f7f7f7"
            return {"fillColor": colour, "color": "#555", "weight": 0.6, "fillOpacity": 0.55}

        folium.GeoJson(gdf.to_json(), name=f"counties: change in share within {line:g} min", style_function=style,
                       tooltip=folium.GeoJsonTooltip(["name", "share_a", "share_b", "change_share"],
                                                     aliases=["county", f"within {line:g} min, {a}",
                                                              f"within {line:g} min, {b}", "change"])).add_to(m)
    pts = folium.FeatureGroup(name=f"settlements: change in minutes to a county hospital ({b} − {a})")
    d = ch["change_t_county_min"].to_numpy(float)
    ok = np.isfinite(ch["lat"].to_numpy(float)) & (np.abs(d) > 0.5)
    for i in np.flatnonzero(ok):
        r = ch.iloc[i]
        v = d[i]
        colour = "#2166ac" if v < 0 else "#fdae61" if v < 15 else "#d73027" if np.isfinite(v) else "#000000"
        crossed = any(r.get(f"crosses_{x:g}", "") for x in lines.values())
        folium.CircleMarker([float(r["lat"]), float(r["lon"])], radius=4 if crossed else 2.5, color=colour,
                            weight=2 if crossed else 0, fill=True, fill_opacity=0.8,
                            tooltip=f"{r['name']}: {r[f't_county_min_{a}']:.0f} → {r[f't_county_min_{b}']:.0f} min"
                            ).add_to(pts)
    pts.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    lat, lon = ch["lat"].astype(float), ch["lon"].astype(float)
    if lat.notna().any():
        m.fit_bounds([[float(lat.min()), float(lon.min())], [float(lat.max()), float(lon.max())]])
    return m
