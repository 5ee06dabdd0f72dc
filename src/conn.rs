//! Connections on every port, under explicit bounds: a process-wide budget of open connections (below the file
//! limit, so config files, state writes and the Kubernetes client always find a descriptor), a deadline for a new
//! connection's first bytes (a silent client or half an HTTP/2 preface is closed), and accept errors (out of file
//! descriptors) that back off instead of spinning or ending the port.
//!
//! ```text
//!  listener ─ a permit from the budget (none free: wait; the kernel queues the connection) ─▶ accept
//!     ─▶ Guarded { io, permit, deadline until its first `need` bytes are read } ─▶ tonic (xDS) / hyper (admin)
//! ```
//! The permit goes back when the connection closes. HTTP/1 headers that arrive too slowly are hyper's
//! `header_read_timeout` (see `admin::serve`); streams per connection and per peer are `xds::limits`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// The client connection preface of HTTP/2 (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`): what a gRPC client sends first.
pub const H2_PREFACE_LEN: usize = 24;

/// File descriptors kept out of the connection budget: config files, the state directory, the Kubernetes client,
/// log output, listeners.
pub const RESERVED_FDS: usize = 128;

/// Open connections, over every port, and the ones among them that have not sent a first request yet: when the
/// budget is full, the oldest of those is closed to make room (a flood of silent or slow clients never makes a
/// real client wait behind it).
#[derive(Clone, Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    max: usize,
    pending: Arc<Mutex<VecDeque<Weak<ConnState>>>>,
}

/// One connection's state as the budget sees it.
#[derive(Debug, Default)]
pub struct ConnState {
    /// It sent its first request: no longer a candidate for eviction.
    established: AtomicBool,
    /// The budget needed its place: its next read fails.
    evicted: AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

impl ConnState {
    /// The connection sent its first request (its HTTP/2 preface, or a whole HTTP/1 request head).
    pub fn establish(&self) {
        self.established.store(true, Ordering::Release);
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }
}

impl Budget {
    pub fn new(max: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max)), max, pending: Arc::default() }
    }

    /// The default bound: the process's open-file limit less [`RESERVED_FDS`] (at least 64), from
    /// `/proc/self/limits`; 10,000 where that cannot be read.
    pub fn default_max() -> usize {
        let limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| open_files_limit(&t));
        limit.map_or(10_000, |n| n.saturating_sub(RESERVED_FDS).max(64))
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A place for a new connection: at once if there is room, else after closing the oldest connection that has
    /// not sent its first request, else when one closes.
    async fn place(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                return p;
            }
            if !self.evict_one() {
                return self.permits.clone().acquire_owned().await.expect("the budget's semaphore is never closed");
            }
            // The evicted connection gives its place back once its task sees the failed read.
            if let Ok(Ok(p)) =
                tokio::time::timeout(Duration::from_millis(100), self.permits.clone().acquire_owned()).await
            {
                return p;
            }
        }
    }

    /// Closes the oldest connection still waiting for its first request; false when there is none.
    fn evict_one(&self) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(weak) = pending.pop_front() {
            if let Some(state) = weak.upgrade()
                && !state.established.load(Ordering::Acquire)
                && !state.evicted.load(Ordering::Acquire)
            {
                state.evict();
                return true;
            }
        }
        false
    }

    fn track(&self) -> Arc<ConnState> {
        let state = Arc::new(ConnState::default());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= self.max.saturating_mul(2) {
            pending.retain(|w| w.upgrade().is_some_and(|s| !s.established.load(Ordering::Acquire)));
        }
        pending.push_back(Arc::downgrade(&state));
        state
    }
}

