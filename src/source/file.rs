//! The file source: Kubernetes-shaped YAML files (Service, Workload, ReleasePolicy, Istio VirtualService and
//! DestinationRule, Gateway API HTTPRoute) → a [`Model`], with hot reload.
//!
//! ```text
//!  paths (files, directories of *.yaml|*.yml) ─read_sources─▶ Sources (path → text)
//!     ─documents::parse_file─▶ typed objects ─assemble─▶ Model ──set_part("file")──▶ Store
//!                                        └─ every problem ─▶ LoadErrors ("file:line: Kind ns/name: field: why")
//! ```
//! [`watch`] polls the same paths, compares file contents (not mtimes) and the set of files in each directory,
//! and on any change reloads everything. A broken edit never reaches the store: the last good model stays, the
//! errors are logged, and [`FileSourceStatus`] holds them for the admin port until a valid edit clears them.

use super::assemble::{Assembled, assemble};
use super::documents::{Parsed, parse_file};
pub use super::error::{LoadError, LoadErrors};
use crate::model::Model;
use crate::store::Store;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name of this source's part in the [`Store`].
pub const SOURCE: &str = "file";

/// Parses one file's text; `origin` (its path) names it in errors. References between objects must resolve
/// within this text.
pub fn parse_str(text: &str, origin: &str) -> Result<Model, LoadErrors> {
    let sources = Sources { files: vec![(origin.to_string(), Ok(text.to_string()))] };
    build(&sources).map(|a| a.model)
}

/// Loads files and directories (their `*.yaml` and `*.yml` files, in name order, not recursing) as one set of
/// objects: a policy in one file may name a service in another.
pub fn load_paths(paths: &[PathBuf]) -> Result<Model, LoadErrors> {
    build(&read_sources(paths)).map(|a| a.model)
}

/// The texts of every config file under some paths; a file that cannot be read keeps the error's text. Two
/// reads compare equal exactly when no file was added, removed or changed.
#[derive(Debug, PartialEq, Eq)]
struct Sources {
    files: Vec<(String, Result<String, String>)>,
}

/// How long a file that went from content to empty must stay empty before it applies (and removes what it held).
const EMPTIED_SETTLE: Duration = Duration::from_secs(2);

impl Sources {
    /// The files that are empty now but had content in `before` (every empty file when `before` is unknown).
    fn emptied_since(&self, before: Option<&Sources>) -> Vec<&str> {
        let had_content = |name: &str| {
            before.is_none_or(|b| {
                b.files.iter().any(|(n, text)| n == name && text.as_ref().is_ok_and(|t| !t.trim().is_empty()))
            })
        };
        self.files
            .iter()
            .filter(|(name, text)| text.as_ref().is_ok_and(|t| t.trim().is_empty()) && had_content(name))
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

fn read_sources(paths: &[PathBuf]) -> Sources {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            match config_files_in(path) {
                Ok(found) => files.extend(found.iter().map(|f| read_one(f))),
                Err(e) => files.push((path.display().to_string(), Err(format!("cannot list directory: {e}")))),
            }
        } else {
            files.push(read_one(path));
        }
    }
    Sources { files }
}

fn read_one(path: &Path) -> (String, Result<String, String>) {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"));
    (path.display().to_string(), text)
}

/// The `*.yaml` and `*.yml` files directly in a directory, sorted.
fn config_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn build(sources: &Sources) -> Result<Assembled, LoadErrors> {
    let mut parsed = Parsed::default();
    for (file, text) in &sources.files {
        match text {
            Ok(text) => parse_file(text, file, &mut parsed),
            Err(message) => parsed.errors.push(LoadError {
                file: file.clone(),
                line: 0,
                object: String::new(),
                field: String::new(),
                message: message.clone(),
            }),
        }
    }
    assemble(parsed).map_err(|mut errors| {
        let order: Vec<&String> = sources.files.iter().map(|(f, _)| f).collect();
        errors.sort_by_key(|e| (order.iter().position(|f| **f == e.file), e.line));
        LoadErrors(errors)
    })
}

/// The file source's health for the admin port: the last reload's errors (one per line, `file:line` first), or
/// `None` after a successful load. Cheap to clone; every clone is the same status.
#[derive(Clone, Debug, Default)]
pub struct FileSourceStatus(Arc<Mutex<Option<String>>>);

impl FileSourceStatus {
    /// Why the files on disk are not being served, if they are not.
    pub fn last_error(&self) -> Option<String> {
        self.lock().clone()
    }

