//! `src/translate` stays pure: no IO, async or network crate, so translation is a function of the model alone
//! (deterministic, testable with plain `#[test]`s, and never blocks a stream).

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "tonic",
    "hyper",
    "axum",
    "std::fs",
    "std::io",
    "std::net::Tcp",
    "std::net::Udp",
    "std::process",
    "std::thread",
    "std::time::SystemTime",
    "std::time::Instant",
    "reqwest",
    "kube",
];

#[test]
fn translate_imports_no_io_async_or_network_crate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate");
    let mut checked = 0;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("src/translate") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for f in FORBIDDEN {
                    assert!(!code.contains(f), "{}:{}: translate must not use `{f}`: {line}", path.display(), i + 1);
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} files checked");
}
