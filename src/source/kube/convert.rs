//! Kubernetes objects → index items: `TryFrom`-style conversions with a typed error naming the field.
//!
//! Each watched kind becomes an [`Item`]: a Service becomes the model's [`Service`], a Pod its labels (the
//! version label among them) and service account, an EndpointSlice its service, ports and endpoints with their conditions, and a
//! ReleasePolicy the model's policy (its spec parsed with the same types as a config file, then validated), a
//! `kubernetes.io/tls` Secret its certificate and key (checked as PEM); the mesh routing and gateway objects are
//! converted in [`super::mesh`]. An error here skips that one object; the watch goes on.

use super::{crd, progress};
use crate::model::{ObjectKey, ReleasePolicy, ReleasePolicySpec, Service, ServicePort, TargetPort, mesh};
use crate::release::Record;
use k8s_openapi::api::core::v1::{Pod, Secret, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// The label an EndpointSlice carries naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An object Sluice cannot use: the field (as a user writes it) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// What the index keeps of one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A Service, and what a Gateway's `status.addresses` need of it.
    Service(Service, ServiceFront),
    Pod(PodLabels),
    Slice(Slice),
    /// A policy with the `metadata.generation` of the object it was read from (the status reports it), the
    /// record its status describes when that status is for this generation (what the leader stored), and its
    /// `metadata.uid` (the owner reference of the Deployments it creates).
    Policy(Box<ReleasePolicy>, Option<i64>, Option<Box<Record>>, Option<String>),
    VirtualService(Box<mesh::VirtualService>),
    DestinationRule(Box<mesh::DestinationRule>),
    HttpRoute(Box<mesh::HttpRouteObject>, Tracked),
    PeerAuthentication(Box<mesh::PeerAuthentication>),
    /// An Istio `Gateway` (`networking.istio.io`).
    Gateway(Box<mesh::Gateway>),
    GatewayClass(Box<mesh::GatewayClass>, Tracked),
    /// A Gateway API `Gateway`.
    ApiGateway(Box<mesh::ApiGateway>, Tracked),
    ReferenceGrant(Box<mesh::ReferenceGrant>),
    Sidecar(Box<mesh::Sidecar>),
    Secret(Box<mesh::TlsSecret>),
}

/// What the Gateway API status writer needs of an object whose status Sluice writes: the `metadata.generation`
/// it was read at (each condition's `observedGeneration`) and the `status` it holds now (so an equal status is not
/// written again, and a condition that keeps its status keeps its `lastTransitionTime`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tracked {
    pub generation: Option<i64>,
    pub status: Option<serde_json::Value>,
}

impl Tracked {
    pub fn of(meta: &kube::api::ObjectMeta, status: Option<&serde_json::Value>) -> Tracked {
        Tracked { generation: meta.generation, status: status.filter(|s| !s.is_null()).cloned() }
    }
}

/// What a Gateway's `status.addresses` need of a Service beside its cluster IP: the Gateway it fronts (its
/// `gateway.networking.k8s.io/gateway-name` label) and its load balancer's addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFront {
    pub gateway: Option<String>,
    /// `status.loadBalancer.ingress` as Gateway API addresses: `(IPAddress, ip)` or `(Hostname, hostname)`.
    pub ingress: Vec<(&'static str, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLabels {
    pub labels: BTreeMap<String, String>,
    /// `spec.serviceAccountName`: the pod's mesh identity (`None`: Kubernetes' `default`).
    pub service_account: Option<String>,
}

/// One EndpointSlice: which Service it serves, its named ports, and its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    pub service: String,
    /// Port name (empty for an unnamed port) → the port the endpoints listen on.
    pub ports: BTreeMap<String, u16>,
    pub endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub address: String,
    /// The Pod behind the address (`targetRef` of kind Pod), whose labels give the version.
    pub pod: Option<String>,
    /// `conditions.ready` (unset means ready, as the API says).
    pub ready: bool,
    /// `conditions.terminating` while still `serving`: no new requests, open ones drain.
    pub terminating: bool,
    /// The endpoint's `zone` (its node's `topology.kubernetes.io/zone`): its locality's zone in EDS.
    pub zone: Option<String>,
}

