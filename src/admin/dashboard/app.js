// Sluice release console: the task list, a task's progress, policy, live traffic per version, and the operator's
// verbs, each after a confirm step that shows what it will do (the API's dry-run plan). Reads the Release REST API
// every second; every request goes through api.js (one place for the token). Creating a task: create.js; the
// traffic policy form: policy.js.
"use strict";

import { $, el, get, releasePath, send } from "./api.js";
import { openCreate } from "./create.js";
import { showPolicy } from "./policy.js";

const HISTORY = 120; // seconds of chart history kept per version
const COLORS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed"];

const state = {
  releases: [],
  selected: null, // "ns/name"
  history: new Map(), // "ns/name" -> Map(version -> [{t, rps, success}])
  pending: null, // {label, run}
  rollout: null, // {key, value}: the selected task's status.rollout, when it deploys
  changedAt: 0, // performance.now() of the page's last change
};

// ---- errors -----------------------------------------------------------------------------------------------

function showError(err) {
  $("#error-text").textContent = err instanceof Error ? err.message : String(err);
  $("#error").hidden = false;
}

function clearError() {
  $("#error").hidden = true;
  $("#error-text").textContent = "";
}

// ---- polling ----------------------------------------------------------------------------------------------

const keyOf = (r) => `${r.metadata.namespace}/${r.metadata.name}`;

/// A change the page made: polls that began before it are stale (they would show the state before the change,
/// and refill the policy form with the old policy).
function changed() {
  state.changedAt = performance.now();
  return refresh();
}

async function refresh() {
  const started = performance.now();
  try {
    const list = await get("/releases");
    if (started < state.changedAt) return;
    state.releases = list.items || [];
    const chosen = state.releases.find((r) => keyOf(r) === state.selected);
    if (chosen && chosen.spec.deploy) {
      const path = `${releasePath(chosen.metadata.namespace, chosen.metadata.name)}/rollout`;
      // Not fatal to the page: the progress bar says it waits, and the next poll asks again.
      const rollout = await get(path).then((a) => a.rollout, () => null);
      if (started < state.changedAt) return;
      state.rollout = { key: keyOf(chosen), value: rollout };
    }
    const now = Date.now();
    for (const r of state.releases) record(keyOf(r), r, now);
    if (!state.selected || !state.releases.some((r) => keyOf(r) === state.selected)) {
      const fromHash = decodeURIComponent(location.hash.slice(1));
      state.selected = state.releases.some((r) => keyOf(r) === fromHash) ? fromHash : state.releases.length ? keyOf(state.releases[0]) : null;
    }
    render();
    if ($("#error-text").textContent.startsWith("refresh failed")) clearError();
  } catch (err) {
    showError(new Error(`refresh failed: ${err.message}`));
  }
}

function record(key, release, t) {
  if (!state.history.has(key)) state.history.set(key, new Map());
  const byVersion = state.history.get(key);
  for (const v of release.status.versions) {
    if (!byVersion.has(v.name)) byVersion.set(v.name, []);
    const points = byVersion.get(v.name);
    points.push({ t, rps: v.rps ?? 0, success: v.successRate ?? null });
    while (points.length && points[0].t < t - HISTORY * 1000) points.shift();
  }
}

// ---- rendering --------------------------------------------------------------------------------------------

function render() {
  const list = $("#releases");
  list.replaceChildren(...(state.releases.length ? state.releases.map(releaseItem) : [el("li", { class: "muted" }, "no release tasks")]));
  const r = state.releases.find((x) => keyOf(x) === state.selected);
  $("#detail").hidden = !r || !$("#create").hidden;
  if (r) renderDetail(r);
}

function releaseItem(r) {
  const key = keyOf(r);
  const a = el("a", { href: `#${encodeURIComponent(key)}`, class: key === state.selected ? "selected" : "" },
    key, el("small", {}, `${r.status.phase} · ${r.spec.canary} ${pct(r.status.weights[r.spec.canary])}`));
  a.addEventListener("click", () => { state.selected = key; $("#create").hidden = true; cancelConfirm(); render(); });
  return el("li", {}, a);
}

const pct = (bp) => `${((bp ?? 0) / 100).toFixed(bp % 100 ? 2 : 0)}%`;
const num = (x, digits) => (x === undefined || x === null ? "–" : x.toFixed(digits));

