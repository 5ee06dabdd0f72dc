//! The file source end to end: bookinfo.yaml, every error path with its exact `file:line`, hot reload, validate.

use sluice::model::ObjectKey;
use sluice::source::{self, LoadErrors};
use std::path::PathBuf;

fn bookinfo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/bookinfo.yaml")
}

fn errors(text: &str) -> Vec<String> {
    match source::parse_str(text, "t.yaml") {
        Ok(m) => panic!("expected errors, got {m:?}"),
        Err(LoadErrors(errs)) => errs.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn bookinfo_loads() {
    let model = source::load_paths(&[bookinfo()]).unwrap();
    assert_eq!(model.services.len(), 4);
    let reviews = ObjectKey::new("default", "reviews");
    let eps = model.endpoints_of(&reviews);
    let versions: Vec<_> = eps.iter().map(|e| e.label("version").unwrap()).collect();
    assert_eq!(versions, ["v1", "v2", "v3"]);
    assert_eq!(eps[2].ports.get(&9080), Some(&19084));
    let policy = model.policy_for(&reviews).unwrap();
    assert_eq!(policy.spec.traffic.canary_weight, 2000);
    println!("{}", errors("a: [").join("\n"));
}
