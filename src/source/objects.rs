//! The wire types of config files: Kubernetes-shaped objects as users write them, and the per-object checks that
//! need no other object. Cross-object rules (selection, duplicates, a policy's service) live in `assemble`.
//!
//! Every type refuses unknown fields, so a typo (`selecter:`) is an error with a line rather than a silently
//! ignored setting. `status` is accepted and ignored, so `kubectl get -o yaml` output loads.

use crate::model::mesh;
use crate::model::{ObjectKey, ReleasePolicySpec, TargetPort};
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub(crate) const CORE_V1: &str = "v1";
pub(crate) const SLUICE_V1ALPHA1: &str = "sluice.dev/v1alpha1";
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// A refused field: its path as a user writes it, and why.
pub(crate) type Problem = (String, String);

/// `apiVersion`, `kind`, `metadata`, `spec`: the shape shared by every object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Envelope<S> {
    /// Checked before typing (see `Kind::of`); required here so the shape stays honest.
    #[serde(rename = "apiVersion")]
    _api_version: IgnoredAny,
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: S,
    #[serde(default, rename = "status")]
    _status: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Accepted and ignored.
    #[serde(default, rename = "annotations")]
    _annotations: BTreeMap<String, String>,
}

impl Metadata {
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.namespace(), self.name.clone())
    }

    fn check(&self, problems: &mut Vec<Problem>) {
        check_dns_label("metadata.name", &self.name, problems);
        if let Some(ns) = &self.namespace {
            check_dns_label("metadata.namespace", ns, problems);
        }
    }
}

/// `v1 Service`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ServiceSpec {
    #[serde(default)]
    pub ports: Vec<ServicePortSpec>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// The Service's virtual IP, as Kubernetes writes it (`None` or `"None"`: headless).
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// Accepted so Kubernetes manifests load; the first IP must equal `clusterIP`.
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    /// Accepted so Kubernetes manifests load (`ClusterIP`); other types are served as ClusterIP.
    #[serde(default, rename = "type")]
    _kind: Option<IgnoredAny>,
}

impl ServiceSpec {
    /// The cluster IP, parsed (`None` when absent or headless).
    pub fn cluster_ip(&self) -> Option<IpAddr> {
        self.cluster_ip.as_deref().filter(|ip| *ip != "None" && !ip.is_empty()).and_then(|ip| ip.parse().ok())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ServicePortSpec {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    /// Defaults to `port`.
    #[serde(default)]
    pub target_port: Option<TargetPort>,
    #[serde(default)]
    pub app_protocol: Option<String>,
    /// Only `TCP` is meaningful for Envoy; accepted so Kubernetes manifests load.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// `sluice.dev/v1alpha1 Workload`: what a Pod is outside Kubernetes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct WorkloadSpec {
    pub address: String,
    /// A Service port's name → the port this workload listens on for it.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    #[serde(default = "yes")]
    pub ready: bool,
    #[serde(default)]
    pub terminating: bool,
    /// The workload's identity: `spiffe://TRUST_DOMAIN/ns/NS/sa/SERVICE_ACCOUNT` (what mTLS clients verify).
    #[serde(default)]
    pub service_account: Option<String>,
}

fn yes() -> bool {
    true
}

pub(crate) type ServiceObject = Envelope<ServiceSpec>;
pub(crate) type WorkloadObject = Envelope<WorkloadSpec>;
pub(crate) type PolicyObject = Envelope<ReleasePolicySpec>;
pub(crate) type VirtualServiceObject = Envelope<mesh::VirtualServiceSpec>;
pub(crate) type DestinationRuleObject = Envelope<mesh::DestinationRuleSpec>;
pub(crate) type HttpRouteObject = Envelope<mesh::HttpRouteSpec>;
pub(crate) type PeerAuthenticationObject = Envelope<mesh::PeerAuthenticationSpec>;
pub(crate) type GatewayObject = Envelope<mesh::GatewaySpec>;
pub(crate) type GatewayClassObject = Envelope<mesh::GatewayClassSpec>;
pub(crate) type ApiGatewayObject = Envelope<mesh::ApiGatewaySpec>;
pub(crate) type ReferenceGrantObject = Envelope<mesh::ReferenceGrantSpec>;
pub(crate) type SidecarObject = Envelope<mesh::SidecarSpec>;

/// `v1 Secret` of type `kubernetes.io/tls`: a gateway certificate (`tls.crt`) and its key (`tls.key`), base64 in
/// `data` or plain in `stringData`, as Kubernetes takes them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SecretObject {
    #[serde(rename = "apiVersion")]
    _api_version: IgnoredAny,
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, rename = "immutable")]
    _immutable: Option<bool>,
}

