//! Istio's samples applied as its tasks apply them, through the file source and `sluice validate`:
//!
//! - `destination-rule-all-mtls.yaml` loads: `ISTIO_MUTUAL` becomes mesh TLS for proxies with workload mTLS; a TLS
//!   field Sluice does not translate (`credentialName`) still refuses the object (`file:line`, the field) and a
//!   running file source keeps its last good config;
//! - two VirtualServices for `reviews` in two files load: the first loaded wins, and both are named, with their
//!   lines, in the warning.

use crate::common;

use common::istio_samples::{DESTINATION_RULE_ALL_MTLS, bookinfo_services, reviews_to};
use sluice::model::ObjectKey;
use sluice::source::{self, FileSourceStatus, SOURCE};
use sluice::store::Store;
use sluice::translate;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const SUBSETS: &str = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\n\
                       spec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v3, \
                       labels: {version: v3}}\n";

fn validate(paths: &[PathBuf]) -> (ExitCode, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = source::validate_to(paths, &mut out, &mut err).unwrap();
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_all_mtls_sample_loads_and_becomes_mesh_tls_for_mtls_proxies_only() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(dir.path(), "bookinfo.yaml", &bookinfo_services());
    let mtls = write(dir.path(), "destination-rule-all-mtls.yaml", DESTINATION_RULE_ALL_MTLS);
    let (code, out, err) = validate(&[base.clone(), mtls.clone()]);
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.contains("ok:"), "{out}");
    let model = source::load_paths(&[base, mtls]).unwrap();
    let reviews_v1 = "outbound|9080|v1|reviews.default.svc.cluster.local";
    let mesh = translate::mesh_clusters(&model);
    let cluster = mesh.iter().find(|c| c.name == reviews_v1).expect("the subset cluster");
    let socket = cluster.transport_socket.as_ref().expect("ISTIO_MUTUAL: mesh TLS to every endpoint");
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    assert!(cluster.transport_socket_matches.is_empty(), "no plaintext match under ISTIO_MUTUAL");
    let plain = translate::clusters(&model);
    let cluster = plain.iter().find(|c| c.name == reviews_v1).expect("the subset cluster");
    assert!(cluster.transport_socket.is_none(), "a proxy without workload mTLS has no mesh identity to use");
}

#[tokio::test]
async fn a_watched_config_refuses_an_untranslated_tls_field_keeps_serving_then_applies_the_all_mtls_sample() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bookinfo.yaml", &bookinfo_services());
    let store = Store::new();
    store.register_source(SOURCE);
    store.set_part(SOURCE, source::load_paths(&[dir.path().to_path_buf()]).unwrap());
    let before = store.model();
    let status = FileSourceStatus::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let paths = vec![dir.path().to_path_buf()];
    let interval = Duration::from_millis(50);
    let options = source::WatchOptions { status: status.clone(), ..source::WatchOptions::new(interval) };
    let task = tokio::spawn(source::watch_with(paths, store.clone(), options, async {
        let _ = stopped.await;
    }));

    let secret = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec:\n  \
                  host: ratings\n  trafficPolicy:\n    tls: {mode: SIMPLE, credentialName: ratings-ca}\n";
    let refused = write(dir.path(), "zz-ratings-tls.yaml", secret);
    let error = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(e) = status.last_error() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the refusal is reported within 2 s");
    let first = error.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "{}:7: DestinationRule default/ratings: spec.trafficPolicy.tls.credentialName: this TLS setting is not \
             supported by Sluice",
            refused.display()
        )),
        "{error}"
    );
    assert_eq!(store.model(), before, "the last good config keeps serving");
    std::fs::remove_file(&refused).unwrap();

    write(dir.path(), "zz-all-mtls.yaml", DESTINATION_RULE_ALL_MTLS);
    let reviews = ObjectKey::new("default", "reviews");
    let applied = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = store.model();
            if m.destination_rules.len() == 4 {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the sample applies");
    let rule = applied.destination_rule_for(&reviews).expect("a rule for reviews");
    let tls = rule.traffic_policy().and_then(|p| p.tls.as_ref()).map(|t| t.mode);
    assert_eq!(tls, Some(sluice::model::mesh::ClientTlsMode::IstioMutual));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[test]
fn two_virtual_services_for_one_host_load_and_the_first_loaded_wins() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("{}{SUBSETS}", bookinfo_services());
    write(dir.path(), "bookinfo.yaml", &base);
    // As Istio's tasks apply them one after another: reviews to v1, then (without deleting it) reviews to v3.
    let a = write(dir.path(), "virtual-service-reviews-v1.yaml", &reviews_to("reviews", "v1"));
    let b = write(dir.path(), "virtual-service-reviews-v3.yaml", &reviews_to("reviews-v3", "v3"));
    let model = source::load_paths(&[dir.path().to_path_buf()]).expect("a conflict is not an error");
    let reviews = ObjectKey::new("default", "reviews");
    let (winner, _) = model.virtual_service_for(&reviews).expect("a VirtualService routes reviews");
    assert_eq!(winner.name, "reviews", "the first loaded (file name order in a directory) wins");

    let (code, out, err) = validate(&[dir.path().to_path_buf()]);
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let warning = out.lines().find(|l| l.contains("is not applied")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        warning,
        format!(
            "warning: {b}:5: VirtualService default/reviews-v3: spec.hosts[0]: VirtualService default/reviews-v3 \
             ({b}:3) is not applied to Service default/reviews: VirtualService default/reviews ({a}:3) routes it and \
             is older (istiod's rule: the oldest object wins; in files, the first loaded)",
            a = a.display(),
            b = b.display()
        )
    );
    // Listed first on the command line, the other file wins.
    let model = source::load_paths(&[dir.path().join("bookinfo.yaml"), b.clone(), a.clone()]).unwrap();
    assert_eq!(model.virtual_service_for(&reviews).map(|(k, _)| k.name.as_str()), Some("reviews-v3"));
}
