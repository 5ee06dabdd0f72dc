// Create Release Task: task name, namespace and Service (from the inventory), stable and new version. The new
// version runs already, or (Kubernetes mode) is deployed from the stable version's Deployment with new images and a
// replica count (`spec.deploy`). "Release" checks the task with a dry run, then creates it with all traffic still on
// the stable version; the task's page shows the rollout, and its policy form takes it from there.
"use strict";

import { $, $$, ApiError, clearFieldErrors, el, get, isDnsLabel, releasePath, send, showApiError, showFieldError } from "./api.js";

const form = $("#create-form");
let inventory = { namespaces: [] };
let onCreated = () => {};

const namespaceOf = () => inventory.namespaces.find((n) => n.name === $("#namespace").value);
const serviceOf = () => (namespaceOf()?.services || []).find((s) => s.name === $("#service").value);

/// Opens the form with a fresh inventory; `created(key)` is called once the task exists.
export async function openCreate(created) {
  onCreated = created;
  form.reset();
  clearFieldErrors(form);
  $("#create").hidden = false;
  try {
    inventory = await get("/inventory");
  } catch (err) {
    showApiError(form, err);
    return;
  }
  fillNamespaces();
  // Kubernetes mode: what becomes of the losing version's Deployment (`spec.finalize.loser`).
  $("#end-fields").hidden = !inventory.kubernetes;
  $("#task-name").focus();
}

function options(select, items, selected) {
  select.replaceChildren(...items.map(({ value, label, disabled }) => {
    const o = el("option", { value }, label ?? value);
    o.disabled = !!disabled;
    return o;
  }));
  if (selected !== undefined) select.value = selected;
}

function fillNamespaces() {
  options($("#namespace"), inventory.namespaces.map((n) => ({ value: n.name })),
    inventory.namespaces.some((n) => n.name === "default") ? "default" : undefined);
  fillServices();
}

function fillServices() {
  const services = namespaceOf()?.services || [];
  options($("#service"), services.map((s) => ({
    value: s.name,
    label: s.release ? `${s.name} (task ${s.release})` : s.name,
    disabled: !!s.release,
  })));
  const free = services.find((s) => !s.release);
  if (free) $("#service").value = free.name;
  fillVersions();
}

/// The workload table and the version choices of the chosen Service. The stable version defaults to the only
/// version, else the first; the new version to the last other one.
function fillVersions() {
  const svc = serviceOf();
  const versions = svc ? svc.versions : [];
  $("#workload tbody").replaceChildren(...(versions.length
    ? versions.map((v) => el("tr", { "data-version": v.name }, el("td", {}, v.name), el("td", { class: "num" }, `${v.ready}/${v.endpoints}`)))
    : [el("tr", {}, el("td", { colspan: "2", class: "muted" }, svc ? `no endpoint of ${svc.name} has a ${svc.versionLabel} label` : "no Service"))]));
  $("#workload-ports").textContent = svc ? `ports: ${svc.ports.map((p) => `${p.name || "(unnamed)"} ${p.port}/${p.protocol}`).join(", ")}` : "";
  // The stable version: the one serving most (ready endpoints), the first on a tie.
  const serving = versions.reduce((best, v) => (!best || v.ready > best.ready ? v : best), null);
  options($("#stable"), versions.map((v) => ({ value: v.name, label: `${v.name} (${v.ready}/${v.endpoints} ready)` })), serving?.name);
  $("#canary-versions").replaceChildren(...versions.map((v) => el("option", { value: v.name })));
  fillDeploy();
  fillCanary();
}

const deploying = () => $("#mode-deploy").checked;

/// The one Deployment running the stable version's pods, or why there is none to deploy from.
function stableDeployment() {
  const svc = serviceOf();
  if (!inventory.kubernetes || !svc || !svc.deployments) return { why: "only in Kubernetes mode (sluice serve --kube)" };
  const stable = $("#stable").value;
  const found = svc.deployments.filter((d) => d.version === stable);
  if (found.length === 1) return { deployment: found[0] };
  if (!found.length) return { why: `no Deployment runs the ${stable} pods of ${svc.name}` };
  return { why: `several Deployments run ${stable}: ${found.map((d) => d.name).join(", ")}` };
}

/// Deploy mode's fields: enabled when the stable version has one Deployment; one image field per container.
function fillDeploy() {
  const { deployment, why } = stableDeployment();
  $("#mode-deploy").disabled = !deployment;
  $("#deploy-unavailable").hidden = !!deployment;
  $("#deploy-unavailable").textContent = why ? `Deploying: ${why}.` : "";
  if (!deployment) $("#mode-existing").checked = true;
  $("#deploy-fields").hidden = !deploying();
  if (!deployment) return;
  $("#deploy-from").textContent = `A copy of Deployment ${deployment.name} (${deployment.readyReplicas}/${deployment.replicas} ready), with the new version's label and these images:`;
  $("#deploy-images").replaceChildren(...deployment.containers.map((c, i) => {
    const input = el("input", { id: `deploy-image-${i}`, class: "d-image", "data-container": c.name, "data-stable": c.image,
      autocomplete: "off", spellcheck: "false", "aria-describedby": "deploy-images-error" });
    input.value = c.image;
    return el("div", { class: "field" }, el("label", { for: input.id }, `Image of container ${c.name}`), input);
  }));
  $("#deploy-replicas").value = String(deployment.replicas);
}

