//! Browser scripts (`tests/browser/*.mjs`: Debian's headless Chromium driven by playwright-core) run from a test:
//! the check that both are installed, and a run that stops at the script's checkpoints. A script prints
//! `@checkpoint NAME` when the page has done a step; the test checks the mesh, then answers `ok` on the script's
//! stdin and the script goes on (`tests/browser/lib.mjs`'s `checkpoint`).

use super::repo;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Fails loudly when Chromium or playwright-core is missing (scripts/setup installs both).
pub fn require_browser() {
    assert!(Path::new("/usr/bin/chromium").exists(), "/usr/bin/chromium is missing: run scripts/setup");
    assert!(
        repo().join("tests/browser/node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/setup (npm ci in tests/browser)"
    );
}

/// Runs `tests/browser/SCRIPT` with `env`, calling `at` for each checkpoint before answering it, until the script
/// exits (at most `within`); asserts it succeeded and returns the checkpoints in order. Every line the script
/// prints is printed.
pub async fn run_script(
    script: &str,
    env: &[(&str, String)],
    within: Duration,
    mut at: impl AsyncFnMut(&str),
) -> Vec<String> {
    require_browser();
    let mut node = tokio::process::Command::new("node");
    node.arg(repo().join("tests/browser").join(script))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(repo().join("tests/browser"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = node.spawn().expect("running node (nodejs is installed by scripts/setup)");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let run = async {
        while let Some(line) = lines.next_line().await.expect("read the script's output") {
            println!("{script}: {line}");
            let Some(checkpoint) = line.strip_prefix("@checkpoint ") else { continue };
            seen.push(checkpoint.to_string());
            at(checkpoint).await;
            stdin.write_all(b"ok\n").await.expect("answer the checkpoint");
        }
        child.wait().await.expect("node exits")
    };
    let status = tokio::time::timeout(within, run).await.unwrap_or_else(|_| panic!("{script} ends within {within:?}"));
    assert!(status.success(), "{script}: the page's checks failed (output above)");
    seen
}