/// The namespace/name key of any Kubernetes object.
pub fn key_of<K: Resource>(obj: &K) -> ObjectKey {
    let meta = obj.meta();
    ObjectKey::new(meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

fn port_u16(field: &str, n: i32) -> Result<u16, Invalid> {
    u16::try_from(n).ok().filter(|p| *p > 0).ok_or_else(|| Invalid::new(field, format!("{n} is not a port")))
}

pub fn service(svc: &KubeService) -> Result<Item, Invalid> {
    let spec = svc.spec.as_ref().ok_or_else(|| Invalid::new("spec", "missing"))?;
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let port = port_u16(&format!("spec.ports[{i}].port"), p.port)?;
        let target_port = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => TargetPort::Number(port_u16(&format!("spec.ports[{i}].targetPort"), *n)?),
            Some(IntOrString::String(name)) => TargetPort::Name(name.clone()),
        };
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            port,
            target_port,
            app_protocol: p.app_protocol.clone(),
        });
    }
    let service = Service {
        name: svc.name_any(),
        namespace: svc.namespace().unwrap_or_default(),
        ports,
        // Kubernetes resolves selection into EndpointSlices (translate never reads this); the Deployment task
        // uses it to find the Deployments behind the Service.
        selector: spec.selector.clone().unwrap_or_default().into_iter().collect(),
        cluster_ip: spec.cluster_ip.as_deref().filter(|ip| *ip != "None").and_then(|ip| ip.parse().ok()),
    };
    Ok(Item::Service(service, front(svc)))
}

fn front(svc: &KubeService) -> ServiceFront {
    let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
    let ingress = (ingress.into_iter().flatten())
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) if !ip.is_empty() => Some(("IPAddress", ip.clone())),
            (_, Some(host)) if !host.is_empty() => Some(("Hostname", host.clone())),
            _ => None,
        })
        .collect();
    ServiceFront { gateway: svc.labels().get(mesh::GATEWAY_NAME_LABEL).cloned(), ingress }
}

/// The Secret type Sluice reads (the watch asks the API server for these only: `fieldSelector=type=...`).
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// A `kubernetes.io/tls` Secret: `data[tls.crt]` (a PEM chain) and `data[tls.key]` (a PEM key). The errors name
/// the data key and never quote its content.
pub fn tls_secret(secret: &Secret) -> Result<Item, Invalid> {
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        let got = secret.type_.as_deref().unwrap_or("Opaque");
        return Err(Invalid::new("type", format!("{got}: Sluice reads Secrets of type {TLS_SECRET_TYPE} only")));
    }
    let data = |k: &str| {
        let v = secret.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.as_slice());
        v.ok_or_else(|| Invalid::new(format!("data[{k}]"), "missing"))
    };
    let (cert, key) = (data("tls.crt")?, data("tls.key")?);
    let (name, namespace) = (secret.name_any(), secret.namespace().unwrap_or_default());
    let tls = mesh::TlsSecret::from_pem(&name, &namespace, cert, key).map_err(|e| Invalid::new(e.path, e.message))?;
    Ok(Item::Secret(Box::new(tls)))
}

pub fn pod(pod: &Pod) -> Result<Item, Invalid> {
    // Kubernetes defaults the field to `default`; an object written without it (a test, an old client) means that.
    let account = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).filter(|s| !s.is_empty());
    let service_account = Some(account.unwrap_or_else(|| "default".to_string()));
    Ok(Item::Pod(PodLabels { labels: pod.labels().clone(), service_account }))
}

