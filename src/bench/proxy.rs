//! Simulated proxies: each opens ADS like Envoy (wildcard CDS, then EDS by name, wildcard LDS, then RDS by name,
//! and on Delta VHDS for the route configurations that name it), ACKs every response, and records when it ACKed
//! each type and how many bytes it received.

use crate::xds::TypeKind;
use crate::xds::wire::{self, Raw, Requests};
use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value::Kind as ValueKind};
use futures::StreamExt;
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The wire protocol the proxies speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Delta,
    Sotw,
}

/// Per-proxy timings (ns since the recorder's start; 0 = never) and byte counts, written by the proxy tasks.
pub struct Recorder {
    start: Instant,
    slots: Vec<Slot>,
}

#[derive(Default)]
pub struct Slot {
    pub synced: AtomicU64,
    pub acked: [AtomicU64; 5],
    pub bytes: [AtomicU64; 5],
}

impl Recorder {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self { start: Instant::now(), slots: (0..n).map(|_| Slot::default()).collect() })
    }

    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64 + 1
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    fn acked(&self, i: usize, kind: TypeKind, bytes: usize) {
        let s = &self.slots[i];
        s.bytes[kind.index()].fetch_add(bytes as u64, Ordering::Relaxed);
        s.acked[kind.index()].store(self.now(), Ordering::Release);
    }

    /// The proxy ACKed its last type of its first config (RDS, or VHDS when its routes name it).
    fn synced(&self, i: usize) {
        let s = &self.slots[i];
        if s.synced.load(Ordering::Acquire) == 0 {
            s.synced.store(self.now(), Ordering::Release);
        }
    }
}

/// The fields of a response a proxy reads first; the tags are the same in `DiscoveryResponse` and
/// `DeltaDiscoveryResponse` (1: version, 4: type URL, 5: nonce).
#[derive(Debug, Default, PartialEq)]
struct Header {
    version: String,
    type_url: String,
    nonce: String,
}

/// Reads a response's [`Header`] by walking its top-level fields, skipping each resource (one length-delimited
/// field) by its length. A prost decode of the same fields was the driver's largest cost.
fn header(mut b: &[u8]) -> Result<Header, tonic::Status> {
    let bad = || tonic::Status::internal("bad response: a field runs past the message");
    let varint = |b: &mut &[u8]| prost::encoding::decode_varint(b).map_err(|_| bad());
    let mut h = Header::default();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..).ok_or_else(bad)?,
            5 => b = b.get(4..).ok_or_else(bad)?,
            2 => {
                let len = varint(&mut b)? as usize;
                let (field, rest) = (b.get(..len).ok_or_else(bad)?, &b[len..]);
                b = rest;
                let text = || String::from_utf8_lossy(field).into_owned();
                match key >> 3 {
                    1 => h.version = text(),
                    4 => h.type_url = text(),
                    5 => h.nonce = text(),
                    _ => {}
                }
            }
            _ => return Err(tonic::Status::internal("bad response: unknown wire type")),
        }
    }
    Ok(h)
}

/// Only the resources' names of a Delta response, without decoding the resources (`Resource`'s name is field 3).
#[derive(Clone, PartialEq, Message)]
struct DeltaNames {
    #[prost(message, repeated, tag = "2")]
    resources: Vec<DeltaName>,
}

#[derive(Clone, PartialEq, Message)]
struct DeltaName {
    #[prost(bytes = "bytes", tag = "3")]
    name: Bytes,
}

/// Only the resources' names of a SotW response: each `Any` holds the resource in field 2, and every type served
/// names itself in field 1.
#[derive(Clone, PartialEq, Message)]
struct SotwNames {
    #[prost(message, repeated, tag = "2")]
    resources: Vec<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(message, optional, tag = "2")]
    value: Option<NameOnly>,
}

#[derive(Clone, PartialEq, Message)]
struct NameOnly {
    #[prost(bytes = "bytes", tag = "1")]
    name: Bytes,
}

/// A Delta subscription naming resources (`DeltaDiscoveryRequest` fields 2 and 3), built from the names as read.
#[derive(Clone, PartialEq, Message)]
struct Subscribe {
    #[prost(string, tag = "2")]
    type_url: String,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    names: Vec<Bytes>,
}

fn decode<M: Message + Default>(raw: &Bytes) -> Result<M, tonic::Status> {
    M::decode(raw.clone()).map_err(|e| tonic::Status::internal(format!("bad response: {e}")))
}

/// The resource names of a response (`delta`: Delta's `Resource`s; otherwise SotW's `Any`s).
fn names_in(raw: &Bytes, delta: bool) -> Result<Vec<Bytes>, tonic::Status> {
    Ok(if delta {
        decode::<DeltaNames>(raw)?.resources.into_iter().map(|r| r.name).collect()
    } else {
        decode::<SotwNames>(raw)?.resources.into_iter().filter_map(|r| Some(r.value?.name)).collect()
    })
}

