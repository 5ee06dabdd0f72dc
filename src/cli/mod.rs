//! The command line: `serve` (files or `--kube`), `bootstrap`, `crd`, `validate`, `release` (see [`release`]),
//! `proxy-status` (see [`proxy_status`]). Every flag also reads a `SLUICE_...` environment variable.

pub mod proxy_status;
pub mod release;

use crate::server::{Options, Sluice, TlsOptions};
use crate::source::{self, FileSourceStatus};
use crate::store::Store;
pub use crate::telemetry::logging::LogFormat;
use crate::tls::TlsFiles;
use crate::xds::{Limits, Trust};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "An Envoy xDS control plane for grayscale releases")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing's EnvFilter syntax, e.g. `info,sluice::xds=debug`); changeable at run time with
    /// `PUT /debug/loglevel` on the admin port.
    #[arg(long, env = "SLUICE_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log lines as plain text or one JSON object per line (with the xDS span's `proxy` and `protocol`).
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve xDS to Envoy and the admin HTTP port.
    Serve(ServeArgs),
    /// Print an Envoy bootstrap that takes its config from Sluice (`--grpc`: a proxyless gRPC client's).
    Bootstrap(crate::bootstrap::BootstrapArgs),
    /// Benchmark: N simulated Envoys against Sluice in another process, beside a floor server.
    Bench(crate::bench::BenchArgs),
    /// One server process of `sluice bench` (started by it).
    #[command(hide = true)]
    BenchChild(crate::bench::ChildArgs),
    /// Drive release tasks on a running Sluice: list, get, apply, weight, promote, abort, finalize, ...
    Release(release::ReleaseArgs),
    /// Print the ReleasePolicy CustomResourceDefinition (YAML), for `kubectl apply -f -`.
    Crd,
    /// What each connected proxy holds, per type (SYNCED, STALE, NOT SENT, ERROR), from CSDS on the xDS port.
    ProxyStatus(proxy_status::ProxyStatusArgs),
    /// The sidecar's agent: builds Envoy's bootstrap from the pod, runs and restarts Envoy, drains it on
    /// SIGTERM, answers readiness on 15021 (istiod's pilot-agent).
    Proxy(crate::agent::ProxyArgs),
    /// Install (or with --cleanup remove, with --dry-run print) the pod's traffic interception rules, as an
    /// init container does (istio-iptables' flags).
    Iptables(crate::iptables::IptablesArgs),
    /// Inject the sidecar into the pod templates of a manifest and print it (as `istioctl kube-inject`).
    Inject(crate::inject::offline::InjectArgs),
    /// Check config files offline; exit 1 with file:line errors.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(clap::Args, Debug, serde::Serialize)]
