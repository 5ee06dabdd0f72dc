//! Gateway injection (pure), Istio's `inject.istio.io/templates: gateway`: a gateway Deployment writes its proxy
//! container (`istio-proxy` or `sluice-proxy`, usually with `image: auto`) and the injector fills it in as the
//! agent in gateway mode: `sluice proxy` with the sidecar's downward-API env, podinfo and Envoy volumes, readiness
//! on 15021, uid 1337, and with `--ca` workload mTLS (the root, the projected token), so the gateway calls the mesh
//! over mTLS. Unlike a sidecar: no `sluice-init`, no interception, no `SLUICE_INBOUND_PORTS`, and no
//! `security.istio.io/tlsMode` label (the gateway's listeners take plaintext from outside, so no proxy may call
//! them with mTLS).
//!
//! ```text
//!  the pod's istio-proxy / sluice-proxy ─┐ every field the user wrote wins (env, ports, volumeMounts merged
//!  the agent container (template.rs) ────┴▶ by name, containerPort, mountPath); `image: auto` → the image
//!  SLUICE_GATEWAY in that env │ annotation sluice.dev/gateway ─▶ the Gateway it serves: required (refused without)
//!  no such container ─▶ the agent is added as `sluice-proxy`
//! ```
//! The patch only adds, except one `replace` of the `auto` placeholder image.

use super::Settings;
use super::annotations::{INTERCEPTION, Overrides, TEMPLATES, template_names};
use super::patch::{add, append, metadata};
use super::policy::SIDECAR_NAMES;
use super::template::{PROXY_CONTAINER, agent_container, agent_env, proxy_image, volumes};
use serde_json::{Value, json};

/// The annotation naming the Gateway a gateway pod serves, when its container's env does not.
pub const GATEWAY_ANNOTATION: &str = "sluice.dev/gateway";
/// The agent's env naming the Gateway (`sluice proxy --gateway`).
pub const GATEWAY_ENV: &str = "SLUICE_GATEWAY";
/// The image placeholder Istio's gateway manifests use: the injector puts its own image there.
pub const AUTO_IMAGE: &str = "auto";
/// The agent's health port, which a gateway's load balancer checks too (Istio's `status-port`).
pub const STATUS_PORT: u16 = 15021;
/// The pod sysctl that lets uid 1337 bind ports under 1024 (a Gateway server on 80 or 443), as istiod sets it.
pub const UNPRIVILEGED_PORTS: &str = "net.ipv4.ip_unprivileged_port_start";

/// A gateway pod the injector cannot fill in; the pod is refused with this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{TEMPLATES}: gateway: {0}")]
pub struct BadGateway(pub String);

/// Whether `pod` asks for the gateway template.
pub fn requested(pod: &Value) -> bool {
    pod["metadata"]["annotations"][TEMPLATES].as_str().is_some_and(|v| template_names(v).contains(&"gateway"))
}

/// The JSONPatch that makes `pod` a gateway, and warnings for the user.
pub fn ops(pod: &Value, settings: &Settings, o: &Overrides) -> Result<(Vec<Value>, Vec<String>), BadGateway> {
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut slots = containers.iter().enumerate().filter(|(_, c)| is_proxy(c));
    let slot = slots.next();
    let name = slot.and_then(|(_, c)| c["name"].as_str()).unwrap_or(PROXY_CONTAINER);
    if let Some((_, second)) = slots.next() {
        let second = second["name"].as_str().unwrap_or_default();
        return Err(BadGateway(format!("containers {name} and {second}: one proxy container only")));
    }
    let mut env = agent_env(settings, o, None);
    if let Some(gateway) = gateway_from_annotation(pod, slot.map(|(_, c)| c), name)? {
        env.push(json!({"name": GATEWAY_ENV, "value": gateway}));
    }
    let mut agent = agent_container(&proxy_image(settings, o), settings, o, env);
    agent["name"] = json!(name);
    let status_port = json!({"name": "status-port", "containerPort": STATUS_PORT, "protocol": "TCP"});
    agent["ports"].as_array_mut().expect("a list").push(status_port);

    let mut out = Vec::new();
    match slot {
        Some((i, user)) => fill(&mut out, &format!("/spec/containers/{i}"), user, &agent),
        None => append(&mut out, spec, "/spec", "containers", &[agent]),
    }
    let has_volume = |n: &Value| spec["volumes"].as_array().is_some_and(|v| v.iter().any(|v| v["name"] == *n));
    let added: Vec<Value> = volumes(settings).into_iter().filter(|v| !has_volume(&v["name"])).collect();
    if !added.is_empty() {
        append(&mut out, spec, "/spec", "volumes", &added);
    }
    unprivileged_ports(&mut out, spec);
    let status = json!({
        "initContainers": [],
        "containers": [name],
        "volumes": added.iter().map(|v| v["name"].clone()).collect::<Vec<_>>(),
    });
    let (annotations, labels) = super::template::metadata(pod, &status, false);
    metadata(&mut out, pod, &annotations, &labels);

    let mut warnings = o.warnings.clone();
    let present = INTERCEPTION.into_iter().filter(|k| pod["metadata"]["annotations"].get(*k).is_some());
    warnings.extend(present.map(|k| format!("annotation {k} has no effect on a gateway (no interception)")));
    Ok((out, warnings))
}

