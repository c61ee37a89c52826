// The reviewers' queue: one page, no reloads, everything through /review/api.
//
// The page holds the current item and one more, claimed ahead (its photo
// preloaded), so the next item appears the moment a decision is stored.
// While the page is open it renews the leases of the items it holds, every
// third of the lease length (data-lease-seconds); an item whose lease was
// lost all the same is dropped (with a toast when it was on screen).
// /review?item=<id> opens that item (admins: a disputed item from the
// disagreements page); ?reason= and ?source= preset the filters.
// The Content-Security-Policy allows no inline script or style: configuration
// comes from data- attributes on #review, and styles are set through the CSSOM.

const PREFETCH = 2; // items held: the current one and the next
const BUSY_DELAY_MS = 150; // slower than this shows the loading bar
const SEARCH_DEBOUNCE_MS = 100;
const TOAST_MS = 7000;
const MIN_BOX_PX = 3; // a smaller drag is a click, not a box
const ZOOM_STEP = 1.25;
const ZOOM_MIN = 1;
const ZOOM_MAX = 12;
const EXAMPLES_LIMIT = 6;
const MIN_RENEW_MS = 1000;

const root = document.getElementById("review");
const API = root.dataset.api;
const CSRF = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const LEASE_MS = (Number(root.dataset.leaseSeconds) || 600) * 1000;
const RENEW_EVERY_MS = Math.max(MIN_RENEW_MS, LEASE_MS / 3);
const $ = (id) => document.getElementById(id);

const ui = {
  busy: $("review-busy"),
  item: $("review-item"),
  empty: $("review-empty"),
  counter: $("review-counter"),
  lastDecision: $("last-decision"),
  viewer: $("viewer"),
  canvas: $("viewer-canvas"),
  image: $("viewer-image"),
  overlay: $("viewer-overlay"),
  boxExisting: $("box-existing"),
  boxDrawn: $("box-drawn"),
  mode: $("mode-indicator"),
  zoom: $("zoom-indicator"),
  boxReadout: $("box-readout"),
  meta: $("image-meta"),
  stage: $("stage-banner"),
  topk: $("topk"),
  topkEmpty: $("topk-empty"),
  reporter: $("reporter"),
  currentLabel: $("current-label"),
  reasons: $("reasons"),
  sources: $("sources"),
  duplicates: $("duplicates"),
  duplicatesCount: $("duplicates-count"),
  duplicatesStrip: $("duplicates-strip"),
  applyGroup: $("apply-group"),
  searchPanel: $("search-panel"),
  searchTitle: $("search-title"),
  searchInput: $("search-input"),
  searchResults: $("search-results"),
  searchExamples: $("search-examples"),
  proposePanel: $("propose-panel"),
  proposeInput: $("propose-input"),
  helpPanel: $("help-panel"),
  toast: $("toast"),
  accept: document.querySelector('#review-item [data-action="accept"]'),
  filterReason: $("filter-reason"),
  filterSource: $("filter-source"),
  filterClass: $("filter-class"),
  filterClassClear: $("filter-class-clear"),
};

const state = {
  items: [], // items[0] is on screen; the rest are claimed ahead
  shownId: null,
  exhausted: false, // the last claim found nothing
  filling: null, // the running claim loop, if any
  filterEpoch: 0, // bumped on every filter change; stale claims are released
  filters: { reason: null, source: null, class_id: null, class_name: null },
  box: null, // [x_min, y_min, x_max, y_max] in image pixels, sent with the next label
  boxMode: false,
  applyToGroup: false,
  decisions: 0,
  pending: false, // a decision or an undo is on its way
  deciding: null, // the item whose decision is on its way
  renewing: null, // the lease renewal in flight, if any
  lastRenewal: 0, // performance.now() of the last renewal sent
  overlay: null, // "search" | "propose" | "help"
  searchMode: "label", // "label" | "filter"
  view: { scale: 1, x: 0, y: 0 },
  preloaded: new Map(), // item_id -> Image, kept so the browser keeps the bytes
};

// --- talking to the server ---------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body = undefined, { signal } = {}) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json" },
    signal,
  };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = CSRF;
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", `The server cannot be reached (${error.message}).`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const problem = data && data.error;
    throw new ApiError(
      response.status,
      problem?.code ?? `HTTP ${response.status}`,
      problem?.message ?? `The server answered ${response.status} ${response.statusText}.`,
    );
  }
  return data ?? {};
}

// Anything the reviewer waits for goes through here: past BUSY_DELAY_MS the
// bar shows and #review says aria-busy.
let busyCount = 0;
let busyTimer = null;

async function blocking(promise) {
  busyCount += 1;
  if (busyCount === 1) {
    busyTimer = setTimeout(() => {
      ui.busy.hidden = false;
      root.setAttribute("aria-busy", "true");
    }, BUSY_DELAY_MS);
  }
  try {
    return await promise;
  } finally {
    busyCount -= 1;
    if (busyCount === 0) {
      clearTimeout(busyTimer);
      ui.busy.hidden = true;
      root.setAttribute("aria-busy", "false");
    }
  }
}