    fn set(&self, error: Option<String>) {
        *self.lock() = error;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // Plain data: a panic elsewhere cannot leave it half-written.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Polls `paths` every `interval` and publishes each valid change to `store` as the [`SOURCE`] part, until
/// `shutdown` resolves. A change applies when it has been the same for two polls (at most two intervals after
/// the write; a file that went empty waits [`EMPTIED_SETTLE`]), so a file caught mid-write is never loaded. The caller registers the source and sets the first model; the first poll reloads once
/// more, which leaves the store untouched when nothing changed in between. Errors go to the log only; use
/// [`watch_with_status`] to also expose them.
pub async fn watch(paths: Vec<PathBuf>, store: Store, interval: Duration, shutdown: impl Future<Output = ()>) {
    watch_with_status(paths, store, interval, FileSourceStatus::default(), shutdown).await;
}

/// [`watch`], recording the outcome of every reload in `status`.
pub async fn watch_with_status(
    paths: Vec<PathBuf>,
    store: Store,
    interval: Duration,
    status: FileSourceStatus,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let paths = Arc::new(paths);
    let mut last: Option<Sources> = None;
    let mut settling: Option<(Sources, Instant)> = None;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let to_read = paths.clone();
        let sources = match tokio::task::spawn_blocking(move || read_sources(&to_read)).await {
            Ok(sources) => sources,
            Err(e) => {
                tracing::warn!(error = %e, "file source: reading config files failed");
                continue;
            }
        };
        // A change applies once two polls in a row read the same bytes: an editor (or `fs::write`) truncates
        // before it writes, and a half-written multi-document file can still be valid YAML that drops services.
        // A file that went empty must stay empty for EMPTIED_SETTLE: a writer descheduled between truncate and
        // write (a loaded machine) would otherwise remove every service the file defined.
        if last.as_ref() == Some(&sources) {
            settling = None;
        } else if settling.as_ref().is_some_and(|(s, _)| *s == sources) {
            let since = settling.as_ref().map(|(_, at)| at.elapsed()).unwrap_or_default();
            // Before the first reload the watch does not know what the file held: any empty file waits.
            let emptied = sources.emptied_since(last.as_ref());
            if emptied.is_empty() || since >= EMPTIED_SETTLE {
                reload(&sources, &store, &status);
                last = settling.take().map(|(s, _)| s);
            } else {
                tracing::debug!(files = ?emptied, "file source: a file went empty; waiting before applying");
            }
        } else {
            settling = Some((sources, Instant::now()));
        }
    }
}

fn reload(sources: &Sources, store: &Store, status: &FileSourceStatus) {
    match build(sources) {
        Ok(a) => {
            report_unsupported(&a.warnings);
            store.set_part(SOURCE, a.model);
            status.set(None);
            tracing::info!(
                files = sources.files.len(),
                services = a.services,
                workloads = a.workloads,
                policies = a.policies,
                "file source: config loaded"
            );
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::warn!("file source: {e}");
            }
            tracing::warn!(errors = errors.0.len(), "file source: keeping the last valid config");
            status.set(Some(errors.to_string()));
        }
    }
}

/// Logs each field a mesh routing object holds that Sluice does not translate, and counts them by kind in
/// `sluice_unsupported_fields_total`.
fn report_unsupported(warnings: &[LoadError]) {
    for w in warnings {
        tracing::warn!("file source: {w}");
        let kind = w.object.split(' ').next().unwrap_or("").to_string();
        metrics::counter!(crate::telemetry::names::UNSUPPORTED_FIELDS, "kind" => kind).increment(1);
    }
}

/// `sluice validate PATH...`: prints a `warning:` line per untranslated field of a mesh routing object, then
/// `ok: N services, M workloads, K policies, R routing objects`, or every error (one per line,
/// `file:line` first) on stderr and exits with 1.
pub fn validate_command(paths: &[PathBuf]) -> ExitCode {
    match validate_to(paths, &mut std::io::stdout(), &mut std::io::stderr()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice validate: cannot write the result: {e}");
            ExitCode::FAILURE
        }
    }
}

/// [`validate_command`] writing to given streams, so tests can read what it says.
pub fn validate_to(paths: &[PathBuf], out: &mut impl Write, err: &mut impl Write) -> std::io::Result<ExitCode> {
    match build(&read_sources(paths)) {
        Ok(a) => {
            for w in &a.warnings {
                writeln!(out, "warning: {w}")?;
            }
            let (s, w, p, r) = (a.services, a.workloads, a.policies, a.routing);
            writeln!(out, "ok: {s} services, {w} workloads, {p} policies, {r} routing objects")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                writeln!(err, "{e}")?;
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
