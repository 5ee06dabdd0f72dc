//! Who is asking for a certificate: a bearer token in, a service account out. Two authenticators behind one
//! trait: a Kubernetes `TokenReview` (`ca::kube`), and the token file of file mode (here).
//!
//! ```text
//!  authorization: Bearer TOKEN ─▶ Authenticate::authenticate ─▶ Caller { namespace, service_account }
//!                                   ├ TokenReview (audiences --ca-audiences)     or Refusal (a bounded reason)
//!                                   └ TokenFile: SHA-256(TOKEN) vs `NS/SA HEX` lines, constant time
//! ```
//! Why a file of hashes in file mode: outside Kubernetes there is no API server to vouch for a token, so each
//! workload gets its own random credential, bound to one service account. The file holds only SHA-256 digests,
//! so reading it (a backup, a leaked config) lets nobody present a token, and a stolen token gets certificates
//! for its one service account only, until the operator removes its line. Tokens are random (32 bytes or more),
//! so an unsalted digest cannot be reversed by guessing.

use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

/// The service account a token authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub namespace: String,
    pub service_account: String,
}

/// Why a token is refused. Each maps to gRPC `UNAUTHENTICATED` (but [`Refusal::Unavailable`]: the reviewer could
/// not be asked) and to one bounded metric `reason`.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("no bearer token: send `authorization: Bearer <token>` metadata")]
    NoToken,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token has expired: {0}")]
    Expired(String),
    #[error("the token's audiences {got:?} include none of {want:?} (--ca-audiences)")]
    Audience { got: Vec<String>, want: Vec<String> },
    #[error("the token authenticates `{0}`, which is not a service account")]
    NotServiceAccount(String),
    #[error("the token could not be reviewed: {0}")]
    Unavailable(String),
}

impl Refusal {
    /// The `reason` label of `sluice_ca_requests_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoToken => "no-token",
            Refusal::Invalid(_) | Refusal::NotServiceAccount(_) => "invalid-token",
            Refusal::Expired(_) => "expired-token",
            Refusal::Audience { .. } => "wrong-audience",
            Refusal::Unavailable(_) => "review-failed",
        }
    }
}

/// Turns a bearer token into the service account it belongs to.
pub trait Authenticate: Send + Sync + 'static {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Refusal>>;
}

/// The token out of an `authorization` value (`Bearer TOKEN`, scheme case-insensitive).
pub fn bearer(authorization: Option<&str>) -> Result<&str, Refusal> {
    let value = authorization.ok_or(Refusal::NoToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(Refusal::NoToken)?;
    let token = token.trim();
    match scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
        true => Ok(token),
        false => Err(Refusal::NoToken),
    }
}

/// `system:serviceaccount:NS:SA` → the caller.
pub fn service_account(username: &str) -> Result<Caller, Refusal> {
    let rest = username.strip_prefix("system:serviceaccount:");
    match rest.and_then(|r| r.split_once(':')) {
        Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains(':') => {
            Ok(Caller { namespace: ns.to_string(), service_account: sa.to_string() })
        }
        _ => Err(Refusal::NotServiceAccount(username.to_string())),
    }
}

/// One line of the token file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    caller: Caller,
    digest: [u8; 32],
}

/// A line that cannot be used, as `file:line: message`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}:{line}: {message}", path.display())]
pub struct TokenFileError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

/// Parses `NAMESPACE/SERVICEACCOUNT SHA256HEX` lines (`#` starts a comment; blank lines skipped). A digest listed
/// for two service accounts is refused (its token would be ambiguous).
fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, TokenFileError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |message: String| TokenFileError { path: path.to_path_buf(), line: i + 1, message };
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [who, hex] = words.as_slice() else {
            return Err(err("want `NAMESPACE/SERVICEACCOUNT SHA256HEX`".into()));
        };
        let (ns, sa) = who.split_once('/').ok_or_else(|| err(format!("`{who}`: want NAMESPACE/SERVICEACCOUNT")))?;
        if !crate::model::is_dns_label(ns) || sa.is_empty() || sa.contains('/') {
            return Err(err(format!("`{who}`: want NAMESPACE/SERVICEACCOUNT (a namespace is a DNS label)")));
        }
        let digest = unhex(hex).ok_or_else(|| err("the digest is not 64 hex digits (SHA-256)".into()))?;
        let caller = Caller { namespace: ns.to_string(), service_account: sa.to_string() };
        if let Some(first) = entries.iter().find(|e| e.digest == digest && e.caller != caller) {
            let c = &first.caller;
            return Err(err(format!("this token is also listed for {}/{}", c.namespace, c.service_account)));
        }
        entries.push(Entry { caller, digest });
    }
    Ok(entries)
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of a token, hex: what an operator writes into the file (`printf %s "$TOKEN" | sha256sum`).
pub fn digest_hex(token: &str) -> String {
    super::workload::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// File mode's authenticator: `--ca-tokens FILE`, re-read when its mtime or size changes (a bad edit is logged and
/// the last good list kept).
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<(Option<SystemTime>, u64, Vec<Entry>)>,
}

