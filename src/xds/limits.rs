//! Explicit bounds on what one proxy may ask of Sluice, each a `sluice serve` flag, each refused with a gRPC status
//! that names the limit (never a crash, never unbounded memory).
//!
//! ```text
//!  new stream ──▶ StreamSlots (total open streams)        ── ResourceExhausted "N streams open; the limit is M"
//!  each message ─▶ tonic decode limit (request bytes)      ── OutOfRange "decoded message length too large"
//!  each request ─▶ check_request (names, name length)      ── ResourceExhausted / InvalidArgument
//!  after apply ──▶ check_subscription (names per type)     ── ResourceExhausted
//!  each response ▶ max_response_bytes, then the send queue (see `queue`): a full queue coalesces, never grows
//!  first config ─▶ max_initial_syncs (see `gate`): the rest wait their turn, each place held 5 s at most
//! ```

use super::resource::TypeKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::Status;

/// Explicit bounds on streams, requests and responses.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Limits {
    /// xDS streams open at once, over every connection and service.
    pub max_streams: usize,
    /// Largest request message Sluice decodes.
    pub max_request_bytes: usize,
    /// Largest response message Sluice sends (one type's whole SotW set).
    pub max_response_bytes: usize,
    /// Resource names in one request (subscribe + unsubscribe + initial versions), and in one stream's
    /// subscription to one type.
    pub max_names_per_request: usize,
    /// Longest resource name in a request.
    pub max_name_bytes: usize,
    /// Responses queued on one stream that the proxy has not read yet.
    pub send_queue: usize,
    /// Bytes of responses queued on one stream that the proxy has not read yet.
    pub send_queue_bytes: usize,
    /// Streams receiving their first config at once; the others wait their turn (see `gate`). 0: no bound.
    pub max_initial_syncs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_streams: 10_000,
            max_request_bytes: 4 * 1024 * 1024,
            max_response_bytes: 256 * 1024 * 1024,
            max_names_per_request: 20_000,
            max_name_bytes: 1024,
            send_queue: 4,
            send_queue_bytes: 64 * 1024 * 1024,
            max_initial_syncs: 128,
        }
    }
}

impl Limits {
    /// Refuses a request naming too many resources, or a name that is too long.
    pub(crate) fn check_request<'a>(&self, count: usize, names: impl Iterator<Item = &'a str>) -> Result<(), Status> {
        if count > self.max_names_per_request {
            return Err(Status::resource_exhausted(format!(
                "the request names {count} resources; the limit is {} (--max-names-per-request)",
                self.max_names_per_request
            )));
        }
        if let Some(long) = names.into_iter().find(|n| n.len() > self.max_name_bytes) {
            let head: String = long.chars().take(64).collect();
            return Err(Status::invalid_argument(format!(
                "resource name `{head}...` is {} bytes; the limit is {} (--max-name-bytes)",
                long.len(),
                self.max_name_bytes
            )));
        }
        Ok(())
    }

    /// Refuses a subscription that grew past the names limit (Delta subscriptions accumulate over requests).
    pub(crate) fn check_subscription(&self, kind: TypeKind, names: usize) -> Result<(), Status> {
        if names > self.max_names_per_request {
            return Err(Status::resource_exhausted(format!(
                "the {} subscription names {names} resources; the limit is {} (--max-names-per-request)",
                kind.short(),
                self.max_names_per_request
            )));
        }
        Ok(())
    }

    /// Refuses a response too large to send.
    pub(crate) fn check_response(&self, kind: TypeKind, bytes: usize) -> Result<(), Status> {
        if bytes > self.max_response_bytes {
            return Err(Status::resource_exhausted(format!(
                "the {} response is {bytes} bytes; the limit is {} (--max-response-bytes)",
                kind.short(),
                self.max_response_bytes
            )));
        }
        Ok(())
    }
}

/// Counts open xDS streams against [`Limits::max_streams`].
#[derive(Clone, Debug, Default)]
pub struct StreamSlots {
    open: Arc<AtomicUsize>,
}

impl StreamSlots {
    /// Takes a slot for a new stream, or refuses it; the slot frees when the guard drops (the stream ends).
    pub fn acquire(&self, max: usize) -> Result<SlotGuard, Status> {
        let taken = self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        match taken {
            Ok(_) => Ok(SlotGuard { open: self.open.clone() }),
            Err(n) => {
                Err(Status::resource_exhausted(format!("{n} xDS streams are open; the limit is {max} (--max-streams)")))
            }
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open stream's slot.
#[derive(Debug)]
pub struct SlotGuard {
    open: Arc<AtomicUsize>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_refuse_past_the_limit_and_free_on_drop() {
        let slots = StreamSlots::default();
        let a = slots.acquire(2).unwrap();
        let _b = slots.acquire(2).unwrap();
        let err = slots.acquire(2).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("2 xDS streams are open; the limit is 2"), "{}", err.message());
        drop(a);
        assert_eq!(slots.open(), 1);
        assert!(slots.acquire(2).is_ok());
    }

    #[test]
    fn requests_name_their_count_and_long_names() {
        let limits = Limits { max_names_per_request: 2, max_name_bytes: 4, ..Limits::default() };
        let err = limits.check_request(3, ["a", "b", "c"].into_iter()).unwrap_err();
        assert!(err.message().contains("names 3 resources; the limit is 2"), "{}", err.message());
        let err = limits.check_request(1, ["abcdef"].into_iter()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("6 bytes; the limit is 4"), "{}", err.message());
        assert!(limits.check_request(2, ["abcd", "x"].into_iter()).is_ok());
    }
}
