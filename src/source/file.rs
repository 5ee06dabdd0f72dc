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
use std::time::Duration;

/// The name of this source's part in the [`Store`].
pub const SOURCE: &str = "file";

/// Parses one file's text; `origin` (its path) names it in errors. References between objects must resolve
/// within this text.
pub fn parse_str(text: &str, origin: &str) -> Result<Model, LoadErrors> {
    let sources = Sources { files: vec![(origin.to_string(), Ok(text.to_string()))], dangling: Vec::new() };
    build(&sources).map(|a| a.model)
}

/// Loads files and directories (their `*.yaml` and `*.yml` files, in name order, not recursing) as one set of
/// objects: a policy in one file may name a service in another.
pub fn load_paths(paths: &[PathBuf]) -> Result<Model, LoadErrors> {
    build(&read_sources(paths)).map(|a| a.model)
}

/// The texts of every config file under some paths; a file that cannot be read keeps the error's text. Two
/// reads compare equal exactly when no file was added, removed or changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sources {
    files: Vec<(String, Result<String, String>)>,
    /// `*.yaml` links in a watched directory whose target does not exist: reported, not read.
    dangling: Vec<String>,
}

impl Sources {
    /// The files with no content now that had content in `before`. Before the first reload (`before` unknown) none:
    /// the startup load read the same files moments earlier.
    fn emptied_since(&self, before: Option<&Sources>) -> Vec<&str> {
        let had_content = |name: &str| {
            before.is_some_and(|b| {
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
    let mut dangling = Vec::new();
    for path in paths {
        if path.is_dir() {
            match config_files_in(path) {
                Ok((found, broken)) => {
                    files.extend(found.iter().map(|f| read_one(f)));
                    dangling.extend(broken.iter().map(|f| f.display().to_string()));
                }
                Err(e) => files.push((path.display().to_string(), Err(format!("cannot list directory: {e}")))),
            }
        } else {
            files.push(read_one(path));
        }
    }
    Sources { files, dangling }
}

fn read_one(path: &Path) -> (String, Result<String, String>) {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"));
    (path.display().to_string(), text)
}

/// The `*.yaml` and `*.yml` files directly in a directory, sorted.
/// The `*.yaml` and `*.yml` files directly in a directory, sorted, and the links among them that point nowhere.
fn config_files_in(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut files, mut dangling) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml && path.is_file() {
            files.push(path);
        } else if yaml && path.is_symlink() && !path.exists() {
            dangling.push(path);
        }
    }
    files.sort();
    dangling.sort();
    Ok((files, dangling))
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
    for link in &sources.dangling {
        let message = "a symbolic link whose target does not exist: not read".to_string();
        parsed.warnings.push(LoadError {
            file: link.clone(),
            line: 0,
            object: String::new(),
            field: String::new(),
            message,
        });
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

/// How long the files must stay unchanged before an edit that removes objects or reroutes traffic applies
/// (see `settle`): longer than a slow writer's pause mid-file. Write files atomically (a temp file, then rename)
/// and no edit is ever seen half-written.
pub const REMOVAL_GRACE: Duration = Duration::from_secs(3);

/// How the file source polls.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub interval: Duration,
    /// See [`REMOVAL_GRACE`].
    pub grace: Duration,
    pub status: FileSourceStatus,
}

impl WatchOptions {
    pub fn new(interval: Duration) -> Self {
        Self { interval, grace: REMOVAL_GRACE, status: FileSourceStatus::default() }
    }
}

/// Polls `paths` every `interval` and publishes each valid change to `store` as the [`SOURCE`] part, until
/// `shutdown` resolves (see [`watch_with`]).
pub async fn watch(paths: Vec<PathBuf>, store: Store, interval: Duration, shutdown: impl Future<Output = ()>) {
    watch_with(paths, store, WatchOptions::new(interval), shutdown).await;
}

/// Polls `paths` every `options.interval`. A change applies when it has been the same for two polls (at most two
/// intervals after the write; a file with no content never applies), so a file caught mid-write is never loaded;
/// a change that removes objects or reroutes traffic applies once the files stayed the same for `options.grace`.
/// The caller registers the source and sets the first model. Files are read and parsed off the async workers.
/// Each reload's outcome is in `options.status` and the log.
pub async fn watch_with(paths: Vec<PathBuf>, store: Store, options: WatchOptions, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let paths = Arc::new(paths);
    let mut last: Option<Sources> = None;
    let mut pending: Option<Pending> = None;
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
        // A file with no content at all is never applied: a writer throttled between truncate and write (dirty
        // page write-back on a busy disk can hold `write` for seconds) would otherwise remove every service the
        // file defined. Removing a file's objects takes deleting it, or leaving a comment in it.
        if last.as_ref() == Some(&sources) {
            pending = None;
            continue;
        }
        let p = match pending.take() {
            Some(p) if p.sources == sources => p,
            _ => {
                pending = Some(Pending::new(sources));
                continue;
            }
        };
        match p.settle(&store, &options, last.as_ref()).await {
            Settled::Applied(sources) => last = Some(sources),
            Settled::Waiting(p) => pending = Some(p),
        }
    }
}

/// Files read the same twice, not applied yet.
struct Pending {
    sources: Sources,
    since: std::time::Instant,
    /// Built once (off the async workers); `None` until then.
    built: Option<Arc<Result<Assembled, LoadErrors>>>,
    /// What was said about it, so a waiting change is logged once.
    told: bool,
}

enum Settled {
    Applied(Sources),
    Waiting(Pending),
}

impl Pending {
    fn new(sources: Sources) -> Self {
        Self { sources, since: std::time::Instant::now(), built: None, told: false }
    }

    /// Applies the files if they may apply now; otherwise keeps waiting (and says why, once).
    async fn settle(mut self, store: &Store, options: &WatchOptions, last: Option<&Sources>) -> Settled {
        let emptied = self.sources.emptied_since(last);
        if !emptied.is_empty() {
            if !std::mem::replace(&mut self.told, true) {
                tracing::warn!(files = ?emptied, "file source: a config file is empty; keeping its last config \
                    (delete the file, or leave a comment in it, to remove its objects)");
            }
            return Settled::Waiting(self);
        }
        let built = match &self.built {
            Some(b) => b.clone(),
            None => {
                let sources = self.sources.clone();
                let built = tokio::task::spawn_blocking(move || build(&sources)).await;
                let Ok(built) = built else { return Settled::Waiting(self) };
                self.built.insert(Arc::new(built)).clone()
            }
        };
        let a = match built.as_ref() {
            Ok(a) => a,
            Err(errors) => {
                if !std::mem::replace(&mut self.told, true) {
                    for e in &errors.0 {
                        tracing::warn!("file source: {e}");
                    }
                    tracing::warn!(errors = errors.0.len(), "file source: keeping the last valid config");
                }
                options.status.set(Some(errors.to_string()));
                return Settled::Waiting(self);
            }
        };
        let held = store.part(SOURCE).map(|old| super::settle::held_back(&old, &a.model)).unwrap_or_default();
        if !held.is_empty() && self.since.elapsed() < options.grace {
            if !std::mem::replace(&mut self.told, true) {
                tracing::info!(objects = ?held, grace = ?options.grace, "file source: this edit removes or \
                    reroutes objects; it applies once the files stay unchanged for the grace period");
            }
            return Settled::Waiting(self);
        }
        report_unsupported(&a.warnings);
        store.set_part(SOURCE, a.model.clone());
        options.status.set(None);
        tracing::info!(
            files = self.sources.files.len(),
            services = a.services,
            workloads = a.workloads,
            policies = a.policies,
            "file source: config loaded"
        );
        Settled::Applied(self.sources)
    }
}

/// Logs each field a mesh routing object holds that Sluice does not translate, and counts them by kind in
/// `sluice_unsupported_fields_total`.
fn report_unsupported(warnings: &[LoadError]) {
    for w in warnings {
        tracing::warn!("file source: {w}");
        let kind = w.object.split(' ').next().unwrap_or("");
        if matches!(
            kind,
            "VirtualService" | "DestinationRule" | "HTTPRoute" | "PeerAuthentication" | "Gateway" | "Sidecar"
        ) {
            metrics::counter!(crate::telemetry::names::UNSUPPORTED_FIELDS, "kind" => kind.to_string()).increment(1);
        }
    }
}

/// What the translated config of `model` asks of the default xDS limits (see `xds::limits::ConfigSize`).
fn size_warnings(model: crate::model::Model) -> Vec<String> {
    match crate::xds::snapshot::Snapshot::build(0, Arc::new(model), None) {
        Ok(s) => crate::xds::Limits::default().check_size(&crate::xds::limits::ConfigSize::of(&s)),
        Err(e) => vec![format!("the config does not translate consistently: {e}")],
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
            for w in a.warnings.iter().chain(&a.conflicts) {
                writeln!(out, "warning: {w}")?;
            }
            for w in size_warnings(a.model.clone()) {
                writeln!(out, "warning: {w} (checked against the default limits)")?;
            }
            for n in crate::translate::grpc_notes(&a.model) {
                writeln!(out, "note: {n}")?;
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
