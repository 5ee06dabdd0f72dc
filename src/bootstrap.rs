//! The Envoy bootstrap that `sluice bootstrap` prints: everything a sidecar needs to find Sluice and
//! nothing else; clusters, listeners and routes all arrive over ADS.
//!
//! ```text
//!  BootstrapArgs ──render──▶ { node (id, cluster = namespace, metadata),
//!                              dynamic_resources (ADS: Delta or SotW; CDS + LDS over it),
//!                              static_resources.clusters = [sluice-xds (HTTP/2; mTLS with --tls-*)],
//!                              admin (127.0.0.1:admin_port), layered_runtime,
//!                              stats_sinks = [metrics_service → sluice-xds], stats_config (kept stats) }
//! ```
//! The stats sink streams, every [`STATS_FLUSH_INTERVAL`], each outbound version cluster's request count, 5xx
//! count and latency histogram to Sluice (see `telemetry::sink`). The stats matcher keeps only those, plus the
//! `server.`, `control_plane.`, `cluster_manager.` and `listener_manager.` families an operator checks first,
//! so the stream (and Envoy's own stat memory) stays small: other stats are not created at all.
//!
//! The node metadata keys below are the contract with the xDS layer, which derives a proxy's
//! namespace, labels, listener mode and inbound ports from them.

use serde_json::{Map, Value, json};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Node metadata: the proxy's namespace (a string). Outbound config is shared per namespace.
pub const META_NAMESPACE: &str = "NAMESPACE";
/// Node metadata: the workload's labels (a struct of strings); `version` selects its subset, and
/// a policy's `sourceLabels` are matched against them.
pub const META_LABELS: &str = "LABELS";
/// Node metadata: `"ip:port"`, present only with `--listen`. The proxy then gets one HTTP listener
/// on that address routing every mesh service by Host header, instead of interception listeners.
pub const META_LISTEN: &str = "SLUICE_LISTEN";
/// Node metadata: comma-separated ports (`"9080,9081"`) the workload serves; each gets an inbound
/// listener chain and an `inbound|PORT||` cluster.
pub const META_INBOUND_PORTS: &str = "INBOUND_PORTS";
/// `"true"`: the proxy holds a workload certificate over SDS (`sds-grpc`) and can take workload mTLS.
pub const META_MTLS: &str = "SLUICE_MTLS";
/// Node metadata: `"false"` keeps a Delta Envoy on whole route configurations (no VHDS).
pub const META_VHDS: &str = "SLUICE_VHDS";
/// `NAMESPACE/NAME` of the Istio Gateway this proxy serves as (`--gateway`): an ingress gateway's listeners only.
pub const META_GATEWAY: &str = "SLUICE_GATEWAY";
/// The address a gateway binds its server ports on (`--gateway-bind`; default `0.0.0.0`, as istiod's).
pub const META_GATEWAY_BIND: &str = "SLUICE_GATEWAY_BIND";
/// The bootstrap cluster of the agent's SDS server.
pub const SDS_CLUSTER: &str = "sds-grpc";

/// Name of the static cluster that points at Sluice's xDS port.
pub const XDS_CLUSTER: &str = "sluice-xds";

/// How often each proxy flushes its stats to Sluice (`stats_flush_interval`).
pub const STATS_FLUSH_INTERVAL: &str = "1s";

/// The outbound version-cluster stats the telemetry sink reads (`telemetry::sink::{REQUESTS, ERRORS, LATENCY}`).
pub const KEPT_CLUSTER_STATS: &str =
    r"^cluster\.outbound\|[0-9]+\|[^|]+\|[^|]+\.(upstream_rq_total|upstream_rq_5xx|upstream_rq_time)$";

