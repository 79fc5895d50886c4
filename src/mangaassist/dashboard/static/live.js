// Live regions of the dashboard: an element with data-live="URL" listens to the server-sent events
// at URL. A "swap" event carries {slot: html}: each element with data-slot="slot" gets that html
// (rendered and escaped by the server); only the slots that changed are sent. The stream's first
// event carries every slot, which may arrive after a person has started typing in a form the page
// was rendered with, and a later one may replace a form that is being filled in (someone else
// approved): what was typed into a field of the slot (its value differs from the page's) is put
// back into the field of the same name in the new html, and a focused field gets the focus back.
// "done" ends the stream (a finished run changes no more).
"use strict";

function typed(target) {
  const kept = new Map();
  for (const field of target.querySelectorAll("textarea[name], input[name]:not([type=hidden])")) {
    if (field.value !== field.defaultValue) kept.set(field.name, field.value);
  }
  const active = document.activeElement;
  const focused = active && target.contains(active) && active.name ? active.name : null;
  return { kept, focused };
}

function restore(target, { kept, focused }) {
  for (const [name, value] of kept) {
    const field = target.querySelector(`[name="${CSS.escape(name)}"]`);
    if (field && "value" in field) field.value = value;
  }
  if (focused) {
    const field = target.querySelector(`[name="${CSS.escape(focused)}"]`);
    if (field) field.focus();
  }
}

for (const region of document.querySelectorAll("[data-live]")) {
  const source = new EventSource(region.dataset.live);
  const status = document.querySelector("[data-live-status]");
  source.addEventListener("open", () => { if (status) status.textContent = "live"; });
  source.addEventListener("error", () => { if (status) status.textContent = "reconnecting…"; });
  source.addEventListener("swap", (event) => {
    const slots = JSON.parse(event.data);
    for (const [name, html] of Object.entries(slots)) {
      for (const target of document.querySelectorAll(`[data-slot="${CSS.escape(name)}"]`)) {
        const user = typed(target);
        target.innerHTML = html;
        restore(target, user);
      }
    }
  });
  source.addEventListener("done", () => {
    source.close();
    if (status) status.textContent = "final";
  });
}
