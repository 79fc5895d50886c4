// Live regions of the dashboard: an element with data-live="URL" listens to the server-sent events
// at URL. A "swap" event carries {slot: html}: each element with data-slot="slot" gets that html
// (rendered and escaped by the server); only the slots that changed are sent, so a form being
// filled in is replaced only when its own content changed. "done" ends the stream (a finished run
// changes no more).
"use strict";
for (const region of document.querySelectorAll("[data-live]")) {
  const source = new EventSource(region.dataset.live);
  const status = document.querySelector("[data-live-status]");
  source.addEventListener("open", () => { if (status) status.textContent = "live"; });
  source.addEventListener("error", () => { if (status) status.textContent = "reconnecting…"; });
  source.addEventListener("swap", (event) => {
    const slots = JSON.parse(event.data);
    for (const [name, html] of Object.entries(slots)) {
      for (const target of document.querySelectorAll(`[data-slot="${CSS.escape(name)}"]`)) {
        target.innerHTML = html;
      }
    }
  });
  source.addEventListener("done", () => {
    source.close();
    if (status) status.textContent = "final";
  });
}
