//! Workload mTLS objects in files and `sluice validate`: PeerAuthentication and DestinationRule `tls`. What makes
//! no sense, or what Sluice does not translate, refuses the object naming `file:line` and the field (fail closed);
//! what loads becomes per-port modes and TLS contexts (the golden cases `mtls-*` show the Envoy side).

use sluice::model::mesh::MtlsMode;
use sluice::source;
use std::collections::BTreeMap;
use std::process::ExitCode;

const BASE: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1, labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}}
spec: {address: 10.0.0.1, serviceAccount: bookinfo-reviews}
";

fn validate(text: &str) -> (ExitCode, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mtls.yaml");
    std::fs::write(&file, text).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = source::validate_to(std::slice::from_ref(&file), &mut out, &mut err).unwrap();
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap(), file.display().to_string())
}

fn peer(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

#[test]
fn peer_authentications_that_make_no_sense_are_refused_naming_the_field() {
    let text = [
        BASE.to_string(),
        // 14: the selector, 15: present but empty
        peer("empty-selector", "  selector: {}\n  mtls: {mode: STRICT}\n"),
        // 22: portLevelMtls without a selector
        peer("no-selector", "  portLevelMtls:\n    9080: {mode: DISABLE}\n"),
        // 29-31: a port out of range
        peer(
            "bad-port",
            "  selector:\n    matchLabels: {app: reviews}\n  portLevelMtls:\n    70000: {mode: DISABLE}\n",
        ),
    ]
    .concat();
    let (code, out, err, f) = validate(&text);
    assert_eq!(code, ExitCode::FAILURE, "{out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{f}:17: PeerAuthentication default/empty-selector: spec.selector: must name at least one label in \
                 matchLabels when present (leave the selector out to apply to the whole namespace)"
            ),
            format!(
                "{f}:24: PeerAuthentication default/no-selector: spec.portLevelMtls: needs spec.selector: Istio \
                 applies port-level mTLS only to the workloads a selector names"
            ),
            format!(
                "{f}:34: PeerAuthentication default/bad-port: spec.portLevelMtls.70000: port must be between 1 and 65535"
            ),
        ]
    );
}

#[test]
fn an_unknown_mode_is_refused_at_its_line() {
    let text = format!("{BASE}{}", peer("typo", "  mtls:\n    mode: STRICTER\n"));
    let (code, out, err, f) = validate(&text);
    assert_eq!(code, ExitCode::FAILURE, "{out}");
    assert!(err.starts_with(&format!("{f}:18: PeerAuthentication default/typo: spec.mtls.mode:")), "{err}");
    assert!(err.contains("unknown variant `STRICTER`"), "{err}");
}

#[test]
fn destination_rule_tls_that_cannot_be_honoured_is_refused_naming_the_field() {
    let dr = |name: &str, tls: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec:\n  \
             host: reviews\n  trafficPolicy:\n    tls: {tls}\n"
        )
    };
    let text = [
        BASE.to_string(),
        dr("secret", "{mode: SIMPLE, credentialName: reviews-ca}"),
        dr("no-ca", "{mode: SIMPLE}"),
        dr("mutual", "{mode: MUTUAL, caCertificates: /ca.pem}"),
        dr("istio-files", "{mode: ISTIO_MUTUAL, clientCertificate: /c.pem}"),
    ]
    .concat();
    let (code, out, err, f) = validate(&text);
    assert_eq!(code, ExitCode::FAILURE, "{out}");
    let fields: Vec<String> = err.lines().map(|l| l.splitn(4, ": ").take(3).collect::<Vec<_>>().join(": ")).collect();
    assert_eq!(
        fields,
        [
            format!("{f}:19: DestinationRule default/secret: spec.trafficPolicy.tls.credentialName"),
            format!("{f}:27: DestinationRule default/no-ca: spec.trafficPolicy.tls.caCertificates"),
            format!("{f}:35: DestinationRule default/mutual: spec.trafficPolicy.tls.clientCertificate"),
            format!("{f}:35: DestinationRule default/mutual: spec.trafficPolicy.tls.privateKey"),
            format!("{f}:43: DestinationRule default/istio-files: spec.trafficPolicy.tls.clientCertificate"),
        ],
        "{err}"
    );
}

#[test]
fn peer_authentications_load_and_resolve_per_port() {
    let text = [
        BASE.to_string(),
        peer("strict", "  mtls: {mode: STRICT}\n"),
        peer(
            "reviews",
            "  selector:\n    matchLabels: {app: reviews}\n  portLevelMtls:\n    9080: {mode: PERMISSIVE}\n",
        ),
    ]
    .concat();
    let (code, out, err, _) = validate(&text);
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.contains("2 routing objects") || out.contains("ok:"), "{out}");
    let model = source::parse_str(&text, "mtls.yaml").unwrap();
    let labels: BTreeMap<String, String> = [("app".to_string(), "reviews".to_string())].into();
    let policies = model.peer_policies("default", &labels);
    assert_eq!((policies.port_mode(9080), policies.port_mode(9081)), (MtlsMode::Permissive, MtlsMode::Strict));
    let reviews = sluice::model::ObjectKey::new("default", "reviews");
    assert_eq!(model.endpoints_of(&reviews)[0].service_account.as_deref(), Some("bookinfo-reviews"));
    assert!(model.endpoints_of(&reviews)[0].has_sidecar());
}
