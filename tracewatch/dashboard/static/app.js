/* tracewatch dashboard: plain JS over the worker's /api/* views, charts by uPlot (vendor/).
 *
 * URL parameters: route, range (15m 1h 6h 24h 7d 30d), or from/to (anything /api accepts).
 * When a render finishes, #render-status says so for machines (the end-to-end test reads it):
 * data-state="ready", data-points (all plotted values), data-charts (JSON: chart id -> values),
 * data-markers (alert and breaker markers in range).
 *
 * The worker's /api/* views need its token (tracewatch/streams/web_access.py). The page gets
 * it once in the URL fragment (`tracewatch dashboard-url` prints /dashboard#token=...): a
 * fragment is never sent to a server nor logged. The token moves to sessionStorage (this tab
 * and this origin only), leaves the address bar, and goes out as an Authorization header on
 * every fetch. No cookie: a browser would attach one to requests from pages on other local
 * ports too (same-site ignores ports).
 */
(function () {
  "use strict";

  var RANGES = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000 };
  var PALETTE = ["#2f6fdf", "#16a085", "#8e44ad", "#c0392b", "#d4a017", "#2c3e50", "#e67e22"];
  var CHARTS = [
    { id: "cost", title: "cost per call ($)", fmt: money,
      series: [{ key: "cost_p95", label: "p95" }, { key: "cost_p50", label: "p50" }] },
    { id: "latency", title: "latency (ms)", fmt: plain,
      series: [{ key: "latency_p95", label: "p95" }, { key: "latency_p50", label: "p50" }] },
    { id: "errors", title: "error rate (errors + timeouts, %)", fmt: plain,
      series: [{ key: "error_rate", label: "error rate", scale: 100 }] },
    { id: "scores", title: "evaluator score means", fmt: plain, series: "scores" },
    { id: "loop", title: "agent loop depth", fmt: plain,
      series: [{ key: "loop_depth_max", label: "max" }, { key: "loop_depth_p95", label: "p95" }] },
  ];

  var TOKEN_KEY = "tracewatch.token";
  var HOW_TO_OPEN = "open the dashboard through the link `tracewatch dashboard-url` prints " +
    "(it carries the worker's token, which changes at each restart of the worker)";
  var query = new URLSearchParams(window.location.search);
  var state = {
    route: query.get("route") || "",
    range: RANGES[query.get("range")] ? query.get("range") : "1h",
    from: query.get("from"),
    to: query.get("to"),
  };
  var plots = [];
  var status = document.getElementById("render-status");

  function $(id) { return document.getElementById(id); }
  function plain(v) { return v == null ? "" : (Math.abs(v) >= 100 ? v.toFixed(0) : +v.toPrecision(3)) + ""; }
  function money(v) { return v == null ? "" : "$" + (+v.toPrecision(3)); }
  function utc(seconds) { return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19); }
  function esc(text) {
    return String(text == null ? "" : text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  /* the token from #token=... (then forgotten by the address bar), else from this tab's session */
  function takeToken() {
    var fragment = new URLSearchParams(window.location.hash.slice(1));
    var given = fragment.get("token");
    if (given) {
      try { window.sessionStorage.setItem(TOKEN_KEY, given); } catch (e) { /* storage off */ }
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
      return given;
    }
    try { return window.sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }
  var token = takeToken();

  function getJSON(path, params) {
    if (!token) { return Promise.reject(new Error("this page has no token: " + HOW_TO_OPEN)); }
    var url = path + "?" + new URLSearchParams(params).toString();
    return fetch(url, { headers: { Authorization: "Bearer " + token }, credentials: "omit" })
      .then(function (response) {
        if (response.status === 401) {
          throw new Error("the worker refused this page's token: " + HOW_TO_OPEN);
        }
        return response.json().then(function (body) {
          if (!response.ok) { throw new Error(body.error || response.statusText); }
          return body;
        });
      });
  }

  function window_() {
    if (state.from) { return { from: state.from, to: state.to || "now" }; }
    return { from: state.range, to: "now" };  // "6h" = six hours ago
  }

  function pushState() {
    var p = new URLSearchParams();
    if (state.route) { p.set("route", state.route); }
    if (state.from) { p.set("from", state.from); if (state.to) { p.set("to", state.to); } }
    else { p.set("range", state.range); }
    window.history.replaceState(null, "", "?" + p.toString());
  }

  function fillRoutes(routes) {
    var select = $("route");
    var names = routes.map(function (r) { return r.route; });
    if (state.route && names.indexOf(state.route) < 0) { names.unshift(state.route); }
    if (!state.route && names.length) { state.route = names[0]; }
    select.innerHTML = names.map(function (name) {
      return "<option" + (name === state.route ? " selected" : "") + ">" + esc(name) + "</option>";
    }).join("");
  }

  function rowsOrEmpty(rows, columns, text) {
    return rows.length ? rows.join("") : '<tr><td class="empty" colspan="' + columns + '">' + text + "</td></tr>";
  }

  function fillNow(alerts, breakers) {
    var firing = alerts.firing || [];
    $("alerts-count").textContent = "(" + firing.length + ")";
    $("alerts").tBodies[0].innerHTML = rowsOrEmpty(firing.map(function (a) {
      var sev = (a.labels && a.labels.severity) || "";
      return "<tr><td>" + esc(utc(Date.parse(a.starts_at) / 1000)) + "</td><td>" + esc(a.alertname) +
        "</td><td>" + esc(a.labels && a.labels.route) + '</td><td class="severity-' + esc(sev) + '">' +
        esc(sev) + "</td><td>" + esc(a.summary) + "</td></tr>";
    }), 5, "no alert is firing");
    var open = breakers.open || [];
    $("breakers-count").textContent = "(" + open.length + ")";
    $("breakers").tBodies[0].innerHTML = rowsOrEmpty(open.map(function (b) {
      var at = b.opened_at ? utc(Date.parse(b.opened_at) / 1000) : "-";
      return "<tr><td>" + esc(at) + "</td><td>" + esc(b.scope) + "</td><td>" + esc(b.reason) + "</td></tr>";
    }), 3, "no breaker is open");
  }

  function fillMarkers(markers) {
    $("markers").tBodies[0].innerHTML = rowsOrEmpty(markers.map(function (m) {
      var what = m.kind === "alert" ? "alert " + m.alertname + " (" + m.status + ")" : "breaker " + m.scope;
      var detail = m.kind === "alert" ? m.summary : m.reason;
      return "<tr><td>" + esc(utc(m.at)) + "</td><td>" + esc(what) + "</td><td>" + esc(detail) + "</td></tr>";
    }), 3, "no alert fired and no breaker opened on this route in this range");
  }

  /* uPlot plugin: a dashed vertical line per marker, alerts red and breakers orange */
  function markersPlugin(markers) {
    return {
      hooks: {
        draw: [function (u) {
          var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
          ctx.save();
          ctx.lineWidth = 1.5 * uPlot.pxRatio;
          ctx.setLineDash([5 * uPlot.pxRatio, 4 * uPlot.pxRatio]);
          // breakers first, so an alert is never hidden behind a run of breaker openings
          markers.slice().sort(function (a, b) { return (a.kind === "alert") - (b.kind === "alert"); }).forEach(function (m) {
            var x = Math.round(u.valToPos(m.at, "x", true));
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) { return; }
            ctx.strokeStyle = m.kind === "alert" ? "#d33a2c" : "#e88a1a";
            ctx.lineWidth = (m.kind === "alert" ? 2.5 : 1.5) * uPlot.pxRatio;
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
          });
          ctx.restore();
        }],
      },
    };
  }

  function chartSeries(chart, data) {
    if (chart.series === "scores") {
      return Object.keys(data.scores).map(function (name) {
        return { label: name, values: data.scores[name] };
      });
    }
    return chart.series.map(function (s) {
      var values = data[s.key].map(function (v) { return v == null ? null : v * (s.scale || 1); });
      return { label: s.label, values: values };
    });
  }

  function drawCharts(data, markers) {
    plots.forEach(function (p) { p.destroy(); });
    plots = [];
    var holder = $("charts");
    holder.innerHTML = "";
    var counts = {};
    CHARTS.forEach(function (chart) {
      var card = document.createElement("div");
      card.className = "card chart";
      card.id = "chart-" + chart.id;
      holder.appendChild(card);
      var series = chartSeries(chart, data);
      counts[chart.id] = series.reduce(function (n, s) {
        return n + s.values.filter(function (v) { return v != null; }).length;
      }, 0);
      var width = Math.max(card.clientWidth - 30, 300);
      var opts = {
        title: chart.title,
        width: width,
        height: 220,
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
        scales: { x: { time: true, range: [data.start, data.end] } },
        series: [{}].concat(series.map(function (s, i) {
          return { label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: false,
                   value: function (u, v) { return chart.fmt(v); } };
        })),
        axes: [{}, { size: 76, values: function (u, ticks) { return ticks.map(chart.fmt); } }],
        plugins: [markersPlugin(markers)],
      };
      if (!series.length) { opts.series.push({ label: "no scores", stroke: "#ccc" }); series.push({ values: data.t.map(function () { return null; }) }); }
      var columns = [data.t].concat(series.map(function (s) { return s.values; }));
      plots.push(new uPlot(opts, columns, card));
    });
    return counts;
  }

  function setStatus(fields) {
    Object.keys(fields).forEach(function (k) { status.setAttribute("data-" + k, fields[k]); });
  }

  function showMessage(text) {
    var box = $("message");
    box.hidden = !text;
    box.textContent = text || "";
  }

  function load() {
    var range = window_();
    setStatus({ state: "loading" });
    return getJSON("/api/routes", range).then(function (body) {
      fillRoutes(body.routes);
      pushState();
      var params = Object.assign({ route: state.route }, range);
      if (!state.route) {
        return Promise.all([getJSON("/api/alerts", params), getJSON("/api/breakers", params)]).then(function (r) {
          fillNow(r[0], r[1]);
          showMessage("no route has events in this range yet");
          setStatus({ state: "empty", points: 0, charts: "{}", markers: 0 });
        });
      }
      return Promise.all([
        getJSON("/api/series", params), getJSON("/api/alerts", params), getJSON("/api/breakers", params),
      ]).then(function (r) {
        var series = r[0], alerts = r[1], breakers = r[2];
        var markers = (alerts.markers || []).concat(breakers.markers || []).sort(function (a, b) { return a.at - b.at; });
        showMessage("");
        fillNow(alerts, breakers);
        fillMarkers(markers);
        $("source").textContent = "from " + series.source + ", " + (series.step / 60) + " min steps";
        $("updated").textContent = "updated " + utc(Date.now() / 1000) + " UTC";
        var counts = drawCharts(series, markers);
        var total = Object.keys(counts).reduce(function (n, k) { return n + counts[k]; }, 0);
        setStatus({ state: "ready", points: total, charts: JSON.stringify(counts), markers: markers.length });
      });
    }).catch(function (err) {
      showMessage("could not load: " + err.message);
      setStatus({ state: "error", error: err.message });
    });
  }

  $("range").value = state.range;
  $("route").addEventListener("change", function (e) { state.route = e.target.value; load(); });
  $("range").addEventListener("change", function (e) {
    state.range = e.target.value; state.from = null; state.to = null; load();
  });
  load();
  window.setInterval(load, 30000);
})();
