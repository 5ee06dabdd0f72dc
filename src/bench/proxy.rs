//! Simulated proxies: each opens ADS like Envoy (wildcard CDS, then EDS by name, wildcard LDS, then RDS by name),
//! ACKs every response, and records when it ACKed each type and how many bytes it received.

use crate::xds::TypeKind;
use crate::xds::wire::{self, Requests};
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
    pub acked: [AtomicU64; 4],
    pub bytes: [AtomicU64; 4],
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
        if kind == TypeKind::Route && s.synced.load(Ordering::Acquire) == 0 {
            s.synced.store(self.now(), Ordering::Release);
        }
    }
}

/// A bare message with only a resource's name (field 1 in Cluster, ClusterLoadAssignment, Listener and
/// RouteConfiguration), so a proxy learns names without decoding whole resources.
#[derive(Clone, PartialEq, Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

fn name_of(any: &Any) -> String {
    NameOnly::decode(any.value.as_slice()).map(|n| n.name).unwrap_or_default()
}

/// The node of simulated proxy `i` (`bench-proxy-NNNNN` in namespace `default`).
pub fn node(i: usize) -> Node {
    let ns = Value { kind: Some(ValueKind::StringValue("default".into())) };
    let metadata = Struct { fields: [("NAMESPACE".to_string(), ns)].into_iter().collect() };
    Node { id: format!("bench-proxy-{i:05}"), metadata: Some(metadata), ..Default::default() }
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
) -> Result<(), tonic::Status> {
    match mode {
        Mode::Sotw => sotw(channel, i, rec, stalled).await,
        Mode::Delta => delta(channel, i, rec, stalled).await,
    }
}

const ADS: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/";

/// Opens an ADS stream (`method`) sending `requests`, read with `xds::wire`'s decoder: tonic's client codec keeps a
/// buffer the size of the largest response per stream (~1 MB here), which at N = 10,000 alone outgrew the machine.
async fn open<Req, Resp>(
    mut channel: Channel,
    method: &str,
    requests: mpsc::Receiver<Req>,
) -> Result<Requests<Resp>, tonic::Status>
where
    Req: Message + 'static,
    Resp: Message + Default,
{
    use tonic::codegen::Service;
    let frames = ReceiverStream::new(requests).map(|m| Ok::<_, tonic::Status>(http_body::Frame::data(wire::frame(&m))));
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("{ADS}{method}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(frames)))
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let unavailable = |e: tonic::transport::Error| tonic::Status::unavailable(e.to_string());
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.map_err(unavailable)?;
    let resp = channel.call(req).await.map_err(unavailable)?;
    if let Some(status) = tonic::Status::from_header_map(resp.headers()).filter(|s| s.code() != tonic::Code::Ok) {
        return Err(status);
    }
    Ok(Requests::new(resp.into_body(), usize::MAX))
}

/// A name's 64-bit hash: what a proxy keeps to know which names it subscribed to (strings would cost ~300 KB per
/// simulated proxy).
fn hashed(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

fn kind_of(url: &str) -> Result<TypeKind, tonic::Status> {
    TypeKind::from_type_url(url).ok_or_else(|| tonic::Status::internal(format!("unexpected type {url}")))
}

async fn sotw(channel: Channel, i: usize, rec: Arc<Recorder>, stalled: bool) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(64);
    let req = |kind: TypeKind, names: &[String], version: &str, nonce: &str| DiscoveryRequest {
        type_url: kind.type_url().into(),
        resource_names: names.to_vec(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    let _ = tx.send(DiscoveryRequest { node: Some(node(i)), ..req(TypeKind::Cluster, &[], "", "") }).await;
    let mut stream = open::<_, DiscoveryResponse>(channel, "StreamAggregatedResources", rx).await?;
    if stalled {
        return futures::future::pending().await;
    }
    let mut names: [Vec<String>; 4] = Default::default();
    let mut last: [(String, String); 4] = Default::default();
    let mut asked = [true, false, false, false];
    while let Some(resp) = stream.next().await.transpose()? {
        let kind = kind_of(&resp.type_url)?;
        let bytes = resp.encoded_len();
        last[kind.index()] = (resp.version_info.clone(), resp.nonce.clone());
        let (v, n) = &last[kind.index()];
        let _ = tx.send(req(kind, &names[kind.index()], v, n)).await;
        rec.acked(i, kind, bytes);
        let (next, wanted) = match kind {
            TypeKind::Cluster => (TypeKind::Endpoint, resp.resources.iter().map(name_of).collect()),
            TypeKind::Endpoint => (TypeKind::Listener, Vec::new()),
            TypeKind::Listener => (TypeKind::Route, rds_names(&resp.resources)),
            TypeKind::Route => continue,
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

async fn delta(channel: Channel, i: usize, rec: Arc<Recorder>, stalled: bool) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(64);
    let sub = |kind: TypeKind, names: Vec<String>| DeltaDiscoveryRequest {
        type_url: kind.type_url().into(),
        resource_names_subscribe: names,
        ..Default::default()
    };
    let _ = tx.send(DeltaDiscoveryRequest { node: Some(node(i)), ..sub(TypeKind::Cluster, vec![]) }).await;
    let mut stream = open::<_, DeltaDiscoveryResponse>(channel, "DeltaAggregatedResources", rx).await?;
    if stalled {
        return futures::future::pending().await;
    }
    let mut subscribed: [std::collections::HashSet<u64>; 4] = Default::default();
    let mut asked = [true, false, false, false];
    while let Some(resp) = stream.next().await.transpose()? {
        let kind = kind_of(&resp.type_url)?;
        let bytes = resp.encoded_len();
        let ack = DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        };
        let _ = tx.send(ack).await;
        rec.acked(i, kind, bytes);
        let (next, wanted): (TypeKind, Vec<String>) = match kind {
            TypeKind::Cluster => (TypeKind::Endpoint, resp.resources.iter().map(|r| r.name.clone()).collect()),
            TypeKind::Endpoint => (TypeKind::Listener, Vec::new()),
            TypeKind::Listener => {
                let anys: Vec<Any> = resp.resources.iter().filter_map(|r| r.resource.clone()).collect();
                (TypeKind::Route, rds_names(&anys))
            }
            TypeKind::Route => continue,
        };
        let new: Vec<String> = wanted.into_iter().filter(|n| subscribed[next.index()].insert(hashed(n))).collect();
        if !asked[next.index()] || !new.is_empty() {
            asked[next.index()] = true;
            let _ = tx.send(sub(next, new)).await;
        }
    }
    Ok(())
}
