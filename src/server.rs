//! Sluice in one process: binds the xDS and admin ports, publishes snapshots, serves until shut down.
//!
//! This is also the library API for integration-test harnesses: start Sluice on `127.0.0.1:0`, set or edit the
//! model through [`Sluice::store`], await [`Sluice::wait_acked`] ("proxy X holds the current config") and read
//! what a proxy holds with [`Sluice::held`]. This example runs as a doctest (no proxy needed to publish):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! use sluice::model::{Endpoint, Model, ReleasePolicy, ReleasePolicySpec, Service};
//! use sluice::server::{Options, Sluice};
//! use std::time::Duration;
//!
//! let sluice = Sluice::start(Options::local()).await?; // xDS and admin on 127.0.0.1:0
//! let mut model = Model::default();
//! let reviews = model.insert_service(Service::http("default", "reviews", 9080));
//! for (version, port) in [("v1", 19080), ("v3", 19083)] {
//!     let name = format!("reviews-{version}");
//!     model.push_endpoint(&reviews, Endpoint::ready(&name, "127.0.0.1", 9080, port).with_label("version", version));
//! }
//! model.insert_policy(ReleasePolicy::new("default", "reviews-v3", ReleasePolicySpec::split("reviews", "v1", "v3", 2000)));
//! sluice.store().set_model(model); // the whole "local" part of the model, from code
//! let version = sluice.wait_published(Duration::from_secs(5)).await?;
//! assert_eq!(sluice.snapshot().map(|s| s.version), Some(version));
//!
//! // Edit it: 50% to v3. An Envoy bootstrapped with `sluice bootstrap --node-id proxy-1` (or a gRPC client) would
//! // then be awaited with `sluice.wait_acked("proxy-1", timeout)` and read with `sluice.held("proxy-1")`.
//! sluice.store().update(|m| {
//!     let key = sluice::model::ObjectKey::new("default", "reviews-v3");
//!     m.policies.get_mut(&key).expect("policy").spec.traffic.canary_weight = 5000;
//! });
//! assert!(sluice.wait_published(Duration::from_secs(5)).await? > version);
//! assert!(sluice.held("proxy-1").is_empty(), "no such proxy is connected");
//! sluice.shutdown().await;
//! # Ok(())
//! # }
//! ```
//! A whole harness with a real Envoy and a gRPC client, as a crate depending on this one:
//! `crates/harness-example` (`cargo run -p sluice-harness-example`).

use crate::admin::{self, AdminState};
use crate::auth::{ApiAuth, TokenFileError};
use crate::release::{PersistError, ReleaseController, StateDir};
use crate::store::Store;
use crate::telemetry::{self, TrafficStats};
use crate::tls::{ServerTls, TlsError, TlsFiles};
use crate::xds::{Limits, Registry, Resource, Snapshot, StreamCtx, Trust, TypeKind, Xds, publisher};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;

/// Where and how to serve.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Options {
    /// The plaintext xDS (and Release gRPC) address.
    pub xds_addr: SocketAddr,
    /// Serve plaintext xDS on `xds_addr`; `false` (`--no-plaintext`) leaves only the mTLS port.
    pub plaintext: bool,
    /// The mTLS xDS port, if any.
    pub tls: Option<TlsOptions>,
    /// The bearer token release mutations need; `None`: mutations from loopback clients only.
    pub api_token_file: Option<std::path::PathBuf>,
    /// `None`: no admin port.
    pub admin_addr: Option<SocketAddr>,
    /// Shortest time between two snapshots; changes within it are coalesced.
    pub min_push_interval: Duration,
    pub limits: Limits,
    /// Delta Envoys take their sidecar routes' virtual hosts over VHDS (`false`: `--no-vhds`).
    pub vhds: bool,
    /// Where release state survives restarts; `None` keeps it in memory only.
    pub state_dir: Option<std::path::PathBuf>,
    /// What to do with a state file that cannot be read.
    pub corrupt_state: crate::release::CorruptState,
    /// The workload CA (`--ca`) on the mTLS port; without `tls` the port serves a certificate the mesh CA signs.
    #[serde(skip)]
    pub ca: Option<crate::ca::CaOptions>,
}

/// The mTLS xDS port: where, which files, and how identities scope config.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TlsOptions {
    pub addr: SocketAddr,
    pub files: TlsFiles,
    pub trust: Trust,
    /// How often the certificate files are checked for changes.
    pub reload_interval: Duration,
}

