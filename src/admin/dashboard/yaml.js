// YAML for the policy preview: block style, keys in the order given, strings quoted (as JSON, which YAML reads)
// whenever a plain scalar could read as something else.
"use strict";

const PLAIN = /^[A-Za-z_/][A-Za-z0-9_.\/-]*$/;
const AMBIGUOUS = /^(true|false|yes|no|on|off|y|n|null|~)$/i;

function scalar(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  const s = String(v);
  return PLAIN.test(s) && !AMBIGUOUS.test(s) ? s : JSON.stringify(s);
}

const isEmpty = (v) => (Array.isArray(v) ? v.length === 0 : v !== null && typeof v === "object" && Object.keys(v).length === 0);
const isScalar = (v) => v === null || typeof v !== "object";

function lines(v, indent) {
  if (Array.isArray(v)) {
    return v.flatMap((item) => {
      if (isScalar(item) || isEmpty(item)) return [`${indent}- ${isScalar(item) ? scalar(item) : JSON.stringify(item)}`];
      const inner = lines(item, `${indent}  `);
      inner[0] = `${indent}- ${inner[0].slice(indent.length + 2)}`;
      return inner;
    });
  }
  return Object.entries(v).flatMap(([k, val]) => {
    if (isScalar(val)) return [`${indent}${scalar(k)}: ${scalar(val)}`];
    if (isEmpty(val)) return [`${indent}${scalar(k)}: ${JSON.stringify(val)}`];
    return [`${indent}${scalar(k)}:`, ...lines(val, `${indent}  `)];
  });
}

/// One YAML document (with its `---`) for a JSON-shaped value.
export function toYaml(doc) {
  return ["---", ...lines(doc, "")].join("\n") + "\n";
}