fn is_proxy(c: &Value) -> bool {
    c["name"].as_str().is_some_and(|n| SIDECAR_NAMES.contains(&n))
}

/// Checks that the pod names the Gateway it serves, in the container's `SLUICE_GATEWAY` or the annotation; returns
/// the annotation's value when the env must be added from it.
fn gateway_from_annotation(pod: &Value, user: Option<&Value>, container: &str) -> Result<Option<String>, BadGateway> {
    let parse =
        |v: &str, what: String| crate::bootstrap::parse_gateway(v).map_err(|e| BadGateway(format!("{what}: {e}")));
    let annotation = pod["metadata"]["annotations"][GATEWAY_ANNOTATION].as_str().map(str::trim);
    if let Some(a) = annotation {
        parse(a, format!("annotation {GATEWAY_ANNOTATION}"))?;
    }
    let env = user.and_then(|c| c["env"].as_array()).and_then(|env| env.iter().find(|e| e["name"] == GATEWAY_ENV));
    match (env, annotation) {
        (Some(e), a) => {
            if let Some(v) = e["value"].as_str() {
                parse(v, format!("container {container}: env {GATEWAY_ENV}"))?;
                if let Some(a) = a.filter(|a| *a != v) {
                    return Err(BadGateway(format!(
                        "annotation {GATEWAY_ANNOTATION} `{a}` and container {container}'s {GATEWAY_ENV} `{v}` differ"
                    )));
                }
            } else if !e["valueFrom"].is_object() {
                return Err(BadGateway(format!("container {container}: env {GATEWAY_ENV} has no value")));
            }
            Ok(None)
        }
        (None, Some(a)) => Ok(Some(a.to_string())),
        (None, None) => Err(BadGateway(format!(
            "the pod names no Gateway to serve: set {GATEWAY_ENV} (NAMESPACE/NAME) in container {container}'s env, \
             or the annotation {GATEWAY_ANNOTATION}"
        ))),
    }
}

/// Fills the user's proxy container at `at` from `agent`: a field the user did not write is added; `env`, `ports`
/// and `volumeMounts` get the items whose name, containerPort or mountPath the user's lack; `image: auto` becomes
/// the agent's image. Whatever else the user wrote wins, as in istiod's injection.
fn fill(out: &mut Vec<Value>, at: &str, user: &Value, agent: &Value) {
    for (key, value) in agent.as_object().into_iter().flatten().filter(|(k, _)| *k != "name") {
        let path = format!("{at}/{key}");
        match (key.as_str(), user.get(key).filter(|v| !v.is_null())) {
            (_, None) => out.push(add(&path, value.clone())),
            ("image", Some(image)) if image == AUTO_IMAGE => {
                out.push(json!({"op": "replace", "path": path, "value": value}));
            }
            ("env", Some(mine)) => merge(out, &path, mine, value, "name"),
            ("ports", Some(mine)) => merge(out, &path, mine, value, "containerPort"),
            ("volumeMounts", Some(mine)) => merge(out, &path, mine, value, "mountPath"),
            _ => {}
        }
    }
}

/// Appends the items of `template` whose `key` no item of the user's list `mine` has.
fn merge(out: &mut Vec<Value>, path: &str, mine: &Value, template: &Value, key: &str) {
    let Some(mine) = mine.as_array() else { return };
    for item in template.as_array().into_iter().flatten() {
        if !mine.iter().any(|m| m[key] == item[key]) {
            out.push(add(&format!("{path}/-"), item.clone()));
        }
    }
}