const METRICS_SERVICE_CONFIG: &str = "envoy.config.metrics.v3.MetricsServiceConfig";
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// `sluice bootstrap` flags. Every flag also reads a `SLUICE_...` environment variable, so a pod
/// spec can fill them from the downward API.
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct BootstrapArgs {
    /// Envoy node id; Sluice tracks sync state and config dumps per id.
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub node_id: String,
    /// Namespace of the workload; becomes the node's cluster and NAMESPACE metadata.
    #[arg(long, env = "SLUICE_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Sluice's xDS address: an IP (STATIC cluster) or a hostname (STRICT_DNS).
    #[arg(long, env = "SLUICE_XDS", default_value = "127.0.0.1:15010")]
    pub xds: HostPort,
    /// Bind one HTTP listener here that routes every mesh service by Host header.
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Envoy's own admin port, on 127.0.0.1.
    #[arg(long, env = "SLUICE_ENVOY_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
    /// Use State-of-the-World ADS instead of Delta.
    #[arg(long, env = "SLUICE_SOTW")]
    pub sotw: bool,
    /// Workload labels, `k=v,k=v`.
    #[arg(long, env = "SLUICE_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Ports the workload serves, `9080,9081`.
    #[arg(long, env = "SLUICE_INBOUND_PORTS", value_delimiter = ',')]
    pub inbound_ports: Vec<u16>,
    /// Serve Envoy's Prometheus stats on this port (`0.0.0.0:PORT/stats/prometheus`, as Istio's 15090); 0: off.
    #[arg(long, env = "SLUICE_PROMETHEUS_PORT", default_value_t = 0)]
    pub prometheus_port: u16,
    #[command(flatten)]
    pub stats: StatsInclusion,
    #[command(flatten)]
    pub tls: BootstrapTls,
    /// The Unix socket of the SDS server holding the workload certificate (`sluice proxy --mtls` serves it):
    /// adds the static cluster `sds-grpc` and announces workload mTLS in the node metadata (`SLUICE_MTLS`), so
    /// Sluice sends this proxy TLS contexts that take their secrets from it.
    #[arg(long = "sds-socket", env = "SLUICE_SDS_SOCKET")]
    pub sds_socket: Option<PathBuf>,
    /// Serve as the ingress gateway of this Istio Gateway (`NAMESPACE/NAME`): the proxy gets one listener per
    /// server port of the Gateway (`0.0.0.0_PORT`) and the routes of the VirtualServices bound to it, nothing of
    /// the sidecar config.
    #[arg(long, env = "SLUICE_GATEWAY", value_parser = parse_gateway)]
    pub gateway: Option<String>,
    /// With `--gateway`: the address the server ports bind (default `0.0.0.0`).
    #[arg(long, env = "SLUICE_GATEWAY_BIND", requires = "gateway")]
    pub gateway_bind: Option<std::net::IpAddr>,
    /// Print a proxyless gRPC client's bootstrap (the file `GRPC_XDS_BOOTSTRAP` names) instead of Envoy's: Sluice
    /// as its xDS server (plaintext, or mTLS with the `--tls-*` files: gRPC checks Sluice's certificate against the
    /// `--xds` host), the node id, namespace and labels, and `GENERATOR: grpc`.
    #[arg(
        long,
        env = "SLUICE_GRPC",
        conflicts_with_all = ["listen", "sds_socket", "gateway", "sotw", "tls_server_name", "inbound_ports"]
    )]
    pub grpc: bool,
}

/// `NAMESPACE/NAME` of an Istio Gateway (`--gateway` of `sluice bootstrap` and `sluice proxy`).
pub(crate) fn parse_gateway(s: &str) -> Result<String, String> {
    match s.split_once('/') {
        Some((ns, name)) if crate::model::is_dns_label(ns) && crate::model::is_dns_subdomain(name) => Ok(s.into()),
        _ => Err(format!("`{s}` is not NAMESPACE/NAME")),
    }
}

