//! The TLS accept loop: every handshake runs in its own task (bounded by a timeout), so a slow or hostile client
//! never holds up the others; finished handshakes go to tonic as a stream of connections.

use super::ServerTls;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Longest a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts on `listener` and yields connections whose handshake (client certificate included) succeeded. The
/// accept loop stops when the returned stream is dropped.
pub fn incoming(listener: TcpListener, tls: ServerTls) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "xDS TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
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