/// The pod's `securityContext.sysctls` gets `net.ipv4.ip_unprivileged_port_start: "0"` unless it sets it.
fn unprivileged_ports(out: &mut Vec<Value>, spec: &Value) {
    let sysctl = json!({"name": UNPRIVILEGED_PORTS, "value": "0"});
    let context = &spec["securityContext"];
    if !context.is_object() {
        out.push(add("/spec/securityContext", json!({"sysctls": [sysctl]})));
    } else if let Some(sysctls) = context["sysctls"].as_array() {
        if !sysctls.iter().any(|s| s["name"] == UNPRIVILEGED_PORTS) {
            out.push(add("/spec/securityContext/sysctls/-", sysctl));
        }
    } else {
        out.push(add("/spec/securityContext/sysctls", json!([sysctl])));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway_pod(container: Value, annotations: Value) -> Value {
        let mut a = json!({TEMPLATES: "gateway"});
        a.as_object_mut().unwrap().extend(annotations.as_object().unwrap().clone());
        json!({"metadata": {"labels": {"app": "gw"}, "annotations": a}, "spec": {"containers": [container]}})
    }

    fn applied(pod: &Value, settings: &Settings) -> Value {
        let (ops, _) = ops(pod, settings, &Overrides { gateway: true, ..Overrides::default() }).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        let mut out = pod.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        out
    }

    fn env<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
        c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).map(|e| &e["value"])
    }

    #[test]
    fn the_users_proxy_container_becomes_the_agent_and_keeps_what_it_wrote() {
        let user = json!({"name": "istio-proxy", "image": "auto",
            "env": [{"name": GATEWAY_ENV, "value": "ns/gw"}, {"name": "SLUICE_DRAIN_SECONDS", "value": "20"}],
            "ports": [{"name": "http", "containerPort": 8080}, {"name": "status-port", "containerPort": 15021}]});
        let settings = Settings { mesh_root_pem: Some("ROOT".into()), ..Settings::default() };
        let pod = applied(&gateway_pod(user, json!({})), &settings);
        let [c] = &pod["spec"]["containers"].as_array().unwrap()[..] else { panic!("one container: {pod}") };
        assert_eq!((c["name"].as_str(), c["image"].as_str()), (Some("istio-proxy"), Some("sluice:latest")));
        assert_eq!(c["args"], json!(["proxy"]));
        assert_eq!(env(c, GATEWAY_ENV), Some(&json!("ns/gw")));
        assert_eq!(env(c, "SLUICE_DRAIN_SECONDS"), Some(&json!("20")), "the user's value wins");
        assert_eq!(env(c, "SLUICE_MTLS"), Some(&json!("true")));
        assert_eq!(env(c, "SLUICE_INBOUND_PORTS"), None);
        let ports: Vec<&Value> = c["ports"].as_array().unwrap().iter().map(|p| &p["containerPort"]).collect();
        assert_eq!(ports, [8080, 15021, 15090]);
        assert!(pod["spec"]["initContainers"].is_null());
        assert_eq!(pod["spec"]["securityContext"]["sysctls"][0]["name"], UNPRIVILEGED_PORTS);
        assert!(pod["metadata"]["labels"].get("security.istio.io/tlsMode").is_none(), "a gateway takes plaintext");
        let volumes: Vec<&Value> = pod["spec"]["volumes"].as_array().unwrap().iter().map(|v| &v["name"]).collect();
        assert_eq!(volumes, ["sluice-podinfo", "sluice-envoy", "sluice-token"]);
        assert!(pod["metadata"]["annotations"].get("kubectl.kubernetes.io/default-container").is_none());
    }

    #[test]
    fn the_gateway_comes_from_the_env_or_the_annotation_and_is_required() {
        let bare = json!({"name": "istio-proxy", "image": "auto"});
        let pod = applied(&gateway_pod(bare.clone(), json!({GATEWAY_ANNOTATION: "ns/gw"})), &Settings::default());
        assert_eq!(env(&pod["spec"]["containers"][0], GATEWAY_ENV), Some(&json!("ns/gw")));
        let o = Overrides { gateway: true, ..Overrides::default() };
        let err = ops(&gateway_pod(bare, json!({})), &Settings::default(), &o).unwrap_err().to_string();
        assert!(err.contains(GATEWAY_ENV) && err.contains(GATEWAY_ANNOTATION) && err.contains("istio-proxy"), "{err}");
        let bad = json!({"name": "sluice-proxy", "env": [{"name": GATEWAY_ENV, "value": "gw"}]});
        let err = ops(&gateway_pod(bad, json!({})), &Settings::default(), &o).unwrap_err().to_string();
        assert!(err.contains("`gw` is not NAMESPACE/NAME"), "{err}");
        let both = json!({"name": "istio-proxy", "env": [{"name": GATEWAY_ENV, "value": "a/b"}]});
        let err = ops(&gateway_pod(both, json!({GATEWAY_ANNOTATION: "c/d"})), &Settings::default(), &o).unwrap_err();
        assert!(err.to_string().contains("differ"), "{err}");
        let mut two = gateway_pod(json!({"name": "istio-proxy"}), json!({GATEWAY_ANNOTATION: "c/d"}));
        two["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "sluice-proxy"}));
        let err = ops(&two, &Settings::default(), &o).unwrap_err().to_string();
        assert!(err.ends_with("containers istio-proxy and sluice-proxy: one proxy container only"), "{err}");
    }

    #[test]
    fn without_a_proxy_container_the_agent_is_added_beside_the_others() {
        let pod = json!({"metadata": {"annotations": {TEMPLATES: "gateway", GATEWAY_ANNOTATION: "ns/gw"}},
            "spec": {"containers": [{"name": "helper"}], "securityContext": {"runAsNonRoot": true}}});
        let out = applied(&pod, &Settings::default());
        let names: Vec<&Value> = out["spec"]["containers"].as_array().unwrap().iter().map(|c| &c["name"]).collect();
        assert_eq!(names, ["helper", "sluice-proxy"]);
        assert_eq!(out["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(out["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"], "helper");
    }
}