// --- messages ------------------------------------------------------------------

let toastTimer = null;

function toast(message, { kind = "error", link = null } = {}) {
  ui.toast.replaceChildren(document.createTextNode(message));
  if (link) {
    const a = document.createElement("a");
    a.href = link.href;
    a.textContent = link.text;
    ui.toast.append(" ", a);
  }
  ui.toast.className = `toast ${kind}`;
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    ui.toast.hidden = true;
  }, kind === "error" ? TOAST_MS : TOAST_MS / 3);
}

function report(error) {
  if (error?.name === "AbortError") return;
  if (error instanceof ApiError && error.status === 401) {
    toast(`Signed out: ${error.message}.`, {
      link: { href: root.dataset.login, text: "Log in again" },
    });
    return;
  }
  toast(error instanceof ApiError ? error.message : `Unexpected error: ${error}`);
  if (!(error instanceof ApiError)) console.error(error);
}

// --- claiming ------------------------------------------------------------------

const current = () => state.items[0] ?? null;

function claimBody() {
  const { reason, source, class_id: classId } = state.filters;
  return { reason, source, class_id: classId };
}

function fill() {
  if (state.filling) return state.filling;
  if (state.items.length >= PREFETCH || state.exhausted) {
    show();
    return Promise.resolve();
  }
  state.filling = claimLoop();
  return state.filling;
}

async function claimLoop() {
  try {
    while (state.items.length < PREFETCH && !state.exhausted) {
      const epoch = state.filterEpoch;
      const request = api("POST", "/claim", claimBody());
      // Only the reviewer's own wait (nothing on screen) shows the bar.
      const data = await (state.items.length === 0 ? blocking(request) : request);
      const item = data.item ?? null;
      if (epoch !== state.filterEpoch) {
        if (item) release(item);
        continue;
      }
      if (!item) {
        state.exhausted = true;
        break;
      }
      if (state.items.some((held) => held.item_id === item.item_id)) break;
      state.items.push(item);
      if (state.items.length === 1) show();
      else {
        preload(item);
        markNext();
      }
    }
  } catch (error) {
    report(error);
  } finally {
    state.filling = null;
    show();
  }
}

function release(item) {
  state.preloaded.delete(item.item_id);
  api("POST", `/items/${item.item_id}/release`, {}).catch(report);
}

function preload(item) {
  const image = new Image();
  image.decoding = "async";
  image.src = item.image_url;
  state.preloaded.set(item.item_id, image);
  for (const candidate of (item.top_k ?? []).slice(0, 3)) examples(candidate.class_id);
}

function removeItem(itemId) {
  state.items = state.items.filter((item) => item.item_id !== itemId);
  state.preloaded.delete(itemId);
}

// --- leases --------------------------------------------------------------------

// One request renews every item held. An item the server reports lost (lease
// lapsed and taken, or decided elsewhere) is dropped; the objects sent are
// compared by identity, so an item released, decided or brought back by an
// undo meanwhile is left alone.
function renewLeases() {
  if (state.renewing) return state.renewing;
  state.lastRenewal = performance.now();
  const sent = state.items.slice();
  if (sent.length === 0) return Promise.resolve();
  state.renewing = api("POST", "/renew", { item_ids: sent.map((item) => item.item_id) })
    .then((data) => {
      for (const item of sent) {
        const expires = data.renewed?.[String(item.item_id)];
        if (expires) item.lease_expires_at = expires;
      }
      let lostCurrent = null;
      let lostAny = false;
      for (const { item_id: itemId, message } of data.lost ?? []) {
        const item = sent.find((held) => held.item_id === itemId);
        // Still held here, and not being decided (a decision closes the claim).
        if (!item || !state.items.includes(item) || item === state.deciding) continue;
        if (item === current()) lostCurrent = { itemId, message };
        removeItem(itemId);
        lostAny = true;
      }
      if (lostCurrent) {
        closeOverlay(); // a class chosen now would label the next item
        toast(
          `Your claim on item ${lostCurrent.itemId} was lost (${lostCurrent.message});` +
            " it is back in the queue. Here is the next item.",
        );
      }
      if (lostAny) {
        state.exhausted = false;
        show();
        fill();
      } else if (current()) {
        renderMeta(current());
      }
    })
    .catch(report)
    .finally(() => {
      state.renewing = null;
    });
  return state.renewing;
}

function startRenewals() {
  setInterval(renewLeases, RENEW_EVERY_MS);
  // Hidden tabs get their timers throttled: catch up on coming back.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible") return;
    if (performance.now() - state.lastRenewal >= RENEW_EVERY_MS) renewLeases();
  });
}

// --- decisions -----------------------------------------------------------------

const BOXED_ACTIONS = new Set(["accept", "label", "propose"]);

