//! The RFC 6902 JSONPatch that adds [`Parts`] to a pod (pure). Only `add` operations: what the user wrote is
//! never replaced or removed; lists get items appended (`sluice-init` and a native sidecar go first among the
//! init containers, so the user's own init containers already run behind the interception), maps get only the
//! keys they lack, and an absent list or map is added whole.

use super::template::Parts;
use serde_json::{Map, Value, json};

/// The operations, in order; applying them to `pod` gives the injected pod.
pub fn ops(pod: &Value, parts: &Parts) -> Vec<Value> {
    let mut out = Vec::new();
    let spec = &pod["spec"];
    let mut first_inits = vec![parts.init.clone()];
    if parts.native {
        first_inits.push(parts.sidecar.clone());
    }
    if spec["initContainers"].is_array() {
        for (i, c) in first_inits.into_iter().enumerate() {
            out.push(add(&format!("/spec/initContainers/{i}"), c));
        }
    } else {
        out.push(add("/spec/initContainers", Value::Array(first_inits)));
    }
    if !parts.native {
        append(&mut out, spec, "/spec", "containers", std::slice::from_ref(&parts.sidecar));
    }
    append(&mut out, spec, "/spec", "volumes", &parts.volumes);
    metadata(&mut out, pod, &parts.annotations, &parts.labels);
    out
}

/// Adds the annotations and labels the pod lacks (and `metadata` itself when there is none).
pub(super) fn metadata(
    out: &mut Vec<Value>,
    pod: &Value,
    annotations: &[(String, String)],
    labels: &[(String, String)],
) {
    let meta = &pod["metadata"];
    if !meta.is_object() {
        out.push(add("/metadata", json!({})));
    }
    merge_keys(out, meta, "annotations", annotations);
    merge_keys(out, meta, "labels", labels);
}

pub(super) fn add(path: &str, value: Value) -> Value {
    json!({"op": "add", "path": path, "value": value})
}

/// Appends `items` to the list at `parent/key`, or adds the list when there is none.
pub(super) fn append(out: &mut Vec<Value>, parent: &Value, at: &str, key: &str, items: &[Value]) {
    if parent[key].is_array() {
        out.extend(items.iter().map(|v| add(&format!("{at}/{key}/-"), v.clone())));
    } else {
        out.push(add(&format!("{at}/{key}"), Value::Array(items.to_vec())));
    }
}

/// Adds the pairs whose key the map at `metadata/key` lacks (the whole map when there is none).
fn merge_keys(out: &mut Vec<Value>, meta: &Value, key: &str, pairs: &[(String, String)]) {
    let existing = meta[key].as_object();
    let missing: Vec<&(String, String)> =
        pairs.iter().filter(|(k, _)| existing.is_none_or(|m| !m.contains_key(k))).collect();
    if missing.is_empty() {
        return;
    }
    match existing {
        Some(_) => {
            for (k, v) in missing {
                out.push(add(&format!("/metadata/{key}/{}", escape(k)), Value::String(v.clone())));
            }
        }
        None => {
            let map: Map<String, Value> =
                missing.into_iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            out.push(add(&format!("/metadata/{key}"), Value::Object(map)));
        }
    }
}

/// A JSON Pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(native: bool) -> Parts {
        Parts {
            init: json!({"name": "sluice-init"}),
            sidecar: json!({"name": "sluice-proxy"}),
            native,
            volumes: vec![json!({"name": "v"})],
            annotations: vec![("sidecar.istio.io/status".into(), "{}".into()), ("keep".into(), "new".into())],
            labels: vec![("security.istio.io/tlsMode".into(), "istio".into())],
        }
    }

    #[test]
    fn only_adds_and_keeps_what_the_user_wrote() {
        let pod = json!({
            "metadata": {"annotations": {"keep": "mine"}},
            "spec": {"initContainers": [{"name": "migrate"}], "containers": [{"name": "app"}]},
        });
        let ops = ops(&pod, &parts(false));
        assert!(ops.iter().all(|o| o["op"] == "add"));
        let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/spec/initContainers/0",
                "/spec/containers/-",
                "/spec/volumes",
                "/metadata/annotations/sidecar.istio.io~1status",
                "/metadata/labels"
            ]
        );
    }

    #[test]
    fn a_native_sidecar_follows_the_init_container() {
        let pod = json!({"metadata": {}, "spec": {"containers": [{"name": "app"}], "volumes": []}});
        let ops = ops(&pod, &parts(true));
        assert_eq!(ops[0]["path"], "/spec/initContainers");
        assert_eq!(ops[0]["value"], json!([{"name": "sluice-init"}, {"name": "sluice-proxy"}]));
        assert_eq!(ops[1]["path"], "/spec/volumes/-");
        assert!(!ops.iter().any(|o| o["path"].as_str().unwrap().starts_with("/spec/containers")));
    }
}
