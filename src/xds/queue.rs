//! One stream's send queue: responses handed to gRPC that the proxy has not read yet, bounded in count and bytes.
//!
//! ```text
//!  stream task ──push (only while has_room)──▶ mpsc(send_queue + 1) ──▶ Outbound (gRPC body) ──▶ proxy
//!       ▲                                                                   │ bytes -= n; notify
//!       └──────────────── drained() ◀─────────────────────────────────────────┘
//! ```
//! A proxy that stops reading fills the queue; the task then computes no more responses and keeps its types dirty,
//! while it still reads requests, new snapshots and the stop signal. When the proxy reads again it gets the
//! *latest* state of each type, not a backlog: a slow reader coalesces, and holds at most `send_queue` responses or
//! `send_queue_bytes` plus one response. One slot is kept for the status that ends a stream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::sync::{Notify, mpsc};
use tonic::Status;

struct Shared {
    bytes: AtomicUsize,
    drained: Notify,
}

/// The stream task's end.
pub(crate) struct SendQueue<T> {
    tx: mpsc::Sender<(Result<T, Status>, usize)>,
    shared: Arc<Shared>,
    max_bytes: usize,
}

/// The gRPC response body's end.
pub(crate) struct Outbound<T> {
    rx: mpsc::Receiver<(Result<T, Status>, usize)>,
    shared: Arc<Shared>,
}

/// A queue holding at most `max` responses (at least 1) and, past `max_bytes`, no more.
pub(crate) fn channel<T>(max: usize, max_bytes: usize) -> (SendQueue<T>, Outbound<T>) {
    let (tx, rx) = mpsc::channel(max.max(1) + 1);
    let shared = Arc::new(Shared { bytes: AtomicUsize::new(0), drained: Notify::new() });
    (SendQueue { tx, shared: shared.clone(), max_bytes }, Outbound { rx, shared })
}

/// The proxy is gone: nothing reads the queue any more.
#[derive(Debug)]
pub(crate) struct Closed;

impl<T> SendQueue<T> {
    /// Whether another response may be queued now.
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 1 && self.shared.bytes.load(Ordering::Acquire) < self.max_bytes
    }

    /// Queues a response of `bytes` encoded bytes. Call only when [`Self::has_room`].
    pub fn push(&self, resp: T, bytes: usize) -> Result<(), Closed> {
        self.shared.bytes.fetch_add(bytes, Ordering::AcqRel);
        self.tx.try_send((Ok(resp), bytes)).map_err(|_| Closed)
    }

    /// Ends the stream with `status` (the slot kept for it means it never waits for the proxy).
    pub fn fail(&self, status: Status) {
        if let Err(e) = self.tx.try_send((Err(status), 0)) {
            tracing::debug!(error = %e, "the closing status could not be queued");
        }
    }

    /// Resolves once the proxy has read a response (maybe already: a read since the last call counts).
    pub async fn drained(&self) {
        self.shared.drained.notified().await
    }

    /// Bytes queued now.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.shared.bytes.load(Ordering::Acquire)
    }
}

impl<T> futures::Stream for Outbound<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((item, bytes))) => {
                self.shared.bytes.fetch_sub(bytes, Ordering::AcqRel);
                self.shared.drained.notify_one();
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn full_by_count_or_bytes_and_room_again_once_read() {
        let (q, mut out) = channel::<u32>(2, 100);
        assert!(q.has_room());
        q.push(1, 10).unwrap();
        q.push(2, 10).unwrap();
        assert!(!q.has_room(), "two responses queued: full by count");
        assert_eq!(out.next().await.unwrap().unwrap(), 1);
        q.drained().await;
        assert!(q.has_room());
        q.push(3, 200).unwrap();
        assert!(!q.has_room(), "past the byte limit");
        assert_eq!(q.queued_bytes(), 210);
        q.fail(Status::resource_exhausted("bye"));
        assert_eq!(out.next().await.unwrap().unwrap(), 2);
        assert_eq!(out.next().await.unwrap().unwrap(), 3);
        assert_eq!(out.next().await.unwrap().unwrap_err().message(), "bye");
        assert_eq!(q.queued_bytes(), 0);
    }
}
