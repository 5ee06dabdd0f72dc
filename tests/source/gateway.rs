//! Istio Gateways from config files: errors name `file:line`, the object and the field; a `credentialName` (a
//! certificate from a Secret, which the file source cannot read) refuses the Gateway rather than serving the
//! server without its certificate; a VirtualService names only Gateways that exist.

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
        "spec.servers[1].port.protocol: `TCP` is not supported: HTTP or HTTPS",
        "spec.servers[1].hosts: must name at least one host",
        "spec.servers[2].tls.serverCertificate: SIMPLE needs the file",
        "spec.servers[2].tls.privateKey: SIMPLE needs the file",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
}

#[test]
fn credential_name_fails_closed() {
    let err = load(
        "---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
",
    )
    .unwrap_err();
    assert!(
        err.contains("Gateway default/gw: spec.servers[0].tls.credentialName: this TLS setting is not supported"),
        "{err}"
    );
    assert!(err.contains("gw.yaml:"), "{err}");
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
