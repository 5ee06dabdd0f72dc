//! gRPC framing of the xDS streams, done here rather than by tonic's generated servers, so that what a stream
//! holds between messages is small.
//!
//! ```text
//!  HTTP/2 request body ──▶ Requests<M>: 5-byte prefix + protobuf ──▶ M        (buffer dropped when idle and big)
//!  stream task ──Response──▶ send queue ──▶ Responses: chunks encoded as polled ──▶ HTTP/2 DATA, then grpc-status
//! ```
//! tonic's codec keeps one encode and one decode buffer per stream and re-uses them, so each stream kept a buffer
//! the size of its largest response (the initial EDS set: about 1 MB with 1,000 services) and of its largest
//! request (its EDS subscription) for as long as it lived. Here a response is encoded into an allocation of its
//! exact size that is freed once HTTP/2 has written it, and a request buffer that grew past
//! [`IDLE_BUFFER_LIMIT`] is let go as soon as it holds no partial message.
//! Compressed messages are refused (no `grpc-encoding` is negotiated, as with tonic's default servers), and the
//! decode limit's message is tonic's, so callers name the flag the same way.

use super::queue::Outbound;
use super::response::Chunks;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::Body as _;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::Status;

/// The gRPC message prefix: a compression flag and a big-endian 32-bit length.
pub const PREFIX: usize = 5;

/// A request buffer larger than this is dropped whenever it holds no partial message.
pub const IDLE_BUFFER_LIMIT: usize = 16 * 1024;

/// `msg` as one gRPC message: prefix and protobuf in one exact-size allocation (the bench's simulated proxies).
pub fn frame<M: prost::Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = Vec::with_capacity(PREFIX + len);
    buf.push(0);
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    msg.encode_raw(&mut buf);
    Bytes::from(buf)
}

/// The message inside a gRPC frame (tests, the fuzzing driver).
pub fn unframe<M: prost::Message + Default>(frame: &[u8]) -> Result<M, prost::DecodeError> {
    M::decode(frame.get(PREFIX..).unwrap_or_default())
}

/// How a message is made from its bytes: protobuf messages decode; [`Raw`] keeps the bytes.
pub trait Decode: Sized {
    fn decode(bytes: BytesMut) -> Result<Self, prost::DecodeError>;
}

impl<M: prost::Message + Default> Decode for M {
    fn decode(bytes: BytesMut) -> Result<Self, prost::DecodeError> {
        M::decode(bytes)
    }
}

/// A message's protobuf bytes, undecoded (the bench's simulated proxies read only the fields they need).
pub struct Raw(pub Bytes);

impl Decode for Raw {
    fn decode(bytes: BytesMut) -> Result<Self, prost::DecodeError> {
        Ok(Raw(bytes.freeze()))
    }
}

/// The messages of a gRPC request body, each at most `max` bytes (or of a response body, with its status).
pub struct Requests<M> {
    body: tonic::body::Body,
    buf: BytesMut,
    max: usize,
    done: bool,
    _message: PhantomData<fn() -> M>,
}

impl<M: Decode> Requests<M> {
    pub fn new(body: tonic::body::Body, max: usize) -> Self {
        Self { body, buf: BytesMut::new(), max, done: false, _message: PhantomData }
    }

    /// The next whole message in the buffer, if there is one (or the error that ends the stream).
    fn decode_one(&mut self) -> Option<Result<M, Status>> {
        if self.buf.len() < PREFIX {
            return None;
        }
        if self.buf[0] != 0 {
            self.done = true;
            return Some(Err(Status::unimplemented(
                "compressed messages are not accepted: no grpc-encoding is negotiated on xDS streams",
            )));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max {
            self.done = true;
            return Some(Err(Status::out_of_range(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {} bytes",
                self.max
            ))));
        }
        if self.buf.len() < PREFIX + len {
            self.buf.reserve(PREFIX + len - self.buf.len());
            return None;
        }
        self.buf.advance(PREFIX);
        let message = self.buf.split_to(len);
        let decoded = <M as Decode>::decode(message).map_err(|e| {
            self.done = true;
            Status::internal(format!("the request is not a valid protobuf message: {e}"))
        });
        if self.buf.is_empty() && self.buf.capacity() > IDLE_BUFFER_LIMIT {
            self.buf = BytesMut::new();
        }
        Some(decoded)
    }

    /// Capacity of the buffer kept between messages (tests).
    #[cfg(test)]
    fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl<M: Decode> futures::Stream for Requests<M> {
    type Item = Result<M, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(item) = this.decode_one() {
                return Poll::Ready(Some(item));
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.buf.extend_from_slice(&data),
                    // A response stream's trailers carry its status (the bench's proxies read responses here too).
                    Err(frame) => {
                        let status = frame.trailers_ref().and_then(Status::from_header_map);
                        if let Some(status) = status.filter(|s| s.code() != tonic::Code::Ok) {
                            this.done = true;
                            return Poll::Ready(Some(Err(status)));
                        }
                    }
                },
                Some(Err(status)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => {
                    this.done = true;
                    if !this.buf.is_empty() {
                        return Poll::Ready(Some(Err(Status::internal("the request stream ended inside a message"))));
                    }
                }
            }
        }
    }
}

impl<M> Unpin for Requests<M> {}

/// A gRPC response body: the frames the stream task queues, then the status as trailers (OK when the task ends
/// without one).
pub struct Responses {
    out: Outbound<Chunks>,
    /// The response being sent.
    current: Option<Chunks>,
    done: bool,
}

impl Responses {
    pub(crate) fn new(out: Outbound<Chunks>) -> Self {
        Self { out, current: None, done: false }
    }
}

