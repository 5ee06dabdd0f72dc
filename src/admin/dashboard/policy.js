// Configure Traffic Policy: by ratio (a slider and a number; basis points in the policy) or by request content (rules
// of header / cookie / query conditions, operating systems and browsers), optional steps and analysis. The preview
// is the document "Deliver policy" sends; it is checked by a dry run first, and the API's refusals are shown next
// to the field they name.
"use strict";

import { $, $$, clearFieldErrors, releasePath, send, showApiError, showFieldError } from "./api.js";
import { toYaml } from "./yaml.js";

const form = $("#policy-form");
let release = null; // the task the form edits
let loaded = ""; // the task and spec the form was last filled from
let dirty = false; // edited since filled
let onDelivered = () => {};

const kind = () => ($("#kind-content").checked ? "content" : "ratio");

// ---- filling the form from a task ---------------------------------------------------------------------------

/// Shows the task's policy; refills only when another task is shown or its spec changed and nothing is being
/// edited. The form is locked until the new version has a ready endpoint and, when the task deploys it, until its
/// Deployment's replicas are all ready (`rolledOut`).
export function showPolicy(r, rolledOut, delivered) {
  onDelivered = delivered;
  release = r;
  const canary = r.status.versions.find((v) => v.name === r.spec.canary) || { ready: 0, endpoints: 0 };
  const locked = canary.ready === 0 || (!!r.spec.deploy && !rolledOut);
  $("#policy-fields").disabled = locked;
  $("#policy-locked").hidden = !locked;
  $("#policy-locked").textContent = !locked ? ""
    : r.spec.deploy ? `The traffic policy unlocks when every replica of ${r.spec.canary} is ready and serving.`
    : `The traffic policy unlocks when ${r.spec.canary} has a ready endpoint.`;
  // A step or "Set weight" may route another share than the policy's: say what is routed now.
  const now = (r.status.weights[r.spec.canary] ?? 0) / 100;
  $("#ratio-now").textContent = `routed now: ${now}% to ${r.spec.canary}`;
  const key = `${r.metadata.namespace}/${r.metadata.name} ${JSON.stringify(r.spec)}`;
  if (key.split(" ")[0] !== loaded.split(" ")[0] || (key !== loaded && !dirty)) fill(r.spec, key);
}

function fill(spec, key) {
  // "delivered at ..." stays while the same task is shown.
  if (key.split(" ")[0] !== loaded.split(" ")[0]) $("#deliver-status").textContent = "";
  loaded = key;
  dirty = false;
  clearFieldErrors(form);
  const traffic = spec.traffic || {};
  const rules = traffic.rules || [];
  $("#kind-content").checked = rules.length > 0;
  $("#kind-ratio").checked = rules.length === 0;
  setRatio((traffic.canaryWeight || 0) / 100);
  $("#rules").replaceChildren();
  for (const rule of rules) addRule(rule.match || {});
  if (!rules.length) addRule({});
  $("#steps").replaceChildren();
  const steps = spec.steps || [];
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i];
    if (s.setWeight !== undefined) {
      const next = steps[i + 1];
      const pause = next && next.pause ? (i++, next.pause.duration ?? "") : null;
      addStep(s.setWeight / 100, pause);
    } else if (s.pause) addStep(null, s.pause.duration ?? "");
  }
  const a = spec.analysis || {};
  $("#an-interval").value = a.interval || "";
  $("#an-success").value = a.successRate ? +(a.successRate.min * 100).toFixed(4) : "";
  $("#an-latency").value = a.latencyP99Ms ? a.latencyP99Ms.max : "";
  $("#steps-box").open = steps.length > 0 || !!spec.analysis;
  switchKind();
  preview();
}

function setRatio(percent) {
  $("#ratio").value = String(percent);
  $("#ratio-slider").value = String(Math.round(percent));
}

function addRule(match) {
  const rule = $("#rule-template").content.firstElementChild.cloneNode(true);
  $("#rules").append(rule);
  for (const k of ["headers", "cookies", "query"]) {
    for (const m of match[k] || []) addCondition(rule, k, m);
  }
  for (const os of match.clientOS || []) $(`[data-os="${os}"]`, rule).checked = true;
  for (const b of match.browser || []) $(`[data-browser="${b}"]`, rule).checked = true;
  numberRules();
  return rule;
}

function addCondition(rule, k = "headers", m = { name: "", exact: "" }) {
  const c = $("#condition-template").content.firstElementChild.cloneNode(true);
  $(".conditions", rule).append(c);
  $(".c-kind", c).value = k;
  const op = ["exact", "prefix", "regex"].find((o) => m[o] !== undefined) || "exact";
  $(".c-op", c).value = op;
  $(".c-name", c).value = m.name || "";
  $(".c-value", c).value = m[op] ?? "";
  return c;
}