pub struct ServeArgs {
    /// Config file or directory (repeatable). Without one, the embedded Bookinfo example is served.
    #[arg(long = "config", env = "SLUICE_CONFIG", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// Watch a Kubernetes cluster (in-cluster config, else KUBECONFIG): Services, EndpointSlices, Pods and
    /// ReleasePolicies. Without --config, nothing else is served.
    #[arg(long, env = "SLUICE_KUBE")]
    pub kube: bool,
    /// With --kube: watch only these namespaces (comma-separated); all namespaces when empty.
    #[arg(long, env = "SLUICE_NAMESPACES", value_delimiter = ',', requires = "kube")]
    pub namespaces: Vec<String>,
    /// With --kube: also watch Istio VirtualServices, DestinationRules, PeerAuthentications and Gateways, Gateway API
    /// HTTPRoutes, Gateways, GatewayClasses and ReferenceGrants, and `kubernetes.io/tls` Secrets
    /// (`--kube-mesh-objects false` to skip them). A kind whose CRD is not installed is logged and served empty.
    #[arg(long, env = "SLUICE_KUBE_MESH_OBJECTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub kube_mesh_objects: bool,
    /// Istio's root namespace: a PeerAuthentication there without a selector applies to the whole mesh.
    #[arg(long, env = "SLUICE_ROOT_NAMESPACE", default_value = crate::model::DEFAULT_ROOT_NAMESPACE)]
    pub root_namespace: String,
    /// With --kube: the coordination.k8s.io/v1 Lease replicas elect the status writer with, as `namespace/name`.
    #[arg(long, env = "SLUICE_LEASE", default_value = "default/sluice", requires = "kube")]
    pub lease: String,
    /// With --kube: seconds a leader's lease lasts without renewal (another replica takes over after it).
    #[arg(long, env = "SLUICE_LEASE_DURATION_SECS", default_value_t = 15, requires = "kube")]
    pub lease_duration_secs: u64,
    /// With --kube: this replica's name in the Lease (default: $POD_NAME, else `sluice-PID`).
    #[arg(long, env = "POD_NAME", requires = "kube")]
    pub identity: Option<String>,
    /// With --kube: where the other replicas reach this one's admin port (the Release API), e.g.
    /// `http://10.1.2.3:15014`; a follower forwards release changes there while this replica leads. Default: the
    /// admin address, with $POD_IP for an unspecified (0.0.0.0) host.
    #[arg(long, env = "SLUICE_ADVERTISE_API_URL", requires = "kube")]
    pub advertise_api_url: Option<String>,
    /// xDS gRPC address.
    #[arg(long, env = "SLUICE_XDS_ADDR", default_value = "0.0.0.0:15010")]
    pub xds_addr: SocketAddr,
    /// Admin HTTP address (health, readiness, debug).
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:15014")]
    pub admin_addr: SocketAddr,
    /// How often config files are checked for changes, in milliseconds.
    #[arg(long, env = "SLUICE_RELOAD_INTERVAL_MS", default_value_t = 200)]
    pub reload_interval_ms: u64,
    /// How long config files must stay unchanged before an edit that removes objects or changes a ReleasePolicy,
    /// VirtualService, DestinationRule or HTTPRoute applies, in milliseconds: longer than a slow writer's pause
    /// mid-file (a half-written file must not end a release). Other edits apply within two reload intervals.
    #[arg(long, env = "SLUICE_FILE_REMOVAL_GRACE_MS", default_value_t = source::REMOVAL_GRACE.as_millis() as u64)]
    pub file_removal_grace_ms: u64,
    /// Shortest time between two pushes, in milliseconds; changes within it are coalesced.
    #[arg(long, env = "SLUICE_MIN_PUSH_INTERVAL_MS", default_value_t = 10)]
    pub min_push_interval_ms: u64,
    /// Send Delta Envoys their route configurations whole instead of each virtual host over VHDS (for an Envoy
    /// build that refuses VHDS over ADS). A weight change then resends every service's virtual host on that port.
    #[arg(long, env = "SLUICE_NO_VHDS")]
    pub no_vhds: bool,
    /// Directory where release state (API policies, weights, steps, phases) survives restarts.
    #[arg(long, env = "SLUICE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// A state file that cannot be read: `refuse` to start (naming it), or `move-aside` (renamed to
    /// `releases.json.corrupt-<time>`, logged) and start without release state.
    #[arg(long, env = "SLUICE_CORRUPT_STATE", value_enum, default_value_t = crate::release::CorruptState::Refuse)]
    pub corrupt_state: crate::release::CorruptState,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub inject: crate::inject::webhook::WebhookArgs,
    #[command(flatten)]
    pub ca: crate::ca::CaArgs,
    /// File holding the bearer token release changes need (REST `Authorization: Bearer`, gRPC `authorization`
    /// metadata); re-read when it changes. Without it, release changes are taken from loopback clients only.
    #[arg(long, env = "SLUICE_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
}

