//! `sluice release ...`: the release verbs against a running Sluice, over the admin port's REST API.
//!
//! ```text
//!  sluice release weight reviews-v3 20 ──HTTP/1 (hyper-util)──▶ POST /api/v1/namespaces/default/releases/reviews-v3/weight
//!                                                              {"canaryWeight": 2000}
//! ```
//! Any error prints the server's message (or why the server could not be reached) and exits 1.

use crate::release::ReleaseView;
use anyhow::{Context, anyhow, bail};
use axum::http::{Method, Request, header};
use bytes::Bytes;
use clap::{Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize as _;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    /// The Sluice admin address (where the REST API is served).
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:15014", global = true)]
    pub server: String,
    /// Namespace of the release.
    #[arg(short = 'n', long, env = "SLUICE_NAMESPACE", default_value = "default", global = true)]
    pub namespace: String,
    /// File holding the server's API token (its --api-token-file), sent as `Authorization: Bearer`. Without it
    /// the server takes changes from loopback clients only.
    #[arg(long, env = "SLUICE_API_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

#[derive(Subcommand, Debug)]
pub enum ReleaseCommand {
    /// List releases: NAME, SERVICE, PHASE, WEIGHTS, STEP, PROXIES.
    List {
        /// Every namespace, not only `-n`.
        #[arg(short = 'A', long, env = "SLUICE_ALL_NAMESPACES")]
        all_namespaces: bool,
    },
    /// Show one release (YAML; `-o json` for JSON).
    Get {
        name: String,
        #[arg(short = 'o', long, env = "SLUICE_OUTPUT", value_enum, default_value = "yaml")]
        output: Output,
    },
    /// Create or replace releases from a YAML file of ReleasePolicy documents.
    Apply {
        #[arg(short = 'f', long = "filename", env = "SLUICE_RELEASE_FILE")]
        file: PathBuf,
    },
    /// Delete a release created through the API.
    Delete { name: String },
    /// Set the canary's share: PERCENT from 0 to 100, at most two decimals (12.5).
    Weight { name: String, percent: String },
    /// Send all traffic to the canary ("take over all traffic").
    Promote { name: String },
    /// Send all traffic back to the stable version.
    Abort { name: String },
    /// End the task: the losing version's routes and clusters go away.
    Finalize { name: String },
    /// Hold the step plan where it is.
    Pause { name: String },
    /// Go on with the step plan (also past a `pause: {}` step).
    Resume { name: String },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Yaml,
    Json,
}

pub fn run(args: ReleaseArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return super::fail(e),
    };
    match rt.block_on(execute(args)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(format!("{e:#}")),
    }
}

/// Runs one command; returns what to print.
async fn execute(args: ReleaseArgs) -> anyhow::Result<String> {
    let api = Api::new(&args.server, args.token_file.as_deref())?;
    let ns = &args.namespace;
    let path = |name: &str| format!("/api/v1/namespaces/{ns}/releases/{name}");
    let verb = |name: &str, verb: &str| (format!("{}/{verb}", path(name)), name.to_string());
    let (action, name) = match args.command {
        ReleaseCommand::List { all_namespaces } => {
            let url =
                if all_namespaces { "/api/v1/releases".into() } else { format!("/api/v1/namespaces/{ns}/releases") };
            let list: ReleaseList = serde_json::from_value(api.call(Method::GET, &url, None).await?)?;
            return Ok(table(&list.items, all_namespaces));
        }
        ReleaseCommand::Get { name, output } => {
            let view = api.call(Method::GET, &path(&name), None).await?;
            return Ok(match output {
                Output::Yaml => serde_yaml::to_string(&view)?,
                Output::Json => format!("{}\n", serde_json::to_string_pretty(&view)?),
            });
        }
        ReleaseCommand::Apply { file } => return apply(&api, ns, &file).await,
        ReleaseCommand::Delete { name } => {
            api.call(Method::DELETE, &path(&name), None).await?;
            return Ok(format!("release {ns}/{name} deleted\n"));
        }
        ReleaseCommand::Weight { name, percent } => {
            let bp = parse_percent(&percent)?;
            let body = serde_json::json!({ "canaryWeight": bp });
            let view = api.view(Method::POST, &format!("{}/weight", path(&name)), Some(body)).await?;
            return Ok(summary(&view, "weight set"));
        }
        ReleaseCommand::Promote { name } => verb(&name, "promote"),
        ReleaseCommand::Abort { name } => verb(&name, "abort"),
        ReleaseCommand::Finalize { name } => verb(&name, "finalize"),
        ReleaseCommand::Pause { name } => verb(&name, "pause"),
        ReleaseCommand::Resume { name } => verb(&name, "resume"),
    };
    let view = api.view(Method::POST, &action, None).await?;
    Ok(summary(&view, &format!("{} done", action.rsplit('/').next().unwrap_or(&name))))
}

#[derive(serde::Deserialize)]
struct ReleaseList {
    items: Vec<ReleaseView>,
}

/// PUTs every ReleasePolicy document in a YAML file; the namespace comes from metadata, else `-n`.
async fn apply(api: &Api, default_ns: &str, file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut out = String::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value =
            serde_yaml::Value::deserialize(doc).with_context(|| format!("{}: document {}", file.display(), i + 1))?;
        if value.is_null() {
            continue;
        }
        let mut doc: serde_json::Value = serde_json::to_value(&value)
            .with_context(|| format!("{}: document {} is not a JSON-compatible object", file.display(), i + 1))?;
        let meta = doc.get("metadata");
        let name = meta.and_then(|m| m.get("name")).and_then(|n| n.as_str()).map(str::to_string);
        let Some(name) = name else {
            bail!("{}: document {}: metadata.name is required", file.display(), i + 1);
        };
        let ns = meta.and_then(|m| m.get("namespace")).and_then(|n| n.as_str()).unwrap_or(default_ns).to_string();
        if let Some(meta) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.insert("namespace".into(), ns.clone().into());
        }
        let view = api.view(Method::PUT, &format!("/api/v1/namespaces/{ns}/releases/{name}"), Some(doc)).await?;
        out.push_str(&summary(&view, "applied"));
    }
    if out.is_empty() {
        bail!("{}: no ReleasePolicy document", file.display());
    }
    Ok(out)
}

