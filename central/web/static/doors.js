// Refreshes the Doors page from doors.json.  Every value a door sent is set
// with textContent, never as HTML, so a hostile door id stays text.
(function () {
  "use strict";
  var live = document.getElementById("doors-live");
  if (!live) { return; }
  var source = live.getAttribute("data-source");
  var every = Math.max(1, parseFloat(live.getAttribute("data-refresh") || "5")) * 1000;

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }
  function shown(value) { return value === null || value === undefined ? "" : value; }

  function renderDoors(data) {
    var body = document.getElementById("doors-body");
    var rows = document.createDocumentFragment();
    data.doors.forEach(function (d) {
      var tr = el("tr");
      tr.setAttribute("data-door", d.door_id);
      tr.appendChild(el("td", d.door_id));
      var state = el("td");
      state.appendChild(el("span", d.state, "tag state-" + String(d.state).replace(/[^a-z]/g, "")));
      if (d.state_for) { state.appendChild(document.createTextNode(" ")); state.appendChild(el("span", "for " + d.state_for, "muted")); }
      tr.appendChild(state);
      tr.appendChild(el("td", d.last_seen));
      var camera = el("td");
      if (d.camera_ok) { camera.textContent = String(shown(d.camera)); } else { camera.appendChild(el("span", d.camera, "tag warn")); }
      tr.appendChild(camera);
      tr.appendChild(el("td", shown(d.fps)));
      tr.appendChild(el("td", shown(d.outbox_depth)));
      var version = el("td", shown(d.cache_version));
      if (d.behind) { version.appendChild(document.createTextNode(" ")); version.appendChild(el("span", "behind", "tag warn")); }
      tr.appendChild(version);
      tr.appendChild(el("td", d.events_stored));
      rows.appendChild(tr);
    });
    if (!data.doors.length) {
      var empty = el("tr");
      var cell = el("td", "No door has been heard from yet.", "muted");
      cell.colSpan = 8;
      empty.appendChild(cell);
      rows.appendChild(empty);
    }
    body.replaceChildren(rows);
  }

  function renderEvents(data) {
    var box = document.getElementById("door-events");
    var cards = document.createDocumentFragment();
    Object.keys(data.events).forEach(function (door) {
      var card = el("section", null, "card");
      card.setAttribute("data-door", door);
      card.appendChild(el("h3", door));
      var list = el("ul", null, "events");
      data.events[door].forEach(function (e) {
        var li = el("li");
        li.appendChild(el("span", e.ts, "muted"));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(el("span", e.type, "tag type-" + String(e.type).replace(/[^a-z_]/g, "")));
        li.appendChild(document.createTextNode(" " + e.person_id));
        list.appendChild(li);
      });
      if (!data.events[door].length) { list.appendChild(el("li", "No events.", "muted")); }
      card.appendChild(list);
      cards.appendChild(card);
    });
    box.replaceChildren(cards);
  }

  function refresh() {
    fetch(source, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (r.redirected || !r.ok) { throw new Error("session ended or server error " + r.status); }
        return r.json();
      })
      .then(function (data) {
        document.getElementById("enrolment-version").textContent = String(data.enrolment_version);
        document.getElementById("refreshed-at").textContent = data.at;
        renderDoors(data);
        renderEvents(data);
      })
      .catch(function () { document.getElementById("refreshed-at").textContent += " (refresh failed)"; })
      .finally(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();
