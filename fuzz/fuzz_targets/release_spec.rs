//! The ReleasePolicy spec as the REST API, gRPC (`spec_json`) and a CRD (YAML) deliver it: deserialization that
//! names the refused field's path, then validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::model::{ObjectKey, ReleasePolicySpec};
use sluice::release::api::{PolicyDocument, spec_from_json};

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = spec_from_json(data) {
        let _ = spec.validate();
    }
    if let Ok(doc) = PolicyDocument::from_json(data) {
        if let Ok(spec) = doc.into_spec(&ObjectKey::new("default", "fuzz")) {
            let _ = spec.validate();
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = serde_yaml::from_str::<ReleasePolicySpec>(text) {
            let _ = spec.validate();
        }
    }
});
