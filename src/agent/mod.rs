//! `sluice proxy`: the sidecar's agent (istiod's `pilot-agent`). It builds Envoy's bootstrap from the pod (its
//! name, namespace, address, labels from the downward API, the ports its app serves), starts Envoy, restarts it
//! when it dies (with a growing delay, never a tight loop that hides the error), drains it on SIGTERM, and answers
//! the pod's readiness probe on 15021. The app never talks to it.
//!
//! With `--gateway NS/NAME` the same agent runs an ingress gateway pod (istiod's `router` proxy): the node id is
//! `router~IP~POD.NS~NS.svc.cluster.local`, the bootstrap names the Istio Gateway (`sluice bootstrap --gateway`),
//! there are no inbound ports, and SIGTERM drains every listener (a sidecar drains its inbound ones only).
//!
//! ```text
//!  env + flags ─▶ pod::Pod ─▶ BootstrapArgs (intercept or gateway mode, Prometheus on 15090) ─▶ bootstrap.json
//!  supervise::step (pure) ◀── events: Envoy started / exited, timer, SIGTERM ──▶ actions: spawn, drain, stop, exit
//!  :15021 /healthz/ready ─▶ Envoy's /ready is LIVE and it holds clusters and listeners from Sluice ─▶ 200, else 503
//! ```

pub mod cert;
pub mod pod;
pub mod sds;
pub mod supervise;

use crate::bootstrap::{BootstrapArgs, BootstrapTls, HostPort, StatsInclusion};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use supervise::{Action, Event, State};
use tokio::process::{Child, Command};

/// `sluice proxy` flags; each also reads an environment variable, so a pod spec fills them from the downward API.
#[derive(Clone, Debug, clap::Args)]
pub struct ProxyArgs {
    /// Sluice's xDS address.
    #[arg(long, env = "SLUICE_XDS", default_value = "sluice.sluice-system.svc:15010")]
    pub xds: HostPort,
    /// The Envoy binary.
    #[arg(long, env = "SLUICE_ENVOY_BIN", default_value = "envoy")]
    pub envoy_bin: PathBuf,
    #[arg(long, env = "POD_NAME")]
    pub pod_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub pod_namespace: String,
    /// The pod's IP address.
    #[arg(long, env = "INSTANCE_IP")]
    pub instance_ip: Option<std::net::IpAddr>,
    /// The pod's service account (shown in the node metadata).
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,
    /// The pod's labels as the downward API writes them (`key="value"` per line); read at start.
    #[arg(long, env = "SLUICE_LABELS_FILE", default_value = "/etc/podinfo/labels")]
    pub labels_file: PathBuf,
    /// Labels beyond (or instead of) the file, `k=v,k=v`.
    #[arg(long, env = "SLUICE_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Ports the app serves, `9080,9081` (empty: none): each gets an inbound listener chain.
    #[arg(long, env = "SLUICE_INBOUND_PORTS", default_value = "")]
    pub inbound_ports: String,
    /// Where the readiness probe is answered (`/healthz/ready`).
    #[arg(long, env = "SLUICE_STATUS_PORT", default_value_t = 15021)]
    pub status_port: u16,
    /// Envoy's Prometheus port (`/stats/prometheus`); 0: none.
    #[arg(long, env = "SLUICE_PROMETHEUS_PORT", default_value_t = 15090)]
    pub prometheus_port: u16,
    /// Envoy's admin port, on 127.0.0.1.
    #[arg(long, env = "SLUICE_ENVOY_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
    /// On SIGTERM, how long listeners drain (open requests finish) before Envoy is stopped.
    #[arg(long, env = "SLUICE_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
    /// Where the bootstrap is written.
    #[arg(long, env = "SLUICE_CONFIG_DIR", default_value = "/tmp/sluice-proxy")]
    pub config_dir: PathBuf,
    /// Envoy's worker threads.
    #[arg(long, env = "SLUICE_CONCURRENCY", default_value_t = 2)]
    pub concurrency: u32,
    /// The uid Envoy runs as when the agent runs as root: the interception rules (`sluice iptables -u`) never
    /// redirect this uid's connections, so Envoy's own calls are not looped back into it.
    #[arg(long, env = "SLUICE_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// The gid Envoy runs as when the agent runs as root (`sluice iptables -g`).
    #[arg(long, env = "SLUICE_PROXY_GID", default_value_t = 1337)]
    pub proxy_gid: u32,
    /// Use State-of-the-World ADS instead of Delta.
    #[arg(long, env = "SLUICE_SOTW")]
    pub sotw: bool,
    #[command(flatten)]
    pub stats: StatsInclusion,
    #[command(flatten)]
    pub tls: BootstrapTls,
    #[command(flatten)]
    pub mtls: MtlsArgs,
    /// Run as the ingress gateway of this Istio Gateway (`NAMESPACE/NAME`) instead of a sidecar: Envoy gets the
    /// Gateway's server listeners and the routes bound to it, nothing of the sidecar config (no interception).
    #[arg(long, env = "SLUICE_GATEWAY", value_parser = crate::bootstrap::parse_gateway)]
    pub gateway: Option<String>,
    /// With `--gateway`: the address the server ports bind (default `0.0.0.0`).
    #[arg(long, env = "SLUICE_GATEWAY_BIND", requires = "gateway")]
    pub gateway_bind: Option<std::net::IpAddr>,
}

