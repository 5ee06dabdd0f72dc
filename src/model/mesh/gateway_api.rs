//! Gateway API `GatewayClass`, `Gateway` and `ReferenceGrant` (`gateway.networking.k8s.io`), and the TLS
//! `Secret`s their listeners (and Istio Gateways' `credentialName`) name.
//!
//! ```text
//!  GatewayClass { controllerName: sluice.dev/gateway-controller } ◀── Gateway { gatewayClassName }
//!  Gateway { listeners[] {name, port, protocol HTTP|HTTPS, hostname, tls.certificateRefs ─▶ Secret, allowedRoutes} }
//!  HTTPRoute { parentRefs: [Gateway (sectionName, port)], hostnames } ─▶ attached to listeners (gateway_bind)
//!  ReferenceGrant (in the target's namespace) ─▶ lets a Gateway or HTTPRoute of another namespace refer to it
//! ```
//!
//! Plain serde types in the shape `kubectl get -o yaml` prints; what they mean for a proxy and for `status` is
//! [`super::gateway_bind`]'s. Gateways of another class are kept but never served.

use super::super::FieldError;
use serde::{Deserialize, Serialize};

/// The `controllerName` a GatewayClass names for Sluice to serve its Gateways.
pub const GATEWAY_CONTROLLER: &str = "sluice.dev/gateway-controller";
/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The label naming the Gateway (in its own namespace) that a gateway pod serves and that its Service fronts.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// A cluster-scoped `GatewayClass` (its key's namespace is empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayClass {
    pub name: String,
    pub spec: GatewayClassSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    pub controller_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl GatewayClassSpec {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.controller_name.is_empty() {
            out.push(FieldError::new("spec.controllerName", "must name a controller"));
        }
        out
    }
}

/// A Gateway API `Gateway`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiGateway {
    pub name: String,
    pub namespace: String,
    pub spec: ApiGatewaySpec,
    /// Where it came from and how old it is: of two listeners that clash, the older Gateway's wins.
    #[serde(default, skip_serializing_if = "super::is_unset")]
    pub provenance: super::Provenance,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiGatewaySpec {
    pub gateway_class_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ApiListener>,
    /// Requested addresses; a `Hostname` one names the gateway's Service (`status.addresses` come from it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayAddress>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayAddress {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub value: String,
}

/// One listener: a port, a protocol, maybe a hostname and a certificate, and which routes may attach.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiListener {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Wider than a port so a number out of range is a validation error naming the field, not a parse error.
    pub port: u32,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// `Terminate` (the default) or `Passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_refs: Vec<SecretRef>,
}

/// A reference to a Secret (`group` `""`, `kind` `Secret` by default), maybe in another namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl SecretRef {
    pub fn is_secret(&self) -> bool {
        matches!(self.group.as_deref(), None | Some("") | Some("core"))
            && matches!(self.kind.as_deref(), None | Some("Secret"))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllowedRoutes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RouteGroupKind>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A label selector on namespaces (`from: Selector`): Sluice has no namespace labels, so no namespace matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteGroupKind {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: String,
}

impl ApiListener {
    /// The port, when it is one.
    pub fn port(&self) -> Option<u16> {
        u16::try_from(self.port).ok().filter(|p| *p != 0)
    }
}

impl ApiGatewaySpec {
    /// Problems that make the whole Gateway unusable (a listener's own problems go to its status instead, as
    /// the spec asks: other listeners keep working).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.gateway_class_name.is_empty() {
            out.push(FieldError::new("spec.gatewayClassName", "must name a GatewayClass"));
        }
        if self.listeners.is_empty() {
            out.push(FieldError::new("spec.listeners", "must list at least one listener"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let path = format!("spec.listeners[{i}]");
            if !crate::model::is_dns_label(&l.name) && !crate::model::is_dns_subdomain(&l.name) {
                out.push(FieldError::new(format!("{path}.name"), format!("`{}` is not a valid name", l.name)));
            } else if !names.insert(l.name.as_str()) {
                out.push(FieldError::new(format!("{path}.name"), format!("`{}` names two listeners", l.name)));
            }
            if l.port().is_none() {
                out.push(FieldError::new(format!("{path}.port"), format!("{} is not between 1 and 65535", l.port)));
            }
            if let Some(h) = &l.hostname
                && !is_listener_hostname(h)
            {
                let msg = format!("`{h}` is not a DNS name or `*.` wildcard (no IP addresses)");
                out.push(FieldError::new(format!("{path}.hostname"), msg));
            }
        }
        out
    }
}

/// A listener or route hostname: a DNS subdomain, or one with a leading `*.` label; no IP address.
pub fn is_listener_hostname(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    crate::model::is_dns_subdomain(name) && name.parse::<std::net::IpAddr>().is_err()
}

/// A `ReferenceGrant` (`gateway.networking.k8s.io/v1beta1`): objects of kinds in `from` namespaces may refer to
/// objects of kinds in `to` in the grant's own namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceGrant {
    pub name: String,
    pub namespace: String,
    pub spec: ReferenceGrantSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceGrantSpec {
    #[serde(default)]
    pub from: Vec<GrantFrom>,
    #[serde(default)]
    pub to: Vec<GrantTo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantFrom {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTo {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ReferenceGrantSpec {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.from.is_empty() {
            out.push(FieldError::new("spec.from", "must list at least one source"));
        }
        if self.to.is_empty() {
            out.push(FieldError::new("spec.to", "must list at least one target"));
        }
        out
    }

    /// Whether an object of `from_kind` (group `from_group`) in `from_ns` may refer to `to_name` of `to_kind`.
    pub fn permits(&self, from: (&str, &str, &str), to: (&str, &str, &str)) -> bool {
        let (from_group, from_kind, from_ns) = from;
        let (to_group, to_kind, to_name) = to;
        self.from.iter().any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_ns)
            && self
                .to
                .iter()
                .any(|t| t.group == to_group && t.kind == to_kind && t.name.as_deref().is_none_or(|n| n == to_name))
    }
}

/// A TLS Secret's certificate chain and private key (PEM), from a `kubernetes.io/tls` Secret (`tls.crt`,
/// `tls.key`). Neither `Debug` nor `Serialize` prints the key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct TlsSecret {
    pub name: String,
    pub namespace: String,
    pub cert_chain: String,
    pub private_key: String,
}

impl std::fmt::Debug for TlsSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSecret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("cert_chain_bytes", &self.cert_chain.len())
            .finish_non_exhaustive()
    }
}

