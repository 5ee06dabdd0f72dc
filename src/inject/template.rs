//! What injection adds to a pod (pure): the `sluice-init` init container (`sluice iptables` with the pod's
//! ports), the `sluice-proxy` sidecar (`sluice proxy`: uid 1337, readiness on 15021, Prometheus on 15090, the
//! downward-API env and volume the agent reads), their volumes, and the annotations and labels istiod writes.
//! With native sidecars the proxy is an init container with `restartPolicy: Always`, right after `sluice-init`.
//! The agent's env, container, volumes and pod metadata are built here for gateways too (`gateway.rs`).

use super::Settings;
use super::annotations::Overrides;
use super::policy::{SIDECAR_NAMES, STATUS_ANNOTATION};
use serde_json::{Value, json};

pub const PROXY_CONTAINER: &str = "sluice-proxy";
pub const INIT_CONTAINER: &str = "sluice-init";
pub const PODINFO_VOLUME: &str = "sluice-podinfo";
pub const ENVOY_VOLUME: &str = "sluice-envoy";
/// The projected service-account token the CA authenticates the pod by (workload mTLS only).
pub const TOKEN_VOLUME: &str = "sluice-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// The token's audience (`--ca-audiences` accepts it; istiod's is `istio-ca`).
pub const TOKEN_AUDIENCE: &str = "sluice-ca";
/// Where the agent reads the pod's labels and writes Envoy's bootstrap, inside the sidecar.
pub const PODINFO_DIR: &str = "/etc/podinfo";
pub const ENVOY_DIR: &str = "/etc/sluice/proxy";
/// Envoy in the image (see scripts/build-image).
pub const ENVOY_BIN: &str = "/usr/local/bin/envoy";
/// The ports `sluice iptables` never redirects inbound (istiod's: 15090 Prometheus, 15021 health, 15020 metrics).
pub const EXCLUDED_INBOUND: [u16; 3] = [15090, 15021, 15020];

/// Keys and values for a pod's annotations or labels, in order.
pub type Pairs = Vec<(String, String)>;

/// Everything injection adds; `patch::ops` turns it into a JSONPatch against the pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Parts {
    pub init: Value,
    pub sidecar: Value,
    /// The sidecar goes among the init containers (native sidecar) instead of the containers.
    pub native: bool,
    pub volumes: Vec<Value>,
    /// Added only where the pod does not already have the key.
    pub annotations: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
}

pub fn parts(pod: &Value, settings: &Settings, o: &Overrides) -> Parts {
    let image = proxy_image(settings, o);
    let app_ports = container_ports(pod);
    let init = init_container(&image, settings, o);
    let native = settings.native_sidecars;
    let mut sidecar = agent_container(&image, settings, o, agent_env(settings, o, Some(&app_ports)));
    if native {
        sidecar["restartPolicy"] = json!("Always");
    }
    let status = json!({
        "initContainers": if native { vec![INIT_CONTAINER, PROXY_CONTAINER] } else { vec![INIT_CONTAINER] },
        "containers": if native { Vec::<&str>::new() } else { vec![PROXY_CONTAINER] },
        "volumes": volumes(settings).iter().map(|v| v["name"].clone()).collect::<Vec<_>>(),
    });
    let (annotations, labels) = metadata(pod, &status, true);
    Parts { init, sidecar, native, volumes: volumes(settings), annotations, labels }
}

/// The image of the injected containers: the pod's `sidecar.istio.io/proxyImage`, else `--proxy-image`.
pub(super) fn proxy_image(settings: &Settings, o: &Overrides) -> String {
    o.image.clone().unwrap_or_else(|| settings.image.clone())
}