impl SecretObject {
    /// The certificate and key this Secret holds, checked as PEM; the error names the field.
    pub fn tls(&self) -> Result<mesh::TlsSecret, Problem> {
        use base64::Engine;
        if self.kind.as_deref() != Some("kubernetes.io/tls") {
            return Err(("type".into(), "Sluice reads Secrets of type kubernetes.io/tls only".into()));
        }
        let field = |k: &str| -> Result<Vec<u8>, Problem> {
            if let Some(v) = self.string_data.get(k) {
                return Ok(v.clone().into_bytes());
            }
            let v = self.data.get(k).ok_or_else(|| (format!("data[{k}]"), "missing".to_string()))?;
            let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| (format!("data[{k}]"), format!("not base64: {e}")))
        };
        let (cert, key) = (field("tls.crt")?, field("tls.key")?);
        let key_of = self.metadata.key();
        mesh::TlsSecret::from_pem(&key_of.name, &key_of.namespace, &cert, &key).map_err(|e| (e.path, e.message))
    }
}

/// The object kinds a config file may hold, as `(apiVersion, kind)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Service,
    Workload,
    ReleasePolicy,
    VirtualService,
    DestinationRule,
    HttpRoute,
    PeerAuthentication,
    Gateway,
    GatewayClass,
    ApiGateway,
    ReferenceGrant,
    Secret,
    Sidecar,
}

impl Kind {
    pub fn of(api_version: &str, kind: &str) -> Option<Kind> {
        match (api_version, kind) {
            (CORE_V1, "Service") => Some(Kind::Service),
            (SLUICE_V1ALPHA1, "Workload") => Some(Kind::Workload),
            (SLUICE_V1ALPHA1, "ReleasePolicy") => Some(Kind::ReleasePolicy),
            (v, "VirtualService") if mesh::ISTIO_VERSIONS.contains(&v) => Some(Kind::VirtualService),
            (v, "DestinationRule") if mesh::ISTIO_VERSIONS.contains(&v) => Some(Kind::DestinationRule),
            (v, "Gateway") if mesh::ISTIO_VERSIONS.contains(&v) => Some(Kind::Gateway),
            (v, "Sidecar") if mesh::ISTIO_VERSIONS.contains(&v) => Some(Kind::Sidecar),
            (mesh::GATEWAY_V1 | "gateway.networking.k8s.io/v1beta1", "HTTPRoute") => Some(Kind::HttpRoute),
            (v, "PeerAuthentication") if mesh::SECURITY_VERSIONS.contains(&v) => Some(Kind::PeerAuthentication),
            (mesh::GATEWAY_V1 | "gateway.networking.k8s.io/v1beta1", "GatewayClass") => Some(Kind::GatewayClass),
            (mesh::GATEWAY_V1 | "gateway.networking.k8s.io/v1beta1", "Gateway") => Some(Kind::ApiGateway),
            (mesh::GATEWAY_V1 | "gateway.networking.k8s.io/v1beta1", "ReferenceGrant") => Some(Kind::ReferenceGrant),
            (CORE_V1, "Secret") => Some(Kind::Secret),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Workload => "Workload",
            Kind::ReleasePolicy => "ReleasePolicy",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::HttpRoute => "HTTPRoute",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::Gateway | Kind::ApiGateway => "Gateway",
            Kind::GatewayClass => "GatewayClass",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Secret => "Secret",
            Kind::Sidecar => "Sidecar",
        }
    }

    /// What an unknown `apiVersion`/`kind` pair is told to be instead.
    pub const EXPECTED: &'static str = "expected v1 Service or Secret, sluice.dev/v1alpha1 Workload or \
         ReleasePolicy, networking.istio.io/v1 (v1beta1, v1alpha3) VirtualService, DestinationRule, Gateway or Sidecar, \
         security.istio.io/v1 (v1beta1) PeerAuthentication, or gateway.networking.k8s.io/v1 (v1beta1) HTTPRoute, \
         Gateway, GatewayClass or ReferenceGrant";
}

