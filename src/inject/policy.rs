//! Whether a pod gets a sidecar, as istiod decides it (pure). The namespace's opt-in (`sluice-injection=enabled`,
//! `istio-injection=enabled`, `istio.io/rev`) is the webhook configuration's `namespaceSelector`: the API server
//! asks only for pods there, or for pods labelled `sidecar.istio.io/inject=true` anywhere. Here, in order:
//!
//! ```text
//!  hostNetwork ─────────────────────────────────▶ never (the rules would capture the node's traffic)
//!  kube-system, kube-public, kube-node-lease ────▶ never
//!  already has sluice-proxy / istio-proxy, or the sidecar.istio.io/status annotation ─▶ left alone
//!    (a gateway pod, `inject.istio.io/templates: gateway`: that container is the one to fill, see gateway.rs)
//!  label sidecar.istio.io/inject "true"|"false" ─▶ that (the label wins over the annotation)
//!  annotation sidecar.istio.io/inject ───────────▶ that
//!  otherwise ────────────────────────────────────▶ inject (the namespace opted in)
//! ```

use serde_json::Value;

/// The label and annotation a pod opts in or out with (Istio's).
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";
/// The annotation an injected pod carries (Istio's name, so istiod and Sluice each see the other's work).
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// Namespaces never injected.
pub const IGNORED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// Container names that mean "this pod already has a sidecar".
pub const SIDECAR_NAMES: [&str; 2] = [super::template::PROXY_CONTAINER, "istio-proxy"];

/// Why a pod is not injected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("hostNetwork pods are never injected")]
    HostNetwork,
    #[error("namespace {0} is never injected")]
    IgnoredNamespace(String),
    #[error("the pod already has a sidecar ({0})")]
    AlreadyInjected(String),
    #[error("{INJECT_KEY}={value} ({by})")]
    OptedOut { by: &'static str, value: String },
}

/// `Ok(())`: inject. `pod` is the Pod object as JSON (a template's `metadata` and `spec` will do).
pub fn decide(pod: &Value, namespace: &str) -> Result<(), Skip> {
    let spec = &pod["spec"];
    if spec["hostNetwork"].as_bool() == Some(true) {
        return Err(Skip::HostNetwork);
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Err(Skip::IgnoredNamespace(namespace.to_string()));
    }
    // A gateway pod names its proxy container for the injector to fill in; only a native sidecar means injected.
    let lists: &[&str] =
        if super::gateway::requested(pod) { &["initContainers"] } else { &["containers", "initContainers"] };
    let containers = lists.iter().flat_map(|k| spec[*k].as_array().into_iter().flatten());
    if let Some(name) = containers.filter_map(|c| c["name"].as_str()).find(|n| SIDECAR_NAMES.contains(n)) {
        return Err(Skip::AlreadyInjected(format!("container {name}")));
    }
    let meta = &pod["metadata"];
    if meta["annotations"].get(STATUS_ANNOTATION).is_some() {
        return Err(Skip::AlreadyInjected(format!("annotation {STATUS_ANNOTATION}")));
    }
    let opt = |by: &'static str, v: &Value| v.get(INJECT_KEY).and_then(Value::as_str).map(|s| (by, s.to_string()));
    match opt("label", &meta["labels"]).or_else(|| opt("annotation", &meta["annotations"])) {
        Some((by, value)) if !is_true(&value) => Err(Skip::OptedOut { by, value }),
        _ => Ok(()),
    }
}

/// Istio reads the inject value with Go's `strconv.ParseBool` ("1", "t", "T", "TRUE", "true", "True").
fn is_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "TRUE" | "true" | "True" | "y" | "yes" | "Y" | "YES")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(meta: Value, spec: Value) -> Value {
        json!({"metadata": meta, "spec": spec})
    }

    #[test]
    fn the_label_wins_over_the_annotation() {
        let both = pod(
            json!({"labels": {INJECT_KEY: "false"}, "annotations": {INJECT_KEY: "true"}}),
            json!({"containers": [{"name": "app"}]}),
        );
        assert_eq!(decide(&both, "shop"), Err(Skip::OptedOut { by: "label", value: "false".into() }));
        let annotated = pod(json!({"annotations": {INJECT_KEY: "false"}}), json!({"containers": []}));
        assert_eq!(decide(&annotated, "shop"), Err(Skip::OptedOut { by: "annotation", value: "false".into() }));
        let opted_in = pod(json!({"labels": {INJECT_KEY: "true"}, "annotations": {INJECT_KEY: "false"}}), json!({}));
        assert_eq!(decide(&opted_in, "shop"), Ok(()));
        assert_eq!(decide(&pod(json!({}), json!({"containers": [{"name": "app"}]})), "shop"), Ok(()));
    }

    #[test]
    fn host_network_system_namespaces_and_injected_pods_are_left_alone() {
        let opted_in = json!({"labels": {INJECT_KEY: "true"}});
        assert_eq!(decide(&pod(opted_in.clone(), json!({"hostNetwork": true})), "shop"), Err(Skip::HostNetwork));
        assert_eq!(
            decide(&pod(opted_in.clone(), json!({})), "kube-system"),
            Err(Skip::IgnoredNamespace("kube-system".into()))
        );
        let istiod = pod(json!({}), json!({"containers": [{"name": "app"}, {"name": "istio-proxy"}]}));
        assert!(matches!(decide(&istiod, "shop"), Err(Skip::AlreadyInjected(_))));
        let native = pod(json!({}), json!({"initContainers": [{"name": "sluice-proxy"}], "containers": []}));
        assert!(matches!(decide(&native, "shop"), Err(Skip::AlreadyInjected(_))));
        let marked = pod(json!({"annotations": {STATUS_ANNOTATION: "{}"}}), json!({"containers": []}));
        assert!(matches!(decide(&marked, "shop"), Err(Skip::AlreadyInjected(_))));
    }

    #[test]
    fn a_gateway_pods_proxy_container_is_the_one_to_fill() {
        let gateway = |meta: Value| pod(meta, json!({"containers": [{"name": "istio-proxy", "image": "auto"}]}));
        let templates = json!({"annotations": {"inject.istio.io/templates": "gateway"}});
        assert_eq!(decide(&gateway(templates.clone()), "shop"), Ok(()));
        assert!(matches!(decide(&gateway(json!({})), "shop"), Err(Skip::AlreadyInjected(_))));
        let mut injected = templates;
        injected["annotations"][STATUS_ANNOTATION] = json!("{}");
        assert!(matches!(decide(&gateway(injected), "shop"), Err(Skip::AlreadyInjected(_))));
    }
}
