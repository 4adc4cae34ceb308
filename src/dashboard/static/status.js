// meshward status page: polls status.json and renders it. Every value from the feed is put in
// the page with textContent or setAttribute — never as HTML.
"use strict";
(function () {
  var REFRESH_MS = 2000;
  var SVG = "http://www.w3.org/2000/svg";
  var token = takeToken();
  var lastGood = null;
  var failingSince = null;

  /** A ?token= in the address bar moves to sessionStorage, so it is not left on screen or in history. */
  function takeToken() {
    var params = new URLSearchParams(location.search);
    var fromUrl = params.get("token");
    if (fromUrl) {
      try { sessionStorage.setItem("meshward-status-token", fromUrl); } catch (e) { /* storage disabled */ }
      params.delete("token");
      var rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
      return fromUrl;
    }
    try { return sessionStorage.getItem("meshward-status-token"); } catch (e) { return null; }
  }

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function svgEl(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    for (var key in attrs) node.setAttribute(key, String(attrs[key]));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function fillTable(id, rows, columns, emptyText) {
    var body = document.querySelector("#" + id + " tbody");
    clear(body);
    if (rows.length === 0) {
      var tr = el("tr");
      var td = el("td", emptyText, "empty");
      td.colSpan = columns;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (cells) {
      var tr = el("tr");
      cells.forEach(function (cell) {
        var td = cell.breakAfter ? breakable(cell.text, cell.breakAfter, cell.className) : el("td", cell.text, cell.className);
        if (cell.title) td.title = cell.title;
        if (cell.data) for (var key in cell.data) td.dataset[key] = cell.data[key];
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  /**
   * A cell whose long value (a fingerprint, a SPIFFE ID, a serial) may wrap only after
   * `separator` (or every `separator` characters when it is a number), never inside a value
   * group: <wbr> marks the places, the text stays exactly the value (copy and paste work).
   */
  function breakable(text, separator, className) {
    var td = el("td", null, (className || "") + " breakable");
    var value = String(text);
    var parts = [];
    if (typeof separator === "number") {
      for (var i = 0; i < value.length; i += separator) parts.push(value.slice(i, i + separator));
    } else {
      var start = 0;
      for (var j = 0; j < value.length; j++) {
        if (value[j] === separator) {
          parts.push(value.slice(start, j + 1));
          start = j + 1;
        }
      }
      parts.push(value.slice(start));
    }
    parts.forEach(function (part, index) {
      if (part === "") return;
      td.appendChild(document.createTextNode(part));
      if (index < parts.length - 1) td.appendChild(document.createElement("wbr"));
    });
    return td;
  }

  /**
   * A duration as a person reads it: its two largest units, each whole and rounded down
   * ("59 min 59 s" for 3599871 ms, "23 h 5 min", "364 days 23 h"), never more than is left.
   * The raw milliseconds stay in the cell's data-ms attribute and in status.json.
   */
  function timeLeft(ms) {
    var past = ms < 0;
    var rest = Math.floor(Math.abs(ms) / 1000);
    var units = [[86400, "day"], [3600, "h"], [60, "min"], [1, "s"]];
    var parts = [];
    for (var i = 0; i < units.length && parts.length < 2; i++) {
      var n = Math.floor(rest / units[i][0]);
      rest -= n * units[i][0];
      if (n === 0 && parts.length === 0) continue;
      if (n === 0) break;
      parts.push(n + " " + (units[i][1] === "day" && n !== 1 ? "days" : units[i][1]));
    }
    var text = parts.length === 0 ? "0 s" : parts.join(" ");
    return past ? "expired " + text + " ago" : text;
  }

  function lifeClass(notBefore, notAfter, now) {
    var total = notAfter - notBefore;
    var left = notAfter - now;
    if (left <= 0) return "bad";
    if (total > 0 && left / total < 0.25) return "warn";
    return "ok";
  }

  /** Time of day for today's events, date and time for older ones. */
  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d)) return String(iso);
    var time = d.toLocaleTimeString([], { hour12: false });
    return d.toDateString() === new Date().toDateString() ? time : d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
  }

  function renderHeader(s) {
    document.getElementById("component").textContent = s.component === "ca" ? "certificate authority" : s.component;
    // The CA's second chart counts refused sign requests; a sidecar's counts access-policy denials.
    document.getElementById("denials-title").textContent = s.component === "ca" ? "Refused sign requests" : "Policy denials";
    document.getElementById("name").textContent = s.name;
    var health = document.getElementById("health");
    health.textContent = s.health.ok ? "healthy" : "unhealthy";
    health.className = "badge " + (s.health.ok ? "ok" : "bad");
    document.title = "meshward " + s.component + " " + s.name;
  }

  function renderIdentities(s, now) {
    fillTable("identities", s.identities.map(function (id) {
      var notAfter = Date.parse(id.notAfter);
      var cls = lifeClass(Date.parse(id.notBefore), notAfter, now);
      return [
        { text: id.spiffeId, className: "mono spiffe-id", breakAfter: "/" },
        { text: id.kind, className: "nowrap" },
        { text: id.serial, className: "mono serial", data: { serial: id.serial }, breakAfter: 8 },
        { text: id.notAfter, className: "mono expires nowrap" },
        { text: timeLeft(notAfter - now), className: cls + "-text nowrap time-left", data: { ms: String(notAfter - now) } },
      ];
    }), 5, "no identity yet");
    renderTimeline(s.identities, now);
  }

  /**
   * One row per identity, each on its own time scale: the bar spans the certificate's life
   * (notBefore → notAfter), the part already lived is grey, a dashed line marks now. A shared
   * scale would shrink a 24-hour certificate to a pixel next to a 10-year root.
   */
  function renderTimeline(ids, now) {
    var svg = document.getElementById("timeline");
    clear(svg);
    var barH = 14, width = svg.clientWidth || 800;
    var setHeight = function (height) {
      svg.setAttribute("viewBox", "0 0 " + width + " " + height);
      svg.setAttribute("height", String(height));
    };
    setHeight(44 * Math.max(ids.length, 1));
    if (ids.length === 0) {
      svg.appendChild(svgEl("text", { x: 4, y: 24 }, "no certificate to show"));
      return;
    }
    var top = 0;
    var day = function (t) { return new Date(t).toISOString().slice(0, 10); };
    ids.forEach(function (id, i) {
      var nb = Date.parse(id.notBefore), na = Date.parse(id.notAfter);
      var span = Math.max(na - nb, 1);
      var x = function (t) { return 1 + (Math.min(Math.max(t - nb, 0), span) / span) * (width - 2); };
      var barY = top + 20;
      var label = svgEl("text", { x: 1, y: top + 14, class: "label" }, id.kind + "  " + id.spiffeId);
      svg.appendChild(label);
      var info = svgEl("text", { x: width - 1, y: top + 14, "text-anchor": "end", class: "life-info", "data-ms": na - now }, timeLeft(na - now) + " left of " + timeLeft(span) + "  (" + day(nb) + " → " + day(na) + ")");
      svg.appendChild(info);
      // On a narrow page the two would overlap: the dates then go under the bar.
      var below = label.getComputedTextLength() + info.getComputedTextLength() + 16 > width;
      if (below) {
        info.setAttribute("x", "1");
        info.setAttribute("text-anchor", "start");
        info.setAttribute("y", String(barY + barH + 13));
      }
      var life = svgEl("rect", { x: 1, y: barY, width: width - 2, height: barH, rx: 3, class: "life " + lifeClass(nb, na, now), "data-kind": id.kind });
      life.appendChild(svgEl("title", {}, id.kind + " " + id.spiffeId + ": " + id.notBefore + " → " + id.notAfter));
      svg.appendChild(life);
      svg.appendChild(svgEl("rect", { x: 1, y: barY, width: Math.max(x(now) - 1, 0), height: barH, rx: 3, class: "used" }));
      if (now >= nb && now <= na) svg.appendChild(svgEl("line", { x1: x(now), x2: x(now), y1: barY - 3, y2: barY + barH + 3, class: "now" }));
      top = barY + barH + (below ? 24 : 10);
    });
    setHeight(top + 2);
  }

  function renderChart(id, series, summaryId, what) {
    var svg = document.getElementById(id);
    clear(svg);
    var width = svg.clientWidth || 400, height = 120, left = 28, bottom = 16;
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    var counts = series.counts;
    var max = Math.max.apply(null, counts.concat([1]));
    var barW = (width - left) / counts.length;
    svg.appendChild(svgEl("line", { x1: left, x2: width, y1: height - bottom, y2: height - bottom, class: "axis" }));
    svg.appendChild(svgEl("text", { x: left - 4, y: 10, "text-anchor": "end" }, max));
    svg.appendChild(svgEl("text", { x: left - 4, y: height - bottom, "text-anchor": "end" }, 0));
    svg.appendChild(svgEl("text", { x: left, y: height - 2 }, "60 min ago"));
    svg.appendChild(svgEl("text", { x: width, y: height - 2, "text-anchor": "end" }, "now"));
    counts.forEach(function (count, i) {
      if (count === 0) return;
      var h = ((height - bottom - 14) * count) / max;
      var bar = svgEl("rect", { x: left + i * barW + 1, y: height - bottom - h, width: Math.max(barW - 2, 1), height: h, class: "bar" + (id === "chart-failures" ? " bad" : "") });
      bar.appendChild(svgEl("title", {}, count + " at " + clock(new Date(Date.parse(series.start) + i * 60000).toISOString())));
      svg.appendChild(bar);
    });
    var top = series.byKey.slice(0, 4).map(function (k) { return k.key + " " + k.count; }).join(", ");
    document.getElementById(summaryId).textContent = series.total + " " + what + " in the last hour" + (top ? " — " + top : "");
  }

  function render(s) {
    var now = Date.parse(s.generatedAt) || Date.now();
    renderHeader(s);
    renderIdentities(s, now);
    fillTable("rotations", s.rotations.map(function (r) {
      return [
        { text: clock(r.time), title: r.time, className: "nowrap" },
        { text: r.kind },
        { text: r.result, className: r.result === "ok" ? "ok-text" : "bad-text" },
        { text: r.result === "ok" ? (r.serial || "") : (r.error || "failed"), className: "mono" },
      ];
    }), 4, "no rotation yet");
    var withLive = s.roots.some(function (r) { return typeof r.liveCertificates === "number"; });
    document.querySelector("#roots th.live-col").hidden = !withLive;
    fillTable("roots", s.roots.map(function (r) {
      var na = Date.parse(r.notAfter);
      var cells = [
        { text: r.subject, className: "subject breakable" },
        { text: r.fingerprint, className: "mono fingerprint", breakAfter: ":" },
        { text: r.notAfter, className: "mono nowrap" },
        { text: timeLeft(na - now), className: (na - now < 7 * 86400000 ? "bad" : na - now < 30 * 86400000 ? "warn" : "ok") + "-text nowrap time-left", data: { ms: String(na - now) } },
      ];
      if (withLive) cells.push({ text: typeof r.liveCertificates === "number" ? r.liveCertificates : "—", className: "live", data: { fingerprint: r.fingerprint } });
      return cells;
    }), withLive ? 5 : 4, "no trust bundle");
    document.getElementById("bundle-version").textContent = typeof s.bundleVersion === "number" ? "bundle version " + s.bundleVersion + " · " + s.roots.length + " root" + (s.roots.length === 1 ? "" : "s") : "";
    fillTable("refusals", s.refusals.map(function (r) {
      return [
        { text: clock(r.time), title: r.time, className: "nowrap" },
        { text: r.peer, className: "mono nowrap" },
        { text: r.reason, className: "bad-text" },
        { text: r.spiffeId || "—", className: "mono" },
      ];
    }), 4, "nothing refused");
    fillTable("checks", Object.keys(s.health.checks).map(function (name) {
      var check = s.health.checks[name];
      var detail = check.detail === undefined ? "" : typeof check.detail === "string" ? check.detail : JSON.stringify(check.detail);
      return [{ text: name }, { text: check.ok ? "ok" : "failing", className: check.ok ? "ok-text" : "bad-text" }, { text: detail }];
    }), 3, "no checks registered");
    renderDapr(s);
    renderChart("chart-failures", s.handshakeFailures, "failures-summary", "failures");
    renderChart("chart-denials", s.denials, "denials-summary", s.component === "ca" ? "refused sign requests" : "denials");
  }

  /**
   * The CA's upkeep of Dapr's dapr-trust-bundle ConfigMap (status.json daprTrustBundle): a card,
   * and a header badge while it fails (beside, not instead of, the health badge: never a readiness check).
   */
  function renderDapr(s) {
    var card = document.getElementById("dapr");
    var badge = document.getElementById("dapr-badge");
    var d = s.daprTrustBundle;
    if (!d) {
      card.hidden = true;
      badge.hidden = true;
      return;
    }
    card.hidden = false;
    card.dataset.state = d.state;
    document.getElementById("dapr-target").textContent = "ConfigMap " + d.namespace + "/" + d.configMap;
    var words = { "pending": "no pass finished yet", "in-step": "in step with the CA's trust bundle", "behind": "left alone: it holds a newer CA state's roots", "failing": "failing" + (d.failures > 1 ? " (" + d.failures + " attempts in a row)" : "") + (d.retryAt ? ", next attempt " + clock(d.retryAt) : "") };
    var state = document.getElementById("dapr-state");
    state.textContent = words[d.state] || d.state;
    state.className = d.state === "failing" ? "bad-text" : d.state === "in-step" ? "ok-text" : "warn-text";
    var success = document.getElementById("dapr-success");
    success.textContent = d.lastSuccessAt ? clock(d.lastSuccessAt) + (d.lastResult && d.state !== "failing" ? " (" + d.lastResult + ")" : "") : "never";
    success.title = d.lastSuccessAt || "";
    document.getElementById("dapr-version").textContent = d.resourceVersion ? d.resourceVersion + (d.lastWriteAt ? " at " + clock(d.lastWriteAt) : "") : "none written by this process";
    var error = document.getElementById("dapr-error");
    clear(error);
    if (d.lastError) {
      error.appendChild(el("span", d.lastError.code + (d.lastError.status ? " HTTP " + d.lastError.status : "") + (d.lastError.reason ? " " + d.lastError.reason : ""), d.state === "failing" ? "mono bad-text" : "mono"));
      error.appendChild(el("span", " at " + clock(d.lastError.at) + ": "));
      error.appendChild(el("span", d.lastError.message));
    } else {
      error.textContent = "none";
    }
    badge.hidden = d.state !== "failing";
    badge.textContent = "dapr-trust-bundle failing";
    badge.className = "badge warn";
    badge.title = d.lastError ? d.lastError.code + (d.lastError.reason ? " " + d.lastError.reason : "") : "";
  }

  function setStale(reason) {
    if (failingSince === null) failingSince = new Date();
    document.body.classList.add("stale");
    document.body.dataset.state = lastGood ? "stale" : "loading";
    var banner = document.getElementById("stale");
    banner.hidden = false;
    banner.textContent = "STALE — the status feed is not answering (" + reason + ") since " + failingSince.toLocaleTimeString([], { hour12: false }) +
      (lastGood ? "; showing data from " + lastGood.toLocaleTimeString([], { hour12: false }) : "; no data yet");
    document.getElementById("updated").textContent = "stale";
    var health = document.getElementById("health");
    health.textContent = "unknown";
    health.className = "badge";
  }

  function setFresh() {
    failingSince = null;
    lastGood = new Date();
    document.body.classList.remove("stale");
    document.body.dataset.state = "ready";
    document.getElementById("loading").hidden = true;
    document.getElementById("stale").hidden = true;
    document.getElementById("updated").textContent = "updated " + lastGood.toLocaleTimeString([], { hour12: false });
  }

  function poll() {
    var headers = token ? { authorization: "Bearer " + token } : {};
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var timer = setTimeout(function () { if (controller) controller.abort(); }, REFRESH_MS * 2);
    fetch("status.json", { headers: headers, cache: "no-store", signal: controller ? controller.signal : undefined })
      .then(function (res) {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.json();
      })
      .then(function (snapshot) {
        render(snapshot);
        setFresh();
      })
      .catch(function (error) {
        setStale(error && error.name === "AbortError" ? "timed out" : (error && error.message) || "error");
      })
      .then(function () {
        clearTimeout(timer);
        setTimeout(poll, REFRESH_MS);
      });
  }

  /** The server renders the first state into the page: show it at once, then poll. */
  function initialState() {
    var node = document.getElementById("initial-state");
    try {
      return node && node.textContent ? JSON.parse(node.textContent) : null;
    } catch (e) {
      return null;
    }
  }

  var first = initialState();
  if (first) {
    try {
      render(first);
      setFresh();
    } catch (e) {
      first = null; // fall back to the feed
    }
  }
  if (first) setTimeout(poll, REFRESH_MS);
  else poll();
})();