/// Envoy stats to keep beyond what Sluice reads (Istio's `statsInclusion*` annotations). Envoy creates no stat the
/// matcher leaves out, so a sidecar's memory and its stats-sink stream stay small unless an operator asks.
#[derive(Clone, Debug, Default, clap::Args, serde::Serialize)]
pub struct StatsInclusion {
    /// More of Envoy's stats to keep, by name prefix (comma-separated), as Istio's
    /// `sidecar.istio.io/statsInclusionPrefixes`: e.g. `cluster.outbound|9080||reviews.default.svc.cluster.local.`
    /// for that cluster's retry, circuit-breaker and outlier counters. Only Sluice's own stats and the `server.`,
    /// `control_plane.`, `cluster_manager.`, `listener_manager.` families are kept otherwise.
    #[arg(long = "stats-inclusion-prefixes", env = "SLUICE_STATS_INCLUSION_PREFIXES", value_delimiter = ',')]
    pub prefixes: Vec<String>,
    /// More stats to keep by name suffix (comma-separated), as `sidecar.istio.io/statsInclusionSuffixes`:
    /// e.g. `upstream_rq_retry,upstream_rq_pending_overflow`.
    #[arg(long = "stats-inclusion-suffixes", env = "SLUICE_STATS_INCLUSION_SUFFIXES", value_delimiter = ',')]
    pub suffixes: Vec<String>,
    /// More stats to keep by regular expression on the whole name (comma-separated; RE2 syntax), as
    /// `sidecar.istio.io/statsInclusionRegexps`: e.g. `.*circuit_breakers.*`.
    #[arg(
        long = "stats-inclusion-regexps",
        env = "SLUICE_STATS_INCLUSION_REGEXPS",
        value_delimiter = ',',
        value_parser = parse_regex
    )]
    pub regexps: Vec<String>,
}

impl Default for BootstrapArgs {
    /// The flags' defaults; a harness sets `node_id` and `xds` and leaves the rest (`..Default::default()`).
    fn default() -> Self {
        BootstrapArgs {
            node_id: String::new(),
            namespace: "default".into(),
            xds: HostPort { host: "127.0.0.1".into(), port: 15010 },
            listen: None,
            admin_port: 15000,
            sotw: false,
            labels: Vec::new(),
            inbound_ports: Vec::new(),
            prometheus_port: 0,
            stats: StatsInclusion::default(),
            tls: BootstrapTls::default(),
            sds_socket: None,
            gateway: None,
            gateway_bind: None,
            grpc: false,
        }
    }
}

fn parse_regex(s: &str) -> Result<String, String> {
    crate::model::pattern::check_regex(s).map(|()| s.to_string())
}

/// mTLS to Sluice's TLS port (15012): the proxy's certificate (with its SPIFFE ID), key, and the CA that signed
/// Sluice's certificate. All three or none.
#[derive(Clone, Debug, Default, clap::Args, serde::Serialize)]
pub struct BootstrapTls {
    /// The proxy's certificate chain (PEM; its URI SAN is `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`).
    #[arg(long, env = "SLUICE_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The proxy's private key (PEM).
    #[arg(long, env = "SLUICE_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<std::path::PathBuf>,
    /// The CA bundle (PEM) Sluice's server certificate must chain to.
    #[arg(long, env = "SLUICE_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name Sluice's certificate must carry (SNI and SAN match); default: the host of --xds (DNS name or IP).
    #[arg(long, env = "SLUICE_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

/// `HOST:PORT` where HOST is an IP address (`[::1]` for IPv6) or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected HOST:PORT"))?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port = port.parse().map_err(|e| format!("{s:?}: bad port: {e}"))?;
        if host.is_empty() {
            return Err(format!("{s:?}: empty host"));
        }
        Ok(HostPort { host: host.to_string(), port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected key=value")),
    }
}

/// The Envoy bootstrap for `args`, as JSON (which Envoy also accepts as YAML).
pub fn render(args: &BootstrapArgs) -> Value {
    let mut clusters = vec![xds_cluster(&args.xds, &args.tls)];
    let mut listeners = Vec::new();
    if args.prometheus_port != 0 {
        let (listener, cluster) = prometheus(args.prometheus_port, args.admin_port);
        listeners.push(listener);
        clusters.push(cluster);
    }
    if let Some(socket) = &args.sds_socket {
        clusters.push(sds_cluster(socket));
    }
    json!({
        "node": node(args),
        "dynamic_resources": dynamic_resources(args.sotw),
        "static_resources": { "clusters": clusters, "listeners": listeners },
        "admin": { "address": socket_address("127.0.0.1", args.admin_port) },
        // An empty static layer keeps Envoy from warning that no runtime is configured.
        "layered_runtime": { "layers": [{ "name": "static", "static_layer": {} }] },
        "stats_sinks": [stats_sink()],
        "stats_flush_interval": STATS_FLUSH_INTERVAL,
        "stats_config": stats_config(args),
    })
}

/// A proxyless gRPC client's xDS bootstrap (gRFC A27's format): Sluice over plaintext or mTLS, `xds_v3`, and the node as
/// [`render`] writes it plus istiod's `GENERATOR: grpc`, which marks the client proxyless whatever its user agent.
pub fn render_grpc(args: &BootstrapArgs) -> Value {
    let mut node = node(args);
    node["metadata"][crate::xds::node::META_GENERATOR] = "grpc".into();
    let t = &args.tls;
    let creds = match (&t.tls_cert, &t.tls_key, &t.tls_ca) {
        // gRFC A65's `tls` credentials: files gRPC reads (and reads again when they change).
        (Some(cert), Some(key), Some(ca)) => json!({ "type": "tls", "config": {
            "ca_certificate_file": ca, "certificate_file": cert, "private_key_file": key,
        }}),
        _ => json!({ "type": "insecure" }),
    };
    json!({
        "xds_servers": [{
            "server_uri": args.xds.to_string(),
            "channel_creds": [creds],
            "server_features": ["xds_v3"],
        }],
        "node": node,
    })
}

/// The static cluster `sds-grpc` (istio-agent's name): the agent's SDS server on a Unix socket, HTTP/2.
fn sds_cluster(socket: &std::path::Path) -> Value {
    json!({
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"),
                "explicit_http_config": { "http2_protocol_options": {} },
            }
        },
        "load_assignment": { "cluster_name": SDS_CLUSTER, "endpoints": [{ "lb_endpoints": [{ "endpoint": {
            "address": { "pipe": { "path": socket.to_string_lossy() } } } }] }] },
    })
}