/// The xDS limits (see `xds::limits`): going past one is refused with a gRPC status naming the flag.
#[derive(clap::Args, Debug, serde::Serialize)]
pub struct LimitArgs {
    /// Most xDS streams open at once (over every connection); more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SLUICE_MAX_STREAMS", default_value_t = Limits::default().max_streams)]
    pub max_streams: usize,
    /// Largest xDS request message, in bytes; larger ones end the stream with OUT_OF_RANGE.
    #[arg(long, env = "SLUICE_MAX_REQUEST_BYTES", default_value_t = Limits::default().max_request_bytes)]
    pub max_request_bytes: usize,
    /// Largest xDS response message, in bytes; a larger one ends the stream with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SLUICE_MAX_RESPONSE_BYTES", default_value_t = Limits::default().max_response_bytes)]
    pub max_response_bytes: usize,
    /// Most resource names one xDS request may carry, and one stream's subscription to one type.
    #[arg(long, env = "SLUICE_MAX_NAMES_PER_REQUEST", default_value_t = Limits::default().max_names_per_request)]
    pub max_names_per_request: usize,
    /// Longest resource name in an xDS request, in bytes.
    #[arg(long, env = "SLUICE_MAX_NAME_BYTES", default_value_t = Limits::default().max_name_bytes)]
    pub max_name_bytes: usize,
    /// Responses queued per stream that the proxy has not read; when full, the stream waits and the proxy gets
    /// the latest config when it reads again (no backlog).
    #[arg(long, env = "SLUICE_SEND_QUEUE", default_value_t = Limits::default().send_queue)]
    pub send_queue: usize,
    /// Bytes of responses queued per stream that the proxy has not read (then as --send-queue).
    #[arg(long, env = "SLUICE_SEND_QUEUE_BYTES", default_value_t = Limits::default().send_queue_bytes)]
    pub send_queue_bytes: usize,
    /// Streams receiving their first config at once (a connect storm is served in turns; each stream keeps its
    /// place until synced, 5 s at most); 0: no bound.
    #[arg(long, env = "SLUICE_MAX_INITIAL_SYNCS", default_value_t = Limits::default().max_initial_syncs)]
    pub max_initial_syncs: usize,
    /// Most xDS and stats streams one peer may hold: one source IP on the plaintext port (loopback clients are
    /// not counted), one certificate identity on the mTLS port; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SLUICE_MAX_STREAMS_PER_PEER", default_value_t = Limits::default().max_streams_per_peer)]
    pub max_streams_per_peer: usize,
    /// Most HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(
        long,
        env = "SLUICE_MAX_STREAMS_PER_CONNECTION",
        default_value_t = Limits::default().max_streams_per_connection
    )]
    pub max_streams_per_connection: u32,
    /// Most connections open at once over every port (the admin port gets a quarter, at most 256); more wait in
    /// the kernel's queue. Default: the open-file limit less 128.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Longest a new connection may take to send its first request (TLS handshake, HTTP/2 preface, HTTP/1
    /// request head, and each later request head on the admin port), in ms; then it is closed.
    #[arg(long, env = "SLUICE_HANDSHAKE_TIMEOUT_MS", default_value_t = Limits::default().handshake_timeout.as_millis() as u64)]
    pub handshake_timeout_ms: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_streams: self.max_streams,
            max_request_bytes: self.max_request_bytes,
            max_response_bytes: self.max_response_bytes,
            max_names_per_request: self.max_names_per_request,
            max_name_bytes: self.max_name_bytes,
            send_queue: self.send_queue,
            send_queue_bytes: self.send_queue_bytes,
            max_initial_syncs: self.max_initial_syncs,
            max_streams_per_peer: self.max_streams_per_peer,
            max_streams_per_connection: self.max_streams_per_connection,
            max_connections: self.max_connections,
            handshake_timeout: std::time::Duration::from_millis(self.handshake_timeout_ms),
        }
    }
}

/// mTLS for xDS: the three files turn it on.
#[derive(clap::Args, Debug, serde::Serialize)]
pub struct TlsArgs {
    /// mTLS xDS address (served when --tls-cert, --tls-key and --tls-client-ca are given).
    #[arg(long, env = "SLUICE_XDS_TLS_ADDR", default_value = "0.0.0.0:15012")]
    pub xds_tls_addr: SocketAddr,
    /// The server certificate chain (PEM); reloaded when it changes.
    #[arg(long, env = "SLUICE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM); reloaded when it changes.
    #[arg(long, env = "SLUICE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The CA bundle (PEM) proxy certificates must chain to; reloaded when it changes.
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for changes, in milliseconds.
    #[arg(long, env = "SLUICE_TLS_RELOAD_INTERVAL_MS", default_value_t = 1000)]
    pub tls_reload_interval_ms: u64,
    /// SPIFFE trust domain proxy certificates must name (`spiffe://DOMAIN/ns/NS/sa/SA`).
    #[arg(long, env = "SLUICE_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Namespaces every mTLS proxy sees besides its own (comma-separated; `*`: all).
    #[arg(long, env = "SLUICE_SHARED_NAMESPACES", value_delimiter = ',')]
    pub shared_namespaces: Vec<String>,
    /// Turn the plaintext xDS port (--xds-addr) off; only the mTLS port serves.
    #[arg(long, env = "SLUICE_NO_PLAINTEXT")]
    pub no_plaintext: bool,
}

