// The device page's charts: one per metric, drawn with plotly.js from the telemetry aggregate
// endpoint (GET /api/v1/devices/{id}/telemetry/aggregate/). The hub sizes the buckets to the
// range (at most ~300: 1 h in 1 min buckets, 24 h in 5 min, 7 d in 1 h, 30 d in 3 h). Each chart
// shows the average per bucket with its min-max band, the type's expected range and every rule's
// threshold as horizontal lines, and redraws itself while the range ends "now".
(function () {
  "use strict";

  var RANGES = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
  // Redraw a live range about as often as its buckets fill.
  var REFRESH = { "1h": 15e3, "24h": 60e3, "7d": 300e3, "30d": 600e3 };
  var LINE_COLORS = { range: "#6e7781", rule: "#c62828" };

  var config = JSON.parse(document.getElementById("chart-config").textContent);
  var statusLine = document.querySelector(".chart-status");
  var buttons = document.querySelectorAll(".chart-controls [data-range]");
  var fromInput = document.querySelector('.chart-controls input[name="from"]');
  var toInput = document.querySelector('.chart-controls input[name="to"]');
  var timer = null;
  var state = initialState();

  // What the browser tests (and a curious operator in the console) can read back.
  window.iothubCharts = {};

  function initialState() {
    var params = new URLSearchParams(window.location.search);
    if (params.get("from") && params.get("to")) {
      return { range: "custom", from: new Date(params.get("from")), to: new Date(params.get("to")) };
    }
    var range = params.get("range");
    return { range: RANGES[range] ? range : "1h" };
  }

  function window_() {
    if (state.range === "custom") return { from: state.from, to: state.to };
    var to = new Date();
    return { from: new Date(to.getTime() - RANGES[state.range]), to: to };
  }

  function localInputValue(date) {
    var shifted = new Date(date.getTime() - date.getTimezoneOffset() * 60e3);
    return shifted.toISOString().slice(0, 16);
  }

  function remember() {
    var params = new URLSearchParams();
    if (state.range === "custom") {
      params.set("from", state.from.toISOString());
      params.set("to", state.to.toISOString());
    } else {
      params.set("range", state.range);
    }
    window.history.replaceState(null, "", "?" + params.toString());
    buttons.forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.range === state.range));
    });
  }

  function lineShapes(lines) {
    return lines.map(function (line) {
      return {
        type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: line.value, y1: line.value,
        line: { color: LINE_COLORS[line.kind] || "#888", width: 1.5, dash: line.kind === "rule" ? "dash" : "dot" },
      };
    });
  }

  function lineLabels(lines) {
    return lines.map(function (line) {
      return {
        xref: "paper", x: 1, xanchor: "right", yref: "y", y: line.value, yanchor: "bottom",
        text: line.label, showarrow: false,
        font: { size: 11, color: LINE_COLORS[line.kind] || "#888" },
      };
    });
  }

  function draw(element, chart, answer, span) {
    var buckets = answer.buckets;
    var x = buckets.map(function (b) { return b.bucket; });
    var avg = buckets.map(function (b) { return b.avg; });
    var traces = [
      { name: "max", x: x, y: buckets.map(function (b) { return b.max; }), mode: "lines",
        line: { width: 0 }, hoverinfo: "skip", showlegend: false },
      { name: "min–max", x: x, y: buckets.map(function (b) { return b.min; }), mode: "lines",
        line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(31,111,235,0.15)", hoverinfo: "skip" },
      { name: "average", x: x, y: avg, mode: "lines+markers", type: "scatter",
        line: { color: "#1f6feb", width: 2 }, marker: { size: 5 },
        customdata: buckets.map(function (b) { return [b.min, b.max, b.count]; }),
        hovertemplate: "%{y:.3f}" + (chart.unit ? " " + chart.unit : "") +
          "<br>min %{customdata[0]:.3f}, max %{customdata[1]:.3f}<br>%{customdata[2]} readings<extra></extra>" },
    ];
    var annotations = lineLabels(chart.lines);
    if (!buckets.length) {
      annotations.push({ xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false,
        text: "No readings in this range", font: { size: 14, color: "#667585" } });
    }
    var layout = {
      margin: { l: 48, r: 12, t: 8, b: 36 },
      xaxis: { type: "date", range: [span.from.toISOString(), span.to.toISOString()] },
      yaxis: { title: { text: chart.unit || "" }, zeroline: false },
      shapes: lineShapes(chart.lines),
      annotations: annotations,
      legend: { orientation: "h", y: -0.2 },
      showlegend: false,
      hovermode: "x unified",
    };
    window.Plotly.react(element, traces, layout, { responsive: true, displaylogo: false });
    element.dataset.points = String(avg.length);
    element.dataset.bucketSeconds = String(answer.bucket_seconds);
    window.iothubCharts[chart.metric] = {
      points: avg.length, bucketSeconds: answer.bucket_seconds, lines: chart.lines.map(function (l) { return l.value; }),
    };
  }

  function load() {
    var span = window_();
    var elements = document.querySelectorAll(".chart[data-metric]");
    var pending = elements.length;
    var bucketSeconds = null;
    statusLine.textContent = "Loading…";
    elements.forEach(function (element, index) {
      var chart = config.charts[index];
      var params = new URLSearchParams({
        metric: chart.metric, from: span.from.toISOString(), to: span.to.toISOString(), agg: "avg,min,max,count",
      });
      fetch(config.aggregateUrl + "?" + params.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) {
            return response.json().then(function (body) { throw new Error(JSON.stringify(body)); });
          }
          return response.json();
        })
        .then(function (answer) {
          bucketSeconds = answer.bucket_seconds;
          draw(element, chart, answer, span);
        })
        .catch(function (error) {
          element.dataset.error = String(error.message || error);
          element.textContent = "Could not load " + chart.metric + ": " + (error.message || error);
        })
        .finally(function () {
          pending -= 1;
          if (pending === 0) {
            statusLine.textContent = "Buckets of " + human(bucketSeconds) + ", " + span.from.toLocaleString() +
              " to " + span.to.toLocaleString() + (state.range === "custom" ? "" : ", refreshing by itself");
            document.body.dataset.chartsLoadedAt = new Date().toISOString();
          }
        });
    });
  }

  function human(seconds) {
    if (!seconds) return "–";
    if (seconds % 86400 === 0) return seconds / 86400 + " d";
    if (seconds % 3600 === 0) return seconds / 3600 + " h";
    if (seconds % 60 === 0) return seconds / 60 + " min";
    return seconds + " s";
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = null;
    if (state.range !== "custom") {
      timer = setInterval(function () { if (!document.hidden) load(); }, REFRESH[state.range]);
    }
  }

  function show() {
    remember();
    var span = window_();
    fromInput.value = localInputValue(span.from);
    toInput.value = localInputValue(span.to);
    load();
    schedule();
  }

  buttons.forEach(function (button) {
    button.addEventListener("click", function () {
      if (button.dataset.range === "custom") {
        var from = new Date(fromInput.value);
        var to = new Date(toInput.value);
        if (isNaN(from) || isNaN(to) || from >= to) {
          statusLine.textContent = "Choose a start before the end.";
          return;
        }
        state = { range: "custom", from: from, to: to };
      } else {
        state = { range: button.dataset.range };
      }
      show();
    });
  });

  show();
})();
