//! What every case sets up: interop servers as the Workloads of Service `echo` (gRPC port 9090, each its own
//! `version`), Sluice with the case's Istio objects (YAML, as a user writes them), and the interop client resolving
//! `xds:///echo.default.svc.cluster.local:9090` through Sluice.

use crate::common::Peer;
use crate::common::interop::{self, Client, LoadBalancerAccumulatedStatsResponse, LoadBalancerStatsResponse};
use sluice::server::{Options, Sluice};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const TARGET: &str = "echo.default.svc.cluster.local:9090";
pub const EMPTY: &str = "EmptyCall";
pub const UNARY: &str = "UnaryCall";

/// Running servers, by the name each answers with (which is also its `version` label).
pub struct Backends {
    pub servers: Vec<(String, Peer)>,
}

impl Backends {
    /// One interop server per name.
    pub fn start(names: &[&str]) -> Backends {
        Backends { servers: names.iter().map(|n| (n.to_string(), interop::server(n))).collect() }
    }

    /// Service `service` (selector `app: SERVICE`) and one Workload per server (`version: NAME`).
    pub fn yaml(&self, service: &str) -> String {
        self.yaml_labelled(service, |_| String::new())
    }

    /// As [`Backends::yaml`], each Workload with the extra labels `extra(NAME)` gives (`key: value, ...`).
    pub fn yaml_labelled(&self, service: &str, extra: impl Fn(&str) -> String) -> String {
        let mut out = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {service}}}\nspec:\n  selector: {{app: {service}}}\n  \
             ports: [{{name: grpc, port: 9090, appProtocol: grpc}}]\n"
        );
        for (name, peer) in &self.servers {
            let more = extra(name);
            let more = if more.is_empty() { more } else { format!(", {more}") };
            out.push_str(&format!(
                "---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: {service}-{name}\n  \
                 labels: {{app: {service}, version: {name}{more}}}\nspec:\n  address: 127.0.0.1\n  ports: {{grpc: {}}}\n",
                peer.port()
            ));
        }
        out
    }
}

/// A DestinationRule for `echo` with one subset per name (by `version`).
pub fn subsets(names: &[&str]) -> String {
    let subsets: Vec<String> = names.iter().map(|n| format!("{{name: {n}, labels: {{version: {n}}}}}")).collect();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo}}\nspec:\n  \
         host: echo\n  subsets: [{}]\n",
        subsets.join(", ")
    )
}

/// Sluice on 127.0.0.1:0 serving `yaml`.
pub async fn sluice(yaml: &str) -> Sluice {
    let sluice = Sluice::start(Options::local()).await.expect("start Sluice");
    set(&sluice, yaml).await;
    sluice
}

/// Replaces the model with `yaml` and waits until it is published.
pub async fn set(sluice: &Sluice, yaml: &str) {
    let model = sluice::source::parse_str(yaml, "case.yaml").unwrap_or_else(|e| panic!("case YAML:\n{e}\n{yaml}"));
    sluice.store().set_model(model);
    sluice.wait_published(Duration::from_secs(10)).await.expect("published");
}

/// Replaces the model and waits until the client `node` holds it (every type ACKed).
pub async fn apply(sluice: &Sluice, node: &str, yaml: &str) {
    set(sluice, yaml).await;
    sluice.wait_acked(node, Duration::from_secs(15)).await.unwrap_or_else(|e| panic!("{node} did not ACK: {e}"));
}

/// The interop client as node `node`, at `qps`, with extra arguments (`--rpc`, `--metadata`, ...).
pub async fn client(sluice: &Sluice, node: &str, qps: u32, extra: &[&str]) -> Client {
    let mut args = interop::xds_client_args(&sluice.xds_addr().to_string(), node, TARGET);
    args.extend(["--qps".to_string(), qps.to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    Client::start(&args).await
}

/// Peers that answered `method` in a stats window, with their counts, sorted.
pub fn by_peer(stats: &LoadBalancerStatsResponse, method: &str) -> Vec<(String, i32)> {
    let mut out: Vec<(String, i32)> =
        stats.rpcs_by_method.get(method).map(|m| m.rpcs_by_peer.clone().into_iter().collect()).unwrap_or_default();
    out.sort();
    out
}

/// Takes windows of `n` RPCs until `done` holds for one (returning it), failing after `limit` with the last.
pub async fn until(
    client: &Client,
    n: i32,
    limit: Duration,
    what: &str,
    done: impl Fn(&LoadBalancerStatsResponse) -> bool,
) -> LoadBalancerStatsResponse {
    let start = Instant::now();
    loop {
        let stats = client.stats(n, 10).await;
        if done(&stats) {
            return stats;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}; last window: {stats:?}");
    }
}

/// How the calls of `method` (`EMPTY_CALL` / `UNARY_CALL`) that completed during `secs` seconds ended: count by
/// status code.
pub async fn outcomes(client: &Client, method: &str, secs: u64) -> BTreeMap<i32, i64> {
    let count = |acc: &LoadBalancerAccumulatedStatsResponse| -> BTreeMap<i32, i64> {
        let m = acc.stats_per_method.get(method);
        m.map(|m| m.result.iter().map(|(c, n)| (*c, i64::from(*n))).collect()).unwrap_or_default()
    };
    let before = count(&client.accumulated().await);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let mut after = count(&client.accumulated().await);
    for (code, n) in before {
        *after.entry(code).or_default() -= n;
    }
    after.retain(|_, n| *n > 0);
    after
}

/// The share of `code` among `outcomes`.
pub fn share(outcomes: &BTreeMap<i32, i64>, code: tonic::Code) -> f64 {
    let total: i64 = outcomes.values().sum();
    outcomes.get(&(code as i32)).copied().unwrap_or(0) as f64 / total.max(1) as f64
}