impl TlsArgs {
    /// The mTLS options, or `None` when no TLS file is given; an error names a missing one.
    pub fn options(&self) -> anyhow::Result<Option<TlsOptions>> {
        let (cert, key, ca) = (&self.tls_cert, &self.tls_key, &self.tls_client_ca);
        let (Some(cert), Some(key), Some(client_ca)) = (cert, key, ca) else {
            if cert.is_some() || key.is_some() || ca.is_some() {
                anyhow::bail!("mTLS needs all of --tls-cert, --tls-key and --tls-client-ca");
            }
            return Ok(None);
        };
        Ok(Some(TlsOptions {
            addr: self.xds_tls_addr,
            files: TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: client_ca.clone() },
            trust: Trust { trust_domain: self.trust_domain.clone(), shared_namespaces: self.shared_namespaces.clone() },
            reload_interval: Duration::from_millis(self.tls_reload_interval_ms),
        }))
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = crate::telemetry::logging::init(&cli.log, cli.log_format) {
        return fail(format!("--log: {e:#}"));
    }
    match cli.command {
        Command::Validate { paths } => source::validate_command(&paths),
        Command::Release(args) => release::run(args),
        Command::Crd => match source::kube::crd::crd_yaml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::ProxyStatus(args) => runtime(proxy_status::run(args)),
        Command::Bootstrap(args) => match serde_json::to_string_pretty(&if args.grpc {
            crate::bootstrap::render_grpc(&args)
        } else {
            crate::bootstrap::render(&args)
        }) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Serve(args) => runtime(serve(args)),
        Command::Proxy(args) => runtime(async move { Ok(crate::agent::run(args).await) }),
        Command::Iptables(args) => crate::iptables::command(&args),
        Command::Inject(args) => crate::inject::offline::command(&args),
        Command::Bench(args) => runtime(async move {
            let (json, translation_only) = (args.json, args.translation_only);
            let results = crate::bench::run(args).await?;
            match (json, translation_only) {
                (true, _) => println!("{}", serde_json::to_string(&results)?),
                (false, true) => print!("{}", results.translation_table()),
                (false, false) => print!("{}", results.table()),
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::BenchChild(args) => runtime(async move {
            crate::bench::child(args).await?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

fn runtime(work: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(work).unwrap_or_else(|e| fail(format!("{e:#}"))),
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    args.ca.check(args.state_dir.as_deref(), args.kube)?;
    let store = Store::new();
    let (trust_domain, root_namespace) = (args.tls.trust_domain.clone(), args.root_namespace.clone());
    store.set_settings(crate::model::MeshSettings { trust_domain, root_namespace });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut kube = None;
    if args.kube {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("--kube: no Kubernetes config (in-cluster or KUBECONFIG): {e}"))?;
        // Pending from the start (no xDS answer before the cluster is listed); the watch starts once the release
        // controller knows the cluster's releases are shared, so it never drives one it should follow.
        store.register_source(source::kube::SOURCE);
        kube = Some(client);
    }
    if args.config.is_empty() && args.kube {
        // Kubernetes is the only source.
    } else if args.config.is_empty() {
        let model = source::parse_str(source::DEFAULT_CONFIG, "config/bookinfo.yaml (embedded)")
            .map_err(|e| anyhow::anyhow!("the embedded example does not load:\n{e}"))?;
        store.set_part(source::SOURCE, model);
    } else {
        store.register_source(source::SOURCE);
        match source::load_paths(&args.config) {
            Ok(model) => store.set_part(source::SOURCE, model),
            Err(errors) => {
                eprintln!("{errors}");
                return Ok(ExitCode::FAILURE);
            }
        }
        let mut stop = stop_rx.clone();
        let options = source::WatchOptions {
            interval: Duration::from_millis(args.reload_interval_ms),
            grace: Duration::from_millis(args.file_removal_grace_ms),
            status: FileSourceStatus::default(),
        };
        tokio::spawn(source::watch_with(args.config.clone(), store.clone(), options, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    let trust =
        Trust { trust_domain: args.tls.trust_domain.clone(), shared_namespaces: args.tls.shared_namespaces.clone() };
    let ca = args.ca.options(args.state_dir.as_deref(), kube.as_ref(), args.tls.xds_tls_addr, trust).await?;
    // Injected sidecars trust the mesh root and get workload mTLS when Sluice runs its CA.
    let mesh_root = ca.as_ref().map(|c| c.server.authority().current().root_pem.clone());
    let options = Options {
        ca,
        xds_addr: args.xds_addr,
        plaintext: !args.tls.no_plaintext,
        tls: args.tls.options()?,
        api_token_file: args.api_token_file.clone(),
        admin_addr: Some(args.admin_addr),
        min_push_interval: Duration::from_millis(args.min_push_interval_ms),
        limits: args.limits.limits(),
        vhds: !args.no_vhds,
        state_dir: args.state_dir.clone(),
        corrupt_state: args.corrupt_state,
    };
    let config = serde_json::to_value(&args)?;
    tracing::info!(config = %config, "effective configuration");
    let sluice = Sluice::start_with(options, store, config).await?;
    let (leading, leader) = tokio::sync::watch::channel(false);
    let (holding, holder) = tokio::sync::watch::channel(None);
    let leader_for_webhook = leader.clone();
    let kube_client = kube.clone();
    let mut replica_report = None;
    if let Some(client) = kube {
        let (namespace, name) = args
            .lease
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("--lease {}: expected namespace/name", args.lease))?;
        let config = source::kube::LeaseConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: args.identity.clone().unwrap_or_else(|| format!("sluice-{}", std::process::id())),
            duration: Duration::from_secs(args.lease_duration_secs.max(1)),
        };
        let releases = sluice.releases().clone();
        let options = source::kube::WatchOptions { mesh_objects: args.kube_mesh_objects };
        let watching = source::kube::start_with(
            client.clone(),
            &args.namespaces,
            options,
            sluice.store().clone(),
            stop_rx.clone(),
        );
        // Every replica reports its proxies and traffic in the cluster and follows the others' reports.
        let replica = source::kube::replica::ReplicaConfig {
            namespace: namespace.to_string(),
            identity: config.identity.clone(),
            heartbeat: (config.duration / 3).max(Duration::from_secs(1)),
            lease: config.duration,
            api_url: advertised_api_url(&args, sluice.admin_addr()),
        };
        let traffic = sluice.traffic().clone();
        let (peers, reporting) = source::kube::replica::start(
            client.clone(),
            replica,
            releases.clone(),
            traffic,
            leader.clone(),
            stop_rx.clone(),
        );
        replica_report = Some(reporting);
        // The cluster's releases: driven here only while this replica leads; otherwise the leader's stored state.
        releases.share(crate::release::Shared {
            source: source::kube::SOURCE.to_string(),
            leading: leader.clone(),
            holder,
            stored: watching.stored,
            identity: config.identity.clone(),
            peers,
            lease: config.duration,
        });
        // The Release API creates the tasks of watched namespaces in the cluster (every replica's; they may deploy).
        releases.set_cluster(std::sync::Arc::new(source::kube::console::ClusterPolicies::new(
            client.clone(),
            &args.namespaces,
        )));
        tokio::spawn(source::kube::lead(client.clone(), config, leading, holding, stop_rx.clone()));
        let store = sluice.store().clone();
        let (statused, api_leader) = (watching.statused, leader.clone());
        tokio::spawn(source::kube::write_api_status(client.clone(), store, statused, api_leader, stop_rx.clone()));
        let (observed, owners) = (watching.observed.clone(), watching.owners);
        let deploy_leader = leader.clone();
        let deployments = source::kube::manage_deployments(
            client.clone(),
            releases.clone(),
            observed,
            owners,
            deploy_leader,
            stop_rx.clone(),
        );
        tokio::spawn(deployments);
        tokio::spawn(source::kube::write_status(client, releases, watching.observed, leader, stop_rx.clone()));
    }
    if args.inject.enabled {
        start_webhook(&args, mesh_root, kube_client.as_ref(), leader_for_webhook, stop_rx.clone()).await?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(reporting) = replica_report {
        // The report's delete, so the other replicas stop counting this one's proxies at once.
        let _ = tokio::time::timeout(Duration::from_secs(2), reporting).await;
    }
    sluice.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `--advertise-api-url`, else `http://` + the admin address (its host `$POD_IP` when it is unspecified).
fn advertised_api_url(args: &ServeArgs, admin: Option<SocketAddr>) -> Option<String> {
    if let Some(url) = &args.advertise_api_url {
        return Some(url.trim_end_matches('/').to_string());
    }
    let admin = admin?;
    let host = match admin.ip().is_unspecified() {
        true => std::env::var("POD_IP").ok()?.parse::<std::net::IpAddr>().ok()?,
        false => admin.ip(),
    };
    Some(format!("http://{}", SocketAddr::new(host, admin.port())))
}

/// `--inject`: the webhook's serving certificate (files, the cluster's Secret, or the state directory's CA), then
/// its HTTPS server until shutdown.
async fn start_webhook(
    args: &ServeArgs,
    mesh_root: Option<String>,
    kube: Option<&kube::Client>,
    leader: tokio::sync::watch::Receiver<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use crate::inject::{certs, webhook};
    let w = &args.inject;
    let tls = match (&w.cert, &w.key, kube, &args.state_dir) {
        (Some(cert), Some(key), _, _) => {
            let tls = certs::from_files(cert, key).map_err(|e| anyhow::anyhow!("--inject-tls-cert: {e}"))?;
            tokio::spawn(certs::watch_files(tls.clone(), cert.clone(), key.clone(), Duration::from_secs(5)));
            tls
        }
        (_, _, Some(client), _) => {
            let (tls, ca) = source::kube::webhook::certs(client, &w.secret, &w.dns_names).await?;
            let config = w.webhook_config.clone();
            tokio::spawn(source::kube::webhook::keep_ca_bundle(client.clone(), config, ca, leader, stop.clone()));
            tls
        }
        (_, _, None, Some(dir)) => {
            let (tls, _) = certs::from_state_dir(dir, &w.dns_names).map_err(|e| anyhow::anyhow!("--inject: {e}"))?;
            tls
        }
        _ => anyhow::bail!(
            "--inject needs a serving certificate: --inject-tls-cert and --inject-tls-key, --state-dir (Sluice \
             keeps its CA there) or --kube (in a Secret)"
        ),
    };
    let listener =
        tokio::net::TcpListener::bind(w.addr).await.map_err(|e| anyhow::anyhow!("--inject-addr {}: {e}", w.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "sidecar injection webhook serving (POST /inject)");
    let budget = crate::conn::Budget::new(256);
    let within = Duration::from_millis(args.limits.handshake_timeout_ms);
    let mut stop = stop;
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let settings = crate::inject::Settings { mesh_root_pem: mesh_root, ..w.settings.clone() };
    tokio::spawn(webhook::serve(listener, tls, std::sync::Arc::new(settings), budget, within, shutdown));
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["sluice", "serve"].iter().chain(flags)).unwrap();
        match cli.command {
            Command::Serve(args) => args,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn tls_needs_all_three_files_and_defaults_to_15012() {
        assert!(serve_args(&[]).tls.options().unwrap().is_none(), "no TLS file: no mTLS port");
        let err = serve_args(&["--tls-cert=c.pem"]).tls.options().unwrap_err().to_string();
        assert!(err.contains("--tls-cert, --tls-key and --tls-client-ca"), "{err}");
        let all = ["--tls-cert=c.pem", "--tls-key=k.pem", "--tls-client-ca=ca.pem", "--shared-namespaces=x,y"];
        let tls = serve_args(&all).tls.options().unwrap().unwrap();
        assert_eq!(tls.addr, "0.0.0.0:15012".parse().unwrap());
        assert_eq!(tls.trust.trust_domain, "cluster.local");
        assert_eq!(tls.trust.shared_namespaces, ["x", "y"]);
    }

    #[test]
    fn the_ca_needs_a_place_for_its_key_and_a_way_to_authenticate() {
        let ca = serve_args(&["--ca"]).ca;
        assert_eq!(ca.ca_audiences, ["sluice-ca", "istio-ca"]);
        assert_eq!((ca.workload_cert_ttl_secs, ca.max_workload_cert_ttl_secs), (86400, 604800));
        assert_eq!(ca.ca_secret, "sluice-system/sluice-mesh-ca");
        assert_eq!(ca.ca_dns_names, ["sluice.sluice-system.svc", "sluice.sluice-system.svc.cluster.local"]);
        let err = ca.check(None, false).unwrap_err().to_string();
        assert!(err.contains("--ca-dir") && err.contains("--state-dir") && err.contains("--kube"), "{err}");
        let err = ca.check(Some(std::path::Path::new("/d")), false).unwrap_err().to_string();
        assert!(err.contains("--ca-tokens"), "{err}");
        assert!(ca.check(None, true).is_ok(), "Kubernetes: a Secret and TokenReviews");
        assert!(serve_args(&[]).ca.check(None, false).is_ok(), "no --ca: nothing to check");
    }
}
