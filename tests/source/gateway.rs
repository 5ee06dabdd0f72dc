//! Gateways from config files, Istio's and Gateway API's: errors name `file:line`, the object and the field; a
//! `credentialName` or `certificateRefs` reads a `kubernetes.io/tls` Secret, and a Secret that is not PEM is refused
//! naming its field (never printing the key); a TLS field Sluice cannot honour refuses the Gateway; a
//! VirtualService names only Gateways that exist; Gateway API status (listeners, routes) says why.

use sluice::source;

const BASE: &str = "apiVersion: v1
kind: Service
metadata: {name: productpage}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
";

fn load(extra: &str) -> Result<sluice::model::Model, String> {
    source::parse_str(&format!("{BASE}{extra}"), "gw.yaml").map_err(|e| e.to_string())
}

#[test]
fn bad_servers_are_refused_naming_file_line_and_field() {
    let err = load(
        "---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 70000, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 80, name: tcp, protocol: TCP}
    hosts: []
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE}
",
    )
    .unwrap_err();
    for want in [
        "gw.yaml:14: Gateway default/gw: spec.servers[0].port.number: 70000 is not between 1 and 65535",
        "spec.servers[1].port.protocol: `TCP` is not supported: HTTP, HTTPS or TLS",
        "spec.servers[1].hosts: must name at least one host",
        "spec.servers[2].tls.serverCertificate: SIMPLE needs credentialName (a Secret) or the files",
        "spec.servers[2].tls.privateKey: SIMPLE needs credentialName (a Secret) or the files",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
}

/// A `kubernetes.io/tls` Secret with `tls.crt` and `tls.key` (plain `stringData`, or base64 `data`).
fn secret(name: &str, crt: &str, key: &str, base64: bool) -> String {
    use base64::Engine;
    let field = if base64 { "data" } else { "stringData" };
    let enc = |v: &str| {
        if base64 {
            base64::engine::general_purpose::STANDARD.encode(v)
        } else {
            serde_json::to_string(v).expect("json")
        }
    };
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\n{field}:\n  tls.crt: {}\n  tls.key: {}\n",
        enc(crt),
        enc(key)
    )
}

fn cert() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["bookinfo.example.com".into()]).expect("cert");
    (c.cert.pem(), c.signing_key.serialize_pem())
}

#[test]
fn credential_name_reads_a_tls_secret_and_a_bad_secret_names_its_field_without_the_key() {
    let gw = "---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
";
    let (crt, key) = cert();
    for base64 in [false, true] {
        let model = load(&format!("{gw}{}", secret("bookinfo-cert", &crt, &key, base64))).expect("loads");
        let s = model.secrets.values().next().expect("the Secret is in the model");
        assert_eq!((s.name.as_str(), s.cert_chain.as_str()), ("bookinfo-cert", crt.as_str()));
    }
    let err = load(&format!("{gw}{}", secret("bookinfo-cert", &crt, "-----BEGIN PRIVATE KEY-----\nnope\n", false)))
        .unwrap_err();
    assert!(err.contains("Secret default/bookinfo-cert: data[tls.key]: not a PEM private key"), "{err}");
    assert!(err.contains("gw.yaml:"), "{err}");
    let leaked = load(&format!("{gw}{}", secret("bookinfo-cert", "not pem", &key, false))).unwrap_err();
    assert!(leaked.contains("data[tls.crt]") && !leaked.contains("PRIVATE KEY"), "{leaked}");
    // Both ways of naming the certificate at once is an error, and so is a TLS field Sluice cannot honour.
    let both = gw.replace("credentialName: bookinfo-cert", "credentialName: c, serverCertificate: /c.pem");
    assert!(load(&both).unwrap_err().contains("spec.servers[0].tls.credentialName: name the certificate either"));
    let mutual = gw.replace("credentialName: bookinfo-cert", "credentialName: c, caCertificates: /ca.pem");
    let err = load(&mutual).unwrap_err();
    assert!(err.contains("spec.servers[0].tls.caCertificates: this TLS setting is not supported by Sluice"), "{err}");
}

const API_GATEWAY: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: gateways}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: tcp, port: 81, protocol: TCP}
  - {name: other, port: 80, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}
  - {name: same-host, port: 80, protocol: HTTP}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: bookinfo.example.com
    tls: {certificateRefs: [{name: bookinfo-cert, namespace: default}]}
    allowedRoutes: {namespaces: {from: All}}
  - {name: admin, port: 9000, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo}