async function decide(action, extra = {}) {
  const item = current();
  if (!item || state.pending) return;
  const body = {
    action,
    box: BOXED_ACTIONS.has(action) && state.box ? state.box.map((v) => Math.round(v)) : null,
    apply_to_group: state.applyToGroup && item.near_duplicates.length > 0,
    ...extra,
  };
  state.pending = true;
  state.deciding = item;
  try {
    if (body.apply_to_group) await blocking(releaseGroupMembers(item));
    const data = await blocking(api("POST", `/items/${item.item_id}/decide`, body));
    state.decisions += 1;
    const decision = data.decision ?? {};
    describeDecision(decision);
    removeItem(item.item_id);
    // Group members labelled along with it are closed: drop any still held here.
    const applied = new Set(decision.applied_to ?? []);
    for (const held of state.items.filter((other) => applied.has(other.image_id))) {
      removeItem(held.item_id);
    }
    if (state.items.length === 0) state.exhausted = false;
  } catch (error) {
    report(error);
    // The item is no longer ours (lease lost, already decided): move on.
    if (error instanceof ApiError && (error.status === 404 || error.status === 409)) {
      removeItem(item.item_id);
      state.exhausted = false;
    }
  } finally {
    state.pending = false;
    state.deciding = null;
  }
  show();
  fill();
}

// The server applies a decision to the group's open items only; a near-duplicate
// claimed ahead by this page would be left out, so it goes back first.
async function releaseGroupMembers(item) {
  const group = new Set(item.near_duplicates.map((dup) => dup.image_id));
  const held = state.items.filter((other) => other !== item && group.has(other.image_id));
  for (const other of held) removeItem(other.item_id);
  await Promise.all(held.map((other) => api("POST", `/items/${other.item_id}/release`, {})));
}

function describeDecision(decision) {
  const outcome = (decision.outcome ?? "done").replaceAll("_", " ");
  const group = decision.applied_to?.length > 1 ? ` (+${decision.applied_to.length - 1} in group)` : "";
  ui.lastDecision.textContent = `Last: item ${decision.item_id ?? "?"} ${outcome}${group}`;
  ui.counter.value = String(state.decisions);
  root.dataset.decisions = String(state.decisions);
}

function accept() {
  const item = current();
  if (!item) return;
  if (!item.suggested) {
    toast("There is no suggestion to accept: pick a class with 1–9 or search with /.");
    return;
  }
  decide("accept");
}

function pickTopK(n) {
  const item = current();
  const candidate = item?.top_k?.[n - 1];
  if (!candidate) {
    if (item) toast(`There is no guess number ${n}.`);
    return;
  }
  decide("label", { class_id: candidate.class_id });
}

async function undo() {
  if (state.pending) return;
  state.pending = true;
  try {
    const data = await blocking(api("POST", "/undo", {}));
    if (data.item) {
      removeItem(data.item.item_id);
      state.items.unshift(data.item);
      state.decisions = Math.max(0, state.decisions - 1);
      ui.counter.value = String(state.decisions);
      root.dataset.decisions = String(state.decisions);
      ui.lastDecision.textContent = `Undone: item ${data.item.item_id} is back`;
    }
  } catch (error) {
    report(error);
  } finally {
    state.pending = false;
  }
  show();
}

// --- filters -------------------------------------------------------------------

function applyFilters() {
  state.filterEpoch += 1;
  state.exhausted = false;
  // The item on screen stays (the reviewer may be half-way through it); the
  // ones claimed ahead under the old filters go back to the queue.
  for (const item of state.items.splice(1)) release(item);
  ui.filterClass.textContent = state.filters.class_name ?? "any";
  ui.filterClassClear.hidden = state.filters.class_id === null;
  show();
  fill();
}

// --- rendering -----------------------------------------------------------------

function el(tag, { className, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs ?? {})) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

const percent = (p) => `${(100 * p).toFixed(p >= 0.1 ? 0 : 1)}%`;

// For tests and styles: which item comes next (already claimed, photo preloaded).
function markNext() {
  const next = state.items[1];
  root.dataset.nextId = next ? String(next.item_id) : "";
  root.dataset.nextImageId = next ? String(next.image_id) : "";
}

function show() {
  const item = current();
  markNext();
  if (!item) {
    state.shownId = null;
    root.dataset.itemId = "";
    ui.item.hidden = true;
    const waiting = state.filling !== null;
    ui.empty.hidden = waiting;
    root.dataset.state = waiting ? "loading" : "empty";
    return;
  }
  ui.empty.hidden = true;
  ui.item.hidden = false;
  root.dataset.state = "ready";
  if (state.shownId === item.item_id) return;
  state.shownId = item.item_id;
  root.dataset.itemId = String(item.item_id);
  root.dataset.imageId = String(item.image_id);
  root.dataset.stage = String(item.stage ?? 1);
  state.box = Array.isArray(item.box) ? [...item.box] : null;
  state.applyToGroup = false;
  state.view = { scale: 1, x: 0, y: 0 };
  renderImage(item);
  renderStage(item);
  renderTopK(item);
  renderReporter(item);
  renderCurrentLabel(item);
  renderList(ui.reasons, item.reasons ?? [], (reason) => el("li", { text: reason }));
  renderList(ui.sources, item.sources ?? [], renderSource);
  renderDuplicates(item);
  renderBox();
  renderMode();
}

