//! The config-file parser (`source::parse_str`): any text is either a model or `file:line` errors; a model that
//! loads also translates into a consistent snapshot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|text: &str| {
    match sluice::source::parse_str(text, "fuzz.yaml") {
        Ok(model) => {
            // A model the file source accepts translates without panicking (an inconsistent one is refused).
            let _ = sluice::xds::Snapshot::build(1, Arc::new(model), None);
        }
        Err(errors) => {
            let shown = errors.to_string();
            assert!(shown.contains("fuzz.yaml"), "an error without its file: {shown}");
        }
    }
});