pub fn endpoint_slice(slice: &EndpointSlice) -> Result<Item, Invalid> {
    let service = slice
        .labels()
        .get(SERVICE_NAME_LABEL)
        .cloned()
        .ok_or_else(|| Invalid::new(format!("metadata.labels[{SERVICE_NAME_LABEL}]"), "missing"))?;
    if slice.address_type == "FQDN" {
        // FQDN slices name hosts, not addresses: nothing Envoy's EDS can take.
        return Ok(Item::Slice(Slice { service, ports: BTreeMap::new(), endpoints: Vec::new() }));
    }
    let mut ports = BTreeMap::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        if let Some(n) = p.port {
            ports.insert(p.name.clone().unwrap_or_default(), port_u16(&format!("ports[{i}].port"), n)?);
        }
    }
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let address = e.addresses.first()?.clone();
            let c = e.conditions.clone().unwrap_or_default();
            let ready = c.ready.unwrap_or(true);
            let terminating = c.terminating.unwrap_or(false) && c.serving.unwrap_or(ready);
            let pod = e.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name.clone());
            let ready = ready && !c.terminating.unwrap_or(false);
            Some(SliceEndpoint { address, pod, ready, terminating, zone: e.zone.clone() })
        })
        .collect();
    Ok(Item::Slice(Slice { service, ports, endpoints }))
}

/// A ReleasePolicy read as a dynamic object, so one malformed spec fails that object only, not the whole list.
pub fn release_policy(obj: &DynamicObject) -> Result<Item, Invalid> {
    let spec = obj.data.get("spec").ok_or_else(|| Invalid::new("spec", "missing"))?;
    let spec: ReleasePolicySpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "spec".to_string() } else { format!("spec.{path}") };
        Invalid::new(field, e.into_inner().to_string())
    })?;
    spec.validate().map_err(|e| Invalid::new(e.path, e.message))?;
    let generation = obj.metadata.generation;
    // A status that cannot be restored is not the object's fault (it may predate this spec): the policy stands.
    let stored = obj.data.get("status").and_then(|s| match progress::restore(&spec, generation, s) {
        Ok(record) => Some(Box::new(record)),
        Err(reason) => {
            tracing::debug!(policy = %key_string(obj), %reason, "status not restored");
            None
        }
    });
    let policy = ReleasePolicy {
        name: obj.name_any(),
        namespace: obj.namespace().unwrap_or_default(),
        spec,
        state: Default::default(),
    };
    Ok(Item::Policy(Box::new(policy), generation, stored, obj.metadata.uid.clone()))
}

