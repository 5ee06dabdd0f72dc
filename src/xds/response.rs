//! A response to send, encoded straight from the shared resources, in chunks, as HTTP/2 takes them.
//!
//! Building the prost message first would copy every resource's name, version and bytes into per-stream
//! allocations (several small ones per resource, thousands per initial push), and encoding it would make one
//! allocation the size of the whole response (about 1 MB for the initial EDS set with 1,000 services). With many
//! streams syncing at once, those large short-lived allocations raise glibc's mmap threshold and then fragment the
//! heap around the long-lived per-stream state: RSS stayed at about three times the live heap. Here the protobuf
//! wire form of `DiscoveryResponse` (SotW) or `DeltaDiscoveryResponse` (Delta) is written field by field into
//! [`CHUNK`]-sized buffers, produced only when the response body is polled (so HTTP/2 flow control bounds what
//! is encoded ahead), and resource bodies of at least [`SHARE_FROM`] bytes are not copied at all: the chunk is
//! the snapshot's own `Bytes`. [`Response::frame`]

use super::resource::{Resource, TypeKind};
use super::wire::PREFIX;
use bytes::{BufMut, Bytes};
#[cfg(test)]
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use std::collections::VecDeque;
use std::sync::Arc;

/// One response of either protocol.
#[derive(Clone, Debug)]
pub(crate) struct Response {
    pub kind: TypeKind,
    /// SotW `version_info`; Delta `system_version_info`.
    pub version: String,
    pub nonce: String,
    pub resources: Vec<Arc<Resource>>,
    /// Delta only: `removed_resources`.
    pub removed: Vec<String>,
    pub delta: bool,
}

/// Length of a length-delimited field of `len` bytes with `tag` (proto3: an empty string is left out).
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(tag, s.len()) }
}

fn put_bytes(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn put_str(tag: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        put_bytes(tag, s.as_bytes(), buf);
    }
}

/// `google.protobuf.Any { type_url = 1, value = 2 }` of a resource.
fn any_len(r: &Resource) -> usize {
    str_len(1, r.kind.type_url()) + if r.body.is_empty() { 0 } else { field_len(2, r.body.len()) }
}

/// Delta's `Resource { version = 1, resource = 2, name = 3 }`.
fn delta_resource_len(r: &Resource) -> usize {
    str_len(1, &r.version) + field_len(2, any_len(r)) + str_len(3, &r.name)
}

impl Response {
    /// Encoded length of the protobuf message (without the gRPC prefix).
    pub fn encoded_len(&self) -> usize {
        let mut len = str_len(1, &self.version) + str_len(4, self.kind.type_url()) + str_len(5, &self.nonce);
        len += self.resources.iter().map(|r| self.resource_field_len(r)).sum::<usize>();
        len + self.removed.iter().map(|n| field_len(6, n.len())).sum::<usize>()
    }

    /// Bytes of the resources it carries (for `pilot_xds_config_size_bytes`).
    pub fn resource_bytes(&self) -> usize {
        self.resources.iter().map(|r| r.body.len()).sum()
    }

    /// Writes resource `i` (its field in the response message).
    fn put_resource(&self, i: usize, w: &mut Writer) {
        let r = &self.resources[i];
        self.put_head(r, &mut w.buf);
        if !r.body.is_empty() {
            w.body(&r.body);
        }
        self.put_tail(r, &mut w.buf);
    }

    /// A resource's field up to its body's bytes.
    fn put_head(&self, r: &Resource, buf: &mut Vec<u8>) {
        encode_key(2, WireType::LengthDelimited, buf);
        if self.delta {
            encode_varint(delta_resource_len(r) as u64, buf);
            put_str(1, &r.version, buf);
            encode_key(2, WireType::LengthDelimited, buf);
        }
        encode_varint(any_len(r) as u64, buf);
        put_str(1, r.kind.type_url(), buf);
        if !r.body.is_empty() {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(r.body.len() as u64, buf);
        }
    }

    /// A resource's field after its body's bytes.
    fn put_tail(&self, r: &Resource, buf: &mut Vec<u8>) {
        if self.delta {
            put_str(3, &r.name, buf);
        }
    }

    /// Every resource's field, in one buffer: what [`super::shared_run`] shares between streams.
    pub(crate) fn encode_resources(&self) -> Vec<u8> {
        let len = self.resources.iter().map(|r| self.resource_field_len(r)).sum();
        let mut buf = Vec::with_capacity(len);
        for r in &self.resources {
            self.put_head(r, &mut buf);
            buf.extend_from_slice(&r.body);
            self.put_tail(r, &mut buf);
        }
        buf
    }