impl http_body::Body for Responses {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let status = loop {
            if let Some(chunk) = self.current.as_mut().and_then(Chunks::next_chunk) {
                return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
            }
            self.current = None;
            match ready!(futures::StreamExt::poll_next_unpin(&mut self.out, cx)) {
                Some(Ok(chunks)) => self.current = Some(chunks),
                Some(Err(status)) => break status,
                None => break Status::ok(""),
            }
        };
        self.done = true;
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers(&status)))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// `grpc-status` (and `grpc-message`) for `status`.
fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert(Status::GRPC_STATUS, HeaderValue::from_static("13"));
    }
    map
}

/// The head of a streaming response whose body is `responses`.
pub fn response(responses: Responses) -> http::Response<tonic::body::Body> {
    let mut resp = http::Response::new(tonic::body::Body::new(responses));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    resp
}

/// Refuses a request whose messages are compressed with an encoding we did not offer.
pub fn check_encoding(headers: &HeaderMap) -> Result<(), Status> {
    match headers.get("grpc-encoding").map(|v| v.to_str().unwrap_or("?")) {
        None | Some("identity") => Ok(()),
        Some(other) => Err(Status::unimplemented(format!(
            "Content is compressed with `{other}` which isn't supported; xDS streams take uncompressed messages"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use futures::StreamExt;

    fn body(chunks: Vec<Vec<u8>>) -> tonic::body::Body {
        let frames = chunks.into_iter().map(|c| Ok::<_, Status>(http_body::Frame::data(Bytes::from(c))));
        tonic::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)))
    }

    fn req(names: usize) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: "t".into(),
            resource_names: (0..names).map(|i| format!("outbound|9080|v1|svc-{i}.default.svc.cluster.local")).collect(),
            ..Default::default()
        }
    }

    fn framed(m: &DiscoveryRequest) -> Vec<u8> {
        frame(m).to_vec()
    }

    #[tokio::test]
    async fn messages_split_anywhere_across_chunks_decode_in_order() {
        let (a, b) = (req(1), req(3));
        let mut all = framed(&a);
        all.extend(framed(&b));
        for cut in [1, 4, 5, 7, all.len() - 1] {
            let mut s =
                Requests::<DiscoveryRequest>::new(body(vec![all[..cut].to_vec(), all[cut..].to_vec()]), 1 << 20);
            assert_eq!(s.next().await.unwrap().unwrap(), a, "cut at {cut}");
            assert_eq!(s.next().await.unwrap().unwrap(), b, "cut at {cut}");
            assert!(s.next().await.is_none());
        }
    }

    #[tokio::test]
    async fn a_big_request_buffer_is_let_go_once_its_message_is_decoded() {
        let big = req(2_000);
        let bytes = framed(&big);
        assert!(bytes.len() > 4 * IDLE_BUFFER_LIMIT);
        let mut s = Requests::<DiscoveryRequest>::new(body(bytes.chunks(1000).map(<[u8]>::to_vec).collect()), 1 << 20);
        assert_eq!(s.next().await.unwrap().unwrap(), big);
        assert!(s.buffered_capacity() <= IDLE_BUFFER_LIMIT, "kept {} bytes", s.buffered_capacity());
    }

    #[tokio::test]
    async fn too_large_compressed_and_truncated_requests_end_the_stream_with_a_status() {
        let m = framed(&req(10));
        let mut s = Requests::<DiscoveryRequest>::new(body(vec![m.clone()]), 100);
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(e.message().contains("too large") && e.message().contains("the limit is: 100 bytes"), "{e}");
        assert!(s.next().await.is_none());

        let mut compressed = m.clone();
        compressed[0] = 1;
        let mut s = Requests::<DiscoveryRequest>::new(body(vec![compressed]), 1 << 20);
        assert_eq!(s.next().await.unwrap().unwrap_err().code(), tonic::Code::Unimplemented);

        let mut s = Requests::<DiscoveryRequest>::new(body(vec![m[..m.len() - 1].to_vec()]), 1 << 20);
        assert!(s.next().await.unwrap().unwrap_err().message().contains("ended inside a message"));
    }

    #[tokio::test]
    async fn responses_are_the_queued_responses_in_chunks_then_the_status_as_trailers() {
        use crate::xds::resource::{Resource, TypeKind};
        use crate::xds::response::{CHUNK, Response};
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
        use std::sync::Arc;
        let resources: Vec<_> = (0..400)
            .map(|i| Arc::new(Resource::new(TypeKind::Cluster, format!("c{i}"), vec![1; 100 + i * 20], vec![])))
            .collect();
        let resp = Response {
            kind: TypeKind::Cluster,
            version: "v".into(),
            nonce: "1".into(),
            resources,
            removed: vec![],
            delta: false,
        };
        let (expected, len) = (resp.to_sotw(), resp.encoded_len());
        assert!(len > 10 * CHUNK);
        let (tx, out) = super::super::queue::channel(4, 1 << 30);
        tx.push(Chunks::new(resp, len, CHUNK), len).unwrap();
        tx.fail(Status::permission_denied("namespace b"));
        let mut body = Responses::new(out);
        let (mut joined, mut chunks) = (Vec::new(), 0);
        let trailers = loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.unwrap().unwrap();
            match frame.into_data() {
                Ok(data) => {
                    assert!(data.len() <= CHUNK + 6_000, "a chunk of {} bytes", data.len());
                    joined.extend_from_slice(&data);
                    chunks += 1;
                }
                Err(frame) => break frame.into_trailers().unwrap(),
            }
        };
        assert!(chunks > 10, "{chunks} chunks");
        assert_eq!(unframe::<DiscoveryResponse>(&joined).unwrap(), expected);
        assert_eq!(trailers.get("grpc-status").unwrap(), "7");
        assert_eq!(trailers.get("grpc-message").unwrap(), "namespace%20b");
        assert!(std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.is_none());
    }
}
