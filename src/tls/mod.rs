//! mTLS for the xDS port: server certificate, client-certificate verification, hot reload, peer identity.
//!
//! ```text
//!  --tls-cert/--tls-key/--tls-client-ca ──▶ ServerTls (Arc<ServerConfig>, swapped whole on a good reload)
//!                                                │ polled every --tls-reload-interval-ms; applied when two
//!                                                │ reads agree and parse; a bad file keeps the last good config
//!  TcpListener ──accept──▶ handshake task (10 s) ┴─▶ TlsStream ──▶ tonic (TlsConnectInfo: peer certificates)
//!                                                                       │
//!                       identity::from_cert: spiffe://TD/ns/NS/sa/SA ◀──┘  (xds::trust checks the node)
//! ```
//! rustls verifies the chain against the client CA; this module only reads the SPIFFE ID out of a verified
//! certificate. Each new connection takes the config current at its accept, so a reload never disturbs a stream.

mod config;
mod identity;
mod incoming;

pub use config::{ServerTls, TlsError, TlsFiles, config_from_pem};
pub use identity::{Identity, IdentityError};
pub use incoming::incoming;

/// A tonic interceptor for services on the mTLS port that need a verified client certificate. With `--ca` the
/// handshake admits clients without one (a workload's first certificate request carries only a token), so each
/// service but the CA checks: rustls verified any certificate given, so its presence is the check.
pub fn require_client_cert(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    match request.peer_certs() {
        Some(certs) if !certs.is_empty() => Ok(request),
        _ => Err(tonic::Status::unauthenticated(
            "this service needs a client certificate on the mTLS port (only the certificate service takes a \
             bearer token alone)",
        )),
    }
}
