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

pub use config::{ServerTls, TlsError, TlsFiles};
pub use identity::{Identity, IdentityError};
pub use incoming::incoming;
