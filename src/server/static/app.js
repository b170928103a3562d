// hookd web UI: the only script. It adds live updates to pages that are
// complete without it: on a running run's page it follows the log over
// Server-Sent Events and reloads the page once the run has ended.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log || !log.dataset.follow || !window.EventSource) {
    return;
  }
  function el(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }
  // A log line reads "<time> <step> <stream> | <text>".
  function append(line) {
    var bar = line.indexOf(" | ");
    var head = bar < 0 ? line : line.slice(0, bar);
    var text = bar < 0 ? "" : line.slice(bar + 3);
    var first = head.indexOf(" ");
    var last = head.lastIndexOf(" ");
    var time = first < 0 ? head : head.slice(0, first);
    var stream = last > first ? head.slice(last + 1) : "";
    var step = last > first ? head.slice(first + 1, last) : "";
    var t = time.indexOf("T");
    var row = el("line " + stream, "");
    row.appendChild(el("ts", t < 0 ? time : time.slice(t + 1, t + 13)));
    row.appendChild(el("step", step));
    row.appendChild(el("text", text));
    var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(row);
    log.appendChild(document.createTextNode("\n"));
    if (atBottom) {
      log.scrollTop = log.scrollHeight;
    }
  }
  var source = new EventSource(log.dataset.follow);
  source.onmessage = function (e) { append(e.data); };
  source.addEventListener("end", function (e) {
    source.close();
    var status = document.getElementById("run-status");
    try {
      var end = JSON.parse(e.data);
      if (status) {
        status.textContent = end.status;
        status.className = "status " + end.status;
      }
    } catch (err) { /* the reload below shows the final state anyway */ }
    var live = document.getElementById("live");
    if (live) { live.remove(); }
    window.setTimeout(function () { window.location.reload(); }, 1500);
  });
  source.addEventListener("error", function (e) {
    if (e.data) {
      source.close();
      append("- - hookd | " + e.data);
    }
  });
})();
