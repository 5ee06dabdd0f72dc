//! Debug endpoints: per-proxy sync state and config dumps.

use super::AdminState;
use crate::envoy_json;
use crate::xds::TypeKind;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

pub async fn syncz(State(s): State<AdminState>) -> Json<Value> {
    let version = s.snapshots.borrow().as_ref().map(|s| s.version);
    let proxies: Vec<Value> = s
        .registry
        .list()
        .into_iter()
        .map(|p| {
            let mut v = serde_json::to_value(&p).unwrap_or_default();
            if let Some(cert) = s.registry.certificate(&p.node_id) {
                v["certificate"] = json!(cert);
            }
            v
        })
        .collect();
    Json(json!({ "snapshot_version": version, "proxies": proxies }))
}

#[derive(Deserialize)]
pub struct DumpQuery {
    proxy: Option<String>,
}

/// Envoy-JSON of what one proxy holds, per type, with its sync state.
pub async fn config_dump(
    State(s): State<AdminState>,
    Query(q): Query<DumpQuery>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let Some(id) = q.proxy.filter(|p| !p.is_empty()) else {
        return Err((StatusCode::BAD_REQUEST, "query parameter `proxy` (a node id) is required\n".into()));
    };
    let streams = s.registry.get(&id);
    if streams.is_empty() {
        return Err((StatusCode::NOT_FOUND, format!("no connected proxy with node id `{id}`\n")));
    }
    let mut out = Vec::new();
    for stream in streams {
        let mut types = serde_json::Map::new();
        for (kind, status) in &stream.types {
            let resources: Result<Vec<Value>, _> = status
                .held
                .upgrade()
                .unwrap_or_default()
                .values()
                .map(|r| envoy_json::any_to_json(kind.type_url(), &r.body).map(redact))
                .collect();
            let resources = resources.map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            types.insert(
                kind_name(*kind).into(),
                json!({ "acked_version": status.acked, "sent_version": status.sent, "pending": status.pending,
                        "last_nack": status.last_nack, "resources": resources }),
            );
        }
        out.push(
            json!({ "node_id": stream.node_id, "stream": stream.stream, "protocol": stream.protocol, "types": types }),
        );
    }
    Ok(Json(json!({ "proxy": id, "streams": out })))
}

pub async fn config(State(s): State<AdminState>) -> Json<Value> {
    Json(s.config.clone())
}

/// A resource with every inline private key (a gateway certificate from a Secret) replaced by `[redacted]`, as
/// Envoy's own `config_dump` shows them.
fn redact(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if (k == "privateKey" || k == "private_key") && child.is_object() {
                        let file = child.get("filename").cloned();
                        *child = match file {
                            Some(f) => json!({ "filename": f }),
                            None => json!({ "inlineString": "[redacted]" }),
                        };
                    } else {
                        walk(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

fn kind_name(k: TypeKind) -> &'static str {
    match k {
        TypeKind::Cluster => "clusters",
        TypeKind::Endpoint => "endpoints",
        TypeKind::Listener => "listeners",
        TypeKind::Route => "routes",
        TypeKind::VirtualHost => "virtual_hosts",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_keys_are_redacted_and_files_kept() {
        let v = json!({"a": [{"privateKey": {"inlineString": "-----BEGIN PRIVATE KEY-----"}}],
                       "b": {"private_key": {"filename": "/k.pem"}}});
        let out = redact(v).to_string();
        assert!(!out.contains("BEGIN") && out.contains("[redacted]") && out.contains("/k.pem"), "{out}");
    }
}