/// Workload mTLS: the agent gets the pod's certificate from Sluice's CA and serves it to Envoy over SDS.
#[derive(Clone, Debug, clap::Args)]
pub struct MtlsArgs {
    /// Get a workload certificate and serve it to Envoy (SDS on `CONFIG_DIR/sds.sock`); Sluice then sends this
    /// proxy mTLS contexts.
    #[arg(long = "mtls", env = "SLUICE_MTLS")]
    pub enabled: bool,
    /// Sluice's CA (its mTLS port); default: the xDS host on port 15012.
    #[arg(long = "ca-addr", env = "SLUICE_CA_ADDR")]
    pub ca_addr: Option<String>,
    /// The name Sluice's certificate carries (checked, and sent as SNI).
    #[arg(long = "ca-server-name", env = "SLUICE_CA_SERVER_NAME", default_value = "sluice.sluice-system.svc")]
    pub ca_server_name: String,
    /// The mesh root(s) Sluice's certificate chains to, as PEM text (the injector puts it here); else the file.
    #[arg(long = "ca-root-pem", env = "SLUICE_CA_ROOT_PEM", hide_env_values = true)]
    pub ca_root_pem: Option<String>,
    /// The mesh root(s) Sluice's certificate chains to (PEM).
    #[arg(long = "ca-root-file", env = "SLUICE_CA_ROOT_FILE", default_value = "/var/run/secrets/sluice/root-cert.pem")]
    pub ca_root_file: PathBuf,
    /// The token the CA authenticates the pod by (a projected service-account token with audience sluice-ca,
    /// or the file-mode credential); read again for each request.
    #[arg(long = "ca-token-file", env = "SLUICE_CA_TOKEN_FILE", default_value = "/var/run/secrets/tokens/sluice-ca")]
    pub token_file: PathBuf,
    /// The certificate lifetime asked for (the CA caps it).
    #[arg(long = "cert-ttl-secs", env = "SLUICE_CERT_TTL_SECS", default_value_t = 86_400)]
    pub ttl_secs: u64,
    /// The SPIFFE trust domain of the pod's identity.
    #[arg(long = "trust-domain", env = "SLUICE_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
}

impl MtlsArgs {
    fn client(&self, xds: &HostPort) -> cert::CaClient {
        cert::CaClient {
            addr: self.ca_addr.clone().unwrap_or_else(|| format!("{}:15012", xds.host)),
            server_name: self.ca_server_name.clone(),
            root: match &self.ca_root_pem {
                Some(pem) => cert::Root::Pem(pem.clone()),
                None => cert::Root::File(self.ca_root_file.clone()),
            },
            token_file: self.token_file.clone(),
            ttl: Duration::from_secs(self.ttl_secs),
        }
    }
}