impl Options {
    /// Both ports on `127.0.0.1:0`, for tests and harnesses.
    pub fn local() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            xds_addr: any,
            plaintext: true,
            tls: None,
            api_token_file: None,
            admin_addr: Some(any),
            min_push_interval: Duration::from_millis(10),
            limits: Limits::default(),
            vhds: true,
            state_dir: None,
            corrupt_state: Default::default(),
            ca: None,
        }
    }
}

/// A running Sluice. Dropping it without [`Sluice::shutdown`] aborts its tasks.
pub struct Sluice {
    store: Store,
    registry: Registry,
    releases: ReleaseController,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    xds_addr: SocketAddr,
    xds_tls_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    traffic: TrafficStats,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("release state: {0}")]
    State(#[from] PersistError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Token(#[from] TokenFileError),
    #[error("no xDS port: plaintext is off (--no-plaintext) and no TLS certificate is configured (--tls-cert)")]
    NoXds,
}

/// Connections the kernel queues until Sluice accepts them. tokio's default, 1,024, overflowed when 1,000
/// sidecars connected at once (as after a restart): the kernel answered with SYN cookies and reset some of the
/// connections, and every stream on them started over (`sluice bench --mode sotw`: 50-110 streams reopened per
/// run, 0 with this). Linux caps it at `net.core.somaxconn` (4,096 by default).
pub const ACCEPT_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`ACCEPT_BACKLOG`] (and `SO_REUSEADDR`, as `TcpListener::bind` sets on Unix, so a
/// restarted server gets its port back while old connections linger in TIME_WAIT).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

impl Sluice {
    /// Starts with an empty store.
    pub async fn start(options: Options) -> Result<Self, StartError> {
        Self::start_with(options, Store::new(), serde_json::Value::Null).await
    }

    /// Starts on a store that sources (already registered on it) fill. `config` is the effective configuration,
    /// served at `/debug/config`.
    pub async fn start_with(options: Options, store: Store, config: serde_json::Value) -> Result<Self, StartError> {
        crate::telemetry::install();
        let bind = |what, addr| async move { listen(addr).map_err(|source| StartError::Bind { what, addr, source }) };
        let auth = ApiAuth::new(options.api_token_file.as_deref())?;
        if !auth.has_token() {
            tracing::warn!(
                "no --api-token-file: release changes (REST and gRPC) are accepted from loopback clients only"
            );
        }
        // With the CA on the port, a client without a certificate finishes the handshake (a workload's first
        // certificate request carries only a token); every other service there checks for one itself.
        let ca = options.ca.as_ref();
        let tls = match (&options.tls, ca) {
            (Some(t), ca) => Some(ServerTls::load_with(t.files.clone(), ca.is_some())?),
            (None, Some(ca)) => Some(ca.serving.server_tls(ca.server.authority())?),
            (None, None) => None,
        };
        let tls_port =
            options.tls.as_ref().map(|t| (t.addr, t.trust.clone())).or(ca.map(|c| (c.addr, c.trust.clone())));
        if !options.plaintext && tls.is_none() {
            return Err(StartError::NoXds);
        }
        let xds_listener = match options.plaintext {
            true => Some(bind("xDS", options.xds_addr).await?),
            false => None,
        };
        let tls_listener = match &tls_port {
            Some((addr, _)) => Some(bind("xDS TLS", *addr).await?),
            None => None,
        };
        let admin_listener = match options.admin_addr {
            Some(a) => Some(bind("admin", a).await?),
            None => None,
        };
        let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        let (admin_addr, xds_tls_addr) = (local(&admin_listener), local(&tls_listener));
        let xds_addr = local(&xds_listener).or(xds_tls_addr).unwrap_or(options.xds_addr);
        let registry = Registry::new();
        if let Some(ca) = &options.ca {
            registry.set_certificates(ca.server.ledger());
        }
        let snapshots = publisher::spawn(store.clone(), options.min_push_interval, options.limits);
        let dir = options.state_dir.as_deref().map(|d| StateDir::open_with(d, options.corrupt_state)).transpose()?;
        let traffic = TrafficStats::new();
        let releases =
            ReleaseController::new(store.clone(), registry.clone(), snapshots.clone(), dir, traffic.clone())?;
        let (stop, stop_rx) = watch::channel(false);
        let ctx = StreamCtx {
            snapshots: snapshots.clone(),
            registry: registry.clone(),
            limits: options.limits,
            slots: Default::default(),
            syncs: crate::xds::gate::SyncGate::new(options.limits.max_initial_syncs),
            vhds: options.vhds,
            stop: stop_rx.clone(),
        };
        let mut stop_wait = stop_rx;
        let stopped = futures::FutureExt::shared(async move {
            let _ = stop_wait.wait_for(|s| *s).await;
        });
        let mut tasks = vec![
            tokio::spawn(releases.clone().run(stop.subscribe())),
            tokio::spawn(telemetry::publish_gauges(traffic.clone(), stop.subscribe())),
            tokio::spawn(crate::telemetry::upkeep(stop.subscribe())),
        ];
        let release_api = || crate::release::grpc::ReleaseApi::server(releases.clone(), auth.clone());
        let limits = options.limits;
        let sink = |trust| telemetry::Sink::server(traffic.clone(), ctx.slots.clone(), limits, trust);
        // The admin port gets a quarter of the connections (at most 256), the xDS ports the rest: a flood on one
        // never takes the other's descriptors.
        let admin_share = (limits.max_connections / 4).clamp(1, 256);
        let budget = crate::conn::Budget::new(limits.max_connections.saturating_sub(admin_share).max(1));
        let admin_budget = crate::conn::Budget::new(admin_share);
        if let Some(listener) = xds_listener {
            let incoming = crate::conn::incoming(listener, budget.clone(), limits.handshake_timeout);
            let routes = xds_routes(Xds::new(ctx.clone()), release_api(), sink(None), None);
            tasks.push(tokio::spawn(serve_xds(incoming, routes, limits, stopped.clone())));
        }
        if let (Some(listener), Some(tls), Some((_, trust))) = (tls_listener, tls, tls_port) {
            let trust = Arc::new(trust);
            let (xds, sink) = (Xds::mtls(ctx.clone(), trust.clone()), sink(Some(trust)));
            let routes = xds_routes(xds, release_api(), sink, Some(ca.map(|c| c.server.service())));
            let incoming = crate::tls::incoming(listener, tls.clone(), budget.clone(), limits.handshake_timeout);
            tasks.push(tokio::spawn(serve_xds(incoming, routes, limits, stopped.clone())));
            match (&options.tls, ca) {
                (Some(t), _) => tasks.push(tokio::spawn(tls.watch(t.reload_interval, stopped.clone()))),
                (None, Some(ca)) => {
                    let keep = ca.serving.clone().keep(ca.server.authority().clone(), tls, stopped.clone());
                    tasks.push(tokio::spawn(keep));
                }
                (None, None) => {}
            }
        }
        if let Some(ca) = ca {
            tasks.push(tokio::spawn(ca.server.authority().clone().watch(ca.dir.clone(), stopped.clone())));
            tracing::info!(dir = ?ca.dir, "workload CA serving IstioCertificateService on the mTLS port");
        }
        if let Some(listener) = admin_listener {
            let state = AdminState {
                store: store.clone(),
                registry: registry.clone(),
                snapshots: snapshots.clone(),
                releases: releases.clone(),
                config,
                auth: auth.clone(),
            };
            let serve = admin::serve(listener, state, admin_budget, limits.handshake_timeout, stopped);
            tasks.push(tokio::spawn(serve));
        }
        tracing::info!(%xds_addr, ?xds_tls_addr, admin_addr = ?admin_addr, "sluice serving");
        Ok(Self { store, registry, releases, snapshots, xds_addr, xds_tls_addr, admin_addr, traffic, stop, tasks })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The release tasks: list, apply, set weights, promote, abort, finalize.
    pub fn releases(&self) -> &ReleaseController {
        &self.releases
    }

    /// Per-version traffic from the proxies' stats sinks.
    pub fn traffic(&self) -> &TrafficStats {
        &self.traffic
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The plaintext xDS address (the mTLS one when plaintext is off).
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds_addr
    }

    /// The mTLS xDS address, when TLS is configured.
    pub fn xds_tls_addr(&self) -> Option<SocketAddr> {
        self.xds_tls_addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The newest published snapshot, if any.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.borrow().clone()
    }

    /// Waits until the store's current model is published; returns that snapshot's version.
    pub async fn wait_published(&self, timeout: Duration) -> Result<u64, WaitTimeout> {
        let model = self.store.model();
        let mut rx = self.snapshots.clone();
        let found =
            tokio::time::timeout(timeout, rx.wait_for(|s| s.as_ref().is_some_and(|s| Arc::ptr_eq(&s.model, &model))));
        match found.await {
            Ok(Ok(s)) => Ok(s.as_ref().map(|s| s.version).unwrap_or_default()),
            _ => Err(WaitTimeout(format!("the current model was not published within {timeout:?}"))),
        }
    }

    /// Waits until proxy `node_id` holds the config of the store's current model (every subscribed type ACKed).
    pub async fn wait_acked(&self, node_id: &str, timeout: Duration) -> Result<u64, WaitTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        let version = self.wait_published(timeout).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.registry.wait_synced(node_id, version, left).await.map_err(|e| WaitTimeout(e.to_string()))?;
        Ok(version)
    }

    /// What proxy `node_id` holds now: per type, the resources it has ACKed (a node with several streams, as with
    /// the per-type services: each type from its newest stream), sorted by name. Decode one with
    /// [`Resource::decode`]. Empty while the proxy is not connected.
    ///
    /// ```no_run
    /// # async fn f(sluice: &sluice::server::Sluice) {
    /// use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    /// use sluice::xds::TypeKind;
    /// let held = sluice.held("proxy-1");
    /// for r in held.get(&TypeKind::Cluster).into_iter().flatten() {
    ///     let cluster: Cluster = r.decode().expect("a Cluster");
    ///     println!("{} balances with {:?}", r.name, cluster.lb_policy());
    /// }
    /// # }
    /// ```
    pub fn held(&self, node_id: &str) -> BTreeMap<TypeKind, Vec<Arc<Resource>>> {
        let mut streams = self.registry.get(node_id);
        streams.sort_by_key(|s| s.stream);
        let mut out = BTreeMap::new();
        for status in streams {
            for (kind, t) in status.types {
                if let Some(set) = t.held.upgrade() {
                    out.insert(kind, set.values().cloned().collect());
                }
            }
        }
        out
    }

    /// Stops serving: every xDS stream ends (proxies reconnect elsewhere and keep their config meanwhile), then
    /// the servers finish. Anything still running after 5 s is aborted.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = self.tasks.drain(..).collect();
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        if tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(tasks)).await.is_err() {
            tracing::warn!("servers did not stop within 5 s; aborting");
            aborts.iter().for_each(|a| a.abort());
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("timed out: {0}")]
pub struct WaitTimeout(pub String);

type ReleaseServer = crate::proto::release_service_server::ReleaseServiceServer<crate::release::grpc::ReleaseApi>;
type SinkServer =
    envoy_types::pb::envoy::service::metrics::v3::metrics_service_server::MetricsServiceServer<telemetry::Sink>;
type CaService =
    crate::proto::istio_ca::istio_certificate_service_server::IstioCertificateServiceServer<crate::ca::CaServer>;

/// The services of one xDS port: xDS, the Release API (`sluice.v1.ReleaseService`) and the stats sink
/// (`MetricsService`); `mtls` is `Some` on the mTLS port, holding the certificate service when `--ca` is on.
/// There a connection may carry no client certificate (the CA's callers), so every service but the CA refuses
/// one without: xDS and the sink through `xds::trust`, the Release API through `tls::require_client_cert`.
fn xds_routes(xds: Xds, release: ReleaseServer, sink: SinkServer, mtls: Option<Option<CaService>>) -> Routes {
    let mut routes = xds.add_to(tonic::service::RoutesBuilder::default());
    routes.add_service(sink);
    match mtls {
        None => {
            routes.add_service(release);
        }
        Some(ca) => {
            let release =
                tonic::service::interceptor::InterceptedService::new(release, crate::tls::require_client_cert);
            routes.add_service(release);
            if let Some(ca) = ca {
                routes.add_service(ca);
            }
        }
    }
    routes.routes()
}

/// Serves one xDS port's routes (see [`xds_routes`]), plaintext or mTLS.
async fn serve_xds<I, IO, IE>(
    incoming: I,
    routes: Routes,
    limits: crate::xds::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Keepalive pings find dead peers (no answer in 10 s); a connection opens at most
    // `--max-streams-per-connection` streams at once.
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "xDS server failed");
    }
}
