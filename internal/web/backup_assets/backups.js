// Refreshes the backup table from /console/backups/status.json every two
// seconds. Text is set with textContent only: nothing from the server is
// parsed as HTML.
"use strict";

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function when(iso, now) {
  if (!iso) return "never";
  const s = Math.max(0, (now - Date.parse(iso)) / 1000);
  const ago = s < 120 ? s.toFixed(1) + " s" : s < 7200 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h";
  return ago + " ago";
}

function render(view) {
  const now = Date.parse(view.now);
  const body = document.querySelector("#backups tbody");
  body.replaceChildren();
  for (const p of view.products) {
    const row = body.insertRow();
    row.id = "product-" + p.product;
    row.className = p.red ? "red" : "green";
    cell(row, p.product);
    const health = cell(row, p.red ? "RED" : "OK", "health");
    if (p.why) {
      const list = document.createElement("ul");
      list.className = "why";
      for (const w of p.why) {
        const li = document.createElement("li");
        li.textContent = w;
        list.append(li);
      }
      health.append(list);
    }
    cell(row, "position " + p.last_pos + ", committed " + when(p.last_shipped, now));
    cell(row, p.backlog === 0 ? "0 s" : (p.lag_ns / 1e9).toFixed(1) + " s", "lag");
    cell(row, p.backlog < 0 ? "unknown (see slot lag)" : String(p.backlog), "backlog");
    cell(row, p.snapshots ? "position " + p.last_snapshot_pos + ", " + when(p.last_snapshot, now) : "none");
    cell(row, when(p.oldest_restorable, now) + " … " + when(p.newest_restorable, now));
    cell(row, p.snapshots + " snapshots, " + p.segments + " segments, " + (p.bytes / 1048576).toFixed(1) + " MiB (" + p.compression_ratio.toFixed(1) + "×)");
    cell(row, p.shipper || "none holds the lease");
  }
  document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
}

async function refresh() {
  const problem = document.getElementById("problem");
  try {
    const resp = await fetch("/console/backups/status.json", { credentials: "same-origin", cache: "no-store" });
    if (!resp.ok) throw new Error("status " + resp.status + " from the server; sign in again at /console/incidents/login");
    render(await resp.json());
    problem.hidden = true;
  } catch (err) {
    problem.textContent = "Not refreshed: " + err.message;
    problem.hidden = false;
  }
}

refresh();
setInterval(refresh, 2000);