/// Checks a Service on its own: names, port numbers, duplicate ports.
pub(crate) fn check_service(svc: &ServiceObject) -> Vec<Problem> {
    let mut problems = Vec::new();
    svc.metadata.check(&mut problems);
    let ports = &svc.spec.ports;
    if ports.is_empty() {
        problems.push(("spec.ports".into(), "must list at least one port".into()));
    }
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        if p.port == 0 {
            problems.push((format!("{path}.port"), "must be between 1 and 65535".into()));
        }
        if ports[..i].iter().any(|q| q.port == p.port) {
            problems.push((format!("{path}.port"), format!("duplicate port {}", p.port)));
        }
        if p.name.is_empty() && ports.len() > 1 {
            problems.push((format!("{path}.name"), "must be set when a Service has several ports".into()));
        } else if !p.name.is_empty() {
            check_dns_label(&format!("{path}.name"), &p.name, &mut problems);
        }
        if !p.name.is_empty() && ports[..i].iter().any(|q| q.name == p.name) {
            problems.push((format!("{path}.name"), format!("duplicate port name `{}`", p.name)));
        }
        match &p.target_port {
            Some(TargetPort::Number(0)) => {
                problems.push((format!("{path}.targetPort"), "must be between 1 and 65535".into()));
            }
            Some(TargetPort::Name(n)) => check_dns_label(&format!("{path}.targetPort"), n, &mut problems),
            _ => {}
        }
        if let Some(proto) = p.protocol.as_deref().filter(|p| *p != "TCP") {
            problems.push((format!("{path}.protocol"), format!("`{proto}` is not supported; only TCP")));
        }
    }
    if let Some(ip) = svc.spec.cluster_ip.as_deref().filter(|ip| *ip != "None" && !ip.is_empty())
        && ip.parse::<IpAddr>().is_err()
    {
        problems.push(("spec.clusterIP".into(), format!("`{ip}` is not an IP address (or None, for headless)")));
    }
    if let Some(first) = svc.spec.cluster_ips.first()
        && svc.spec.cluster_ip.as_deref().is_some_and(|ip| ip != first)
    {
        problems.push(("spec.clusterIPs".into(), "the first must equal spec.clusterIP".into()));
    }
    problems
}

/// Checks a Workload on its own: names, the address, port numbers.
pub(crate) fn check_workload(w: &WorkloadObject) -> Vec<Problem> {
    let mut problems = Vec::new();
    w.metadata.check(&mut problems);
    if w.spec.address.parse::<IpAddr>().is_err() {
        problems.push(("spec.address".into(), format!("`{}` is not an IP address", w.spec.address)));
    }
    for (name, port) in &w.spec.ports {
        check_dns_label(&format!("spec.ports.{name}"), name, &mut problems);
        if *port == 0 {
            problems.push((format!("spec.ports.{name}"), "must be between 1 and 65535".into()));
        }
    }
    problems
}

/// Checks a ReleasePolicy on its own: its name, then [`ReleasePolicySpec::validate`].
pub(crate) fn check_policy(p: &PolicyObject) -> Vec<Problem> {
    let mut problems = Vec::new();
    p.metadata.check(&mut problems);
    if let Err(e) = p.spec.validate().and_then(|()| p.spec.check_without_deployments("a config file")) {
        problems.push((e.path, e.message));
    }
    problems
}

/// Checks a mesh routing object on its own: its name, then the spec's own `validate`.
/// The checks of `metadata` alone (names are DNS labels).
pub(crate) fn check_metadata(m: &Metadata) -> Vec<Problem> {
    let mut problems = Vec::new();
    m.check(&mut problems);
    problems
}

pub(crate) fn check_mesh<S>(o: &Envelope<S>, validate: fn(&S) -> Vec<crate::model::FieldError>) -> Vec<Problem> {
    let mut problems = Vec::new();
    o.metadata.check(&mut problems);
    problems.extend(validate(&o.spec).into_iter().map(|e| (e.path, e.message)));
    problems
}

fn check_dns_label(path: &str, value: &str, problems: &mut Vec<Problem>) {
    if value.is_empty() {
        problems.push((path.into(), "must not be empty".into()));
    } else if !crate::model::is_dns_label(value) {
        let msg = format!("`{value}` is not a DNS label (at most 63 of a-z, 0-9 and '-', alphanumeric at both ends)");
        problems.push((path.into(), msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_need_the_right_api_version() {
        assert_eq!(Kind::of("v1", "Service"), Some(Kind::Service));
        assert_eq!(Kind::of("sluice.dev/v1alpha1", "Service"), None);
        assert_eq!(Kind::of("v1", "Workload"), None);
    }
}