/// A static listener on `port` that answers `GET /stats/prometheus` from Envoy's admin endpoint (and nothing
/// else of it), and the cluster that reaches the admin port.
fn prometheus(port: u16, admin_port: u16) -> (Value, Value) {
    const CLUSTER: &str = "prometheus_stats";
    let route = json!({ "match": { "prefix": "/stats/prometheus" }, "route": { "cluster": CLUSTER } });
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "prometheus_stats",
        "route_config": { "virtual_hosts": [{ "name": "prometheus", "domains": ["*"], "routes": [route] }] },
        "http_filters": [{ "name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }],
    });
    let listener = json!({
        "name": "prometheus_stats",
        "address": socket_address("0.0.0.0", port),
        "filter_chains": [{ "filters": [{ "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm }] }],
    });
    let cluster = json!({
        "name": CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": { "cluster_name": CLUSTER, "endpoints": [{ "lb_endpoints": [{ "endpoint": {
            "address": socket_address("127.0.0.1", admin_port) } }] }] },
    });
    (listener, cluster)
}

/// Envoy's MetricsService sink to Sluice's gRPC port: counters as deltas per flush, histograms as cumulative
/// buckets (no summaries: quantiles cannot be merged across proxies, buckets can).
fn stats_sink() -> Value {
    json!({
        "name": "envoy.stat_sinks.metrics_service",
        "typed_config": {
            "@type": format!("type.googleapis.com/{METRICS_SERVICE_CONFIG}"),
            "transport_api_version": "V3",
            "grpc_service": { "envoy_grpc": { "cluster_name": XDS_CLUSTER } },
            "report_counters_as_deltas": true,
            "emit_tags_as_labels": false,
            "histogram_emit_mode": "HISTOGRAM",
        },
    })
}

fn stats_config(args: &BootstrapArgs) -> Value {
    let prefixes = ["server.", "control_plane.", "cluster_manager.", "listener_manager."];
    let mut patterns: Vec<Value> = vec![json!({ "safe_regex": { "regex": KEPT_CLUSTER_STATS } })];
    patterns.extend(prefixes.iter().map(|p| json!({ "prefix": p })));
    let non_empty = |v: &&String| !v.is_empty();
    let more = &args.stats;
    patterns.extend(more.prefixes.iter().filter(non_empty).map(|p| json!({ "prefix": p })));
    patterns.extend(more.suffixes.iter().filter(non_empty).map(|p| json!({ "suffix": p })));
    let regexps = more.regexps.iter().filter(non_empty);
    patterns.extend(regexps.map(|r| json!({ "safe_regex": { "regex": r } })));
    json!({ "stats_matcher": { "inclusion_list": { "patterns": patterns } } })
}