function renderList(list, values, make) {
  list.replaceChildren(...values.map(make));
  if (values.length === 0) list.append(el("li", { className: "muted", text: "none" }));
}

function renderImage(item) {
  ui.viewer.setAttribute("aria-busy", "false");
  ui.image.src = item.image_url;
  ui.image.alt = `Photo ${item.image_id} under review`;
  ui.overlay.setAttribute("viewBox", `0 0 ${item.width} ${item.height}`);
  renderMeta(item);
  if (!ui.image.complete) {
    const shownId = item.item_id;
    setTimeout(() => {
      if (state.shownId === shownId && !ui.image.complete) ui.viewer.setAttribute("aria-busy", "true");
    }, BUSY_DELAY_MS);
  }
  layout();
}

function renderMeta(item) {
  const strategy = (item.strategy ?? "").replaceAll("_", " ");
  const priority = typeof item.priority === "number" ? item.priority.toFixed(2) : "?";
  const lease = item.lease_expires_at ? new Date(item.lease_expires_at) : null;
  const held = lease && !Number.isNaN(lease.valueOf())
    ? ` · yours until ${lease.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`
    : "";
  ui.meta.textContent = `item ${item.item_id} · ${item.width}×${item.height} · priority ${priority}` +
    `${strategy ? ` · ${strategy}` : ""}${held}`;
  root.dataset.leaseExpiresAt = item.lease_expires_at ?? "";
}

ui.image.addEventListener("load", () => ui.viewer.setAttribute("aria-busy", "false"));
ui.image.addEventListener("error", () => {
  ui.viewer.setAttribute("aria-busy", "false");
  if (current()) toast(`The photo of item ${current().item_id} could not be loaded.`);
});

function renderStage(item) {
  const first = item.first_decision;
  ui.stage.hidden = !(item.stage >= 2);
  if (ui.stage.hidden) return;
  const action = (first?.action ?? "?").replaceAll("_", " ");
  const what = first?.class_name ? `${action}: ${first.class_name}` : action;
  ui.stage.textContent = item.stage === 2
    ? `Second review. The first reviewer decided ${what}. Decide on your own; agreeing confirms it.`
    : `Disputed: two reviewers disagreed (the first decided ${what}). Your decision settles it.`;
}

function renderTopK(item) {
  const topK = (item.top_k ?? []).slice(0, 9);
  ui.topkEmpty.hidden = topK.length > 0;
  ui.accept.disabled = !item.suggested;
  ui.accept.title = item.suggested ? `Accept ${item.suggested.name}` : "No suggestion to accept";
  const suggestedId = item.suggested?.class_id ?? null;
  ui.topk.replaceChildren(
    ...topK.map((candidate, index) => {
      const bar = el("span", { className: "bar" });
      bar.style.width = percent(Math.max(0, Math.min(1, candidate.probability)));
      const suggested = candidate.class_id === suggestedId;
      const strip = el("div", {
        className: "strip examples",
        attrs: { "data-class-id": candidate.class_id },
      });
      const row = el(
        "li",
        {
          className: suggested ? "candidate suggested" : "candidate",
          attrs: { "data-class-id": candidate.class_id, "aria-keyshortcuts": String(index + 1) },
        },
        [
          el("button", { className: "pick", attrs: { type: "button", "data-pick": index + 1 } }, [
            el("kbd", { text: index + 1 }),
            el("span", { className: "name", text: candidate.name }),
            suggested ? el("span", { className: "badge", text: "suggested" }) : "",
            el("span", { className: "prob", text: percent(candidate.probability) }),
          ]),
          el("span", { className: "bar-track" }, [bar]),
          strip,
        ],
      );
      lazyExamples.observe(strip);
      return row;
    }),
  );
}

function renderReporter(item) {
  const reporter = item.reporter;
  ui.reporter.hidden = !reporter;
  if (!reporter) return;
  $("reporter-claimed").textContent = reporter.claimed_class_name ?? "—";
  $("reporter-predicted").textContent = reporter.predicted_class_name ?? "—";
  $("reporter-note").textContent = reporter.note || "—";
}

function renderCurrentLabel(item) {
  const label = item.current_label;
  ui.currentLabel.hidden = !label;
  if (!label) return;
  $("current-label-text").textContent =
    label.verdict === "not_a_landmark" ? "Not a landmark" : label.name ?? `class ${label.class_id}`;
}

function renderSource(source) {
  const details = Object.entries(source)
    .filter(([key, value]) => key !== "kind" && value !== null && value !== undefined && value !== "")
    .map(([key, value]) => {
      const shown = typeof value === "object" ? JSON.stringify(value) : value;
      return `${key.replaceAll("_", " ")}: ${shown}`;
    });
  return el("li", {}, [
    el("strong", { text: source.kind ?? "source" }),
    details.length ? ` · ${details.join(" · ")}` : "",
  ]);
}