    fn resource_field_len(&self, r: &Resource) -> usize {
        field_len(2, if self.delta { delta_resource_len(r) } else { any_len(r) })
    }

    /// The SotW message this frame carries (tests).
    #[cfg(test)]
    pub fn to_sotw(&self) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.version.clone(),
            resources: self.resources.iter().map(|r| r.to_any()).collect(),
            type_url: self.kind.type_url().to_string(),
            nonce: self.nonce.clone(),
            ..Default::default()
        }
    }

    /// The Delta message this frame carries (tests).
    #[cfg(test)]
    pub fn to_delta(&self) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: self.version.clone(),
            resources: self.resources.iter().map(|r| r.to_delta()).collect(),
            type_url: self.kind.type_url().to_string(),
            removed_resources: self.removed.clone(),
            nonce: self.nonce.clone(),
            ..Default::default()
        }
    }
}

/// Chunks are about this big (a resource is never split, so one may be larger).
pub const CHUNK: usize = 16 * 1024;

/// Resource bodies this big or bigger are sent as the snapshot's own bytes, not copied.
pub const SHARE_FROM: usize = 4 * 1024;

/// Encoded bytes ready to send: the buffer being filled, and what is done.
struct Writer {
    buf: Vec<u8>,
    done: VecDeque<Bytes>,
    chunk: usize,
}

impl Writer {
    fn body(&mut self, body: &Bytes) {
        if body.len() >= SHARE_FROM {
            self.flush();
            self.done.push_back(body.clone());
        } else {
            self.buf.extend_from_slice(body);
        }
    }

    /// Hands the buffer over as a chunk; the next one is allocated only when something is written to it (so the
    /// last flush of a response allocates nothing).
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.done.push_back(Bytes::from(std::mem::take(&mut self.buf)));
        }
    }
}

/// One response as a sequence of chunks (the gRPC prefix first), encoded as they are asked for.
pub(crate) struct Chunks {
    resp: Response,
    /// Every resource's field, encoded once for all the streams that send these same resources.
    shared: Option<Bytes>,
    len: usize,
    /// The next resource to write; `None` before the prefix, `resources.len()` for the closing fields.
    next: Option<usize>,
    finished: bool,
    w: Writer,
}

impl Chunks {
    /// `len` is the message's encoded length; chunks are about `chunk` bytes.
    pub fn new(resp: Response, len: usize, chunk: usize) -> Self {
        let shared = super::shared_run::lookup(&resp);
        Self::encoding(resp, len, chunk, shared)
    }

    /// [`Chunks::new`] with the resources' fields given (`shared`) or encoded per stream (`None`).
    fn encoding(resp: Response, len: usize, chunk: usize, shared: Option<Bytes>) -> Self {
        let w = Writer { buf: Vec::with_capacity(chunk.min(CHUNK).min(PREFIX + len)), done: VecDeque::new(), chunk };
        Self { resp, shared, len, next: None, finished: false, w }
    }

