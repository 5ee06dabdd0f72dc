//! The benchmark's server processes, each run as `sluice bench-child` by the driver:
//! - `sluice`: the real Sluice (in-process API, xDS on 127.0.0.1:0) holding the generated model;
//! - `floor`: a minimal ADS server that answers every stream with responses built once, and fans each change
//!   out to every stream as one shared response. It keeps no per-stream state: the cost any server must pay.
//!
//! Both print `ready ADDR`, then take commands on stdin (`churn SERVICE ROUND`, `weight SERVICE BASIS_POINTS`,
//! `quit`) and answer `ok` once the change is applied (handed to the publisher, or broadcast).

use super::fixture::{self, Shape};
use crate::model::{InterceptionMode, Model, ObjectKey, ProxyInfo};
use crate::server::{Options, Sluice};
use crate::xds::{Snapshot, TypeKind};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Which server a child runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Kind {
    Sluice,
    Floor,
}

/// One stdin command.
enum Command {
    Churn(usize, usize),
    Weight(usize, u32),
    /// A VirtualService edit: service, percent to v2 (`--istio`).
    VirtualService(usize, u32),
    Quit,
}

fn parse(line: &str) -> Option<Command> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    match parts.as_slice() {
        ["churn", i, r] => Some(Command::Churn(i.parse().ok()?, r.parse().ok()?)),
        ["weight", i, w] => Some(Command::Weight(i.parse().ok()?, w.parse().ok()?)),
        ["vs", i, w] => Some(Command::VirtualService(i.parse().ok()?, w.parse().ok()?)),
        ["quit"] => Some(Command::Quit),
        _ => None,
    }
}

pub async fn run(kind: Kind, shape: Shape, max_streams: usize, syncs: Option<usize>, vhds: bool) -> anyhow::Result<()> {
    match kind {
        Kind::Sluice => run_sluice(shape, max_streams, syncs, vhds).await,
        Kind::Floor => run_floor(shape, vhds).await,
    }
}

async fn commands(mut apply: impl FnMut(Command) -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let Some(cmd) = parse(&line) else { anyhow::bail!("unknown command `{line}`") };
        if !apply(cmd)? {
            return Ok(());
        }
        println!("ok");
    }
    Ok(())
}

async fn run_sluice(shape: Shape, max_streams: usize, syncs: Option<usize>, vhds: bool) -> anyhow::Result<()> {
    let mut options = Options { admin_addr: None, vhds, ..Options::local() };
    options.limits.max_streams = options.limits.max_streams.max(max_streams);
    options.limits.max_initial_syncs = syncs.unwrap_or(options.limits.max_initial_syncs);
    let sluice = Sluice::start(options).await?;
    sluice.store().set_model(fixture::model(&shape));
    sluice.wait_published(Duration::from_secs(120)).await?;
    println!("ready {}", sluice.xds_addr());
    commands(|cmd| {
        match cmd {
            Command::Churn(i, round) => sluice.store().update(|m| fixture::churn(m, i, round)),
            Command::Weight(i, w) => {
                sluice.releases().set_weight(&ObjectKey::new("default", fixture::policy_name(i)), w)?;
            }
            Command::VirtualService(i, w) => sluice.store().update(|m| fixture::edit_virtual_service(m, i, w)),
            Command::Quit => return Ok(false),
        }
        Ok(true)
    })
    .await
}

/// Responses built once per config, shared by every stream.
struct Prebuilt {
    sotw: [DiscoveryResponse; 5],
    delta: [DeltaDiscoveryResponse; 5],
}

/// A change: the responses to fan out (SotW: the type's full set; Delta: what changed).
#[derive(Clone)]
struct Change {
    sotw: Arc<DiscoveryResponse>,
    delta: Arc<DeltaDiscoveryResponse>,
}

/// The floor's proxy: Delta streams get the VHDS form when `vhds`, as Sluice serves them; with Sidecars, every
/// stream gets group 0's config (each group's is the same size).
fn floor_proxy(vhds: bool) -> ProxyInfo {
    ProxyInfo {
        id: "floor".into(),
        namespace: "default".into(),
        mode: InterceptionMode::Intercept,
        labels: [("bench-group".to_string(), fixture::group_of(0))].into(),
        inbound_ports: vec![],
        visibility: Default::default(),
        mtls: false,
        vhds,
    }
}

fn prebuild(snapshot: &Snapshot, version: u64, vhds: bool) -> Prebuilt {
    let view = snapshot.view(&floor_proxy(false));
    let sotw = TypeKind::ALL.map(|k| DiscoveryResponse {
        version_info: version.to_string(),
        resources: view.get(k).values().map(|r| r.to_any()).collect(),
        type_url: k.type_url().into(),
        nonce: version.to_string(),
        ..Default::default()
    });
    let view = snapshot.view(&floor_proxy(vhds));
    let delta = TypeKind::ALL.map(|k| delta_response(k, version, view.get(k).values()));
    Prebuilt { sotw, delta }
}