impl ProxyArgs {
    /// The pod this agent runs in, as its flags and files describe it.
    pub fn pod(&self) -> Result<pod::Pod, String> {
        let mut labels = match std::fs::read_to_string(&self.labels_file) {
            Ok(text) => pod::parse_labels(&text).map_err(|e| format!("{}: {e}", self.labels_file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(format!("{}: {e}", self.labels_file.display())),
        };
        for kv in &self.labels {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("--labels: `{kv}` is not key=value"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        if self.pod_name.is_empty() {
            return Err("POD_NAME (--pod-name) is required".into());
        }
        let inbound_ports = pod::parse_ports(&self.inbound_ports).map_err(|e| format!("--inbound-ports: {e}"))?;
        Ok(pod::Pod {
            name: self.pod_name.clone(),
            namespace: self.pod_namespace.clone(),
            ip: self.instance_ip,
            service_account: self.service_account.clone(),
            labels,
            inbound_ports,
        })
    }

    /// Envoy's bootstrap for `pod`: intercept mode (or gateway mode with `--gateway`), Prometheus on its port.
    pub fn bootstrap(&self, pod: &pod::Pod) -> BootstrapArgs {
        let gateway = self.gateway.is_some();
        BootstrapArgs {
            node_id: if gateway { pod.router_node_id() } else { pod.node_id() },
            namespace: pod.namespace.clone(),
            xds: self.xds.clone(),
            listen: None,
            admin_port: self.admin_port,
            sotw: self.sotw,
            labels: pod.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            // A gateway serves no app: its ports are the Gateway's servers, which come over xDS.
            inbound_ports: if gateway { Vec::new() } else { pod.inbound_ports.clone() },
            prometheus_port: self.prometheus_port,
            stats: self.stats.clone(),
            tls: self.tls.clone(),
            sds_socket: self.mtls.enabled.then(|| self.sds_socket()),
            gateway: self.gateway.clone(),
            gateway_bind: self.gateway_bind,
            grpc: false,
        }
    }

    /// What SIGTERM drains: a sidecar's inbound listeners (its app's outbound calls keep working while it
    /// stops), or every listener of a gateway (all of them take traffic from outside), as pilot-agent does.
    fn drain_path(&self) -> &'static str {
        if self.gateway.is_some() { "/drain_listeners?graceful" } else { "/drain_listeners?graceful&inboundonly" }
    }
}

impl ProxyArgs {
    /// The SDS server's socket, beside the bootstrap.
    pub fn sds_socket(&self) -> PathBuf {
        self.config_dir.join("sds.sock")
    }
}

/// `sluice proxy`: runs until SIGTERM (then drains and exits 0), or exits 1 naming what is missing.
pub async fn run(args: ProxyArgs) -> ExitCode {
    let pod = match args.pod() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sluice proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bootstrap = crate::bootstrap::render(&args.bootstrap(&pod));
    let file = args.config_dir.join("envoy.json");
    let written = std::fs::create_dir_all(&args.config_dir)
        .and_then(|()| std::fs::write(&file, serde_json::to_vec_pretty(&bootstrap).unwrap_or_default()));
    if let Err(e) = written {
        eprintln!("sluice proxy: writing {}: {e}", file.display());
        return ExitCode::FAILURE;
    }
    let admin = SocketAddr::from(([127, 0, 0, 1], args.admin_port));
    let status = SocketAddr::from(([0, 0, 0, 0], args.status_port));
    match tokio::net::TcpListener::bind(status).await {
        Ok(listener) => {
            tokio::spawn(health::serve(listener, admin));
        }
        Err(e) => {
            eprintln!("sluice proxy: the status port {status}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if args.mtls.enabled
        && let Err(e) = start_sds(&args, &pod).await
    {
        eprintln!("sluice proxy: {e}");
        return ExitCode::FAILURE;
    }
    let euid = rustix::process::geteuid().as_raw();
    if args.gateway.is_none() && euid != 0 && euid != args.proxy_uid {
        tracing::warn!(
            uid = euid,
            proxy_uid = args.proxy_uid,
            "Envoy runs as the agent's uid, which the interception rules do not exempt: its connections loop"
        );
    }
    tracing::info!(node = %pod.node_id(), envoy = %args.envoy_bin.display(), "sluice proxy starting Envoy");
    let code = supervise_envoy(&args, &file, admin).await;
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Performs the state machine's actions until it says to exit.
async fn supervise_envoy(args: &ProxyArgs, bootstrap: &std::path::Path, admin: SocketAddr) -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let drain = Duration::from_secs(args.drain_seconds);
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("sluice proxy: cannot listen for signals");
        return 1;
    };
    let mut state = State::Starting { failures: 0 };
    let mut actions = std::collections::VecDeque::from([Action::Spawn]);
    let mut envoy: Option<Child> = None;
    loop {
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Spawn => {
                    let event = match spawn(args, bootstrap) {
                        Ok(child) => {
                            tracing::info!(pid = child.id(), "Envoy started");
                            envoy = Some(child);
                            Event::Started(Instant::now())
                        }
                        Err(e) => {
                            tracing::error!(error = %e, bin = %args.envoy_bin.display(), "cannot start Envoy");
                            Event::Exited { at: Instant::now(), code: 127 }
                        }
                    };
                    let (s, more) = supervise::step(state, event, drain);
                    state = s;
                    actions.extend(more);
                }
                Action::Report { code, restart_in, failures } => tracing::error!(
                    code,
                    failures,
                    restart_in_ms = restart_in.as_millis() as u64,
                    "Envoy exited; starting it again after the delay"
                ),
                Action::Drain => {
                    tracing::info!(seconds = drain.as_secs(), "SIGTERM: draining Envoy's listeners");
                    health::post(admin, args.drain_path()).await;
                }
                Action::Stop => signal_envoy(envoy.as_ref(), rustix::process::Signal::TERM),
                Action::Kill => {
                    tracing::warn!("Envoy still runs 5 s after SIGTERM: SIGKILL");
                    signal_envoy(envoy.as_ref(), rustix::process::Signal::KILL);
                }
                Action::Exit(code) => return code,
            }
        }
        let deadline = match &state {
            State::Backoff { until, .. } | State::Draining { until } | State::Stopping { until } => Some(*until),
            _ => None,
        };
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let exited = async {
            match envoy.as_mut() {
                Some(child) => child.wait().await.ok(),
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            status = exited => {
                envoy = None;
                let code = status.map_or(-1, exit_code);
                Event::Exited { at: Instant::now(), code }
            }
            () = sleep => Event::Tick(Instant::now()),
            _ = term.recv() => Event::Term(Instant::now()),
            _ = int.recv() => Event::Term(Instant::now()),
        };
        let (s, more) = supervise::step(state, event, drain);
        state = s;
        actions.extend(more);
    }
}

/// The certificate keeper and the SDS server Envoy reads it from.
async fn start_sds(args: &ProxyArgs, pod: &pod::Pod) -> Result<(), String> {
    let identity = cert::spiffe_id(&args.mtls.trust_domain, &pod.namespace, &pod.service_account);
    let (tx, rx) = tokio::sync::watch::channel(None);
    let socket = args.sds_socket();
    // As root, the socket belongs to Envoy's uid (it alone connects); otherwise to the agent, which is Envoy's.
    let owner = rustix::process::geteuid().is_root().then_some((args.proxy_uid, args.proxy_gid));
    sds::serve(&socket, owner, rx).await.map_err(|e| format!("the SDS socket {}: {e}", socket.display()))?;
    tracing::info!(%identity, socket = %socket.display(), "serving the workload certificate over SDS");
    tokio::spawn(args.mtls.client(&args.xds).keep(identity, tx));
    Ok(())
}

fn signal_envoy(envoy: Option<&Child>, signal: rustix::process::Signal) {
    let pid = envoy.and_then(Child::id).and_then(|p| rustix::process::Pid::from_raw(p as i32));
    if let Some(pid) = pid
        && let Err(e) = rustix::process::kill_process(pid, signal)
    {
        tracing::warn!(error = %e, ?signal, "signalling Envoy");
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| -status.signal().unwrap_or(0))
}

fn spawn(args: &ProxyArgs, bootstrap: &std::path::Path) -> std::io::Result<Child> {
    let mut command = Command::new(&args.envoy_bin);
    if rustix::process::geteuid().is_root() {
        // As root (an init-less pod, or a test bed), Envoy drops to the proxy's uid; its groups are cleared.
        command.uid(args.proxy_uid).gid(args.proxy_gid);
    }
    command
        .arg("-c")
        .arg(bootstrap)
        // Pods on one host share the IPC namespace the shared-memory base id lives in.
        .args(["--use-dynamic-base-id", "--log-level", "warning"])
        // `misc` repeats a deprecation notice per route config (max_grpc_timeout, istiod's gRPC timeout default).
        .args(["--component-log-level", "misc:error"])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(["--drain-time-s", &args.drain_seconds.to_string(), "--drain-strategy", "immediate"])
        .kill_on_drop(true)
        .spawn()
}

mod health;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        proxy: ProxyArgs,
    }

    fn args(flags: &[&str]) -> ProxyArgs {
        let base = ["sluice-proxy", "--pod-name=gw-1", "--pod-namespace=bookinfo", "--instance-ip=10.0.0.7"];
        let cli = Cli::try_parse_from(base.iter().chain(flags)).expect("flags parse");
        ProxyArgs { labels_file: "/nonexistent".into(), ..cli.proxy }
    }

    #[test]
    fn a_sidecar_bootstrap_intercepts_and_drains_inbound_only() {
        let a = args(&["--inbound-ports=9080"]);
        let b = a.bootstrap(&a.pod().unwrap());
        assert_eq!(b.node_id, "sidecar~10.0.0.7~gw-1.bookinfo~bookinfo.svc.cluster.local");
        assert_eq!((b.gateway, b.inbound_ports), (None, vec![9080]));
        assert_eq!(a.drain_path(), "/drain_listeners?graceful&inboundonly");
    }

    #[test]
    fn a_gateway_bootstrap_is_an_istio_router_naming_its_gateway() {
        let a = args(&["--gateway=bookinfo/bookinfo-gateway", "--inbound-ports=9080", "--labels=istio=ingressgateway"]);
        let b = a.bootstrap(&a.pod().unwrap());
        assert_eq!(b.node_id, "router~10.0.0.7~gw-1.bookinfo~bookinfo.svc.cluster.local");
        assert_eq!(b.gateway.as_deref(), Some("bookinfo/bookinfo-gateway"));
        assert!(b.inbound_ports.is_empty(), "a gateway has no app behind it");
        assert_eq!(a.drain_path(), "/drain_listeners?graceful", "every listener of a gateway drains");
        let node = &crate::bootstrap::render(&b)["node"];
        assert_eq!(node["metadata"]["SLUICE_GATEWAY"], "bookinfo/bookinfo-gateway");
        assert_eq!(node["metadata"]["LABELS"]["istio"], "ingressgateway");
        assert!(node["metadata"].get("INBOUND_PORTS").is_none(), "{node}");
    }

    #[test]
    fn gateway_flags_are_checked() {
        let base = ["sluice-proxy", "--pod-name=gw-1"];
        let parse = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra)).map(|_| ());
        assert!(parse(&["--gateway=bookinfo-gateway"]).is_err(), "--gateway takes NAMESPACE/NAME");
        assert!(parse(&["--gateway-bind=127.0.0.1"]).is_err(), "--gateway-bind needs --gateway");
        assert!(parse(&["--gateway=bookinfo/bookinfo-gateway", "--gateway-bind=127.0.0.1"]).is_ok());
    }
}