function addStep(percent, pause) {
  const s = $("#step-template").content.firstElementChild.cloneNode(true);
  $(".s-weight", s).value = percent === null ? "" : String(percent);
  $(".s-pause", s).value = pause ?? "";
  $("#steps").append(s);
  numberRules();
  return s;
}

/// Legends, accessible names and the API paths each rule's, condition's and step's errors answer to.
function numberRules() {
  $$("#rules .rule").forEach((rule, i) => {
    $("legend", rule).textContent = `Rule ${i + 1}`;
    const err = $(".rule-error", rule);
    err.dataset.field = `spec.traffic.rules[${i}]`;
    err.id = `rule-${i}-error`;
    $$(".condition", rule).forEach((c, j) => {
      for (const [cls, what] of [[".c-kind", "request part"], [".c-name", "name"], [".c-op", "test"], [".c-value", "value"]]) {
        $(cls, c).setAttribute("aria-label", `Rule ${i + 1}, condition ${j + 1}: ${what}`);
      }
      $(".c-value", c).id = `rule-${i}-condition-${j}-value`;
      $(".condition-error", c).dataset.for = $(".c-value", c).id;
    });
  });
  $$("#steps .step").forEach((s, i) => {
    $(".s-weight", s).setAttribute("aria-label", `Step ${i + 1}: weight (%)`);
    $(".s-pause", s).setAttribute("aria-label", `Step ${i + 1}: then pause`);
    $(".step-error", s).id = `step-${i}-error`;
  });
}

function switchKind() {
  $("#ratio-fields").hidden = kind() !== "ratio";
  $("#content-fields").hidden = kind() !== "content";
}

// ---- the form as a policy ------------------------------------------------------------------------------------