fn delta_response<'a>(
    kind: TypeKind,
    version: u64,
    resources: impl Iterator<Item = &'a Arc<crate::xds::resource::Resource>>,
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: version.to_string(),
        resources: resources.map(|r| r.to_delta()).collect(),
        type_url: kind.type_url().into(),
        nonce: version.to_string(),
        ..Default::default()
    }
}

#[derive(Clone)]
struct Floor {
    first: Arc<Prebuilt>,
    changes: broadcast::Sender<Change>,
}

async fn run_floor(shape: Shape, vhds: bool) -> anyhow::Result<()> {
    let mut model: Model = fixture::model(&shape);
    let mut snapshot = Snapshot::build(1, Arc::new(model.clone()), None)?;
    let (changes, _) = broadcast::channel(16);
    let floor = Floor { first: Arc::new(prebuild(&snapshot, 1, vhds)), changes: changes.clone() };
    let listener = crate::server::listen(([127, 0, 0, 1], 0).into())?; // the same accept backlog as Sluice's
    println!("ready {}", listener.local_addr()?);
    let server = tonic::transport::Server::builder()
        .add_service(AggregatedDiscoveryServiceServer::new(floor).max_encoding_message_size(usize::MAX))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    let mut version = 1;
    commands(|cmd| {
        let kind = match cmd {
            Command::Churn(i, round) => {
                fixture::churn(&mut model, i, round);
                TypeKind::Endpoint
            }
            Command::Weight(i, w) => {
                let key = ObjectKey::new("default", fixture::policy_name(i));
                if let Some(p) = model.policies.get_mut(&key) {
                    p.state.canary_weight = Some(w);
                }
                TypeKind::Route
            }
            Command::VirtualService(i, w) => {
                fixture::edit_virtual_service(&mut model, i, w);
                TypeKind::Route
            }
            Command::Quit => return Ok(false),
        };
        version += 1;
        let next = Snapshot::build(version, Arc::new(model.clone()), Some(&snapshot))?;
        // SotW: the type's whole set; Delta: what changed (a weight change over VHDS: the virtual host).
        let delta_kind = if kind == TypeKind::Route && vhds { TypeKind::VirtualHost } else { kind };
        let (old, new) = (snapshot.view(&floor_proxy(vhds)), next.view(&floor_proxy(vhds)));
        let (was, is) = (old.get(delta_kind), new.get(delta_kind));
        let changed = is.values().filter(|r| was.get(&r.name).is_none_or(|o| o.version != r.version));
        let sotw = Arc::new(prebuild(&next, version, vhds).sotw[kind.index()].clone());
        let delta = Arc::new(delta_response(delta_kind, version, changed));
        let _ = changes.send(Change { sotw, delta });
        snapshot = next;
        Ok(true)
    })
    .await
}

type Out<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Floor {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let first = self.first.clone();
        Ok(Response::new(fan_out(
            req.into_inner(),
            self.changes.subscribe(),
            move |r: &DiscoveryRequest| {
                let k = TypeKind::from_type_url(&r.type_url)?;
                r.response_nonce.is_empty().then(|| first.sotw[k.index()].clone())
            },
            |c| (*c.sotw).clone(),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let first = self.first.clone();
        Ok(Response::new(fan_out(
            req.into_inner(),
            self.changes.subscribe(),
            move |r: &DeltaDiscoveryRequest| {
                let k = TypeKind::from_type_url(&r.type_url)?;
                r.response_nonce.is_empty().then(|| first.delta[k.index()].clone())
            },
            |c| (*c.delta).clone(),
        )))
    }
}

/// Answers a stream's first request of each type, then forwards every broadcast change.
fn fan_out<Req, Resp>(
    mut inbound: Streaming<Req>,
    mut changes: broadcast::Receiver<Change>,
    answer: impl Fn(&Req) -> Option<Resp> + Send + 'static,
    pick: impl Fn(&Change) -> Resp + Send + 'static,
) -> Out<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    Streaming<Req>: futures::Stream<Item = Result<Req, Status>> + Unpin + Send,
{
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let resp = tokio::select! {
                req = inbound.next() => match req {
                    Some(Ok(r)) => answer(&r),
                    _ => return,
                },
                change = changes.recv() => match change {
                    Ok(c) => Some(pick(&c)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
            };
            if let Some(resp) = resp
                && tx.send(Ok(resp)).await.is_err()
            {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
