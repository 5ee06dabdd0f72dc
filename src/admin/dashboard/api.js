// The Release REST API as the console calls it, and where its errors are shown.
// Every request goes through call(): one place for the token, one shape of error (ApiError with the API's field).
"use strict";

const API = "/api/v1";
export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/// An element with attributes and children (strings become text).
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

/// An API refusal: HTTP status, the API's message and, when it names one, the refused field's path.
export class ApiError extends Error {
  constructor(message, status, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

function token() {
  const input = document.getElementById("token");
  return (input && input.value.trim()) || localStorage.getItem("sluice-token") || "";
}

/// Reads carry the token too: served on a name that is not loopback, the admin port answers reads only with it.
async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const res = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!res.ok) {
    const msg = json && json.error ? json.error : text || res.statusText;
    throw new ApiError(`${method} ${path}: HTTP ${res.status}: ${msg}`, res.status, json && json.field);
  }
  return json;
}

export const get = (path) => call("GET", path);
export const send = (method, path, body) => call(method, path, body);
export const releasePath = (ns, name) => `/namespaces/${encodeURIComponent(ns)}/releases/${encodeURIComponent(name)}`;

/// A Kubernetes name: 1-63 of a-z, 0-9 and '-', alphanumeric at both ends (what the API checks).
export const isDnsLabel = (s) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(s);

// ---- errors next to their field ----------------------------------------------------------------------------

/// Hides every field error under `root`.
export function clearFieldErrors(root) {
  for (const e of $$(".field-error", root)) { e.hidden = true; e.textContent = ""; }
  for (const i of $$("[aria-invalid]", root)) i.removeAttribute("aria-invalid");
}

/// Shows `message` next to the field the API path `field` names: the error element under `root` whose
/// `data-field` is the longest prefix of the path (`spec.traffic.rules[0].match.headers[1].regex` finds the
/// condition's own). Its control (`data-for`, else the element it describes) is marked invalid.
export function showFieldError(root, field, message) {
  const path = field || "";
  const fits = (f) => f === "" || path === f || path.startsWith(`${f}.`) || path.startsWith(`${f}[`);
  const target = $$(".field-error[data-field]", root)
    .filter((e) => fits(e.dataset.field))
    .sort((a, b) => b.dataset.field.length - a.dataset.field.length)[0];
  if (!target) return false;
  target.textContent = field && !message.startsWith(field) ? `${field}: ${message}` : message;
  target.hidden = false;
  const control = target.dataset.for ? document.getElementById(target.dataset.for)
    : $(`[aria-describedby~="${target.id}"]`, root);
  if (control) control.setAttribute("aria-invalid", "true");
  return true;
}

/// An API error under `root`: next to its field when it names one, else in the form's general error slot.
export function showApiError(root, err) {
  const message = err instanceof ApiError && err.field ? err.message.replace(/^.*?HTTP \d+: /, "") : err.message;
  showFieldError(root, err instanceof ApiError ? err.field : "", message);
}
