//! `networking.istio.io` Gateway (v1, v1beta1, v1alpha3 share one schema): which ports an ingress gateway Envoy
//! opens, for which hosts, with which certificate.
//!
//! ```text
//!  Gateway { selector, servers[] } ──selector ⊆ proxy labels (or `sluice bootstrap --gateway NS/NAME`)──▶ the proxy
//!     server { port{number, name, protocol}, hosts ["ns/host" | "host" | "*"], tls{SIMPLE, files} }
//!  VirtualService { gateways: [name | ns/name], hosts } ──bound──▶ the server's virtual hosts
//! ```
//!
//! Plain serde types in the shape `kubectl get gateway.networking.istio.io -o yaml` prints. Fields not listed here
//! are reported by [`super::unsupported_fields`]; a `tls` field Sluice cannot honour (other modes' fields) refuses
//! the object ([`super::fails_closed`]), so a server never comes up without what it asks for.

use super::super::FieldError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One Gateway: its name, namespace and spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Gateway {
    pub name: String,
    pub namespace: String,
    pub spec: GatewaySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Labels of the gateway proxies this Gateway configures (Istio: `istio: ingressgateway`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
}

/// One server: a port the gateway opens and the hosts it accepts there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    pub port: GatewayPort,
    /// `host`, `*`, `*.example.com`, or `ns/host` (`*/host`, `./host`): which VirtualServices may bind it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPort {
    /// Wider than a port so a number out of range is a validation error naming the field, not a parse error.
    pub number: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `HTTP` or `HTTPS` (case as Istio accepts it: any).
    #[serde(default)]
    pub protocol: String,
}

/// A server's TLS: `SIMPLE`, with the certificate from files or from the Secret `credentialName` names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// A `kubernetes.io/tls` Secret in the gateway proxy's namespace (else the Gateway's); the server is not served
    /// while it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

/// What a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServerProtocol {
    Http,
    Https,
    /// TLS not terminated at the gateway (`tls.mode: PASSTHROUGH`): routed by SNI, proxied as TCP.
    Tls,
}

impl ServerProtocol {
    /// What is on the wire: plain HTTP, or TLS (terminated or passed through). One port takes one of the two.
    pub fn is_tls(self) -> bool {
        self != ServerProtocol::Http
    }
}

impl GatewayPort {
    pub fn protocol(&self) -> Option<ServerProtocol> {
        match self.protocol.to_ascii_uppercase().as_str() {
            "HTTP" => Some(ServerProtocol::Http),
            "HTTPS" => Some(ServerProtocol::Https),
            "TLS" => Some(ServerProtocol::Tls),
            _ => None,
        }
    }

    /// The port number, when it is one (validation refuses the rest).
    pub fn port(&self) -> Option<u16> {
        u16::try_from(self.number).ok().filter(|p| *p != 0)
    }
}

impl Server {
    /// The protocol as served: an HTTPS or TLS server with `tls.mode: PASSTHROUGH` is [`ServerProtocol::Tls`].
    pub fn protocol(&self) -> Option<ServerProtocol> {
        let passthrough = self.tls.as_ref().is_some_and(|t| t.mode == "PASSTHROUGH");
        match self.port.protocol()? {
            ServerProtocol::Https | ServerProtocol::Tls if passthrough => Some(ServerProtocol::Tls),
            p => Some(p),
        }
    }
}

impl GatewaySpec {
    /// Whether the selector picks a proxy with these labels. An empty selector picks no proxy by labels (a
    /// gateway proxy can still name the Gateway: `sluice bootstrap --gateway NS/NAME`).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.selector.is_empty() && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Every problem of this spec on its own.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.servers.is_empty() {
            out.push(FieldError::new("spec.servers", "must list at least one server"));
        }
        for (i, s) in self.servers.iter().enumerate() {
            validate_server(&format!("spec.servers[{i}]"), s, &mut out);
            // One protocol per port: Envoy has one listener there (istiod drops the later servers).
            let wire = |s: &Server| s.port.protocol().map(ServerProtocol::is_tls);
            let clash = self.servers[..i]
                .iter()
                .position(|e| e.port.number == s.port.number && wire(e).is_some() && wire(e) != wire(s));
            if let Some(j) = clash {
                let msg = format!(
                    "port {} is already {} in spec.servers[{j}]: one protocol per port",
                    s.port.number, self.servers[j].port.protocol
                );
                out.push(FieldError::new(format!("spec.servers[{i}].port.protocol"), msg));
            }
        }
        out
    }
}

fn validate_server(path: &str, s: &Server, out: &mut Vec<FieldError>) {
    if s.port.port().is_none() {
        out.push(FieldError::new(
            format!("{path}.port.number"),
            format!("{} is not between 1 and 65535", s.port.number),
        ));
    }
    let protocol = s.port.protocol();
    if protocol.is_none() {
        let msg = format!("`{}` is not supported: HTTP, HTTPS or TLS", s.port.protocol);
        out.push(FieldError::new(format!("{path}.port.protocol"), msg));
    }
    if s.hosts.is_empty() {
        out.push(FieldError::new(format!("{path}.hosts"), "must name at least one host (`*` for any)"));
    }
    for (j, h) in s.hosts.iter().enumerate() {
        let (ns, host) = split_host(h);
        let ns_ok = ns.is_none_or(|ns| ns == "*" || ns == "." || crate::model::is_dns_label(ns));
        if host.is_empty() || !ns_ok || host.contains('/') {
            out.push(FieldError::new(format!("{path}.hosts[{j}]"), format!("`{h}` is not `host`, `*` or `ns/host`")));
        }
    }
    match (&s.tls, protocol) {
        (None, Some(ServerProtocol::Https)) => out.push(FieldError::new(
            format!("{path}.tls"),
            "an HTTPS server needs tls (mode SIMPLE with its certificate, or PASSTHROUGH)",
        )),
        (None, Some(ServerProtocol::Tls)) => {
            out.push(FieldError::new(format!("{path}.tls"), "a TLS server needs tls (mode PASSTHROUGH)"))
        }
        (Some(tls), Some(ServerProtocol::Https | ServerProtocol::Tls)) => {
            validate_tls(&format!("{path}.tls"), tls, protocol == Some(ServerProtocol::Tls), out)
        }
        (Some(_), _) => out.push(FieldError::new(format!("{path}.tls"), "only an HTTPS or TLS server takes tls")),
        (None, _) => {}
    }
}