const DURATION = /^[0-9]+(ms|s|m|h)$/;
// RE2 (what Envoy and Sluice run) has no lookaround and no backreferences; JavaScript's engine has both.
const NOT_RE2 = /\(\?<?[=!]|\\[1-9]/;

/// The policy document the form describes, or null after showing each error next to its field.
function policy() {
  clearFieldErrors(form);
  let ok = true;
  const fail = (field, msg) => { showFieldError(form, field, msg); ok = false; };
  const spec = structuredClone(release.spec);
  const traffic = { ...(spec.traffic || {}) };
  delete traffic.rules;
  traffic.canaryWeight = 0;
  if (kind() === "ratio") {
    const text = $("#ratio").value.trim();
    const percent = Number(text);
    if (text === "" || !Number.isFinite(percent) || percent < 0 || percent > 100) {
      fail("spec.traffic.canaryWeight", `${text || "nothing"} is not a percentage between 0 and 100`);
    } else if (Math.abs(percent * 100 - Math.round(percent * 100)) > 1e-6) {
      fail("spec.traffic.canaryWeight", "at most two decimals (the weight is in basis points)");
    } else traffic.canaryWeight = Math.round(percent * 100);
  } else {
    const rules = $$("#rules .rule").map((rule, i) => {
      const match = {};
      $$(".condition", rule).forEach((c) => {
        const k = $(".c-kind", c).value;
        match[k] = match[k] || [];
        const path = `spec.traffic.rules[${i}].match.${k}[${match[k].length}]`;
        $(".condition-error", c).dataset.field = path;
        const name = $(".c-name", c).value.trim();
        const op = $(".c-op", c).value;
        const value = $(".c-value", c).value;
        if (!name) fail(`${path}.name`, "must not be empty");
        if (op === "regex") {
          if (NOT_RE2.test(value)) fail(`${path}.regex`, "RE2 has no lookaround or backreferences");
          else {
            try { new RegExp(value); } catch (e) { fail(`${path}.regex`, `not a regular expression: ${e.message}`); }
          }
        }
        if (value === "" && op !== "exact") fail(`${path}.${op}`, "must not be empty");
        match[k].push({ name, [op]: value });
      });
      const os = $$("[data-os]:checked", rule).map((b) => b.dataset.os);
      const browser = $$("[data-browser]:checked", rule).map((b) => b.dataset.browser);
      if (os.length) match.clientOS = os;
      if (browser.length) match.browser = browser;
      if (!Object.keys(match).length) fail(`spec.traffic.rules[${i}]`, "add a condition, an operating system or a browser");
      return { to: "canary", match };
    });
    if (!rules.length) fail("spec.traffic.rules", "add a rule");
    traffic.rules = rules;
  }
  spec.traffic = traffic;
  const steps = [];
  $$("#steps .step").forEach((s, i) => {
    const err = $(".step-error", s);
    err.dataset.field = `spec.steps[${steps.length}]`;
    const text = $(".s-weight", s).value.trim();
    const pause = $(".s-pause", s).value.trim();
    if (text !== "") {
      const percent = Number(text);
      if (!Number.isFinite(percent) || percent < 0 || percent > 100) fail(err.dataset.field, `step ${i + 1}: ${text} is not a percentage between 0 and 100`);
      steps.push({ setWeight: Math.round(percent * 100) });
    }
    if (pause && !DURATION.test(pause)) fail(`spec.steps[${steps.length}]`, `step ${i + 1}: “${pause}” is not a duration such as 30s or 5m`);
    steps.push({ pause: pause ? { duration: pause } : {} });
  });
  if (steps.length) spec.steps = steps; else delete spec.steps;
  const interval = $("#an-interval").value.trim();
  const success = $("#an-success").value.trim();
  const latency = $("#an-latency").value.trim();
  if (interval || success || latency) {
    const analysis = { ...(spec.analysis || {}), interval };
    if (!DURATION.test(interval)) fail("spec.analysis.interval", "a duration such as 30s");
    if (success) {
      const v = Number(success);
      if (!(v >= 0 && v <= 100)) fail("spec.analysis.successRate", `${success} is not a percentage`);
      analysis.successRate = { min: v / 100 };
    } else delete analysis.successRate;
    if (latency) {
      const v = Number(latency);
      if (!(v >= 0)) fail("spec.analysis.latencyP99Ms", `${latency} is not a number of milliseconds`);
      analysis.latencyP99Ms = { max: v };
    } else delete analysis.latencyP99Ms;
    if (!success && !latency) fail("spec.analysis", "set a success rate or a latency bound");
    spec.analysis = analysis;
  } else delete spec.analysis;
  const doc = {
    apiVersion: "sluice.dev/v1alpha1", kind: "ReleasePolicy",
    metadata: { name: release.metadata.name, namespace: release.metadata.namespace }, spec,
  };
  return ok ? doc : null;
}

/// The preview shows what Deliver would send (or the last valid form's, marked stale, while the form has errors).
function preview() {
  if (!release) return;
  const doc = policy();
  const pre = $("#policy-yaml");
  if (doc) { pre.textContent = toYaml(doc); pre.classList.remove("stale"); } else pre.classList.add("stale");
  $("#deliver").disabled = !doc;
}

async function deliver(event) {
  event.preventDefault();
  const doc = policy();
  if (!doc) return;
  const path = releasePath(doc.metadata.namespace, doc.metadata.name);
  $("#deliver-status").textContent = "checking…";
  try {
    await send("PUT", `${path}?dryRun=All`, doc);
    const view = await send("PUT", path, doc);
    // The form shows what was delivered: later polls of the same spec leave it as it is.
    loaded = `${view.metadata.namespace}/${view.metadata.name} ${JSON.stringify(view.spec)}`;
    dirty = false;
    $("#deliver-status").textContent = `delivered at ${new Date().toLocaleTimeString()}`;
    onDelivered(view);
  } catch (err) {
    $("#deliver-status").textContent = "";
    showApiError(form, err);
  }
}

// ---- wiring --------------------------------------------------------------------------------------------------

form.addEventListener("input", (e) => {
  dirty = true;
  if (e.target.id === "ratio-slider") $("#ratio").value = e.target.value;
  if (e.target.id === "ratio") $("#ratio-slider").value = String(Math.round(Number(e.target.value) || 0));
  preview();
});
form.addEventListener("change", () => { dirty = true; switchKind(); preview(); });
form.addEventListener("click", (e) => {
  const t = e.target.closest("button");
  if (!t) return;
  const rule = t.closest(".rule");
  if (t.classList.contains("add-condition")) { $(".c-name", addCondition(rule)).focus(); }
  else if (t.classList.contains("remove-condition")) { t.closest(".condition").remove(); }
  else if (t.classList.contains("remove-rule")) { rule.remove(); }
  else if (t.classList.contains("remove-step")) { t.closest(".step").remove(); }
  else if (t.id === "add-rule") { $("button.add-condition", addRule({})).focus(); }
  else if (t.id === "add-step") { $(".s-weight", addStep(null, "")).focus(); }
  else return;
  dirty = true;
  numberRules();
  preview();
});
form.addEventListener("submit", deliver);
$("#copy-yaml").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("#policy-yaml").textContent);
    $("#deliver-status").textContent = "YAML copied";
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents($("#policy-yaml"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("#deliver-status").textContent = "YAML selected: copy it with Ctrl+C";
  }
});
