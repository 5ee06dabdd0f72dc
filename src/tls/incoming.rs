//! The TLS accept loop: every handshake runs in its own task (bounded by the handshake timeout), so a slow or
//! hostile client never holds up the others; finished handshakes go to tonic as a stream of connections, each
//! holding its place in the connection budget (which may close a connection still shaking hands to make room).

use super::ServerTls;
use crate::conn::{Budget, Guarded};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// A connection that finished its handshake.
pub type Accepted = TlsStream<Guarded<TcpStream>>;

/// Accepts on `listener` (within `budget`) and yields connections whose handshake (client certificate included)
/// succeeded within `within`. The accept loop stops when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    budget: Budget,
    within: Duration,
) -> ReceiverStream<std::io::Result<Accepted>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let a = tokio::select! {
                a = crate::conn::accept(&listener, &budget, "xDS TLS") => a,
                _ = tx.closed() => return,
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            let peer = a.peer;
            // While it shakes hands the budget may close it to make room; once its certificate is verified it is
            // an authenticated mesh client (keepalive pings find one that goes silent). One without a certificate
            // (a workload asking the CA for its first, when `--ca` admits them) stays a candidate for eviction.
            let guarded = Guarded::new(a.tcp, a.place, 0, within);
            let state = guarded.state();
            tokio::spawn(async move {
                match tokio::time::timeout(within, acceptor.accept(guarded)).await {
                    Ok(Ok(stream)) => {
                        if stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()) {
                            state.establish();
                        }
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, error = %e, "xDS TLS handshake refused"),
                    Err(_) => tracing::warn!(%peer, "xDS TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