fn validate_tls(path: &str, tls: &ServerTls, tls_port: bool, out: &mut Vec<FieldError>) {
    match tls.mode.as_str() {
        "PASSTHROUGH" => return,
        "SIMPLE" if !tls_port => {}
        _ => {
            let msg = if tls_port {
                format!("`{}` is not supported by Sluice on a TLS server: PASSTHROUGH", tls.mode)
            } else {
                format!(
                    "`{}` is not supported by Sluice yet: SIMPLE or PASSTHROUGH (not MUTUAL, ISTIO_MUTUAL)",
                    tls.mode
                )
            };
            out.push(FieldError::new(format!("{path}.mode"), msg));
        }
    }
    let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    if has(&tls.credential_name) {
        if has(&tls.server_certificate) || has(&tls.private_key) {
            let msg = "name the certificate either by credentialName or by serverCertificate and privateKey";
            out.push(FieldError::new(format!("{path}.credentialName"), msg));
        }
        return;
    }
    for (field, value) in [("serverCertificate", &tls.server_certificate), ("privateKey", &tls.private_key)] {
        if !has(value) {
            let msg = "SIMPLE needs credentialName (a Secret) or the files (PEM paths Envoy can read)";
            out.push(FieldError::new(format!("{path}.{field}"), msg));
        }
    }
}

/// `ns/host` → `(Some(ns), host)`; `host` → `(None, host)`.
pub fn split_host(h: &str) -> (Option<&str>, &str) {
    match h.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, h),
    }
}

/// Whether a server host's namespace part lets a VirtualService of `vs_namespace` bind it (`*`, none: any;
/// `.`: the Gateway's own namespace; else that namespace).
pub fn host_admits(server_host: &str, gateway_namespace: &str, vs_namespace: &str) -> bool {
    match split_host(server_host).0 {
        None | Some("*") => true,
        Some(".") => gateway_namespace == vs_namespace,
        Some(ns) => ns == vs_namespace,
    }
}

/// The host both a server host and a VirtualService host accept (the more specific one), if any: `*` meets
/// anything, `*.example.com` meets its subdomains and narrower wildcards, names meet themselves.
pub fn host_intersection<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
    let covers = |wild: &str, name: &str| wild == "*" || wild.strip_prefix('*').is_some_and(|s| name.ends_with(s));
    if a.eq_ignore_ascii_case(b) {
        Some(a)
    } else if a.starts_with('*') && covers(a, b) {
        Some(b)
    } else if b.starts_with('*') && covers(b, a) {
        Some(a)
    } else {
        None
    }
}

/// The Gateway a VirtualService's `gateways` entry names: `name` (the VirtualService's namespace) or `ns/name`;
/// `None` for `mesh`.
pub fn gateway_ref(entry: &str, vs_namespace: &str) -> Option<super::super::ObjectKey> {
    if entry == "mesh" {
        return None;
    }
    let (ns, name) = entry.split_once('/').unwrap_or((vs_namespace, entry));
    Some(super::super::ObjectKey::new(ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_meet_as_istio_matches_them() {
        assert_eq!(host_intersection("*", "bookinfo.com"), Some("bookinfo.com"));
        assert_eq!(host_intersection("bookinfo.com", "*"), Some("bookinfo.com"));
        assert_eq!(host_intersection("*.example.com", "a.example.com"), Some("a.example.com"));
        assert_eq!(host_intersection("a.example.com", "b.example.com"), None);
        assert_eq!(host_intersection("*", "*"), Some("*"));
        assert!(host_admits("./x", "istio-system", "istio-system"));
        assert!(!host_admits("./x", "istio-system", "default"));
        assert!(host_admits("*/x", "a", "b"));
        assert_eq!(gateway_ref("gw", "default"), Some(super::super::super::ObjectKey::new("default", "gw")));
        assert_eq!(gateway_ref("mesh", "default"), None);
    }

    #[test]
    fn validation_names_the_field() {
        let spec: GatewaySpec = serde_yaml::from_str(
            "servers:\n- port: {number: 70000, protocol: TCP}\n  hosts: []\n- port: {number: 443, protocol: HTTPS}\n  hosts: ['*']\n  tls: {mode: SIMPLE, serverCertificate: /c.pem}\n",
        )
        .expect("spec");
        let paths: Vec<String> = spec.validate().into_iter().map(|e| e.path).collect();
        let clash: GatewaySpec = serde_yaml::from_str(
            "servers:\n- port: {number: 80, protocol: HTTP}\n  hosts: ['*']\n- port: {number: 80, protocol: HTTPS}\n  hosts: ['*']\n  tls: {mode: SIMPLE, credentialName: c}\n",
        )
        .expect("spec");
        let errors = clash.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "spec.servers[1].port.protocol");
        assert!(errors[0].message.contains("port 80 is already HTTP in spec.servers[0]"), "{errors:?}");
        assert_eq!(
            paths,
            [
                "spec.servers[0].port.number",
                "spec.servers[0].port.protocol",
                "spec.servers[0].hosts",
                "spec.servers[1].tls.privateKey"
            ]
        );
    }
}