/// The new version's default: the last other version that runs; when deploying, the next unused `vN`.
function fillCanary() {
  const svc = serviceOf();
  const versions = svc ? svc.versions.map((v) => v.name) : [];
  if (deploying()) {
    const numbers = versions.map((v) => /^v(\d+)$/.exec(v)).filter(Boolean).map((m) => Number(m[1]));
    $("#canary").value = `v${Math.max(0, ...numbers) + 1}`;
    return;
  }
  const others = versions.filter((v) => v !== $("#stable").value);
  $("#canary").value = others.length ? others[others.length - 1] : "";
}

/// The checks the page makes before it sends anything; each error goes next to its field.
function check() {
  clearFieldErrors(form);
  const name = $("#task-name").value.trim();
  const svc = serviceOf();
  const stable = $("#stable").value;
  const canary = $("#canary").value.trim();
  let ok = true;
  const fail = (field, msg) => { showFieldError(form, field, msg); ok = false; };
  if (!isDnsLabel(name)) fail("metadata.name", name ? `“${name}” is not a DNS label` : "a task needs a name");
  if (!svc) fail("spec.service", "choose a Service");
  else if (svc.release) fail("spec.service", `${svc.name} already has task ${svc.release}`);
  if (svc && !stable) fail("spec.stable", `${svc.name} has no versions`);
  if (!canary) fail("spec.canary", "name the new version");
  else if (canary === stable) fail("spec.canary", "must differ from the stable version");
  else if (deploying()) {
    if (svc && svc.versions.some((v) => v.name === canary)) fail("spec.canary", `${canary} runs already: choose “run already”, or a new version`);
    else if (!/^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/.test(canary)) fail("spec.canary", `“${canary}” is not a label value`);
  } else if (svc && !svc.versions.some((v) => v.name === canary)) {
    fail("spec.canary", `${svc.name} has no endpoints labelled ${svc.versionLabel}=${canary}`);
  }
  const spec = { service: svc && svc.name, stable, canary, traffic: { canaryWeight: 0 } };
  if (deploying()) {
    const images = {};
    for (const input of $$(".d-image", form)) {
      const image = input.value.trim();
      if (!image || /\s/.test(image)) fail(`spec.deploy.images.${input.dataset.container}`, `container ${input.dataset.container}: an image reference without spaces`);
      else if (image !== input.dataset.stable) images[input.dataset.container] = image;
    }
    if (ok && !Object.keys(images).length) fail("spec.deploy.images", "give at least one container a new image (a new tag)");
    const replicas = Number($("#deploy-replicas").value);
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 100) fail("spec.deploy.replicas", `${$("#deploy-replicas").value || "nothing"}: a whole number from 1 to 100`);
    spec.deploy = { from: stableDeployment().deployment.name, images, replicas };
  }
  if (inventory.kubernetes && $("#loser").value !== "Keep") spec.finalize = { loser: $("#loser").value };
  return ok && { name, namespace: $("#namespace").value, spec };
}

async function release(event) {
  event.preventDefault();
  const task = check();
  if (!task) return;
  const doc = { apiVersion: "sluice.dev/v1alpha1", kind: "ReleasePolicy", metadata: { name: task.name, namespace: task.namespace }, spec: task.spec };
  const path = releasePath(task.namespace, task.name);
  try {
    // An existing task of that name is never replaced from this form.
    const existing = await get(path).then(() => true, (e) => (e instanceof ApiError && e.status === 404 ? false : Promise.reject(e)));
    if (existing) {
      showFieldError(form, "metadata.name", `task ${task.namespace}/${task.name} exists already`);
      return;
    }
    await send("PUT", `${path}?dryRun=All`, doc);
    await send("PUT", path, doc);
  } catch (err) {
    showApiError(form, err);
    return;
  }
  $("#create").hidden = true;
  onCreated(`${task.namespace}/${task.name}`);
}

$("#task-name").addEventListener("input", () => {
  const name = $("#task-name").value.trim();
  const error = $("#task-name-error");
  const bad = name !== "" && !isDnsLabel(name);
  error.hidden = !bad;
  error.textContent = bad ? `“${name}” is not a DNS label` : "";
  if (bad) $("#task-name").setAttribute("aria-invalid", "true"); else $("#task-name").removeAttribute("aria-invalid");
});
$("#namespace").addEventListener("change", fillServices);
$("#service").addEventListener("change", fillVersions);
$("#stable").addEventListener("change", () => {
  fillDeploy();
  if ($("#canary").value === $("#stable").value) fillCanary();
});
for (const mode of ["#mode-existing", "#mode-deploy"]) {
  $(mode).addEventListener("change", () => { fillDeploy(); fillCanary(); });
}
form.addEventListener("submit", release);
$("#create-cancel").addEventListener("click", () => { $("#create").hidden = true; });
