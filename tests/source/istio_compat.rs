//! Istio's samples applied as its tasks apply them, through the file source and `sluice validate`:
//!
//! - `destination-rule-all-mtls.yaml` fails closed: TLS settings Sluice cannot honour refuse the object (exit 1,
//!   `file:line`, `spec.trafficPolicy.tls`), and a running file source keeps its last good config;
//! - two VirtualServices for `reviews` in two files load: the first loaded wins, and both are named, with their
//!   lines, in the warning.

use crate::common;

use common::istio_samples::{DESTINATION_RULE_ALL_MTLS, bookinfo_services, reviews_to};
use sluice::model::ObjectKey;
use sluice::source::{self, FileSourceStatus, SOURCE};
use sluice::store::Store;
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
fn the_all_mtls_sample_is_refused_naming_the_tls_field() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(dir.path(), "bookinfo.yaml", &bookinfo_services());
    let mtls = write(dir.path(), "destination-rule-all-mtls.yaml", DESTINATION_RULE_ALL_MTLS);
    let (code, out, err) = validate(&[base, mtls.clone()]);
    assert_eq!(code, ExitCode::FAILURE, "{out}");
    let f = mtls.display();
    let lines: Vec<&str> = err.lines().collect();
    let expected: Vec<String> = [("productpage", 7), ("reviews", 17), ("ratings", 29), ("details", 42)]
        .iter()
        .map(|(name, line)| {
            format!(
                "{f}:{line}: DestinationRule default/{name}: spec.trafficPolicy.tls: TLS settings are not supported \
                 by Sluice yet: the object is refused rather than applied without them (its traffic would go out in \
                 plaintext); the last good config keeps serving"
            )
        })
        .collect();
    assert_eq!(lines, expected);
}

#[tokio::test]
async fn a_watched_config_refuses_the_all_mtls_sample_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bookinfo.yaml", &format!("{}{SUBSETS}", bookinfo_services()));
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

    let mtls = write(dir.path(), "zz-all-mtls.yaml", DESTINATION_RULE_ALL_MTLS);
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
            "{}:7: DestinationRule default/productpage: spec.trafficPolicy.tls:",
            mtls.display()
        )),
        "{error}"
    );
    assert_eq!(store.model(), before, "the last good config keeps serving");
    let reviews = ObjectKey::new("default", "reviews");
    let rule = before.destination_rule_for(&reviews).expect("the plain rule still applies");
    assert_eq!(rule.subsets().len(), 2);
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