function renderDuplicates(item) {
  const duplicates = item.near_duplicates ?? [];
  ui.duplicates.hidden = duplicates.length === 0;
  ui.applyGroup.checked = false;
  ui.duplicatesCount.textContent = duplicates.length ? `(${duplicates.length})` : "";
  ui.duplicatesStrip.replaceChildren(
    ...duplicates.map((dup) =>
      el("img", {
        attrs: {
          src: dup.thumb_url,
          alt: `Near-duplicate photo ${dup.image_id}`,
          loading: "lazy",
          "data-image-id": dup.image_id,
        },
      }),
    ),
  );
}

function toggleGroup() {
  const item = current();
  if (!item) return;
  if (!item.near_duplicates?.length) {
    toast("This photo has no near-duplicates.", { kind: "info" });
    return;
  }
  state.applyToGroup = !state.applyToGroup;
  ui.applyGroup.checked = state.applyToGroup;
}

ui.applyGroup.addEventListener("change", () => {
  state.applyToGroup = ui.applyGroup.checked;
  ui.applyGroup.blur();
});

// --- examples of a class ---------------------------------------------------------

// class_id -> {at, request}. Examples grow as reviewers label, so an entry
// lives a few minutes, and an empty answer is asked again next time.
const exampleCache = new Map();
const EXAMPLES_TTL_MS = 5 * 60 * 1000;

function examples(classId) {
  const cached = exampleCache.get(classId);
  if (cached && Date.now() - cached.at < EXAMPLES_TTL_MS) return cached.request;
  const request = api("GET", `/classes/${classId}/examples?limit=${EXAMPLES_LIMIT}`)
    .then((data) => {
      const images = data.images ?? [];
      if (images.length === 0) exampleCache.delete(classId);
      return images;
    })
    .catch((error) => {
      exampleCache.delete(classId);
      throw error;
    });
  exampleCache.set(classId, { at: Date.now(), request });
  return request;
}

async function fillStrip(strip, classId) {
  strip.dataset.loaded = "pending";
  try {
    const images = await examples(classId);
    if (strip.dataset.classId !== String(classId)) return;
    strip.replaceChildren(
      ...images.map((image) =>
        el("a", { attrs: { href: image.url, target: "_blank", rel: "noopener" } }, [
          el("img", {
            attrs: { src: image.thumb_url, alt: `Example ${image.image_id}`, loading: "lazy" },
          }),
        ]),
      ),
    );
    if (images.length === 0) strip.append(el("span", { className: "muted", text: "no examples yet" }));
    strip.dataset.loaded = "yes";
  } catch (error) {
    strip.dataset.loaded = "failed";
    report(error);
  }
}

const lazyExamples = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    lazyExamples.unobserve(entry.target);
    fillStrip(entry.target, Number(entry.target.dataset.classId));
  }
}, { rootMargin: "200px" });

// --- the photo: fit, zoom, pan, box ---------------------------------------------

function fitScale(item) {
  const width = ui.viewer.clientWidth || 1;
  const height = ui.viewer.clientHeight || 1;
  return Math.min(width / item.width, height / item.height);
}

function origin(item) {
  const fit = fitScale(item);
  return {
    fit,
    x: (ui.viewer.clientWidth - item.width * fit) / 2,
    y: (ui.viewer.clientHeight - item.height * fit) / 2,
  };
}

function layout() {
  const item = current();
  if (!item) return;
  const o = origin(item);
  ui.canvas.style.width = `${item.width * o.fit}px`;
  ui.canvas.style.height = `${item.height * o.fit}px`;
  const { scale, x, y } = state.view;
  ui.canvas.style.transform = `translate(${o.x + x}px, ${o.y + y}px) scale(${scale})`;
  ui.zoom.textContent = `${Math.round(scale * 100)}%`;
}

window.addEventListener("resize", layout);

// Zoom keeping the point (px, py) of the viewer (CSS pixels) where it is.
function zoomAt(factor, px, py) {
  const item = current();
  if (!item) return;
  const o = origin(item);
  const { scale, x, y } = state.view;
  const next = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, scale * factor));
  const localX = (px - o.x - x) / scale;
  const localY = (py - o.y - y) / scale;
  state.view = next === 1
    ? { scale: 1, x: 0, y: 0 }
    : { scale: next, x: px - o.x - localX * next, y: py - o.y - localY * next };
  layout();
}

const zoomCentre = (factor) => zoomAt(factor, ui.viewer.clientWidth / 2, ui.viewer.clientHeight / 2);

function resetZoom() {
  state.view = { scale: 1, x: 0, y: 0 };
  layout();
}

ui.viewer.addEventListener("wheel", (event) => {
  if (!current()) return;
  event.preventDefault();
  const rect = ui.viewer.getBoundingClientRect();
  zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
}, { passive: false });

