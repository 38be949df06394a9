// Sampan UI: live tables (server-sent events), log streams, the exec terminal.
// Every HTML fragment inserted here was rendered and escaped by the server; log lines and
// terminal output are inserted as text only.
"use strict";
(function () {
  var prefix = document.body.dataset.prefix || "";

  function status(el, text) {
    var p = el && el.parentElement ? el.parentElement.parentElement.querySelector(".live-status") : null;
    if (!p) p = document.querySelector(".live-status");
    if (p) p.textContent = text;
  }

  function fragment(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content;
  }

  // Live tables: rows keyed by uid; changes batched per animation frame.
  function liveTable(table) {
    var url = table.dataset.watch;
    if (!url) return;
    var tbody = table.tBodies[0];
    var queue = [];
    var scheduled = false;
    var count = document.querySelector("[data-count]");
    function flush() {
      scheduled = false;
      var items = queue; queue = [];
      for (var i = 0; i < items.length; i++) {
        var m = items[i];
        var old = document.getElementById("r-" + m.id);
        if (m.op === "delete") { if (old) old.remove(); continue; }
        var row = fragment(m.html).firstElementChild;
        if (old) old.replaceWith(row); else tbody.appendChild(row);
      }
      counted();
    }
    function counted() {
      if (count) count.textContent = String(tbody.rows.length);
      var empty = table.parentElement.nextElementSibling;
      if (empty && empty.classList.contains("empty")) empty.hidden = tbody.rows.length > 0;
    }
    var source = new EventSource(url);
    source.addEventListener("row", function (e) {
      queue.push(JSON.parse(e.data));
      if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
    });
    source.addEventListener("reset", function (e) {
      queue = [];
      tbody.replaceChildren(fragment(JSON.parse(e.data).html));
      counted();
    });
    source.addEventListener("failure", function (e) {
      var m = JSON.parse(e.data);
      if (m.final) source.close();  // refused for good: reconnecting would only poll
      status(table, m.message);
    });
    source.addEventListener("expired", function () { source.close(); location.href = prefix + "/login"; });
    source.addEventListener("open", function () { table.dataset.live = "1"; status(table, ""); });
    source.onerror = function () {
      table.dataset.live = "";
      if (source.readyState === EventSource.CLOSED) status(table, "Live updates stopped: reload the page.");
      else status(table, "Live updates interrupted; reconnecting…");
    };
  }

  function logStream(pre) {
    var follow = document.getElementById("follow");
    var source = new EventSource(pre.dataset.stream);
    source.addEventListener("lines", function (e) {
      var lines = JSON.parse(e.data);
      pre.appendChild(document.createTextNode(lines.join("\n") + "\n"));
      if (!follow || follow.checked) pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("end", function () { source.close(); status(pre, "The log ended."); });
    source.addEventListener("failure", function (e) { source.close(); status(pre, JSON.parse(e.data).message); });
    source.addEventListener("expired", function () { source.close(); location.href = prefix + "/login"; });
  }

  function terminal(el) {
    var term = new Terminal({ cursorBlink: true, fontSize: 14, convertEol: false });
    var fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + el.dataset.ws);
    ws.binaryType = "arraybuffer";
    ws.onopen = function () {
      ws.send(JSON.stringify({ csrf: el.dataset.csrf, cols: term.cols, rows: term.rows }));
      status(el, "Connected.");
      el.dataset.connected = "1";
      term.focus();
    };
    ws.onmessage = function (e) {
      if (typeof e.data === "string") {
        var m = JSON.parse(e.data);
        if ("error" in m) status(el, m.error);
        if ("exit" in m) status(el, m.exit ? "Session ended: " + m.exit : "Session ended.");
        return;
      }
      term.write(new Uint8Array(e.data));
    };
    ws.onclose = function () { el.dataset.connected = ""; if (!document.querySelector(".live-status").textContent.startsWith("Session")) status(el, "Disconnected."); };
    term.onData(function (d) { if (ws.readyState === 1) ws.send(JSON.stringify({ i: d })); });
    term.onResize(function (s) { if (ws.readyState === 1) ws.send(JSON.stringify({ r: [s.cols, s.rows] })); });
    window.addEventListener("resize", function () { fit.fit(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    // Phone width: the resource menu starts folded (one tap or Enter opens it).
    if (window.matchMedia("(max-width: 700px)").matches) {
      document.querySelectorAll("details.navbox").forEach(function (d) { d.open = false; });
    }
    document.querySelectorAll("table.live[data-watch]").forEach(liveTable);
    document.querySelectorAll("pre.log[data-stream]").forEach(logStream);
    document.querySelectorAll("#terminal[data-ws]").forEach(terminal);
    document.querySelectorAll("select[data-autosubmit]").forEach(function (s) {
      s.addEventListener("change", function () { s.form.submit(); });
    });
  });
})();