fn node(args: &BootstrapArgs) -> Value {
    let labels: Map<String, Value> = args.labels.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
    let mut meta = Map::new();
    meta.insert(META_NAMESPACE.into(), args.namespace.as_str().into());
    meta.insert(META_LABELS.into(), Value::Object(labels));
    if let Some(listen) = args.listen {
        meta.insert(META_LISTEN.into(), listen.to_string().into());
    }
    if !args.inbound_ports.is_empty() {
        let ports: Vec<String> = args.inbound_ports.iter().map(u16::to_string).collect();
        meta.insert(META_INBOUND_PORTS.into(), ports.join(",").into());
    }
    if args.sds_socket.is_some() {
        meta.insert(META_MTLS.into(), "true".into());
    }
    if let Some(gateway) = &args.gateway {
        meta.insert(META_GATEWAY.into(), gateway.as_str().into());
    }
    if let Some(bind) = args.gateway_bind {
        meta.insert(META_GATEWAY_BIND.into(), bind.to_string().into());
    }
    json!({ "id": args.node_id, "cluster": args.namespace, "metadata": meta })
}

fn dynamic_resources(sotw: bool) -> Value {
    let via_ads = json!({ "ads": {}, "resource_api_version": "V3" });
    json!({
        "ads_config": {
            "api_type": if sotw { "GRPC" } else { "DELTA_GRPC" },
            "transport_api_version": "V3",
            "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }],
            "set_node_on_first_message_only": true,
        },
        "cds_config": via_ads,
        "lds_config": via_ads,
    })
}

/// The one static cluster: Sluice's gRPC port. gRPC needs HTTP/2; keepalive notices a dead
/// control plane behind a NAT or load balancer; the circuit breakers are raised so that a burst of
/// streams (one per xDS type with non-ADS configs, or retries) is never refused by Envoy itself.
fn xds_cluster(xds: &HostPort, tls: &BootstrapTls) -> Value {
    let threshold = |priority: &str| {
        json!({ "priority": priority, "max_connections": 100_000, "max_pending_requests": 100_000,
                "max_requests": 100_000, "max_retries": 1_000 })
    };
    let mut cluster = json!({
        "name": XDS_CLUSTER,
        "type": if xds.is_ip() { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"),
                "explicit_http_config": { "http2_protocol_options": {} },
            }
        },
        "upstream_connection_options": {
            "tcp_keepalive": { "keepalive_probes": 3, "keepalive_time": 30, "keepalive_interval": 5 }
        },
        "circuit_breakers": { "thresholds": [threshold("DEFAULT"), threshold("HIGH")] },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket_address(&xds.host, xds.port) } }] }],
        },
    });
    if let Some(socket) = transport_socket(xds, tls) {
        cluster["transport_socket"] = socket;
    }
    if !xds.is_ip() {
        // Sluice usually listens on IPv4 only; Envoy's default (AUTO) would try AAAA first.
        cluster["dns_lookup_family"] = "V4_PREFERRED".into();
    }
    cluster
}

const UPSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

/// mTLS on the xDS cluster: present the proxy's certificate, verify Sluice's against the CA and its name. Envoy
/// reads the files at start; a rotated proxy certificate takes a restart (or SDS, which Sluice does not serve).
fn transport_socket(xds: &HostPort, tls: &BootstrapTls) -> Option<Value> {
    let (Some(cert), Some(key), Some(ca)) = (&tls.tls_cert, &tls.tls_key, &tls.tls_ca) else { return None };
    let name = tls.tls_server_name.clone().unwrap_or_else(|| xds.host.clone());
    let is_ip = name.parse::<IpAddr>().is_ok();
    let san = json!({ "san_type": if is_ip { "IP_ADDRESS" } else { "DNS" }, "matcher": { "exact": name } });
    let mut context = json!({
        "@type": format!("type.googleapis.com/{UPSTREAM_TLS}"),
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [{
                "certificate_chain": { "filename": cert },
                "private_key": { "filename": key },
            }],
            "validation_context": {
                "trusted_ca": { "filename": ca },
                "match_typed_subject_alt_names": [san],
            },
        },
    });
    if !is_ip {
        context["sni"] = name.into();
    }
    Some(json!({ "name": "envoy.transport_sockets.tls", "typed_config": context }))
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

#[cfg(test)]
#[path = "bootstrap_tests.rs"]
mod tests;
