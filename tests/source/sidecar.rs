//! Istio `Sidecar` in config files and `sluice validate`: errors name `file:line`, the object and the field path;
//! untranslated fields are warnings; a second Sidecar without selector in a namespace is a conflict (the oldest
//! applies); a file's Sidecar scopes what a proxy is served.

use super::mesh::validate;
use crate::common::mesh::versions_yaml;
use sluice::model::ProxyInfo;
use sluice::source;
use std::process::ExitCode;

/// Two Services, `reviews` and `ratings` (13 lines: the objects below start at line 14).
fn base() -> String {
    format!("{}---\n{}", versions_yaml("reviews", &[]), versions_yaml("ratings", &[]))
}

#[test]
fn a_bad_host_names_its_line_and_field_path() {
    let bad = "---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: narrow}
spec:
  egress:
  - hosts:
    - ./reviews.default.svc.cluster.local
    - reviews
";
    let (code, _, err, file) = validate(&format!("{}{bad}", base()));
    assert_eq!(code, ExitCode::FAILURE);
    assert!(
        err.contains(&format!(
            "{file}:22: Sidecar default/narrow: spec.egress[0].hosts[1]: `reviews` must be of the form"
        )),
        "{err}"
    );
}

#[test]
fn untranslated_fields_warn_and_a_second_default_is_a_conflict() {
    let sidecars = "---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: first}
spec:
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    hosts: [./reviews.default.svc.cluster.local]
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: second}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";
    let (code, out, err, file) = validate(&format!("{}{sidecars}", base()));
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(
        out.contains(&format!("warning: {file}:20: Sidecar default/first: spec.egress[0].port: not supported")),
        "{out}"
    );
    assert!(out.contains(&format!("warning: {file}:22: Sidecar default/first: spec.ingress: not supported")), "{out}");
    assert!(
        out.contains(&format!("warning: {file}:28: Sidecar default/second: metadata.name: Sidecar default/second")),
        "{out}"
    );
    assert!(out.contains("ok: 2 services, 0 workloads, 0 policies, 2 routing objects"), "{out}");

    // The oldest (first loaded) applies: its hosts, not the second's REGISTRY_ONLY.
    let model = source::parse_str(&format!("{}{sidecars}", base()), "mesh.yaml").unwrap();
    let proxy = ProxyInfo::listening("p", "default", "127.0.0.1:1".parse().unwrap());
    let scoped = model.scoped_proxy(&proxy).expect("a Sidecar applies");
    assert!(!scoped.visibility.registry_only());
    let visible = model.visible_to(&scoped.visibility);
    assert_eq!(visible.services.keys().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["reviews"]);
}