/// `12.5` → 1250 basis points. Only 0..100 with at most two decimals; anything else is refused here.
pub fn parse_percent(s: &str) -> anyhow::Result<u32> {
    let bad = || anyhow!("PERCENT `{s}` is not a number from 0 to 100 with at most two decimals (e.g. 20 or 12.5)");
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    if int.is_empty() || int.len() > 3 || !digits(int) || !digits(frac) || frac.len() > 2 || s.ends_with('.') {
        return Err(bad());
    }
    let whole: u32 = int.parse().map_err(|_| bad())?;
    let hundredths: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    let bp = whole * 100 + hundredths;
    if bp > 10_000 {
        bail!("PERCENT `{s}` is out of range: the canary's share must be between 0 and 100");
    }
    Ok(bp)
}

/// Basis points as a percentage: 2000 → `20%`, 1250 → `12.5%`.
fn percent(bp: u32) -> String {
    let text = format!("{}.{:02}", bp / 100, bp % 100);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

fn weights(v: &ReleaseView) -> String {
    v.status.versions.iter().map(|x| format!("{}={}", x.name, percent(x.weight))).collect::<Vec<_>>().join(" ")
}

fn summary(v: &ReleaseView, what: &str) -> String {
    let m = &v.metadata;
    format!("release {}/{} {what}: phase {:?}, {}\n", m.namespace, m.name, v.status.phase, weights(v))
}

fn table(items: &[ReleaseView], with_ns: bool) -> String {
    let mut rows = vec![];
    if with_ns {
        rows.push(vec!["NAMESPACE".to_string()]);
    } else {
        rows.push(vec![]);
    }
    rows[0].extend(["NAME", "SERVICE", "PHASE", "WEIGHTS", "STEP", "PROXIES"].map(String::from));
    for v in items {
        let s = &v.status;
        let mut row = if with_ns { vec![v.metadata.namespace.clone()] } else { vec![] };
        row.extend([
            v.metadata.name.clone(),
            v.spec.service.clone(),
            format!("{:?}", s.phase),
            weights(v),
            if s.steps == 0 { "-".into() } else { format!("{}/{}", s.step.min(s.steps), s.steps) },
            format!("{}/{}", s.proxies.acked, s.proxies.total),
        ]);
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("   ").trim_end());
    }
    out
}

/// A small HTTP/1 JSON client for the admin port.
struct Api {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// `Bearer <token>` from --token-file.
    authorization: Option<String>,
}

impl Api {
    fn new(server: &str, token_file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let authorization = token_file
            .map(|path| {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--token-file {}: cannot read", path.display()))?;
                match text.trim() {
                    "" => bail!("--token-file {}: is empty", path.display()),
                    token => Ok(format!("Bearer {token}")),
                }
            })
            .transpose()?;
        let base = server.trim_end_matches('/').to_string();
        let uri: axum::http::Uri = base.parse().with_context(|| format!("--server `{server}` is not a URL"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            bail!("--server `{server}` must be an http:// URL (e.g. http://127.0.0.1:15014)");
        }
        Ok(Self { base, client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()), authorization })
    }

    async fn view(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> anyhow::Result<ReleaseView> {
        let value = self.call(method, path, body).await?;
        serde_json::from_value(value).context("the server's answer is not a release")
    }

    /// Sends one request; a non-2xx answer becomes an error carrying the server's message.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let bytes = match &body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.authorization {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let req = req.body(Full::new(bytes))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| connect_error(&self.base, &e))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.context("reading the server's answer")?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("{} did not answer within {REQUEST_TIMEOUT:?}", self.base))??;
        let value: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return value.ok_or_else(|| anyhow!("the server's answer is not JSON ({status})"));
        }
        match value.as_ref().and_then(|v| v.get("error")).and_then(|e| e.as_str()) {
            Some(msg) => bail!("{msg}"),
            None => bail!("{status}: {}", String::from_utf8_lossy(&body).trim()),
        }
    }
}

fn connect_error(base: &str, e: &hyper_util::client::legacy::Error) -> anyhow::Error {
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if e.is_connect() {
        anyhow!("cannot connect to {base}: {cause} (is `sluice serve` running? set --server or SLUICE_SERVER)")
    } else {
        anyhow!("request to {base} failed: {e}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_to_basis_points() {
        assert_eq!(parse_percent("20").unwrap(), 2000);
        assert_eq!(parse_percent("12.5").unwrap(), 1250);
        assert_eq!(parse_percent("0.01").unwrap(), 1);
        assert_eq!(parse_percent("100").unwrap(), 10_000);
        assert_eq!(parse_percent("100.00").unwrap(), 10_000);
        for bad in ["abc", "", "-1", "1.234", "100.01", "120", "1.", ".5", "1e2", "1,5", " 1"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_text() {
        assert_eq!(percent(2000), "20%");
        assert_eq!(percent(1250), "12.5%");
        assert_eq!(percent(1), "0.01%");
        assert_eq!(percent(0), "0%");
        assert_eq!(percent(10_000), "100%");
    }
}
