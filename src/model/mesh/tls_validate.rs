//! A DestinationRule's `tls` checked on its own, as istiod's validation checks it, plus what Sluice needs to
//! translate it without guessing: each problem names its field.
//!
//! ```text
//!  ISTIO_MUTUAL  ─ no file paths (the proxy's SDS identity is used)
//!  SIMPLE        ─ caCertificates (Sluice does not guess a system bundle)
//!  MUTUAL        ─ caCertificates, clientCertificate, privateKey
//!  DISABLE       ─ nothing else
//! ```

use super::{ClientTls, ClientTlsMode};
use crate::model::FieldError;

pub(super) fn client_tls(path: &str, tls: &ClientTls, out: &mut Vec<FieldError>) {
    let files = [
        ("caCertificates", &tls.ca_certificates),
        ("clientCertificate", &tls.client_certificate),
        ("privateKey", &tls.private_key),
    ];
    let given = |f: &Option<String>| f.as_deref().is_some_and(|p| !p.is_empty());
    match tls.mode {
        ClientTlsMode::IstioMutual => {
            for (field, _) in files.iter().filter(|(_, f)| given(f)) {
                let msg = "must not be set with ISTIO_MUTUAL (the proxy's mesh certificate and trust bundle are used)";
                out.push(FieldError::new(format!("{path}.{field}"), msg));
            }
        }
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {
            let needed = if tls.mode == ClientTlsMode::Mutual { &files[..] } else { &files[..1] };
            for (field, _) in needed.iter().filter(|(_, f)| !given(f)) {
                let msg = match *field {
                    "caCertificates" => {
                        "is required: the file of CA certificates the server is verified with \
                                         (Sluice does not fall back to a system bundle)"
                    }
                    _ => "is required with MUTUAL",
                };
                out.push(FieldError::new(format!("{path}.{field}"), msg));
            }
        }
        ClientTlsMode::Disable => {}
    }
    for (i, _) in tls.subject_alt_names.iter().enumerate().filter(|(_, s)| s.is_empty()) {
        out.push(FieldError::new(format!("{path}.subjectAltNames[{i}]"), "must not be empty"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(tls: serde_json::Value) -> Vec<String> {
        let tls: ClientTls = serde_json::from_value(tls).expect("tls");
        let mut out = Vec::new();
        client_tls("spec.trafficPolicy.tls", &tls, &mut out);
        out.into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn each_mode_needs_its_files_and_no_others() {
        assert!(problems(json!({"mode": "ISTIO_MUTUAL"})).is_empty());
        assert_eq!(
            problems(json!({"mode": "ISTIO_MUTUAL", "caCertificates": "/ca.pem"})),
            ["spec.trafficPolicy.tls.caCertificates"]
        );
        assert_eq!(problems(json!({"mode": "SIMPLE"})), ["spec.trafficPolicy.tls.caCertificates"]);
        assert!(problems(json!({"mode": "SIMPLE", "caCertificates": "/ca.pem", "sni": "r"})).is_empty());
        assert_eq!(
            problems(json!({"mode": "MUTUAL", "caCertificates": "/ca.pem"})),
            ["spec.trafficPolicy.tls.clientCertificate", "spec.trafficPolicy.tls.privateKey"]
        );
        assert!(problems(json!({"mode": "DISABLE"})).is_empty());
    }
}