// Client coordinates -> image pixels (clamped to the image).
function toImage(event) {
  const item = current();
  const rect = ui.overlay.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * item.width;
  const y = ((event.clientY - rect.top) / rect.height) * item.height;
  return [Math.min(item.width, Math.max(0, x)), Math.min(item.height, Math.max(0, y))];
}

let drag = null;

ui.viewer.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 || !current()) return;
  event.preventDefault();
  ui.viewer.setPointerCapture(event.pointerId);
  drag = state.boxMode
    ? { kind: "box", start: toImage(event), previous: state.box }
    : { kind: "pan", x: event.clientX, y: event.clientY, view: { ...state.view } };
});

ui.viewer.addEventListener("pointermove", (event) => {
  if (!drag) return;
  if (drag.kind === "pan") {
    state.view = {
      ...drag.view,
      x: drag.view.x + event.clientX - drag.x,
      y: drag.view.y + event.clientY - drag.y,
    };
    layout();
  } else {
    const [x, y] = toImage(event);
    const [x0, y0] = drag.start;
    state.box = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
    renderBox();
  }
});

function endDrag(event) {
  if (!drag) return;
  if (drag.kind === "box") {
    const box = state.box;
    const tooSmall = !box || box === drag.previous ||
      box[2] - box[0] < MIN_BOX_PX || box[3] - box[1] < MIN_BOX_PX;
    if (tooSmall || event.type === "pointercancel") state.box = drag.previous;
    renderBox();
  }
  drag = null;
}

ui.viewer.addEventListener("pointerup", endDrag);
ui.viewer.addEventListener("pointercancel", endDrag);

function setRect(rect, box) {
  if (!box) {
    rect.setAttribute("visibility", "hidden");
    return;
  }
  rect.setAttribute("x", box[0]);
  rect.setAttribute("y", box[1]);
  rect.setAttribute("width", box[2] - box[0]);
  rect.setAttribute("height", box[3] - box[1]);
  rect.setAttribute("visibility", "visible");
}

function renderBox() {
  const item = current();
  const original = item && Array.isArray(item.box) ? item.box : null;
  const same = original && state.box && original.every((v, i) => Math.abs(v - state.box[i]) < 0.5);
  // The stored box is drawn dashed while it is what will be sent, and faint once replaced.
  setRect(ui.boxExisting, original);
  ui.boxExisting.classList.toggle("replaced", !same);
  setRect(ui.boxDrawn, same ? null : state.box);
  ui.boxReadout.textContent = state.box
    ? `box ${state.box.map((v) => Math.round(v)).join(", ")}`
    : "no box";
  root.dataset.box = state.box ? state.box.map((v) => Math.round(v)).join(",") : "";
}

function clearBox() {
  state.box = null;
  renderBox();
}

function toggleBoxMode(on = !state.boxMode) {
  state.boxMode = on;
  renderMode();
}

function renderMode() {
  ui.viewer.classList.toggle("box-mode", state.boxMode);
  ui.mode.textContent = state.boxMode ? "box mode: drag to draw" : "pan";
  const button = document.querySelector('[data-action="box-mode"]');
  button.setAttribute("aria-pressed", String(state.boxMode));
}

// --- class search -----------------------------------------------------------------

const search = {
  timer: null,
  controller: null,
  results: [],
  active: -1,
  renderedQuery: null,
  running: null, // Promise of the request in flight
  runningQuery: null,
};

function openSearch(mode = "label") {
  if (mode === "label" && !current()) return;
  state.searchMode = mode;
  state.overlay = "search";
  ui.searchTitle.textContent = mode === "filter" ? "Filter the queue by class" : "Label with a class";
  ui.searchInput.value = "";
  search.results = [];
  search.active = -1;
  search.renderedQuery = null;
  ui.searchResults.replaceChildren();
  ui.searchExamples.replaceChildren();
  ui.searchPanel.hidden = false;
  ui.searchInput.focus();
}

function scheduleSearch() {
  clearTimeout(search.timer);
  search.timer = setTimeout(runSearch, SEARCH_DEBOUNCE_MS);
}

function runSearch() {
  clearTimeout(search.timer);
  search.timer = null;
  const query = ui.searchInput.value.trim();
  search.controller?.abort();
  if (!query) {
    search.results = [];
    search.renderedQuery = query;
    renderResults();
    search.running = null;
    return Promise.resolve();
  }
  const controller = new AbortController();
  search.controller = controller;
  const params = new URLSearchParams({ q: query, limit: "20" });
  search.runningQuery = query;
  search.running = blocking(api("GET", `/classes?${params}`, undefined, { signal: controller.signal }))
    .then((data) => {
      if (controller.signal.aborted) return;
      search.results = data.classes ?? [];
      search.renderedQuery = query;
      search.active = search.results.length ? 0 : -1;
      renderResults();
    })
    .catch(report);
  return search.running;
}