/// The node of simulated proxy `i` (`bench-proxy-NNNNN` in namespace `default`); `grouped`: labelled with its
/// Sidecar group (`bench-group`, see `fixture::GROUPS`).
pub fn node(i: usize, grouped: bool) -> Node {
    let text = |s: String| Value { kind: Some(ValueKind::StringValue(s)) };
    let mut fields: std::collections::BTreeMap<String, Value> =
        [("NAMESPACE".to_string(), text("default".into()))].into();
    if grouped {
        let labels = Struct { fields: [("bench-group".to_string(), text(super::fixture::group_of(i)))].into() };
        fields.insert("LABELS".into(), Value { kind: Some(ValueKind::StructValue(labels)) });
    }
    let metadata = Struct { fields: fields.into_iter().collect() };
    Node { id: format!("bench-proxy-{i:05}"), metadata: Some(metadata), ..Default::default() }
}

/// A route configuration's name and whether it takes its virtual hosts from VHDS; the virtual hosts themselves
/// (field 2) are skipped unread.
#[derive(Clone, PartialEq, Message)]
struct RouteHead {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "9")]
    vhds: Option<envoy_types::pb::envoy::config::route::v3::Vhds>,
}

/// The route configurations of a Delta response that take their virtual hosts from VHDS.
fn vhds_names(raw: &Bytes) -> Result<Vec<Bytes>, tonic::Status> {
    let resp: DeltaDiscoveryResponse = decode(raw)?;
    let heads = resp.resources.into_iter().filter_map(|r| RouteHead::decode(r.resource?.value.as_slice()).ok());
    Ok(heads.filter(|h| h.vhds.is_some()).map(|h| Bytes::from(h.name)).collect())
}

