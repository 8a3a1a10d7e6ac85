// Live updates for the Flotilla dashboard, with no build step: the page
// listens to /events (server-sent events), fetches its own live part again
// (?fragment=1) when the model changed, and lists notifications as they
// come. EventSource reconnects by itself and sends the last event ID, a
// position in the notifications topic, so nothing is missed meanwhile.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var feed = document.getElementById("feed");
  var empty = document.getElementById("feed-empty");
  var status = document.getElementById("status");
  if (!live || !window.EventSource) { return; }
  var query = document.body.getAttribute("data-events");
  var since = document.body.getAttribute("data-since");
  var pending = false, again = false, last = 0, everyMs = 1000, keptNotes = 100;

  function setStatus(text, isLive) {
    status.textContent = text;
    status.className = isLive ? "live" : "";
  }

  // The element with focus, told again after the swap by its link or id,
  // so that a keyboard user keeps their place.
  function focusKey() {
    var el = document.activeElement;
    if (!el || !live.contains(el)) { return null; }
    return el.id ? "#" + CSS.escape(el.id) : (el.getAttribute("href") ? 'a[href="' + CSS.escape(el.getAttribute("href")) + '"]' : null);
  }

  function refresh() {
    if (pending) { again = true; return; }
    pending = true;
    var wait = Math.max(0, everyMs - (Date.now() - last));
    setTimeout(function () {
      last = Date.now();
      var url = location.pathname + location.search + (location.search ? "&" : "?") + "fragment=1";
      fetch(url, { headers: { "Accept": "text/html" }, cache: "no-store" }).then(function (r) {
        return r.text();
      }).then(function (html) {
        var key = focusKey();
        live.innerHTML = html;
        live.setAttribute("data-refreshed", String(Number(live.getAttribute("data-refreshed") || 0) + 1));
        if (key) { var el = live.querySelector(key); if (el) { el.focus(); } }
      }).catch(function () { /* the next change tries again */ }).finally(function () {
        pending = false;
        if (again) { again = false; refresh(); }
      });
    }, wait);
  }

  function note(e) {
    var n;
    try { n = JSON.parse(e.data); } catch (err) { return; }
    var li = document.createElement("li");
    li.className = "sev-" + n.severity;
    var t = document.createElement("time");
    t.dateTime = n.time;
    t.textContent = new Date(n.time).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
    li.appendChild(t);
    var kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = n.type + " ";
    li.appendChild(kind);
    li.appendChild(document.createTextNode(n.message));
    li.setAttribute("data-id", n.id);
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > keptNotes) { feed.removeChild(feed.lastChild); }
    if (empty) { empty.hidden = true; }
  }

  // since: the model's version this page shows. The stream says
  // "changed" at once when the model moved on before it opened, or while
  // it was away, so the view is never left behind.
  var es = new EventSource("/events?" + (query ? query + "&" : "") + "since=" + encodeURIComponent(since || "0"));
  es.addEventListener("open", function () { setStatus("live", true); });
  es.addEventListener("error", function () { setStatus("reconnecting…", false); });
  es.addEventListener("changed", refresh);
  es.addEventListener("notification", note);
})();
