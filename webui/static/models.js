// The active training run's progress on /models, refreshed every few seconds
// from the JSON endpoint named in #active-run[data-endpoint]. The CSP allows
// no inline script; the page works without this module (reload to refresh).

const box = document.getElementById("active-run");
const ended = document.getElementById("run-ended");

function show(run) {
  box.hidden = false;
  for (const field of box.querySelectorAll("[data-field]")) {
    const name = field.dataset.field;
    if (name === "percent") {
      field.textContent = `${(run.progress * 100).toFixed(1)}%`;
    } else if (name === "cancel_requested") {
      field.hidden = !run.cancel_requested;
    } else if (run[name] !== undefined && run[name] !== null) {
      field.textContent = String(run[name]);
    }
  }
  const bar = box.querySelector("progress");
  if (bar) bar.value = run.progress;
}

async function poll() {
  let payload;
  try {
    const response = await fetch(box.dataset.endpoint, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (!response.ok) return true; // signed out or a server error: try again later
    payload = await response.json();
  } catch {
    return true;
  }
  const watched = box.dataset.runId;
  if (payload.run) {
    if (watched && String(payload.run.id) !== watched && ended) ended.hidden = false;
    box.dataset.runId = String(payload.run.id);
    show(payload.run);
    return true;
  }
  if (watched) {
    // The run we were showing has finished, failed or been cancelled.
    box.hidden = true;
    if (ended) ended.hidden = false;
  }
  return true;
}

if (box) {
  const every = Math.max(1, Number(box.dataset.pollSeconds) || 3) * 1000;
  const tick = async () => {
    if (!document.hidden) await poll();
    window.setTimeout(tick, every);
  };
  window.setTimeout(tick, every);
}