impl Serialize for TlsSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("TlsSecret", 4)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("namespace", &self.namespace)?;
        st.serialize_field("cert_chain", &self.cert_chain)?;
        st.serialize_field("private_key", "<redacted>")?;
        st.end()
    }
}

impl TlsSecret {
    /// A Secret's `tls.crt` and `tls.key` checked as PEM: a certificate chain and one private key. The error
    /// names the data key.
    pub fn from_pem(name: &str, namespace: &str, cert: &[u8], key: &[u8]) -> Result<TlsSecret, FieldError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<_> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| FieldError::new("data[tls.crt]", format!("not a PEM certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(FieldError::new("data[tls.crt]", "holds no PEM certificate"));
        }
        PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| FieldError::new("data[tls.key]", format!("not a PEM private key: {e}")))?;
        let text = |b: &[u8], field: &str| {
            String::from_utf8(b.to_vec()).map_err(|_| FieldError::new(field, "PEM must be ASCII"))
        };
        Ok(TlsSecret {
            name: name.into(),
            namespace: namespace.into(),
            cert_chain: text(cert, "data[tls.crt]")?,
            private_key: text(key, "data[tls.key]")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_problems_name_the_field() {
        let spec: ApiGatewaySpec = serde_yaml::from_str(
            "gatewayClassName: sluice\nlisteners:\n- {name: http, port: 80, protocol: HTTP}\n- {name: http, port: 0, protocol: HTTP, hostname: '1.2.3.4'}\n",
        )
        .expect("spec");
        let paths: Vec<String> = spec.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["spec.listeners[1].name", "spec.listeners[1].port", "spec.listeners[1].hostname"]);
    }

    #[test]
    fn a_grant_names_kinds_and_namespaces() {
        let grant: ReferenceGrantSpec = serde_yaml::from_str(
            "from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: gw}]\nto: [{group: '', kind: Secret, name: cert}]\n",
        )
        .expect("grant");
        assert!(grant.permits((GATEWAY_GROUP, "Gateway", "gw"), ("", "Secret", "cert")));
        assert!(!grant.permits((GATEWAY_GROUP, "Gateway", "other"), ("", "Secret", "cert")));
        assert!(!grant.permits((GATEWAY_GROUP, "Gateway", "gw"), ("", "Secret", "other")));
    }

    #[test]
    fn a_secret_must_hold_pem_and_never_prints_its_key() {
        assert_eq!(TlsSecret::from_pem("s", "ns", b"nope", b"nope").unwrap_err().path, "data[tls.crt]");
        let ca = rcgen::generate_simple_self_signed(vec!["a.example".into()]).expect("cert");
        let s = TlsSecret::from_pem("s", "ns", ca.cert.pem().as_bytes(), ca.signing_key.serialize_pem().as_bytes())
            .expect("secret");
        let shown = format!("{s:?} {}", serde_json::to_string(&s).expect("json"));
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}