/// Route configuration names the listeners' HTTP connection managers take from RDS.
fn rds_names(listeners: &[Any]) -> Vec<String> {
    let mut names: Vec<String> = listeners
        .iter()
        .filter_map(|a| Listener::decode(a.value.as_slice()).ok())
        .flat_map(|l| l.filter_chains.into_iter().chain(l.default_filter_chain))
        .flat_map(|fc| fc.filters)
        .filter_map(|f| match f.config_type {
            Some(ConfigType::TypedConfig(any)) => HttpConnectionManager::decode(any.value.as_slice()).ok(),
            _ => None,
        })
        .filter_map(|h| match h.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Runs proxy `i` until its stream ends. A `stalled` proxy subscribes and then never reads.
pub async fn run(
    channel: Channel,
    i: usize,
    mode: Mode,
    rec: Arc<Recorder>,
    stalled: bool,
    grouped: bool,
) -> Result<(), tonic::Status> {
    let node = node(i, grouped);
    match mode {
        Mode::Sotw => sotw(channel, i, node, rec, stalled).await,
        Mode::Delta => delta(channel, i, node, rec, stalled).await,
    }
}

const ADS: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/";

/// Opens an ADS stream (`method`) sending the framed `requests`, read undecoded with `xds::wire`'s decoder: tonic's
/// client codec keeps a buffer the size of the largest response per stream (~1 MB here), which at N = 10,000
/// alone outgrew the machine, and a whole decode of every response cost the driver as much CPU as Sluice spent.
async fn open(
    mut channel: Channel,
    method: &str,
    requests: mpsc::Receiver<Bytes>,
) -> Result<Requests<Raw>, tonic::Status> {
    use tonic::codegen::Service;
    let frames = ReceiverStream::new(requests).map(|m| Ok::<_, tonic::Status>(http_body::Frame::data(m)));
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("{ADS}{method}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(frames)))
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let unavailable = |e: tonic::transport::Error| tonic::Status::unavailable(crate::error_chain(&e));
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.map_err(unavailable)?;
    let resp = channel.call(req).await.map_err(unavailable)?;
    if let Some(status) = tonic::Status::from_header_map(resp.headers()).filter(|s| s.code() != tonic::Code::Ok) {
        return Err(status);
    }
    Ok(Requests::new(resp.into_body(), usize::MAX))
}

/// A name's 64-bit hash: what a proxy keeps to know which names it subscribed to (strings would cost ~300 KB per
/// simulated proxy).
fn hashed(name: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name)
}

fn kind_of(url: &str) -> Result<TypeKind, tonic::Status> {
    TypeKind::from_type_url(url).ok_or_else(|| tonic::Status::internal(format!("unexpected type {url}")))
}

async fn sotw(channel: Channel, i: usize, node: Node, rec: Arc<Recorder>, stalled: bool) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(64);
    let req = |kind: TypeKind, names: &[String], version: &str, nonce: &str| {
        wire::frame(&DiscoveryRequest {
            type_url: kind.type_url().into(),
            resource_names: names.to_vec(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        })
    };
    let first =
        DiscoveryRequest { node: Some(node), type_url: TypeKind::Cluster.type_url().into(), ..Default::default() };
    let _ = tx.send(wire::frame(&first)).await;
    let mut stream = open(channel, "StreamAggregatedResources", rx).await?;
    if stalled {
        return futures::future::pending().await;
    }
    let mut names: [Vec<String>; 5] = Default::default();
    let mut last: [(String, String); 5] = Default::default();
    let mut asked = [true, false, false, false, false];
    while let Some(Raw(raw)) = stream.next().await.transpose()? {
        let head = header(&raw)?;
        let kind = kind_of(&head.type_url)?;
        last[kind.index()] = (head.version, head.nonce);
        let (v, n) = &last[kind.index()];
        let _ = tx.send(req(kind, &names[kind.index()], v, n)).await;
        rec.acked(i, kind, raw.len());
        let (next, wanted): (TypeKind, Vec<String>) = match kind {
            TypeKind::Cluster => {
                let names = names_in(&raw, false)?;
                (TypeKind::Endpoint, names.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect())
            }
            TypeKind::Endpoint => (TypeKind::Listener, Vec::new()),
            TypeKind::Listener => (TypeKind::Route, rds_names(&decode::<DiscoveryResponse>(&raw)?.resources)),
            TypeKind::Route | TypeKind::VirtualHost => {
                rec.synced(i);
                continue;
            }
        };
        if !asked[next.index()] || (!wanted.is_empty() && wanted != names[next.index()]) {
            asked[next.index()] = true;
            names[next.index()] = wanted;
            let (v, n) = &last[next.index()];
            let _ = tx.send(req(next, &names[next.index()], v, n)).await;
        }
    }
    Ok(())
}

async fn delta(channel: Channel, i: usize, node: Node, rec: Arc<Recorder>, stalled: bool) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(64);
    let sub = |kind: TypeKind, names: Vec<Bytes>| wire::frame(&Subscribe { type_url: kind.type_url().into(), names });
    let first =
        DeltaDiscoveryRequest { node: Some(node), type_url: TypeKind::Cluster.type_url().into(), ..Default::default() };
    let _ = tx.send(wire::frame(&first)).await;
    let mut stream = open(channel, "DeltaAggregatedResources", rx).await?;
    if stalled {
        return futures::future::pending().await;
    }
    let mut subscribed: [std::collections::BTreeSet<u64>; 5] = Default::default();
    let mut asked = [true, false, false, false, false];
    while let Some(Raw(raw)) = stream.next().await.transpose()? {
        let head = header(&raw)?;
        let kind = kind_of(&head.type_url)?;
        let ack = DeltaDiscoveryRequest { type_url: head.type_url, response_nonce: head.nonce, ..Default::default() };
        let _ = tx.send(wire::frame(&ack)).await;
        rec.acked(i, kind, raw.len());
        let (next, wanted): (TypeKind, Vec<Bytes>) = match kind {
            TypeKind::Cluster => (TypeKind::Endpoint, names_in(&raw, true)?),
            TypeKind::Endpoint => (TypeKind::Listener, Vec::new()),
            TypeKind::Listener => {
                let resp: DeltaDiscoveryResponse = decode(&raw)?;
                let anys: Vec<Any> = resp.resources.into_iter().filter_map(|r| r.resource).collect();
                (TypeKind::Route, rds_names(&anys).into_iter().map(Bytes::from).collect())
            }
            TypeKind::Route => match vhds_names(&raw)? {
                names if names.is_empty() && !asked[TypeKind::VirtualHost.index()] => {
                    rec.synced(i);
                    continue;
                }
                names => (TypeKind::VirtualHost, names),
            },
            TypeKind::VirtualHost => {
                rec.synced(i);
                continue;
            }
        };
        let new: Vec<Bytes> = wanted.into_iter().filter(|n| subscribed[next.index()].insert(hashed(n))).collect();
        if !asked[next.index()] || !new.is_empty() {
            asked[next.index()] = true;
            let _ = tx.send(sub(next, new)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::Resource;

    #[test]
    fn the_header_and_names_read_are_what_prost_decodes() {
        let resource = |n: &str| Resource {
            name: n.into(),
            version: "v".into(),
            resource: Some(Any { type_url: "t".into(), value: vec![1, 2, 3] }),
            ..Default::default()
        };
        let resp = DeltaDiscoveryResponse {
            system_version_info: "7".into(),
            resources: vec![resource("a"), resource("b")],
            type_url: TypeKind::Cluster.type_url().into(),
            nonce: "42".into(),
            removed_resources: vec!["gone".into()],
            ..Default::default()
        };
        let raw = Bytes::from(resp.encode_to_vec());
        let want = Header { version: "7".into(), type_url: resp.type_url.clone(), nonce: "42".into() };
        assert_eq!(header(&raw).unwrap(), want);
        assert_eq!(names_in(&raw, true).unwrap(), [Bytes::from("a"), Bytes::from("b")]);
        assert!(header(&raw[..raw.len() - 1]).is_err(), "a truncated message is an error");
    }
}