function renderDetail(r) {
  const s = r.status;
  $("#title").textContent = `${keyOf(r)} · ${r.spec.service}`;
  $("#summary").textContent =
    `phase ${s.phase} · step ${s.step} of ${s.steps} · proxies ${s.proxies.acked}/${s.proxies.total} ACKed · source ${s.source}`;
  const rows = s.versions.map((v) => el("tr", { "data-version": v.name },
    el("td", {}, v.name), el("td", {}, v.name === r.spec.canary ? "canary" : "stable"),
    el("td", { class: "num" }, pct(v.weight)), el("td", { class: "num" }, `${v.ready}/${v.endpoints}`),
    el("td", { class: "num rps" }, num(v.rps, 1)),
    el("td", { class: "num" }, v.successRate === undefined ? "–" : `${(v.successRate * 100).toFixed(2)}%`),
    el("td", { class: "num" }, num(v.latencyP50Ms, 1)), el("td", { class: "num" }, num(v.latencyP99Ms, 1))));
  $("#versions tbody").replaceChildren(...rows);
  showPolicy(r, renderProgress(r), changed);
  const weightInput = $("#weight");
  if (document.activeElement !== weightInput) weightInput.value = ((s.weights[r.spec.canary] ?? 0) / 100).toString();
  const history = state.history.get(keyOf(r)) || new Map();
  const versions = s.versions.map((v) => v.name);
  chart($("#chart-rps"), versions, history, (p) => p.rps, null);
  chart($("#chart-success"), versions, history, (p) => p.success, [0, 1]);
  $("#legend").replaceChildren(...versions.map((v, i) => el("span", {}, el("i", { style: `background:${COLORS[i % COLORS.length]}` }), v)));
  $("#conditions").replaceChildren(...s.conditions.map((c) =>
    el("li", { class: `cond-${c.status}` }, `${c.type}: ${c.status} (${c.reason}) ${c.message}`)));
}

/// The progress bar: the canary Deployment's ready replicas when the task deploys it (its `status.rollout`, with
/// its conditions), else the new version's ready endpoints. Returns whether the rollout is complete.
function renderProgress(r) {
  const canary = r.status.versions.find((v) => v.name === r.spec.canary) || { ready: 0, endpoints: 0 };
  const bar = $("#rollout");
  let conditions = [];
  let done;
  if (r.spec.deploy) {
    const rollout = state.rollout && state.rollout.key === keyOf(r) ? state.rollout.value : null;
    const want = rollout && rollout.replicas ? rollout.replicas : r.spec.deploy.replicas || 0;
    const ready = rollout ? rollout.readyReplicas || 0 : 0;
    bar.max = Math.max(1, want);
    bar.value = ready;
    $("#rollout-text").textContent = rollout && rollout.deployment
      ? `Deployment ${rollout.deployment}: ${ready}/${want} replicas ready, ${rollout.updatedReplicas || 0} updated`
      : `${r.spec.canary}: waiting for its Deployment (0/${want})`;
    conditions = (rollout && rollout.conditions) || [];
    done = !!rollout && want > 0 && ready >= want;
  } else {
    bar.max = Math.max(1, canary.endpoints);
    bar.value = canary.ready;
    $("#rollout-text").textContent = canary.endpoints
      ? `${r.spec.canary}: ${canary.ready} of ${canary.endpoints} endpoints ready (${Math.round((100 * canary.ready) / canary.endpoints)}%)`
      : `${r.spec.canary}: no endpoints yet`;
    done = canary.endpoints > 0 && canary.ready === canary.endpoints;
  }
  $("#rollout-conditions").replaceChildren(...conditions.map((c) =>
    el("li", { class: `cond-${c.status}` }, `${c.type}: ${c.status} (${c.reason}) ${c.message}`)));
  return done;
}

/// A line per version over the last HISTORY seconds, drawn as SVG polylines (x: time, y: value).
function chart(svg, versions, history, value, fixedRange) {
  const W = 600, H = 160, now = Date.now();
  const series = versions.map((v) => (history.get(v) || []).filter((p) => value(p) !== null));
  let max = fixedRange ? fixedRange[1] : Math.max(1, ...series.flat().map(value));
  if (!fixedRange) max = niceCeil(max);
  const min = fixedRange ? fixedRange[0] : 0;
  const x = (t) => (W * (t - (now - HISTORY * 1000))) / (HISTORY * 1000);
  const y = (v) => H - 4 - ((H - 18) * (v - min)) / (max - min || 1);
  const nodes = [];
  for (const frac of [0, 0.5, 1]) {
    const v = min + (max - min) * frac;
    const line = el("line", { x1: 0, x2: W, y1: y(v), y2: y(v), stroke: "#e5e7eb" });
    const label = el("text", { x: 4, y: y(v) - 2 }, fixedRange ? `${(v * 100).toFixed(0)}%` : v.toFixed(0));
    nodes.push(line, label);
  }
  versions.forEach((v, i) => {
    const pts = series[i].map((p) => `${x(p.t).toFixed(1)},${y(value(p)).toFixed(1)}`).join(" ");
    nodes.push(svgEl("polyline", { points: pts, stroke: COLORS[i % COLORS.length], "data-version": v,
      "data-last": series[i].length ? value(series[i][series[i].length - 1]) : "" }));
  });
  svg.replaceChildren(...nodes.map((n) => (n.namespaceURI === SVG ? n : toSvg(n))));
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
function toSvg(htmlEl) {
  const e = svgEl(htmlEl.tagName.toLowerCase(), Object.fromEntries([...htmlEl.attributes].map((a) => [a.name, a.value])));
  e.textContent = htmlEl.textContent;
  return e;
}
function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((c) => c >= v);
}