    /// Every remaining chunk, joined (tests, fuzzing).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn collect(mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREFIX + self.len);
        while let Some(c) = self.next_chunk() {
            out.extend_from_slice(&c);
        }
        out
    }

    /// The next chunk, or `None` once the whole message was given.
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        while self.w.done.is_empty() && !self.finished {
            self.fill();
        }
        self.w.done.pop_front()
    }

    /// Encodes until a chunk is done or the message ends.
    fn fill(&mut self) {
        let resp = &self.resp;
        let w = &mut self.w;
        if w.buf.capacity() == 0 {
            w.buf.reserve(w.chunk.min(CHUNK).min(PREFIX + self.len));
        }
        let mut i = match self.next {
            None => {
                w.buf.push(0);
                w.buf.extend_from_slice(&u32::try_from(self.len).unwrap_or(u32::MAX).to_be_bytes());
                put_str(1, &resp.version, &mut w.buf);
                0
            }
            Some(i) => i,
        };
        if let Some(shared) = self.shared.take() {
            // The resources as the shared bytes, in chunk-sized slices (no copy).
            w.flush();
            let mut at = 0;
            while at < shared.len() {
                let end = (at + w.chunk.min(CHUNK)).min(shared.len());
                w.done.push_back(shared.slice(at..end));
                at = end;
            }
            i = resp.resources.len();
        }
        while i < resp.resources.len() && w.buf.len() < w.chunk && w.done.is_empty() {
            resp.put_resource(i, w);
            i += 1;
        }
        self.next = Some(i);
        if i == resp.resources.len() && w.done.is_empty() && w.buf.len() < w.chunk {
            put_str(4, resp.kind.type_url(), &mut w.buf);
            put_str(5, &resp.nonce, &mut w.buf);
            for name in &resp.removed {
                put_bytes(6, name.as_bytes(), &mut w.buf);
            }
            self.finished = true;
        }
        if self.finished || w.buf.len() >= w.chunk {
            w.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::wire::unframe;

    fn resources() -> Vec<Arc<Resource>> {
        let mut out: Vec<_> = [300, 3, 0, SHARE_FROM, 2 * CHUNK, 10]
            .iter()
            .enumerate()
            .map(|(i, n)| Arc::new(Resource::new(TypeKind::Cluster, format!("c{i}"), vec![7u8; *n], vec![])))
            .collect();
        out.extend((0..300).map(|i| Arc::new(Resource::new(TypeKind::Cluster, format!("d{i}"), vec![1; 200], vec![]))));
        out
    }

    fn response(delta: bool, removed: Vec<String>, version: &str) -> Response {
        let resources = resources();
        Response { kind: TypeKind::Cluster, version: version.into(), nonce: "42".into(), resources, removed, delta }
    }

    /// The frame in chunks of about `chunk` bytes, and how many chunks it took.
    fn frame(r: &Response, chunk: usize) -> (Vec<u8>, usize) {
        frame_with(r, chunk, None)
    }

    fn frame_with(r: &Response, chunk: usize, shared: Option<Bytes>) -> (Vec<u8>, usize) {
        let mut chunks = Chunks::encoding(r.clone(), r.encoded_len(), chunk, shared);
        let (mut out, mut n) = (Vec::new(), 0);
        while let Some(c) = chunks.next_chunk() {
            out.extend_from_slice(&c);
            n += 1;
        }
        (out, n)
    }

    #[test]
    fn a_sotw_response_in_any_chunking_decodes_to_the_prost_message() {
        for version in ["", "0123456789abcdef"] {
            let r = response(false, vec![], version);
            let expected = r.to_sotw();
            assert_eq!(r.encoded_len(), prost::Message::encoded_len(&expected));
            let (whole, one) = frame(&r, usize::MAX);
            assert_eq!(unframe::<DiscoveryResponse>(&whole).unwrap(), expected);
            assert_eq!(u32::from_be_bytes(whole[1..5].try_into().unwrap()) as usize, whole.len() - PREFIX);
            // Bodies of SHARE_FROM bytes or more are their own chunks (the snapshot's bytes, not copies).
            assert_eq!(one, 5, "before, the two shared bodies, between, after");
            for chunk in [1, 100, CHUNK] {
                let (joined, n) = frame(&r, chunk);
                assert_eq!(joined, whole, "chunks of {chunk}");
                assert!(n > one, "chunks of {chunk}: {n}");
            }
        }
    }

    #[test]
    fn a_delta_response_in_any_chunking_decodes_to_the_prost_message() {
        let r = response(true, vec!["gone-1".into(), "gone-2".into()], "7");
        let expected = r.to_delta();
        assert_eq!(r.encoded_len(), prost::Message::encoded_len(&expected));
        let (whole, _) = frame(&r, usize::MAX);
        assert_eq!(unframe::<DeltaDiscoveryResponse>(&whole).unwrap(), expected);
        for chunk in [1, 100, CHUNK] {
            assert_eq!(frame(&r, chunk).0, whole, "chunks of {chunk}");
        }
        let empty = Response { resources: vec![], ..response(true, vec![], "") };
        assert_eq!(unframe::<DeltaDiscoveryResponse>(&frame(&empty, CHUNK).0).unwrap(), empty.to_delta());
    }

    #[test]
    fn a_response_sent_from_shared_resource_bytes_is_the_same_message() {
        for delta in [false, true] {
            let r = response(delta, if delta { vec!["gone".into()] } else { vec![] }, "9");
            let shared = Bytes::from(r.encode_resources());
            for chunk in [1, 100, CHUNK, usize::MAX] {
                assert_eq!(frame_with(&r, chunk, Some(shared.clone())).0, frame(&r, chunk).0, "chunks of {chunk}");
            }
            let (whole, n) = frame(&r, CHUNK);
            assert_eq!(Chunks::new(r.clone(), r.encoded_len(), CHUNK).collect(), whole, "through the shared runs");
            assert!(n > 1);
        }
    }
}