spec:
  parentRefs:
  - {name: public, namespace: gateways}
  - {name: public, namespace: gateways, sectionName: admin}
  - {name: public, namespace: gateways, sectionName: nope}
  - {name: elsewhere, namespace: gateways}
  hostnames: [bookinfo.example.com]
  rules:
  - backendRefs: [{name: productpage, port: 9080}, {name: ratings, namespace: other, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: other}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
";

#[test]
fn gateway_api_status_says_which_listeners_serve_and_where_each_route_attached() {
    use sluice::model::ObjectKey;
    let (crt, key) = cert();
    let model = load(&format!("{API_GATEWAY}{}", secret("bookinfo-cert", &crt, &key, false))).expect("loads");
    let view = sluice::model::mesh::gateway_view(&model);
    assert_eq!(view.classes.len(), 1, "GatewayClass sluice is Accepted: {:?}", view.classes);
    let gw = &view.gateways[&ObjectKey::new("gateways", "public")];
    let reasons = |name: &str| -> Vec<(String, String)> {
        let l = gw.status.listeners.iter().find(|l| l.name == name).expect("listener status");
        l.conditions.iter().map(|c| (c.kind.to_string(), format!("{} {}", c.status, c.reason))).collect()
    };
    let has = |name: &str, kind: &str, want: &str| {
        let got = reasons(name);
        assert!(got.iter().any(|(k, v)| k == kind && v == want), "{name} {kind} {want}: {got:?}");
    };
    has("http", "Programmed", "True Programmed");
    has("tcp", "Accepted", "False UnsupportedProtocol");
    has("other", "Conflicted", "True ProtocolConflict");
    has("same-host", "Conflicted", "True HostnameConflict");
    // No ReferenceGrant in `default` lets Gateways of `gateways` read its Secret: not served, the others are.
    has("https", "ResolvedRefs", "False RefNotPermitted");
    has("https", "Programmed", "False Invalid");
    has("admin", "Programmed", "True Programmed");
    let served: Vec<&str> = gw.servers.iter().map(|s| s.listener.as_str()).collect();
    assert_eq!(served, ["http", "admin"]);
    let cond = |kind: &str| gw.status.conditions.iter().find(|c| c.kind == kind).expect("condition").clone();
    assert_eq!((cond("Accepted").status, cond("Accepted").reason), ("True", "ListenersNotValid"));
    assert_eq!((cond("Programmed").status, cond("Programmed").reason), ("True", "Programmed"));
    let attached: Vec<(&str, u32)> = gw.status.listeners.iter().map(|l| (l.name.as_str(), l.attached_routes)).collect();
    assert_eq!(attached[0], ("http", 1));

    // The route: attached through `http` (from: All); `admin` takes routes of its own namespace only; no listener
    // `nope`; `elsewhere` is no Gateway of Sluice's (not Sluice's to report). Its backend in `other` needs a grant.
    let parents = &view.routes[&ObjectKey::new("default", "bookinfo")];
    let got: Vec<(Option<&str>, &str, &str)> = parents
        .iter()
        .map(|p| (p.parent_ref.section_name.as_deref(), p.conditions[0].reason, p.conditions[1].reason))
        .collect();
    assert_eq!(
        got,
        [
            (None, "Accepted", "RefNotPermitted"),
            (Some("admin"), "NotAllowedByListeners", "RefNotPermitted"),
            (Some("nope"), "NoMatchingParent", "RefNotPermitted"),
        ]
    );
    assert!(parents.iter().all(|p| p.controller_name == "sluice.dev/gateway-controller"));

    // A ReferenceGrant in `default` makes the certificate usable: the HTTPS listener serves and takes the route.
    let grant = "---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: cert, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: gateways}]
  to: [{group: '', kind: Secret}]
";
    let model = load(&format!("{API_GATEWAY}{}{grant}", secret("bookinfo-cert", &crt, &key, false))).expect("loads");
    let view = sluice::model::mesh::gateway_view(&model);
    let gw = &view.gateways[&ObjectKey::new("gateways", "public")];
    let https = gw.servers.iter().find(|s| s.listener == "https").expect("https is served");
    assert_eq!(https.routes.len(), 1);
    assert_eq!(https.internal, "public~istio-autogenerated-k8s-gateway~https");
}

#[test]
fn gateway_api_objects_name_their_bad_fields() {
    let bad = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, port: 70000, protocol: HTTP, hostname: 10.0.0.1}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  hostnames: ['bad host']
";
    let err = load(bad).unwrap_err();
    for want in [
        "Gateway default/gw: spec.listeners[0].port: 70000 is not between 1 and 65535",
        "Gateway default/gw: spec.listeners[0].hostname: `10.0.0.1` is not a DNS name",
        "HTTPRoute default/r: spec.hostnames[0]: `bad host` is not a DNS name",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
}

#[test]
fn a_virtual_service_names_only_gateways_that_exist_and_needs_no_service_hosts_when_bound() {
    let gw = "---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*']
";
    let vs = |gateways: &str| {
        format!(
            "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo}}
spec:
  hosts: ['bookinfo.example.com']
  gateways: {gateways}
  http:
  - route:
    - destination: {{host: productpage}}
"
        )
    };
    let model = load(&format!("{gw}{}", vs("[istio-system/gw]"))).expect("a gateway VirtualService loads");
    assert_eq!(model.gateways.len(), 1);
    let err = load(&format!("{gw}{}", vs("[gw]"))).unwrap_err();
    assert!(err.contains("VirtualService default/bookinfo: spec.gateways[0]: no Gateway default/gw"), "{err}");
}
