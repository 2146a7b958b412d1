// A minimal view of GET /api/status, refreshed every 3 seconds (a placeholder for the dashboard).
"use strict";
async function refresh() {
  const res = await fetch("api/status", { headers: { Accept: "application/json" } });
  const status = await res.json();
  const list = document.getElementById("fleet");
  list.replaceChildren();
  let agents = 0;
  for (const cell of status.cells || []) {
    for (const agent of cell.agents || []) {
      agents += 1;
      const li = document.createElement("li");
      li.textContent = `${cell.name || cell.id} / ${agent.id}: ${agent.health}`;
      list.append(li);
    }
  }
  document.getElementById("summary").textContent = `${(status.cells || []).length} cells, ${agents} agents`;
}
refresh();
setInterval(refresh, 3000);