fn key_string(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The API resource of the ReleasePolicy CRD, for the dynamic watch.
pub fn policy_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::erase::<crd::ReleasePolicy>(&())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "reviews-abc", "namespace": "default",
                          "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 9080}],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn endpoint_conditions_map_to_ready_and_draining() {
        let s = slice(json!([
            {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "p1"}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.0.0.4"], "conditions": {"ready": false, "serving": false, "terminating": true}},
        ]));
        let Item::Slice(s) = endpoint_slice(&s).unwrap() else { panic!() };
        assert_eq!(s.service, "reviews");
        assert_eq!(s.ports["http"], 9080);
        let flags: Vec<_> = s.endpoints.iter().map(|e| (e.address.as_str(), e.ready, e.terminating)).collect();
        assert_eq!(
            flags,
            [
                ("10.0.0.1", true, false),
                ("10.0.0.2", false, false),
                ("10.0.0.3", false, true),
                ("10.0.0.4", false, false)
            ]
        );
        assert_eq!(s.endpoints[0].pod.as_deref(), Some("p1"));
    }

    #[test]
    fn a_slice_without_its_service_label_is_invalid() {
        let mut s = slice(json!([]));
        s.metadata.labels = None;
        let err = endpoint_slice(&s).unwrap_err();
        assert_eq!(err.field, "metadata.labels[kubernetes.io/service-name]");
    }

    #[test]
    fn a_policy_error_names_the_field() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "ReleasePolicy",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"service": "reviews", "stable": "v1", "canary": "v2", "traffic": {"canaryWeight": "lots"}},
        }))
        .unwrap();
        let err = release_policy(&obj).unwrap_err();
        assert_eq!(err.field, "spec.traffic.canaryWeight", "{err}");
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "ReleasePolicy",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"service": "reviews", "stable": "v1", "canary": "v1"},
        }))
        .unwrap();
        assert_eq!(release_policy(&obj).unwrap_err().to_string(), "spec.canary: must differ from spec.stable");
    }

    #[test]
    fn service_ports_and_target_ports() {
        let svc: KubeService = serde_json::from_value(json!({
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 9080, "targetPort": "web"}, {"port": 81}]},
        }))
        .unwrap();
        let Item::Service(s, front) = service(&svc).unwrap() else { panic!() };
        assert_eq!(front, ServiceFront::default());
        assert_eq!(s.ports[0].target_port, TargetPort::Name("web".into()));
        assert_eq!(s.ports[1].target_port, TargetPort::Number(81));
        let bad: KubeService = serde_json::from_value(json!({
            "metadata": {"name": "x", "namespace": "default"}, "spec": {"ports": [{"port": 70000}]},
        }))
        .unwrap();
        assert_eq!(service(&bad).unwrap_err().field, "spec.ports[0].port");
    }

    #[test]
    fn a_gateway_service_keeps_its_label_and_load_balancer_addresses() {
        let svc: KubeService = serde_json::from_value(json!({
            "metadata": {"name": "gw", "namespace": "default",
                          "labels": {"gateway.networking.k8s.io/gateway-name": "gw"}},
            "spec": {"ports": [{"port": 80}], "clusterIP": "10.96.0.9"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}, {}]}},
        }))
        .unwrap();
        let Item::Service(s, front) = service(&svc).unwrap() else { panic!() };
        assert_eq!(s.cluster_ip, Some("10.96.0.9".parse().unwrap()));
        assert_eq!(front.gateway.as_deref(), Some("gw"));
        let want = [("IPAddress", "203.0.113.7".to_string()), ("Hostname", "lb.example.com".to_string())];
        assert_eq!(front.ingress, want);
    }

    fn secret(kind: &str, cert: &[u8], key: &[u8]) -> Secret {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        serde_json::from_value(json!({
            "metadata": {"name": "cert", "namespace": "gw"}, "type": kind,
            "data": {"tls.crt": b64(cert), "tls.key": b64(key)},
        }))
        .unwrap()
    }

    #[test]
    fn a_tls_secret_is_checked_as_pem_naming_the_data_key_and_never_its_content() {
        let ca = rcgen::generate_simple_self_signed(vec!["gw.example.com".into()]).unwrap();
        let (cert, key) = (ca.cert.pem(), ca.signing_key.serialize_pem());
        let Item::Secret(s) = tls_secret(&secret(TLS_SECRET_TYPE, cert.as_bytes(), key.as_bytes())).unwrap() else {
            panic!()
        };
        assert_eq!((s.namespace.as_str(), s.name.as_str(), s.cert_chain.as_str()), ("gw", "cert", cert.as_str()));
        let bad_cert = tls_secret(&secret(TLS_SECRET_TYPE, b"not a certificate", key.as_bytes())).unwrap_err();
        assert_eq!(bad_cert.field, "data[tls.crt]");
        // A certificate where the key belongs: the error names the field, and no key material is quoted.
        let bad_key = tls_secret(&secret(TLS_SECRET_TYPE, cert.as_bytes(), cert.as_bytes())).unwrap_err();
        assert_eq!(bad_key.field, "data[tls.key]");
        let body = |pem: &str| pem.lines().nth(1).unwrap().to_string();
        for e in [&bad_cert, &bad_key] {
            assert!(!e.to_string().contains(&body(&key)) && !e.to_string().contains(&body(&cert)), "{e}");
        }
        let opaque = tls_secret(&secret("Opaque", cert.as_bytes(), key.as_bytes())).unwrap_err();
        assert_eq!(opaque.field, "type");
        let mut missing = secret(TLS_SECRET_TYPE, cert.as_bytes(), key.as_bytes());
        missing.data.as_mut().unwrap().remove("tls.key");
        assert_eq!(tls_secret(&missing).unwrap_err().to_string(), "data[tls.key]: missing");
    }
}
