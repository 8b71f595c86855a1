// fcgiscope dashboard. Plain JavaScript, no dependencies, no build step.
// Everything that came from a request is put on the page with textContent
// or as an SVG text node, never parsed as HTML.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const MAX_ROWS = 200;

  const state = {
    filter: "",        // "" or "failed"
    rows: [],          // Request objects, newest first
    selected: null,    // id of the request shown in the drawer
    summary: null,
  };

  // ---- small helpers ----------------------------------------------------

  // el builds an element; string children become text nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function $(id) { return document.getElementById(id); }

  function fmtMS(ms) {
    if (ms === null || ms === undefined || isNaN(ms)) return "–";
    if (ms < 1) return ms.toFixed(2) + " ms";
    if (ms < 100) return ms.toFixed(1) + " ms";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
    return (ms / 60000).toFixed(1) + " min";
  }

  function fmtBytes(n) {
    if (!n) return "0";
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    const p = (x, n) => String(x).padStart(n || 2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()) + "." + p(d.getMilliseconds(), 3);
  }

  function ago(iso) {
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return (s / 3600).toFixed(1) + " h ago";
  }

  function fmtRate(r) {
    if (r >= 100) return Math.round(r).toString();
    if (r >= 10) return r.toFixed(1);
    return r.toFixed(2);
  }

  function statusClass(s) { return "st s" + String(s).charAt(0); }

  function outcomeBadge(q) {
    if (!q.failed) return el("span", { class: "badge", text: "ok" });
    const warn = q.status && q.status < 500;
    return el("span", { class: "badge " + (warn ? "warn" : "bad"), title: q.title || "", text: q.outcome });
  }

  async function getJSON(url) {
    const resp = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (resp.status === 401) {
      location.reload(); // the page shows the sign-in form
      throw new Error("signed out");
    }
    const body = await resp.json().catch(() => null);
    if (!resp.ok) {
      const err = new Error((body && body.error) || resp.statusText);
      err.status = resp.status;
      err.body = body;
      throw err;
    }
    return body;
  }

  // ---- recent requests table -------------------------------------------

  function matches(q) {
    return state.filter === "" || (state.filter === "failed" && q.failed);
  }

  function rowFor(q, fresh) {
    const tr = el("tr", {
      class: [q.failed ? "failed" : "", fresh ? "fresh" : "", state.selected === q.id ? "selected" : ""].join(" ").trim(),
      "data-id": q.id,
      tabindex: 0,
      title: q.failed ? q.outcome + ": " + (q.title || "") : "",
      onclick: () => openDetail(q.id),
      onkeydown: (ev) => { if (ev.key === "Enter") openDetail(q.id); },
    },
      el("td", { title: "started " + fmtTime(q.time), text: fmtTime(q.end) }),
      el("td", { text: q.method || "–" }),
      el("td", { class: "uri", title: q.uri, text: q.uri || "–" }),
      el("td", { class: "num " + statusClass(q.status), text: q.status || "–" }),
      el("td", {}, outcomeBadge(q)),
      el("td", { class: "num", text: fmtMS(q.duration_ms) }),
      el("td", { class: "num", text: fmtBytes(q.bytes_out) }),
    );
    return tr;
  }

  function renderRows() {
    const body = $("rows");
    body.replaceChildren(...state.rows.map((q) => rowFor(q, false)));
    $("rows-empty").hidden = state.rows.length > 0;
  }

  function addRow(q) {
    if (!matches(q) || state.rows.some((r) => r.id === q.id)) return;
    state.rows.unshift(q);
    const body = $("rows");
    body.prepend(rowFor(q, true));
    while (state.rows.length > MAX_ROWS) {
      state.rows.pop();
      body.lastElementChild && body.lastElementChild.remove();
    }
    $("rows-empty").hidden = true;
  }

  async function loadRows() {
    const params = new URLSearchParams({ limit: "100" });
    if (state.filter) params.set("outcome", state.filter);
    try {
      state.rows = await getJSON("api/requests?" + params);
      renderRows();
    } catch (e) {
      console.warn("loading requests:", e);
    }
  }

  // ---- live updates -----------------------------------------------------

  function connectEvents() {
    const live = $("live");
    const es = new EventSource("api/events");
    es.onopen = () => {
      live.className = "pill good";
      live.textContent = "live";
    };
    es.onerror = () => {
      live.className = "pill off";
      live.textContent = "reconnecting…";
    };
    es.addEventListener("request", (ev) => {
      try { addRow(JSON.parse(ev.data)); } catch (e) { console.warn(e); }
    });
    // Events were dropped because this page fell behind: reload the list.
    es.addEventListener("dropped", () => loadRows());
  }

  // ---- summary: KPIs, chart, causes, pool ------------------------------

  async function loadSummary() {
    let s;
    try {
      s = await getJSON("api/summary");
    } catch (e) {
      console.warn("loading summary:", e);
      return;
    }
    state.summary = s;
    $("upstream").textContent = s.upstream ? "upstream " + s.upstream : "";
    $("version").textContent = "fcgiscope " + s.version + (s.commit ? " (" + s.commit.slice(0, 12) + ")" : "") + " · " + s.go_version;

    $("rate").textContent = fmtRate(s.rate);
    const lastMin = s.series.slice(-12);
    const failedLastMin = lastMin.reduce((a, b) => a + b.failed, 0);
    const countLastMin = lastMin.reduce((a, b) => a + b.count, 0);
    $("errors").textContent = (s.error_rate * 100).toFixed(s.error_rate > 0 && s.error_rate < 0.1 ? 1 : 0) + " %";
    $("errors-sub").textContent = failedLastMin + " of " + countLastMin + " · last minute";
    $("kpi-errors").classList.toggle("alert", failedLastMin > 0);
    $("p95").textContent = fmtMS(s.p95_ms);
    $("inflight").textContent = s.in_flight === null ? "–" : String(Math.round(s.in_flight));
    $("queued").textContent = s.queued === null ? "\u00a0" : Math.round(s.queued) + " waiting for a slot";

    if (s.pool) {
      $("busy").textContent = s.pool.busy + " / " + s.pool.total;
      $("busy-sub").textContent = s.pool.idle + " idle" + (s.pool.kept ? " · " + s.pool.kept + " on kept connections" : "") + " · pool " + s.pool.name;
    } else {
      $("busy").textContent = "–";
      $("busy-sub").textContent = "status page not polled";
    }

    renderChart(s);
    renderCauses(s);
    renderPool(s);
  }

  function renderChart(s) {
    const box = $("chart");
    const W = Math.max(box.clientWidth, 320);
    const H = box.clientHeight || 250;
    const padL = 62, padR = 12, padT = 10;
    const barH = 46, gap = 22;
    const lineH = H - padT - barH - gap - 18;
    const series = s.series;
    const n = series.length;
    const x = (i) => padL + (i + 0.5) * ((W - padL - padR) / n);
    const bw = Math.max(1, (W - padL - padR) / n - 1.5);

    // Latency on a log scale: PHP pages span a tenth of a millisecond to
    // a minute.
    let maxMS = 1, minMS = 1;
    for (const b of series) {
      if (b.p99_ms) maxMS = Math.max(maxMS, b.p99_ms);
      if (b.p50_ms) minMS = Math.min(minMS, b.p50_ms);
    }
    const top = Math.pow(10, Math.ceil(Math.log10(maxMS * 1.05)));
    const bottom = Math.max(Math.pow(10, Math.floor(Math.log10(Math.max(minMS, 0.01)))), top / 1e5);
    const ly = (ms) => {
      const v = Math.max(ms, bottom);
      return padT + lineH - (Math.log10(v / bottom) / Math.log10(top / bottom)) * lineH;
    };

    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "latency percentiles and request counts" });
    for (let v = bottom; v <= top * 1.0001; v *= 10) {
      const yy = ly(v);
      root.append(svg("line", { class: "grid", x1: padL, x2: W - padR, y1: yy, y2: yy }));
      root.append(svg("text", { class: "axis", x: padL - 8, y: yy + 4, "text-anchor": "end" }, fmtMS(v)));
    }

    for (const [key, cls] of [["p50_ms", "50"], ["p95_ms", "95"], ["p99_ms", "99"]]) {
      let d = "";
      let pen = false;
      series.forEach((b, i) => {
        const v = b[key];
        if (v === null || v === undefined) { pen = false; return; }
        d += (pen ? "L" : "M") + x(i).toFixed(1) + " " + ly(v).toFixed(1) + " ";
        pen = true;
        // A lone point would not show as a line.
        const prev = series[i - 1], next = series[i + 1];
        if ((!prev || prev[key] == null) && (!next || next[key] == null)) {
          root.append(svg("circle", { class: "dot" + cls, cx: x(i), cy: ly(v), r: 2.5 }));
        }
      });
      if (d) root.append(svg("path", { class: "line l" + cls, d }));
    }

    // Requests per bucket, failed ones in red.
    const barTop = padT + lineH + gap;
    let maxCount = 1;
    for (const b of series) maxCount = Math.max(maxCount, b.count);
    root.append(svg("line", { class: "grid", x1: padL, x2: W - padR, y1: barTop + barH, y2: barTop + barH }));
    root.append(svg("text", { class: "axis", x: padL - 8, y: barTop + 9, "text-anchor": "end" }, maxCount + " req"));
    series.forEach((b, i) => {
      if (!b.count) return;
      const h = Math.max(1.5, (b.count / maxCount) * barH);
      const fh = b.failed ? Math.max(1.5, (b.failed / maxCount) * barH) : 0;
      root.append(svg("rect", { class: "bar", x: x(i) - bw / 2, y: barTop + barH - h, width: bw, height: h - fh }));
      if (fh) root.append(svg("rect", { class: "barbad", x: x(i) - bw / 2, y: barTop + barH - fh, width: bw, height: fh }));
    });

    // Time axis: minutes before now.
    const bucketS = s.bucket_s;
    for (let i = n - 1; i >= 0; i -= 120 / bucketS) {
      const mins = Math.round(((n - 1 - i) * bucketS) / 60);
      root.append(svg("text", { class: "axis", x: x(i), y: H - 3, "text-anchor": "middle" }, mins === 0 ? "now" : "−" + mins + " min"));
    }

    // Hover targets with the bucket's numbers as a tooltip.
    series.forEach((b, i) => {
      const r = svg("rect", { class: "hover", x: x(i) - bw / 2 - 0.75, y: padT, width: bw + 1.5, height: H - padT - 16 });
      const t = new Date(b.t);
      const lines = [t.toLocaleTimeString() + " (+" + bucketS + " s)", b.count + " requests, " + b.failed + " failed"];
      if (b.p50_ms != null) lines.push("p50 " + fmtMS(b.p50_ms) + " · p95 " + fmtMS(b.p95_ms) + " · p99 " + fmtMS(b.p99_ms) + " · max " + fmtMS(b.max_ms));
      r.append(svg("title", {}, lines.join("\n")));
      root.append(r);
    });
    box.replaceChildren(root);
  }

  function renderCauses(s) {
    const rows = s.causes.map((c) => el("tr", {},
      el("td", {},
        el("span", { class: "badge " + (c.status < 500 ? "warn" : "bad"), text: c.id }),
        el("div", { class: "title", text: c.title })),
      el("td", { class: "num count", text: c.count }),
      el("td", { class: "muted", title: new Date(c.last_seen).toLocaleString(), text: ago(c.last_seen) }),
      el("td", {},
        el("button", {
          type: "button", class: "link", title: "show this request",
          onclick: () => openDetail(c.latest.id),
        }, (c.latest.method || "") + " " + (c.latest.uri || "")),
        el("div", { class: "title", text: c.latest.status + " · " + fmtMS(c.latest.duration_ms) })),
    ));
    $("causes").replaceChildren(...rows);
    $("causes-empty").hidden = rows.length > 0;
  }

  function renderPool(s) {
    const box = $("pool");
    const p = s.pool;
    if (!p) {
      $("pool-name").textContent = "";
      box.replaceChildren(el("p", { class: "empty" },
        "php-fpm's status page is not being polled. Set pm.status_path in the pool and tell fcgiscope the path (FCGISCOPE_FPM_STATUS_PATH) to see every worker here."));
      return;
    }
    $("pool-name").textContent = "· " + p.name + " (" + p.process_manager + ")";
    const bar = el("div", { class: "poolbar", title: p.busy + " busy, " + p.idle + " idle" });
    const busy = el("div", { class: "busy" });
    const idle = el("div", { class: "idle" });
    busy.style.width = (p.total ? (100 * p.busy) / p.total : 0) + "%";
    idle.style.width = (p.total ? (100 * p.idle) / p.total : 0) + "%";
    bar.append(busy, idle);
    const sum = el("div", { class: "pool-sum" },
      el("span", {}, el("b", { text: p.busy }), " busy"),
      el("span", {}, el("b", { text: p.idle }), " idle"),
      el("span", { title: "waiting for their next request on a connection kept open (FCGISCOPE_UPSTREAM_KEEPALIVE, nginx's fastcgi_keep_conn); php-fpm counts them as active" }, el("b", { text: p.kept }), " on kept connections"),
      el("span", {}, el("b", { text: p.total }), " workers"),
      el("span", {}, el("b", { text: p.listen_queue }), " in listen queue"),
      el("span", {}, el("b", { text: p.max_children_reached }), " × max_children reached"),
      el("span", {}, el("b", { text: p.slow_requests }), " slow"),
      el("span", { class: "muted", text: "status " + Math.round(p.age_s) + " s old" }));
    let longest = 1;
    for (const w of p.workers) if (w.busy) longest = Math.max(longest, w.duration_ms);
    const rows = p.workers.map((w) => {
      const fill = el("div", { class: "fill" });
      fill.style.width = (w.busy ? Math.min(100, (100 * w.duration_ms) / longest) : 0) + "%";
      const what = w.status_poll ? "answering the status poll" : ([w.method, w.uri].filter(Boolean).join(" ") || "–");
      const quiet = w.status_poll || what === "–";
      return el("tr", {},
        el("td", { class: "mono", text: w.pid }),
        el("td", {}, el("span", { class: "badge " + (w.busy ? "warn" : "idle"), text: w.state })),
        el("td", { class: "what" + (quiet ? " quiet" : ""), title: quiet ? "" : (w.busy ? "running " : "last ran ") + what + (w.script ? "\n" + w.script : ""), text: what }),
        el("td", {}, el("div", { class: "dur" }, el("span", { text: w.busy || !quiet ? fmtMS(w.duration_ms) : "" }), el("div", { class: "track" }, fill))),
        el("td", { class: "num muted", title: "requests served", text: w.requests }));
    });
    const table = el("table", { class: "workers" },
      el("thead", {}, el("tr", {},
        el("th", { text: "pid" }), el("th", { text: "state" }), el("th", { text: "request", title: "the request the worker runs, or the last one it ran when idle" }),
        el("th", { class: "num", text: "for" }), el("th", { class: "num", text: "served" }))),
      el("tbody", {}, ...rows));
    box.replaceChildren(bar, sum, p.workers.length ? table : el("p", { class: "empty", text: "No per-worker list in the status." }));
  }

  // ---- readiness --------------------------------------------------------

  async function loadReady() {
    const pill = $("ready");
    try {
      const resp = await fetch("readyz", { cache: "no-store" });
      const r = await resp.json();
      if (r.ready) {
        pill.className = "pill good";
        pill.textContent = "upstream ready";
        pill.title = r.check === "none" ? "no upstream configured" : "php-fpm answered in " + fmtMS(r.elapsed_ms);
      } else {
        pill.className = "pill bad";
        pill.textContent = "not ready: " + (r.cause || "unknown");
        pill.title = r.detail || r.title || "";
      }
    } catch (e) {
      pill.className = "pill off";
      pill.textContent = "readiness unknown";
    }
  }

  // ---- request detail drawer -------------------------------------------

  function selectRow(id) {
    for (const tr of $("rows").children) tr.classList.toggle("selected", Number(tr.dataset.id) === id);
  }

  function closeDetail() {
    state.selected = null;
    $("drawer").hidden = true;
    $("scrim").hidden = true;
    selectRow(null);
  }

  async function openDetail(id) {
    state.selected = id;
    selectRow(id);
    const drawer = $("drawer");
    const body = $("d-body");
    $("d-kicker").replaceChildren();
    $("d-title").textContent = "Request " + id;
    body.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    drawer.hidden = false;
    $("scrim").hidden = false;
    let q;
    try {
      q = await getJSON("api/requests/" + encodeURIComponent(id));
    } catch (e) {
      body.replaceChildren(el("p", { class: "note", text: e.status === 404
        ? "This request is no longer among the recent ones the dashboard keeps; fcgiscope's log has it."
        : "Could not load the request: " + e.message }));
      return;
    }
    if (state.selected !== id) return;
    renderDetail(q);
  }

  function renderDetail(q) {
    $("d-kicker").replaceChildren(
      el("span", { class: "badge " + (q.failed ? (q.status < 500 ? "warn" : "bad") : ""), text: q.outcome }),
      el("span", { class: statusClass(q.status), text: String(q.status || "no status") }),
      el("span", { class: "muted", text: fmtMS(q.duration_ms) + " · " + new Date(q.time).toLocaleString() }));
    $("d-title").textContent = q.failed ? (q.title || q.outcome) : "Completed normally";

    const parts = [];
    parts.push(el("div", { class: "reqline", text: (q.method || "") + " " + (q.uri || "") }));
    if (q.detail) parts.push(el("p", { class: "explain", text: q.detail }));
    if (q.redacted) {
      parts.push(el("p", { class: "note", text: "Script paths, query strings, addresses, explanations and stderr are hidden: this admin client gets minimal detail (FCGISCOPE_ERROR_DETAIL)." }));
    }
    if (q.hints && q.hints.length) {
      parts.push(el("h3", { text: "What to change" }));
      parts.push(el("ul", { class: "hints" }, ...q.hints.map((h) => el("li", { text: h }))));
    }
    if (q.replay_command) {
      // The same request, sent again after a fix, from a shell on this host.
      parts.push(el("h3", { text: "Send it again" }));
      parts.push(el("pre", { class: "replay", text: q.replay_command }));
      parts.push(el("p", { class: "note", text: "Replays the params php-fpm got, without cookies, Authorization or secret-looking query values; add --upstream to send it elsewhere." }));
    }
    parts.push(el("h3", { text: "Timeline" }));
    parts.push(timeline(q));
    parts.push(el("table", { class: "steps" }, el("tbody", {}, ...q.timeline.map((s) =>
      el("tr", {}, el("td", { class: "off", text: "+" + fmtMS(s.offset_ms) }), el("td", { text: s.label }))))));

    if (q.evidence && q.evidence.slowlog) {
      // php-fpm's slowlog stack, innermost frame first: where the time went.
      parts.push(el("h3", { text: "Where php-fpm's slowlog caught it (innermost first)" }));
      parts.push(el("ol", { class: "stack" }, ...q.evidence.slowlog.split(" <- ").map((f) => el("li", { text: f }))));
    }
    if (q.evidence && Object.keys(q.evidence).length) {
      parts.push(el("h3", { text: "Evidence" }));
      parts.push(kvTable(Object.keys(q.evidence).sort().map((k) => [k, q.evidence[k]])));
    }
    if (q.stderr) {
      parts.push(el("h3", { text: "php-fpm stderr" + (q.stderr_bytes > q.stderr.length ? " (first " + fmtBytes(q.stderr.length) + " of " + fmtBytes(q.stderr_bytes) + ")" : "") }));
      parts.push(el("pre", { class: "stderr", text: q.stderr }));
    }
    parts.push(el("h3", { text: "Request" }));
    const facts = [
      ["request_id", q.request_id],
      ["script", q.script],
      ["host", q.host],
      ["client", q.remote_addr],
      ["upstream", q.upstream],
      ["phase", q.phase],
      ["fpm_pid", q.fpm_pid],
      ["bytes in / out", fmtBytes(q.bytes_in) + " / " + fmtBytes(q.bytes_out)],
      ["queue / connect / ttfb", fmtMS(q.queue_ms) + " / " + fmtMS(q.connect_ms) + " / " + fmtMS(q.ttfb_ms)],
      ["connection", "#" + q.conn_id + (q.keep_conn ? " (keep-alive)" : "")],
      ["dial attempts", q.dial_attempts],
      ["resent", q.resent],
      ["replaced response", q.replaced ? "yes: the client got fcgiscope's explanation" : null],
      ["truncated", q.truncated ? "yes: the transfer was broken off" : null],
    ].filter(([, v]) => v !== undefined && v !== null && v !== "" && v !== 0);
    parts.push(kvTable(facts));
    $("d-body").replaceChildren(...parts);
  }

  function kvTable(pairs) {
    return el("table", { class: "kv" }, el("tbody", {}, ...pairs.map(([k, v]) =>
      el("tr", {}, el("td", { text: k }), el("td", { text: String(v) })))));
  }

  // timeline draws the request's stretches as a waterfall.
  function timeline(q) {
    const wrap = el("div", { class: "timeline" });
    const spans = q.spans || [];
    const total = Math.max(q.duration_ms, ...spans.map((s) => s.end_ms), 0.001);
    const W = 660, rowH = 22, labelW = 170, padR = 70;
    const H = spans.length * rowH + 26;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "request timeline" });
    const sx = (ms) => labelW + (ms / total) * (W - labelW - padR);
    for (let i = 0; i <= 4; i++) {
      const ms = (total * i) / 4;
      root.append(svg("line", { class: "tick", x1: sx(ms), x2: sx(ms), y1: 0, y2: H - 16 }));
      root.append(svg("text", { class: "off", x: sx(ms), y: H - 3, "text-anchor": "middle" }, fmtMS(ms)));
    }
    spans.forEach((s, i) => {
      const y = i * rowH + 4;
      root.append(svg("text", { class: "lbl", x: 0, y: y + 13 }, s.label));
      const w = Math.max(2, sx(s.end_ms) - sx(s.start_ms));
      const r = svg("rect", { class: "span-" + s.name, x: sx(s.start_ms), y, width: w, height: rowH - 8, rx: 3 });
      r.append(svg("title", {}, s.label + ": " + fmtMS(s.end_ms - s.start_ms) + " (+" + fmtMS(s.start_ms) + " → +" + fmtMS(s.end_ms) + ")"));
      root.append(r);
      root.append(svg("text", { class: "off", x: sx(s.start_ms) + w + 5, y: y + 12 }, fmtMS(s.end_ms - s.start_ms)));
    });
    if (q.failed) root.append(svg("line", { class: "endmark", x1: sx(q.duration_ms), x2: sx(q.duration_ms), y1: 0, y2: H - 16 }));
    wrap.append(root);
    return wrap;
  }

  // ---- start ------------------------------------------------------------

  function start() {
    for (const b of document.querySelectorAll(".tabs button")) {
      b.addEventListener("click", () => {
        for (const o of document.querySelectorAll(".tabs button")) o.classList.toggle("on", o === b);
        state.filter = b.dataset.filter;
        loadRows();
      });
    }
    $("d-close").addEventListener("click", closeDetail);
    $("scrim").addEventListener("click", closeDetail);
    document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeDetail(); });
    window.addEventListener("resize", () => state.summary && renderChart(state.summary));

    loadRows().then(connectEvents);
    loadSummary();
    loadReady();
    setInterval(loadSummary, 2000);
    setInterval(loadReady, 5000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