// ---- actions with a confirm step --------------------------------------------------------------------------

function selectedRelease() {
  return state.releases.find((x) => keyOf(x) === state.selected);
}

/// A verb's confirm step: what it will do, from the API's dry run (`?dryRun=All`), before anything changes.
async function ask(action) {
  const r = selectedRelease();
  if (!r) return;
  const path = releasePath(r.metadata.namespace, r.metadata.name);
  let label, run, plan = [];
  if (action === "weight") {
    const percent = Number($("#weight").value);
    if (!Number.isFinite(percent) || percent < 0 || percent > 100) {
      showError(new Error(`canary weight: ${$("#weight").value} is not a percentage between 0 and 100`));
      return;
    }
    const bp = Math.round(percent * 100);
    label = `Send ${percent}% of ${r.spec.service} traffic to ${r.spec.canary}?`;
    run = () => send("POST", `${path}/weight`, { canaryWeight: bp });
  } else {
    label = {
      promote: `Let ${r.spec.canary} take over all traffic of ${r.spec.service}?`,
      abort: `Abort: send all traffic of ${r.spec.service} back to ${r.spec.stable}?`,
      finalize: `End the task: keep only the winning version of ${r.spec.service}?`,
    }[action];
    try {
      const p = await send("POST", `${path}/${action}?dryRun=All`);
      plan = planLines(p);
    } catch (err) {
      showError(err);
      return;
    }
    run = () => send("POST", `${path}/${action}`);
  }
  state.pending = { label, run };
  $("#confirm-text").textContent = label;
  $("#confirm-plan").replaceChildren(...plan.map((line) => el("li", {}, line)));
  $("#confirm").hidden = false;
  $("#confirm-no").focus();
}

/// What a plan says, in lines for the confirm step.
function planLines(p) {
  const weights = Object.entries(p.weights).map(([v, w]) => `${v} ${pct(w)}`).join(", ");
  const lines = [`phase ${p.phase} → ${p.nextPhase}; traffic: ${weights}`, `${p.keeps.join(" and ") || "no version"} keeps serving`];
  for (const c of p.clustersRemoved) lines.push(`proxies drop the cluster ${c}`);
  for (const c of p.clustersAdded) lines.push(`proxies get the cluster ${c}`);
  if (p.loser) lines.push(p.loser.message);
  return lines;
}

function cancelConfirm() {
  state.pending = null;
  $("#confirm").hidden = true;
}

async function confirmPending() {
  const p = state.pending;
  cancelConfirm();
  if (!p) return;
  try {
    await p.run();
    clearError();
    await changed();
  } catch (err) {
    showError(err);
  }
}

// ---- wiring -----------------------------------------------------------------------------------------------

document.querySelectorAll("[data-action]").forEach((b) => b.addEventListener("click", () => ask(b.dataset.action)));
$("#confirm-yes").addEventListener("click", confirmPending);
$("#confirm-no").addEventListener("click", cancelConfirm);
$("#error-close").addEventListener("click", clearError);
$("#new-task").addEventListener("click", () => {
  cancelConfirm();
  $("#detail").hidden = true;
  openCreate((key) => {
    state.selected = key;
    location.hash = encodeURIComponent(key);
    changed();
  });
});
$("#token").value = localStorage.getItem("sluice-token") || "";
$("#token").addEventListener("change", () => {
  const t = $("#token").value.trim();
  if (t) localStorage.setItem("sluice-token", t); else localStorage.removeItem("sluice-token");
});
window.addEventListener("hashchange", () => { state.selected = decodeURIComponent(location.hash.slice(1)); render(); });
refresh();
setInterval(refresh, 1000);