function renderResults() {
  const query = search.renderedQuery;
  if (query && search.results.length === 0) {
    const none = el("li", { className: "muted", text: `No class matches “${query}”.` });
    ui.searchResults.replaceChildren(none);
  } else {
    ui.searchResults.replaceChildren(
      ...search.results.map((cls, index) => {
        const others = (cls.aliases ?? [])
          .filter((alias) => alias.name !== cls.display_name)
          .map((alias) => `${alias.name} (${alias.language})`);
        return el(
          "li",
          {
            className: index === search.active ? "result active" : "result",
            attrs: {
              id: `search-result-${index}`,
              role: "option",
              "aria-selected": String(index === search.active),
              "data-index": index,
              "data-class-id": cls.id,
            },
          },
          [
            el("span", { className: "name", text: cls.display_name }),
            cls.status !== "active" ? el("span", { className: "badge", text: cls.status }) : "",
            others.length ? el("span", { className: "aliases muted", text: others.join(" · ") }) : "",
          ],
        );
      }),
    );
  }
  const active = search.results[search.active];
  if (active) ui.searchInput.setAttribute("aria-activedescendant", `search-result-${search.active}`);
  else ui.searchInput.removeAttribute("aria-activedescendant");
  showSearchExamples(active);
}

function showSearchExamples(cls) {
  ui.searchExamples.replaceChildren();
  if (!cls) return;
  ui.searchExamples.dataset.classId = String(cls.id);
  fillStrip(ui.searchExamples, cls.id);
}

function moveActive(step) {
  if (search.results.length === 0) return;
  search.active = (search.active + step + search.results.length) % search.results.length;
  renderResults();
  $(`search-result-${search.active}`)?.scrollIntoView({ block: "nearest" });
}

async function chooseActive() {
  // Enter right after typing: wait for the answer to what was typed.
  const query = ui.searchInput.value.trim();
  if (search.renderedQuery !== query) {
    const inFlight = search.timer === null && search.running && search.runningQuery === query;
    await (inFlight ? search.running : runSearch());
  }
  const cls = search.results[search.active];
  if (cls) choose(cls);
}

function choose(cls) {
  const mode = state.searchMode;
  closeOverlay();
  if (mode === "filter") {
    state.filters.class_id = cls.id;
    state.filters.class_name = cls.display_name;
    applyFilters();
  } else {
    decide("label", { class_id: cls.id });
  }
}

ui.searchInput.addEventListener("input", scheduleSearch);
ui.searchInput.addEventListener("keydown", (event) => {
  if (event.isComposing) return;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    moveActive(event.key === "ArrowDown" ? 1 : -1);
  } else if (event.key === "Enter") {
    event.preventDefault();
    event.stopPropagation();
    chooseActive();
  } else if (event.key === "Escape") {
    event.preventDefault();
    event.stopPropagation();
    closeOverlay();
  }
});
ui.searchResults.addEventListener("click", (event) => {
  const row = event.target.closest("[data-index]");
  if (row) choose(search.results[Number(row.dataset.index)]);
});

// --- propose a class ----------------------------------------------------------------

function openPropose() {
  if (!current()) return;
  state.overlay = "propose";
  ui.proposeInput.value = "";
  ui.proposePanel.hidden = false;
  ui.proposeInput.focus();
}

ui.proposeInput.addEventListener("keydown", (event) => {
  if (event.isComposing) return;
  if (event.key === "Enter") {
    event.preventDefault();
    event.stopPropagation();
    const name = ui.proposeInput.value.trim();
    if (!name) {
      toast("Type the name of the new class first.");
      return;
    }
    closeOverlay();
    decide("propose", { proposed_name: name });
  } else if (event.key === "Escape") {
    event.preventDefault();
    event.stopPropagation();
    closeOverlay();
  }
});

// --- overlays -----------------------------------------------------------------------

function toggleHelp() {
  if (state.overlay === "help") {
    closeOverlay();
    return;
  }
  closeOverlay();
  state.overlay = "help";
  ui.helpPanel.hidden = false;
}

function closeOverlay() {
  if (!state.overlay) return false;
  clearTimeout(search.timer);
  search.timer = null;
  search.controller?.abort();
  ui.searchPanel.hidden = true;
  ui.proposePanel.hidden = true;
  ui.helpPanel.hidden = true;
  state.overlay = null;
  if (document.activeElement instanceof HTMLElement && document.activeElement !== document.body) {
    document.activeElement.blur();
  }
  return true;
}

// --- keys ---------------------------------------------------------------------------

const KEYS = {
  Enter: accept,
  a: accept,
  "/": () => openSearch("label"),
  b: () => toggleBoxMode(),
  x: clearBox,
  n: () => decide("not_landmark"),
  p: openPropose,
  s: () => decide("skip"),
  u: undo,
  g: toggleGroup,
  "?": toggleHelp,
};
const REPEATABLE = {
  "+": () => zoomCentre(ZOOM_STEP),
  "=": () => zoomCentre(ZOOM_STEP),
  "-": () => zoomCentre(1 / ZOOM_STEP),
  _: () => zoomCentre(1 / ZOOM_STEP),
  0: resetZoom,
};
const NOT_TEXT = new Set(["checkbox", "radio", "button", "submit", "reset", "range", "color", "file"]);