/// The soft "Max open files" of a `/proc/PID/limits` text (`unlimited`: none).
fn open_files_limit(text: &str) -> Option<usize> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Accepts the next connection once the budget has room for it (see [`Budget`]); an accept error (out of
/// descriptors, an aborted handshake) is logged and retried after a pause, never returned.
pub async fn accept(listener: &TcpListener, budget: &Budget, port: &str) -> Accepted {
    loop {
        let permit = budget.place().await;
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return Accepted { tcp, peer, place: Place { _permit: permit, state: budget.track() } };
            }
            Err(e) => {
                drop(permit);
                tracing::warn!(port, error = %e, open = budget.open(), "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accepted connection and its place in the budget.
pub struct Accepted {
    pub tcp: TcpStream,
    pub peer: SocketAddr,
    pub place: Place,
}

/// A connection's place in the budget: given back when dropped.
#[derive(Debug)]
pub struct Place {
    _permit: OwnedSemaphorePermit,
    pub state: Arc<ConnState>,
}

/// A connection holding its place in the budget, closed with `TimedOut` if its first `need` bytes do not arrive
/// within the deadline (reading them establishes it), or when the budget evicts it.
pub struct Guarded<IO> {
    inner: IO,
    place: Place,
    deadline: Option<Pin<Box<Sleep>>>,
    need: usize,
}

impl<IO> Guarded<IO> {
    /// `need` bytes must be read within `within` (0: no deadline, and established only by [`ConnState::establish`]).
    pub fn new(inner: IO, place: Place, need: usize, within: Duration) -> Self {
        let deadline = Some(Box::pin(tokio::time::sleep(within)));
        Self { inner, place, deadline: deadline.filter(|_| need > 0), need }
    }

    /// The state the budget tracks for this connection.
    pub fn state(&self) -> Arc<ConnState> {
        self.place.state.clone()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let state = self.place.state.clone();
        if state.evicted.load(Ordering::Acquire) {
            let msg = "closed to make room: no first request yet, and the connection budget is full";
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, msg)));
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            let msg = "the client did not send its first request in time";
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, msg)));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if self.deadline.is_some() {
                    self.need = self.need.saturating_sub(read);
                    if self.need == 0 {
                        self.deadline = None;
                        state.establish();
                    }
                }
            }
            Poll::Pending if !state.established.load(Ordering::Acquire) => {
                *state.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            }
            _ => {}
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The plaintext accept loop as a stream of connections for tonic, each with its budget place and a deadline for
/// the HTTP/2 preface. Ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    budget: Budget,
    within: Duration,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Guarded<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let a = tokio::select! {
                a = accept(&listener, &budget, "xDS") => a,
                _ = tx.closed() => return,
            };
            if tx.send(Ok(Guarded::new(a.tcp, a.place, H2_PREFACE_LEN, within))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_file_limit_is_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max open files            1024                 524288               files\n";
        assert_eq!(open_files_limit(text), Some(1024));
        assert_eq!(open_files_limit("Max open files unlimited unlimited files"), None);
        assert!(Budget::default_max() >= 64);
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_and_a_talking_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let budget = Budget::new(2);
        let silent = TcpStream::connect(addr).await.unwrap();
        let a = accept(&listener, &budget, "test").await;
        assert_eq!(budget.open(), 1);
        let mut guarded = Guarded::new(a.tcp, a.place, 4, Duration::from_millis(100));
        let mut buf = [0u8; 8];
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop((guarded, silent));
        assert_eq!(budget.open(), 0, "the place goes back with the connection");

        let mut talking = TcpStream::connect(addr).await.unwrap();
        let a = accept(&listener, &budget, "test").await;
        let mut guarded = Guarded::new(a.tcp, a.place, 4, Duration::from_millis(100));
        talking.write_all(b"abcd").await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 4);
        tokio::time::sleep(Duration::from_millis(200)).await;
        talking.write_all(b"e").await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 1, "no deadline once the first bytes are in");
    }

    #[tokio::test]
    async fn a_full_budget_closes_the_oldest_silent_connection_for_a_new_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let budget = Budget::new(2);
        let mut reads = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let a = accept(&listener, &budget, "test").await;
            let mut g = Guarded::new(a.tcp, a.place, 4, Duration::from_secs(60));
            reads.push(tokio::spawn(async move { g.read(&mut [0u8; 4]).await.map_err(|e| e.kind()) }));
        }
        assert_eq!(budget.open(), 2);
        clients.push(TcpStream::connect(addr).await.unwrap());
        let third = tokio::time::timeout(Duration::from_secs(2), accept(&listener, &budget, "test")).await;
        assert!(third.is_ok(), "the new connection got a place without waiting for the 60 s deadline");
        let first = reads.remove(0).await.unwrap();
        assert_eq!(first, Err(io::ErrorKind::TimedOut), "the oldest silent one was closed");
    }
}