/// The annotations and labels istiod writes on an injected pod, each only where the pod lacks it: the status
/// (`status`: what was added), the default container (the first that is not a proxy), Prometheus scraping, the
/// canonical service labels and, with `tls_mode` (sidecars, not gateways), `security.istio.io/tlsMode: istio`:
/// the label that tells other proxies this pod takes mTLS.
pub(super) fn metadata(pod: &Value, status: &Value, tls_mode: bool) -> (Pairs, Pairs) {
    let meta = &pod["metadata"];
    let has = |key: &str| meta["annotations"].get(key).is_some();
    let mut annotations = vec![(STATUS_ANNOTATION.to_string(), status.to_string())];
    let first_app = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .find(|name| !SIDECAR_NAMES.contains(name));
    if let Some(name) = first_app.filter(|_| !has("kubectl.kubernetes.io/default-container")) {
        annotations.push(("kubectl.kubernetes.io/default-container".into(), name.into()));
    }
    let scraped = meta["annotations"].as_object().is_some_and(|a| a.keys().any(|k| k.starts_with("prometheus.io/")));
    if !scraped {
        annotations.push(("prometheus.io/scrape".into(), "true".into()));
        annotations.push(("prometheus.io/port".into(), "15090".into()));
        annotations.push(("prometheus.io/path".into(), "/stats/prometheus".into()));
    }
    let labels_in = &meta["labels"];
    let label = |keys: &[&str]| keys.iter().find_map(|k| labels_in.get(*k).and_then(Value::as_str)).map(str::to_string);
    let name = label(&["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"])
        .or_else(|| meta["generateName"].as_str().map(|g| g.trim_end_matches('-').to_string()))
        .or_else(|| meta["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let revision = label(&["service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"])
        .unwrap_or_else(|| "latest".into());
    let tls = tls_mode.then(|| ("security.istio.io/tlsMode", "istio".to_string()));
    let labels = tls
        .into_iter()
        .chain([("service.istio.io/canonical-name", name), ("service.istio.io/canonical-revision", revision)])
        .filter(|(k, _)| labels_in.get(*k).is_none())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    (annotations, labels)
}

/// The TCP ports the pod's containers declare, in order, without repeats.
fn container_ports(pod: &Value) -> Vec<u16> {
    let mut out = Vec::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for p in c["ports"].as_array().into_iter().flatten() {
            let tcp = p["protocol"].as_str().is_none_or(|proto| proto == "TCP");
            if let Some(port) = p["containerPort"].as_u64().and_then(|n| u16::try_from(n).ok())
                && tcp
                && !out.contains(&port)
            {
                out.push(port);
            }
        }
    }
    out
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn init_container(image: &str, settings: &Settings, o: &Overrides) -> Value {
    let mut excluded: Vec<u16> = EXCLUDED_INBOUND.to_vec();
    excluded.extend(o.exclude_inbound_ports.iter().filter(|p| !EXCLUDED_INBOUND.contains(p)));
    let args = [
        "iptables".to_string(),
        "-p".into(),
        "15001".into(),
        "-z".into(),
        "15006".into(),
        "-u".into(),
        "1337".into(),
        "-g".into(),
        "1337".into(),
        "-m".into(),
        "REDIRECT".into(),
        "-i".into(),
        o.include_outbound_ip_ranges.clone().unwrap_or_else(|| "*".into()),
        "-x".into(),
        o.exclude_outbound_ip_ranges.join(","),
        "-b".into(),
        o.include_inbound_ports.clone().unwrap_or_else(|| "*".into()),
        "-d".into(),
        join(&excluded),
        "-o".into(),
        join(&o.exclude_outbound_ports),
        "-q".into(),
        join(&o.include_outbound_ports),
    ];
    json!({
        "name": INIT_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"cpu": "2000m", "memory": "1024Mi"}},
        "securityContext": {
            "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false, "privileged": false,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    })
}

/// The agent's env: the downward API (pod name, namespace, IP, service account), where Sluice and Envoy are,
/// `SLUICE_INBOUND_PORTS` for a sidecar (`inbound`; a gateway has none), the drain and workers, workload mTLS
/// when Sluice runs its CA, and the stats the annotations keep.
pub(super) fn agent_env(settings: &Settings, o: &Overrides, inbound: Option<&[u16]>) -> Vec<Value> {
    let field = |path: &str| json!({"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    let mut env = vec![
        json!({"name": "POD_NAME"}),
        json!({"name": "POD_NAMESPACE"}),
        json!({"name": "INSTANCE_IP"}),
        json!({"name": "SERVICE_ACCOUNT"}),
    ];
    for (e, path) in
        env.iter_mut().zip(["metadata.name", "metadata.namespace", "status.podIP", "spec.serviceAccountName"])
    {
        e.as_object_mut().expect("object").extend(field(path).as_object().expect("object").clone());
    }
    let drain = o.drain_seconds.unwrap_or(settings.drain_seconds);
    let concurrency = o.concurrency.unwrap_or(settings.concurrency);
    let values = [
        Some(("SLUICE_XDS", settings.xds.clone())),
        Some(("SLUICE_ENVOY_BIN", ENVOY_BIN.to_string())),
        Some(("SLUICE_LABELS_FILE", format!("{PODINFO_DIR}/labels"))),
        inbound.map(|ports| ("SLUICE_INBOUND_PORTS", join(ports))),
        Some(("SLUICE_CONFIG_DIR", ENVOY_DIR.to_string())),
        Some(("SLUICE_DRAIN_SECONDS", drain.to_string())),
        Some(("SLUICE_CONCURRENCY", concurrency.to_string())),
    ];
    env.extend(values.into_iter().flatten().map(|(k, v)| json!({"name": k, "value": v})));
    if let Some(root) = &settings.mesh_root_pem {
        // Workload mTLS: the agent asks Sluice's CA (its TLS port, verified against this root) with the pod's
        // projected token, and serves the certificate to Envoy over SDS.
        for (k, v) in [
            ("SLUICE_MTLS", "true".to_string()),
            ("SLUICE_CA_ROOT_PEM", root.clone()),
            ("SLUICE_CA_TOKEN_FILE", format!("{TOKEN_DIR}/{TOKEN_AUDIENCE}")),
        ] {
            env.push(json!({"name": k, "value": v}));
        }
    }
    for (k, v) in [
        ("SLUICE_STATS_INCLUSION_PREFIXES", &o.stats_prefixes),
        ("SLUICE_STATS_INCLUSION_SUFFIXES", &o.stats_suffixes),
        ("SLUICE_STATS_INCLUSION_REGEXPS", &o.stats_regexps),
    ] {
        if let Some(v) = v {
            env.push(json!({"name": k, "value": v}));
        }
    }
    env
}

/// The agent's container (`sluice proxy`, named `sluice-proxy`), as sidecars and gateways share it: uid 1337,
/// no capabilities, a read-only root, readiness on 15021, Prometheus on 15090, the podinfo and Envoy volumes
/// (and the CA token's with workload mTLS).
pub(super) fn agent_container(image: &str, settings: &Settings, o: &Overrides, env: Vec<Value>) -> Value {
    let pick = |o: &Option<String>, d: &str| o.clone().unwrap_or_else(|| d.to_string());
    let mut c = json!({
        "name": PROXY_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["proxy"],
        "env": env,
        "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": 15021},
            "initialDelaySeconds": 1, "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 30,
        },
        "resources": {
            "requests": {"cpu": pick(&o.cpu_request, "100m"), "memory": pick(&o.memory_request, "128Mi")},
            "limits": {"cpu": pick(&o.cpu_limit, "2000m"), "memory": pick(&o.memory_limit, "1024Mi")},
        },
        "securityContext": {
            "runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true, "privileged": false,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": true},
            {"name": ENVOY_VOLUME, "mountPath": ENVOY_DIR},
        ],
    });
    if settings.mesh_root_pem.is_some() {
        let mounts = c["volumeMounts"].as_array_mut().expect("a list");
        mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
    }
    c
}

/// The volumes the agent mounts (the token's only with workload mTLS).
pub(super) fn volumes(settings: &Settings) -> Vec<Value> {
    let mut out = vec![
        json!({"name": PODINFO_VOLUME, "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}}),
        json!({"name": ENVOY_VOLUME, "emptyDir": {"medium": "Memory"}}),
    ];
    if settings.mesh_root_pem.is_some() {
        // A token for Sluice's CA only (its own audience), rotated by the kubelet, valid 12 h.
        out.push(json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE, "expirationSeconds": 43200, "path": TOKEN_AUDIENCE}}]}}));
    }
    out
}