fn stamp(path: &Path) -> std::io::Result<(Option<SystemTime>, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified().ok(), meta.len()))
}

fn load(path: &Path) -> Result<Vec<Entry>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| TokenFileError {
        path: path.to_path_buf(),
        line: 0,
        message: e.to_string(),
    })?;
    parse(path, &text)
}

impl TokenFile {
    /// Reads the file now; an unusable file is a startup error.
    pub fn open(path: &Path) -> Result<Self, TokenFileError> {
        let (mtime, size) =
            stamp(path).map_err(|e| TokenFileError { path: path.to_path_buf(), line: 0, message: e.to_string() })?;
        let entries = load(path)?;
        Ok(Self { path: path.to_path_buf(), state: Mutex::new((mtime, size, entries)) })
    }

    /// The caller whose digest matches `token`. Every entry is compared, in constant time, whatever matches.
    pub fn check(&self, token: &str) -> Result<Caller, Refusal> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match stamp(&self.path) {
            Ok((mtime, size)) if (mtime, size) != (state.0, state.1) => match load(&self.path) {
                Ok(entries) => {
                    tracing::info!(path = %self.path.display(), tokens = entries.len(), "CA token file reloaded");
                    *state = (mtime, size, entries);
                }
                Err(e) => tracing::error!(error = %e, "CA token file refused; the last good one is used"),
            },
            Ok(_) => {}
            Err(e) => tracing::error!(path = %self.path.display(), error = %e, "CA token file unreadable"),
        }
        let mut found = None;
        for e in &state.2 {
            if bool::from(e.digest.ct_eq(digest.as_ref())) {
                found = Some(e.caller.clone());
            }
        }
        found.ok_or_else(|| Refusal::Invalid(format!("it matches no entry of {}", self.path.display())))
    }
}

impl Authenticate for TokenFile {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Refusal>> {
        Box::pin(async move { self.check(token) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_and_service_account_names() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(None), Err(Refusal::NoToken));
        assert_eq!(bearer(Some("Basic abc")), Err(Refusal::NoToken));
        assert_eq!(bearer(Some("Bearer ")), Err(Refusal::NoToken));
        let c = service_account("system:serviceaccount:shop:cart").unwrap();
        assert_eq!((c.namespace.as_str(), c.service_account.as_str()), ("shop", "cart"));
        for bad in ["alice", "system:serviceaccount:shop", "system:serviceaccount::x", "system:node:n1"] {
            assert!(matches!(service_account(bad), Err(Refusal::NotServiceAccount(_))), "{bad}");
        }
    }

    #[test]
    fn the_token_file_maps_digests_to_service_accounts_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let text =
            format!("# comment\n\nshop/cart {}  # cart's token\nshop/web {}\n", digest_hex("t1"), digest_hex("t2"));
        std::fs::write(&path, text).unwrap();
        let file = TokenFile::open(&path).unwrap();
        assert_eq!(file.check("t1").unwrap().service_account, "cart");
        assert_eq!(file.check("t2").unwrap().service_account, "web");
        assert!(matches!(file.check("t3"), Err(Refusal::Invalid(_))));
        std::fs::write(&path, format!("shop/cart {}\nother/x {}\n", digest_hex("t1"), digest_hex("t3"))).unwrap();
        assert_eq!(file.check("t3").unwrap().namespace, "other", "re-read on change");
        assert!(file.check("t2").is_err(), "a removed line no longer authenticates");
        std::fs::write(&path, "broken line here\n").unwrap();
        assert_eq!(file.check("t3").unwrap().namespace, "other", "a bad edit keeps the last good list");
    }

    #[test]
    fn bad_lines_are_named() {
        let p = Path::new("tokens");
        let err = parse(p, "shop/cart nothex\n").unwrap_err();
        assert_eq!((err.line, err.to_string().contains("64 hex")), (1, true), "{err}");
        let err = parse(p, &format!("\nshopcart {}\n", digest_hex("x"))).unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        let twice = format!("a/x {}\nb/y {}\n", digest_hex("same"), digest_hex("same"));
        assert!(parse(p, &twice).unwrap_err().to_string().contains("also listed"));
    }
}
