//! Who may change release state: the bearer token of `--api-token-file`, or (without one) loopback clients only.
//!
//! ```text
//!  REST mutation (PUT/POST/DELETE/PATCH on the admin port) ─┐
//!  gRPC ReleaseService mutation (xDS ports) ────────────────┼─▶ ApiAuth::check(authorization, peer address)
//!                                                           │     token file set: `Bearer <token>`, compared in
//!                                                           │       constant time; the file is re-read when it
//!                                                           │       changes (mtime or size), a bad re-read keeps
//!                                                           │       the last good token
//!                                                           └──   no token file: the peer must be loopback
//! ```
//! Reads stay open: they are served on the loopback admin port by default. A Kubernetes TokenReview is not
//! implemented (it needs the Kubernetes client this branch does not have; see SECURITY.md).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use subtle::ConstantTimeEq;

/// Why a mutation is refused (all map to 401 / Unauthenticated).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Denied {
    #[error(
        "this call changes release state and needs `Authorization: Bearer <token>` (the server's --api-token-file)"
    )]
    MissingToken,
    #[error("the bearer token does not match the server's --api-token-file")]
    WrongToken,
    #[error("the server has no --api-token-file, so it accepts release changes from loopback clients only")]
    NotLoopback,
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--api-token-file {}: {message}", path.display())]
pub struct TokenFileError {
    pub path: PathBuf,
    pub message: String,
}

/// The mutation gate the admin router and the gRPC Release API share; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ApiAuth {
    token: Option<Arc<TokenFile>>,
}

#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    /// (mtime, size) of the file when `token` was read, and the token.
    state: Mutex<(Option<SystemTime>, u64, Arc<[u8]>)>,
}

fn stamp(path: &Path) -> std::io::Result<(Option<SystemTime>, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified().ok(), meta.len()))
}

fn read_token(path: &Path) -> Result<Arc<[u8]>, TokenFileError> {
    let err = |message: String| TokenFileError { path: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("is empty".into()));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("holds whitespace inside the token".into()));
    }
    Ok(token.as_bytes().into())
}

impl ApiAuth {
    /// Without a file: loopback clients only. With one: it must hold a token now (a startup error otherwise).
    pub fn new(token_file: Option<&Path>) -> Result<Self, TokenFileError> {
        let Some(path) = token_file else { return Ok(Self::default()) };
        let (mtime, size) =
            stamp(path).map_err(|e| TokenFileError { path: path.to_path_buf(), message: e.to_string() })?;
        let token = read_token(path)?;
        let state = Mutex::new((mtime, size, token));
        Ok(Self { token: Some(Arc::new(TokenFile { path: path.to_path_buf(), state })) })
    }

    /// Whether a token file is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a mutation: `authorization` is the request's `Authorization` value, `peer` its remote address.
    pub fn check(&self, authorization: Option<&str>, peer: Option<IpAddr>) -> Result<(), Denied> {
        let Some(file) = &self.token else {
            return match peer {
                Some(ip) if ip.is_loopback() || ip.to_canonical().is_loopback() => Ok(()),
                _ => Err(Denied::NotLoopback),
            };
        };
        let given = authorization
            .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(Denied::MissingToken)?;
        let token = file.current();
        match bool::from(given.as_bytes().ct_eq(&token)) {
            true => Ok(()),
            false => Err(Denied::WrongToken),
        }
    }
}

impl TokenFile {
    /// The token, re-read when the file's mtime or size changed since the last read.
    fn current(&self) -> Arc<[u8]> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match stamp(&self.path) {
            Ok((mtime, size)) if (mtime, size) != (state.0, state.1) => match read_token(&self.path) {
                Ok(token) => {
                    tracing::info!(path = %self.path.display(), "API token reloaded");
                    *state = (mtime, size, token);
                }
                Err(e) => tracing::warn!(error = %e, "keeping the last good API token"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "keeping the last good API token"),
        }
        state.2.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let auth = ApiAuth::new(Some(&path)).unwrap();
        let remote = Some("10.0.0.1".parse().unwrap());
        assert_eq!(auth.check(None, remote), Err(Denied::MissingToken));
        assert_eq!(auth.check(Some("Bearer nope"), remote), Err(Denied::WrongToken));
        assert_eq!(auth.check(Some("Bearer s3cret"), remote), Ok(()));
        std::fs::write(&path, "rotated-token").unwrap();
        assert_eq!(auth.check(Some("Bearer s3cret"), remote), Err(Denied::WrongToken));
        assert_eq!(auth.check(Some("Bearer rotated-token"), remote), Ok(()));
        std::fs::write(&path, "").unwrap();
        assert_eq!(auth.check(Some("Bearer rotated-token"), remote), Ok(()), "an empty file keeps the last token");
    }

    #[test]
    fn without_a_token_only_loopback_may_mutate() {
        let auth = ApiAuth::new(None).unwrap();
        assert_eq!(auth.check(None, Some("127.0.0.1".parse().unwrap())), Ok(()));
        assert_eq!(auth.check(None, Some("::ffff:127.0.0.1".parse().unwrap())), Ok(()));
        assert_eq!(auth.check(None, Some("192.168.1.5".parse().unwrap())), Err(Denied::NotLoopback));
        assert_eq!(auth.check(None, None), Err(Denied::NotLoopback));
        assert!(ApiAuth::new(Some(Path::new("/nonexistent/token"))).is_err());
    }
}
