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
    lines.push("<u>通行时间 travel time</u>");
    d.levels.forEach(function (l) {
      var row = esc(d.levelNames[l]) + ": " + minutes(d.t[l][i]);
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
    function order() {
      if (bottom && map.hasLayer(bottom)) { bottom.bringToBack(); }
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

  return {
    registry: registry, addSettlements: addSettlements, addMarkers: addMarkers,
    addBlankSpots: addBlankSpots, keepOrder: keepOrder, legendFollows: legendFollows
  };
})();
