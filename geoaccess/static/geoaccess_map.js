/* geoaccess coverage map: compact settlement, facility and highlight layers drawn with Leaflet
   (settlements as canvas circle markers, facilities as CSS div icons). Inlined into each map. */
var geoaccess = (function () {
  "use strict";
  var registry = {settlements: {}, facilities: {}, other: {}};

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }

  function minutes(t) { return t == null ? "—" : t + " min"; }

  /* A time as it may be read: a lower bound says so, a range is shown where the run gives one. */
  function timeText(d, l, i) {
    var t = d.t[l][i], text = minutes(t);
    if (t == null) { return text; }
    if (d.lower && d.lower[i]) { text = "≥ " + text + " <small>(下限 lower bound)</small>"; }
    var lo = d.lo && d.lo[l] ? d.lo[l][i] : null, hi = d.hi && d.hi[l] ? d.hi[l][i] : null;
    if (lo != null || hi != null) {
      if (lo !== t || hi !== t) {
        text += " <small>范围 range " + (lo == null ? "?" : lo) + "–" + (hi == null ? "?" : hi) + " min</small>";
      }
    }
    return text;
  }

  function settlementPopup(d, i, lvl) {
    var lines = [
      "<b>" + esc(d.name[i]) + "</b> <small>" + esc(d.id[i]) + "</small>",
      "类型 kind: " + esc(d.kinds[d.kind[i]]),
      "定位 location: " + esc(d.quals[d.qual[i]]),
      "状态 status: " + esc(d.statuses[d.status[i]])
    ];
    if (d.stack[i] > 1) {
      lines.push("<i>此位置共 " + d.stack[i] + " 个居民点 · " + d.stack[i] + " settlements share this position</i>");
    }
    if (d.basis) { lines.push("时间依据 time basis: " + esc(d.bases[d.basis[i]])); }
    lines.push("<u>通行时间 travel time</u>");
    d.levels.forEach(function (l) {
      var row = esc(d.levelNames[l]) + ": " + timeText(d, l, i);
      lines.push(l === lvl ? "<b>" + row + "</b>" : row);
    });
    if (d.near[lvl]) {
      var f = d.near[lvl][i];
      lines.push("最近机构 nearest: " + (f >= 0 ? esc(d.fac[f][1]) + " <small>" + esc(d.fac[f][0]) + "</small>" : "—"));
    }
    return lines.join("<br>");
  }

  /* One popup handler per layer (not one Popup object per marker) keeps thousands of markers light. */
  function popupOnClick(group, d, lvl) {
    group.on("click", function (e) {
      L.popup().setLatLng(e.layer.getLatLng()).setContent(settlementPopup(d, e.layer.options.i, lvl)).openOn(group._map);
    });
  }

  function addSettlements(groups, relocation, d) {
    d.levels.forEach(function (lvl) {
      var group = groups[lvl];
      if (!group) { return; }
      for (var i = 0; i < d.lat.length; i++) {
        var exact = d.approx[i] === 0, colour = d.colours[d.band[lvl][i]];
        group.addLayer(L.circleMarker([d.lat[i], d.lon[i]], {
          radius: 4, weight: exact ? 0.6 : 1.5, color: exact ? "#333" : colour,
          fillColor: colour, fillOpacity: exact ? 0.9 : 0.25, i: i
        }));
      }
      popupOnClick(group, d, lvl);
      registry.settlements[lvl] = group;
    });
    if (relocation) {
      d.relocation.forEach(function (i) {
        relocation.addLayer(L.circleMarker([d.lat[i], d.lon[i]], {radius: 9, weight: 2.5, color: "#6a3d9a", fill: false, i: i}));
      });
      popupOnClick(relocation, d, d.level);
      registry.other.relocation = relocation;
    }
  }

  function addMarkers(group, d, kind, name) {
    var icon = L.divIcon({className: "ga-icon " + d.icon[0], iconSize: [d.icon[1], d.icon[1]]});
    for (var i = 0; i < d.lat.length; i++) {
      L.marker([d.lat[i], d.lon[i]], {icon: icon, title: d.title[i], riseOnHover: true})
        .bindPopup(d.popup[i]).addTo(group);
    }
    registry[kind][name] = group;
  }

  function addBlankSpots(group, d) {
    for (var i = 0; i < d.lat.length; i++) {
      L.circleMarker([d.lat[i], d.lon[i]], {
        radius: 11, weight: 3, color: "#e31a1c", dashArray: "4 3", fillColor: "#e31a1c", fillOpacity: 0.08
      }).bindPopup(d.popup[i]).addTo(group);
    }
    L.geoJSON(d.areas, {
      style: {color: "#e31a1c", weight: 3, dashArray: "6 4", fill: false},
      onEachFeature: function (f, layer) { layer.bindPopup(f.properties.popup); }
    }).addTo(group);
    registry.other.blank_spots = group;
  }

  /* Keep county polygons under everything and highlights on top of the one canvas. */
  function keepOrder(map, bottom, top) {
    var under = [].concat(bottom || []).reverse();  // first = lowest
    function order() {
      under.forEach(function (layer) { if (map.hasLayer(layer)) { layer.bringToBack(); } });
      top.forEach(function (layer) { if (map.hasLayer(layer)) { layer.bringToFront(); } });
    }
    registry.map = map;
    map.on("overlayadd baselayerchange", order);
    order();
  }

  function legendFollows(map, names) {
    map.on("baselayerchange", function (e) {
      var el = document.getElementById("ga-legend-level");
      for (var k in names) {
        if (registry.settlements[k] === e.layer && el) { el.textContent = names[k]; }
      }
    });
  }

  /* Facility icons follow the settlement level shown: the levels that count for it on, the others off. */
  function facilitiesFollow(map, counting) {
    map.on("baselayerchange", function (e) {
      for (var k in registry.settlements) {
        if (registry.settlements[k] !== e.layer) { continue; }
        for (var lv in registry.facilities) {
          var group = registry.facilities[lv], on = counting[k].indexOf(lv) >= 0;
          if (on && !map.hasLayer(group)) { map.addLayer(group); }
          if (!on && map.hasLayer(group)) { map.removeLayer(group); }
        }
      }
    });
  }

  /* The layer list starts folded to its button (it opens on hover or click) so it never hides the title;
     on a small view (a laptop window) the legend and the sources box start folded too, one click away. */
  function compactControls(map, control) {
    var size = map.getSize(), small = size.x < 1300 || size.y < 850;
    registry.layersControl = control;
    ["ga-legend", "ga-caption"].forEach(function (id) {
      var details = document.querySelector("#" + id + " details");
      if (details && small) { details.removeAttribute("open"); }
    });
  }

  function addRoads(group, geojson, styles) {
    L.geoJSON(geojson, {
      interactive: false,
      style: function (f) { return styles[f.properties.c] || styles.other; }
    }).addTo(group);
    registry.other.roads = group;
  }

  /* Referral: each facility as a ring coloured by the band of its time to the nearest facility of the next level. */
  function addReferral(group, d) {
    for (var i = 0; i < d.lat.length; i++) {
      L.circleMarker([d.lat[i], d.lon[i]], {
        radius: 6, weight: 3, color: d.colours[d.band[i]], fillColor: d.colours[d.band[i]], fillOpacity: 0.25
      }).bindPopup(d.popup[i]).addTo(group);
    }
    registry.other.referral = group;
  }

  /* Catchments: the polygons each facility serves, filled by travel-time band. */
  function addCatchments(group, geojson) {
    L.geoJSON(geojson, {
      style: function (f) { return {color: "#555", weight: 0.4, fillColor: f.properties.c, fillOpacity: 0.45}; },
      onEachFeature: function (f, layer) { layer.bindPopup(f.properties.popup); }
    }).addTo(group);
    registry.other.catchments = group;
  }

  return {
    addReferral: addReferral, addCatchments: addCatchments,
    registry: registry, addSettlements: addSettlements, addMarkers: addMarkers,
    addBlankSpots: addBlankSpots, keepOrder: keepOrder, legendFollows: legendFollows,
    facilitiesFollow: facilitiesFollow, compactControls: compactControls, addRoads: addRoads
  };
})();
