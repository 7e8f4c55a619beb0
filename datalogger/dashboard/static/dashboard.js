/* The datalogger dashboard page: draws the snapshots pushed by the server (server-sent events).
 *
 * Every value from the server is written with textContent (or as a DOM property), never as
 * HTML: paths, referers, topic names and errors are data, whatever characters they hold.
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const page = { window: null, source: null, charts: {}, actions: false, windows: [] };

  function show(el, value) {
    el.textContent = value === null || value === undefined ? "-" : String(value);
  }

  function cell(tr, value, className) {
    const td = document.createElement("td");
    show(td, value);
    if (className) td.className = className;
    tr.appendChild(td);
    return td;
  }

  function bytes(n) {
    if (!n) return "0 B";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
  }

  function ago(epoch) {
    if (!epoch) return "never";
    const s = Math.max(0, Date.now() / 1000 - epoch);
    return s < 90 ? s.toFixed(0) + "s ago" : (s / 60).toFixed(0) + "m ago";
  }

  function fillCounts(id, pairs) {
    const rows = (pairs || []).map(function (pair) {
      const tr = document.createElement("tr");
      cell(tr, pair[0]);
      cell(tr, pair[1], "num");
      return tr;
    });
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      cell(tr, "none", "muted").colSpan = 2;
      rows.push(tr);
    }
    $(id).tBodies[0].replaceChildren.apply($(id).tBodies[0], rows);
  }

  /* ---------------------------------------------------------------- charts */
  function chartWidth(el) {
    return Math.max(260, el.clientWidth || 400);
  }

  function makeChart(id, series) {
    const el = $(id);
    const opts = {
      width: chartWidth(el),
      height: 190,
      scales: { x: { time: true } },
      series: [{}].concat(series),
      axes: [{}, { size: 56 }],
      legend: { show: true },
    };
    const data = [[]].concat(series.map(function () { return []; }));
    return new uPlot(opts, data, el);
  }

  function drawCharts(s) {
    if (typeof uPlot === "undefined") return;
    if (!page.charts.rate) {
      page.charts.rate = makeChart("chart-rate", [
        { label: "req/s", stroke: "#2563eb", fill: "rgba(37,99,235,0.12)", width: 2 },
      ]);
      page.charts.latency = makeChart("chart-latency", [
        { label: "p50", stroke: "#16a34a", width: 2, points: { show: true, size: 5 } },
        { label: "p95", stroke: "#d97706", width: 2, points: { show: true, size: 5 } },
        { label: "p99", stroke: "#dc2626", width: 2, points: { show: true, size: 5 } },
      ]);
    }
    page.charts.rate.setData([s.t, s.rps]);
    page.charts.latency.setData([s.t, s.p50, s.p95, s.p99]);
  }

  window.addEventListener("resize", function () {
    ["rate", "latency"].forEach(function (name) {
      const chart = page.charts[name];
      if (chart) chart.setSize({ width: chartWidth($("chart-" + name)), height: 190 });
    });
  });

  /* ---------------------------------------------------------------- analytics */
  function renderAnalytics(a) {
    show($("requests"), a.requests);
    show($("rate"), a.rate === null ? null : a.rate.toFixed(2));
    show($("p50"), a.p50);
    show($("p95"), a.p95);
    show($("p99"), a.p99);
    show($("live"), a.live.received);
    fillCounts("status-classes", a.status_classes);
    fillCounts("top-paths", a.top_paths);
    fillCounts("devices", a.devices);
    fillCounts("top-referers", a.top_referers);
    drawCharts(a.series);
    const notes = [];
    notes.push(a.history.source
      ? "history: " + a.history.source + " (read " + ago(a.history.loaded_at) + ")"
      : "history: none (no SQLite or PostgreSQL destination for the topic, or no configuration)");
    if (a.history.error) notes.push("history error: " + a.history.error);
    notes.push(a.live.subscribed
      ? "live: following topic " + a.live.topic
      : "live: not following (" + (a.live.error || "not subscribed") + ")");
    if (!a.complete) notes.push("only the latest " + a.max_rows + " requests are held: the window is incomplete");
    show($("analytics-notes"), notes.join(" \u00b7 "));
  }

  /* ---------------------------------------------------------------- pipeline */
  function stateText(lane) {
    if (lane.state === "ok") return "ok";
    const base = lane.state === "unhealthy" ? "unhealthy" : "failing";
    return lane.failing_for === null ? base : base + " " + lane.failing_for.toFixed(0) + "s";
  }

  function replayButton(lane) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "replay";
    button.addEventListener("click", function () {
      act("actions/replay", { topic: lane.topic, destination: lane.destination });
    });
    return button;
  }

  function renderPipeline(p) {
    const rows = p.lanes.map(function (lane) {
      const tr = document.createElement("tr");
      tr.dataset.lane = lane.topic + "/" + lane.destination;
      tr.dataset.state = lane.state;
      tr.className = "state-" + lane.state;
      cell(tr, lane.topic, "name");
      cell(tr, lane.destination, "name");
      cell(tr, stateText(lane), "state");
      cell(tr, lane.received, "num");
      cell(tr, lane.delivered, "num");
      cell(tr, lane.failed, "num");
      cell(tr, lane.retried, "num");
      cell(tr, lane.dead_lettered, "num");
      cell(tr, lane.dead_letters ? lane.dead_letters + " (" + lane.dead_letter_rows + " rows)" : "0", "num");
      cell(tr, lane.lag, "num");
      cell(tr, lane.buffered, "num");
      cell(tr, bytes(lane.wal_bytes), "num");
      cell(tr, lane.wal_only_rows, "num");
      const errorText = lane.last_error || (lane.problems.length ? lane.problems[0] : "");
      const err = cell(tr, errorText, "error");
      err.title = lane.problems.concat(lane.last_error ? [lane.last_error] : []).join("\n");
      if (lane.wal_corrupt_records) {
        err.textContent = "WAL corrupt records: " + lane.wal_corrupt_records + ". " + errorText;
      }
      const action = cell(tr, "", "action-col");
      if (page.actions && lane.dead_letters > 0) action.appendChild(replayButton(lane));
      return tr;
    });
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      cell(tr, "no topic has been logged to yet", "muted").colSpan = 15;
      rows.push(tr);
    }
    const tbody = $("lanes").tBodies[0];
    tbody.replaceChildren.apply(tbody, rows);

    const client = p.client;
    $("client").hidden = !client;
    if (client) {
      const items = [];
      Object.keys(client).forEach(function (key) {
        const dt = document.createElement("dt");
        dt.textContent = key.replace(/_/g, " ");
        const dd = document.createElement("dd");
        show(dd, client[key]);
        items.push(dt, dd);
      });
      $("client-values").replaceChildren.apply($("client-values"), items);
    }

    const problems = p.problems.map(function (text) {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    });
    $("problems").replaceChildren.apply($("problems"), problems);

    const notes = ["rejected calls: " + p.rejected, "unhealthy after failing " + p.failing_after + "s"];
    if (!p.dead_letters_checked) notes.push("dead letters not checked (no configuration)");
    if (p.dead_letter_error) notes.push(p.dead_letter_error);
    if (p.node_error) notes.push("node: " + p.node_error);
    show($("pipeline-notes"), notes.join(" \u00b7 "));

    const health = $("health");
    if (p.node_error) {
      health.dataset.state = "down";
      health.textContent = "node unreachable";
    } else if (p.healthy) {
      health.dataset.state = "healthy";
      health.textContent = "healthy";
    } else {
      health.dataset.state = "unhealthy";
      health.textContent = "unhealthy: " + p.problems.length + " problem(s)";
    }
  }

  /* ---------------------------------------------------------------- actions */
  function act(path, body) {
    const token = $("token").value;
    const result = $("action-result");
    if (!token) {
      result.textContent = "type the token first";
      return;
    }
    result.textContent = "working...";
    fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Datalogger-Token": token },
      body: JSON.stringify(body || {}),
      credentials: "omit",
    }).then(function (response) {
      return response.json().then(function (data) {
        result.textContent = (response.ok ? "done: " : "refused: ") + JSON.stringify(data);
      });
    }).catch(function (error) {
      result.textContent = "failed: " + error;
    });
  }

  $("shutdown").addEventListener("click", function () {
    if (window.confirm("Shut the datalogger node down?")) act("actions/shutdown", {});
  });

  /* ---------------------------------------------------------------- the stream */
  function render(snapshot) {
    page.actions = snapshot.actions;
    $("actions").hidden = !snapshot.actions;
    if (page.windows.length === 0) {
      page.windows = snapshot.windows;
      const select = $("window");
      snapshot.windows.forEach(function (w) {
        const option = document.createElement("option");
        option.value = w;
        option.textContent = w === "all" ? "all" : "last " + w;
        select.appendChild(option);
      });
    }
    $("window").value = snapshot.window;
    renderAnalytics(snapshot.analytics);
    renderPipeline(snapshot.pipeline);
    show($("updated"), "updated " + new Date(snapshot.generated_at * 1000).toLocaleTimeString());
    document.body.dataset.generatedAt = String(snapshot.generated_at);
  }

  function setConnection(state, label) {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = label;
  }

  function follow(w) {
    if (page.source) page.source.close();
    page.window = w;
    const url = w ? "events?window=" + encodeURIComponent(w) : "events";
    const source = new EventSource(url);
    page.source = source;
    source.addEventListener("snapshot", function (event) {
      setConnection("live", "live");
      render(JSON.parse(event.data));
    });
    source.addEventListener("failure", function (event) {
      setConnection("error", "error: " + JSON.parse(event.data).error);
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED && w) {
        follow(null); // refused (an unknown window in the address): the default window
        return;
      }
      setConnection("reconnecting", "reconnecting");
    });
  }

  $("window").addEventListener("change", function (event) {
    const w = event.target.value;
    history.replaceState(null, "", "#" + encodeURIComponent(w));
    follow(w);
  });

  const fromHash = decodeURIComponent(location.hash.slice(1));
  follow(/^[0-9a-z]{1,8}$/.test(fromHash) ? fromHash : null);
})();