function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable || ["TEXTAREA", "SELECT"].includes(target.tagName)) return true;
  return target.tagName === "INPUT" && !NOT_TEXT.has(target.type);
}

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.isComposing) return;
  const target = event.target;
  if (event.key === "Escape") {
    if (closeOverlay()) event.preventDefault();
    else if (state.boxMode) toggleBoxMode(false);
    else if (isTyping(target)) target.blur();
    return;
  }
  if (isTyping(target)) return;
  // A focused button or link does its own thing on Enter and Space.
  if ((event.key === "Enter" || event.key === " ") && target instanceof HTMLElement &&
      target.closest("button, a, summary")) return;
  const command = event.ctrlKey || event.metaKey;
  if (command && !event.altKey && !event.shiftKey && event.key.toLowerCase() === "z") {
    event.preventDefault();
    if (!event.repeat) undo();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (state.overlay === "help") {
    if (event.key === "?") {
      event.preventDefault();
      closeOverlay();
    }
    return;
  }
  if (state.overlay) return;
  const repeatable = REPEATABLE[event.key];
  if (repeatable) {
    event.preventDefault();
    repeatable();
    return;
  }
  if (/^[1-9]$/.test(event.key)) {
    event.preventDefault();
    if (!event.repeat) pickTopK(Number(event.key));
    return;
  }
  const action = KEYS[event.key];
  if (!action) return;
  event.preventDefault();
  if (!event.repeat) action();
});

// --- buttons and filters --------------------------------------------------------------

const BUTTONS = {
  accept,
  search: () => openSearch("label"),
  not_landmark: () => decide("not_landmark"),
  propose: openPropose,
  skip: () => decide("skip"),
  undo,
  "box-mode": () => toggleBoxMode(),
  "box-clear": clearBox,
  help: toggleHelp,
  refresh: () => {
    state.exhausted = false;
    fill();
  },
  "filter-class": () => openSearch("filter"),
  "filter-class-clear": () => {
    state.filters.class_id = null;
    state.filters.class_name = null;
    applyFilters();
  },
};

root.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action], button[data-pick]");
  if (!button) return;
  // Keyboard users press Enter on the focused button; mouse users get the
  // focus back on the page so that the next key is a shortcut again.
  if (event.detail > 0) button.blur();
  if (button.dataset.pick) pickTopK(Number(button.dataset.pick));
  else BUTTONS[button.dataset.action]?.();
});

ui.toast.addEventListener("click", (event) => {
  if (event.target.tagName !== "A") ui.toast.hidden = true;
});

for (const [select, key] of [[ui.filterReason, "reason"], [ui.filterSource, "source"]]) {
  select.addEventListener("change", () => {
    state.filters[key] = select.value || null;
    applyFilters();
  });
}
$("review-filters").addEventListener("submit", (event) => event.preventDefault());

// --- start: resume this reviewer's claims, then claim up to PREFETCH ------------------

// ?reason= and ?source= preset the filters (values the selects offer only).
function presetFilters(params) {
  for (const [select, key] of [[ui.filterReason, "reason"], [ui.filterSource, "source"]]) {
    const wanted = params.get(key);
    if (wanted && [...select.options].some((option) => option.value === wanted)) {
      select.value = wanted;
      state.filters[key] = wanted;
    }
  }
}

// ?item=<id>: claim that item and put it on screen. The server refuses a
// reviewer, a decided item, or one someone else holds, and says so.
async function claimChosen(params) {
  const wanted = params.get("item");
  if (!wanted) return;
  if (/^[0-9]+$/.test(wanted)) {
    try {
      const data = await blocking(api("POST", "/claim", { item_id: Number(wanted) }));
      if (data.item) {
        removeItem(data.item.item_id);
        state.items.unshift(data.item);
      }
    } catch (error) {
      report(error);
    }
  } else {
    toast(`“${wanted}” is not an item number.`);
  }
  // A reload resumes the claim through /mine; it must not ask for the item again.
  const url = new URL(window.location.href);
  url.searchParams.delete("item");
  window.history.replaceState(window.history.state, "", url);
}

async function start() {
  const params = new URLSearchParams(window.location.search);
  presetFilters(params);
  let resumed = false;
  try {
    const data = await blocking(api("GET", "/mine"));
    state.items = (data.items ?? []).slice();
    resumed = state.items.length > 0;
  } catch (error) {
    report(error);
  }
  await claimChosen(params);
  state.items.slice(1).forEach(preload);
  show();
  // Claims resumed from an earlier visit may be close to lapsing.
  if (resumed) renewLeases();
  startRenewals();
  await fill();
  root.dataset.ready = "true";
}

start();
