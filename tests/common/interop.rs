//! gRPC's xDS interop test contract (grpc/grpc `doc/xds-test-descriptions.md`) from the driver's side: the peers
//! of `tests/peers/xds_interop.py` and the calls a test case makes to the client's stats port.
//!
//! ```text
//!   test case ──GetClientStats / GetClientAccumulatedStats / Configure──▶ xds_interop.py client (stats port)
//!                                                                           │ QPS RPCs a second, one channel
//!                                                                           ▼ xds:///TARGET (Sluice) or HOST:PORT
//!                                                       xds_interop.py server --hostname NAME  (TestService)
//! ```
//! The messages are written here from the public field numbers of `grpc.testing` (no .proto is vendored), with
//! only the fields the cases read; the Python side encodes the same numbers by hand.
//! The client's per-method maps are keyed `EMPTY_CALL` / `UNARY_CALL` in the accumulated stats, and
//! `EmptyCall` / `UnaryCall` in `rpcs_by_method`, as in the contract.

use super::Peer;
use http::uri::PathAndQuery;
use std::collections::HashMap;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// `grpc.testing.RpcType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum RpcType {
    EmptyCall = 0,
    UnaryCall = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LoadBalancerStatsRequest {
    /// How many RPCs, started after the request arrived, to watch.
    #[prost(int32, tag = "1")]
    pub num_rpcs: i32,
    /// How long to wait for them to complete.
    #[prost(int32, tag = "2")]
    pub timeout_sec: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LoadBalancerStatsResponse {
    /// Successful RPCs by the `hostname` their server sent.
    #[prost(map = "string, int32", tag = "1")]
    pub rpcs_by_peer: HashMap<String, i32>,
    /// RPCs that failed, named no peer, or did not complete in time.
    #[prost(int32, tag = "2")]
    pub num_failures: i32,
    /// `rpcs_by_peer` per method (`EmptyCall`, `UnaryCall`).
    #[prost(map = "string, message", tag = "3")]
    pub rpcs_by_method: HashMap<String, RpcsByPeer>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcsByPeer {
    #[prost(map = "string, int32", tag = "1")]
    pub rpcs_by_peer: HashMap<String, i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LoadBalancerAccumulatedStatsRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LoadBalancerAccumulatedStatsResponse {
    #[prost(map = "string, int32", tag = "1")]
    pub num_rpcs_started_by_method: HashMap<String, i32>,
    #[prost(map = "string, int32", tag = "2")]
    pub num_rpcs_succeeded_by_method: HashMap<String, i32>,
    #[prost(map = "string, int32", tag = "3")]
    pub num_rpcs_failed_by_method: HashMap<String, i32>,
    /// Keyed `EMPTY_CALL` / `UNARY_CALL`.
    #[prost(map = "string, message", tag = "4")]
    pub stats_per_method: HashMap<String, MethodStats>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MethodStats {
    #[prost(int32, tag = "1")]
    pub rpcs_started: i32,
    /// Completed RPCs by their integral status code.
    #[prost(map = "int32, int32", tag = "2")]
    pub result: HashMap<i32, i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientConfigureRequest {
    #[prost(enumeration = "RpcType", repeated, tag = "1")]
    pub types: Vec<i32>,
    #[prost(message, repeated, tag = "2")]
    pub metadata: Vec<Metadata>,
    /// Deadline of each RPC; 0 is the client's `--rpc-timeout-sec`.
    #[prost(int32, tag = "3")]
    pub timeout_sec: i32,
}

/// A header the client sends with each RPC of one type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(enumeration = "RpcType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(string, tag = "3")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientConfigureResponse {}

const GET_CLIENT_STATS: &str = "/grpc.testing.LoadBalancerStatsService/GetClientStats";
const GET_CLIENT_ACCUMULATED_STATS: &str = "/grpc.testing.LoadBalancerStatsService/GetClientAccumulatedStats";
const CONFIGURE: &str = "/grpc.testing.XdsUpdateClientConfigureService/Configure";

/// `xds_interop.py server`: TestService on 127.0.0.1, naming itself `hostname` in every answer.
pub fn server(hostname: &str) -> Peer {
    Peer::spawn("xds_interop.py", &["server", "--port", "0", "--hostname", hostname])
}

/// Arguments for [`Client::start`] that resolve `xds:///TARGET` through Sluice's xDS address.
pub fn xds_client_args(xds: &str, node_id: &str, target: &str) -> Vec<String> {
    ["--server", &format!("xds:///{target}"), "--xds", xds, "--node-id", node_id].map(String::from).to_vec()
}

/// `xds_interop.py client` sending its load, and a channel to its stats port. The process is killed on drop.
pub struct Client {
    peer: Peer,
    channel: Channel,
}

impl Client {
    /// Runs `xds_interop.py client --stats-port 0 ARGS` (see its docstring for ARGS) and connects to its stats
    /// port. The load starts as soon as the process is ready.
    pub async fn start<S: AsRef<str>>(args: &[S]) -> Client {
        let mut argv = vec!["client".to_string(), "--stats-port".into(), "0".into()];
        argv.extend(args.iter().map(|a| a.as_ref().to_string()));
        let peer = tokio::task::spawn_blocking(move || {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            Peer::spawn("xds_interop.py", &argv)
        })
        .await
        .expect("spawning xds_interop.py client");
        let url = format!("http://127.0.0.1:{}", peer.port());
        let channel = Endpoint::from_shared(url.clone())
            .expect("stats URL")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to the interop client's stats port {url}: {e}"));
        Client { peer, channel }
    }

    /// The client process (to kill or inspect it).
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// GetClientStats: how the next `num_rpcs` RPCs went, waiting up to `timeout_sec` for them.
    pub async fn stats(&self, num_rpcs: i32, timeout_sec: i32) -> LoadBalancerStatsResponse {
        let request = LoadBalancerStatsRequest { num_rpcs, timeout_sec };
        let limit = Duration::from_secs(timeout_sec.max(0) as u64 + 10);
        self.call(GET_CLIENT_STATS, request, limit).await
    }

    /// GetClientAccumulatedStats: the totals since the client started.
    pub async fn accumulated(&self) -> LoadBalancerAccumulatedStatsResponse {
        self.call(GET_CLIENT_ACCUMULATED_STATS, LoadBalancerAccumulatedStatsRequest {}, Duration::from_secs(10)).await
    }

    /// Configure: from now on send RPCs of `types`, with `metadata` (type, key, value) and a deadline of
    /// `timeout_sec` (0: the client's `--rpc-timeout-sec`).
    pub async fn configure(&self, types: &[RpcType], metadata: &[(RpcType, &str, &str)], timeout_sec: i32) {
        let request = ClientConfigureRequest {
            types: types.iter().map(|&t| t as i32).collect(),
            metadata: metadata
                .iter()
                .map(|&(t, key, value)| Metadata { r#type: t as i32, key: key.into(), value: value.into() })
                .collect(),
            timeout_sec,
        };
        let _: ClientConfigureResponse = self.call(CONFIGURE, request, Duration::from_secs(10)).await;
    }

    async fn call<Req, Resp>(&self, path: &'static str, message: Req, limit: Duration) -> Resp
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.unwrap_or_else(|e| panic!("{path}: stats channel not ready: {e}"));
        let mut request = tonic::Request::new(message);
        request.set_timeout(limit);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        match grpc.unary(request, PathAndQuery::from_static(path), codec).await {
            Ok(response) => response.into_inner(),
            Err(status) => panic!("{path} on the interop client (pid {}): {status}", self.peer.pid()),
        }
    }
}

impl Drop for Client {
    /// SIGTERM first and a moment to exit, so that the client deletes its xDS bootstrap file; the [`Peer`]'s own
    /// drop then kills it (if still needed) and reaps it.
    fn drop(&mut self) {
        let pid = self.peer.pid();
        let Some(raw) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return };
        if rustix::process::kill_process(raw, rustix::process::Signal::TERM).is_err() {
            return;
        }
        let stat = format!("/proc/{pid}/stat");
        let exited = || {
            std::fs::read_to_string(&stat)
                .map_or(true, |s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
        };
        let start = std::time::Instant::now();
        while !exited() && start.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// RPCs of `method` (`EMPTY_CALL` / `UNARY_CALL`) started and not completed yet.
pub fn in_flight(acc: &LoadBalancerAccumulatedStatsResponse, method: &str) -> i64 {
    acc.stats_per_method
        .get(method)
        .map_or(0, |s| i64::from(s.rpcs_started) - s.result.values().copied().map(i64::from).sum::<i64>())
}

/// RPCs of `method` (`EMPTY_CALL` / `UNARY_CALL`) that completed with `code`.
pub fn code_count(acc: &LoadBalancerAccumulatedStatsResponse, method: &str, code: tonic::Code) -> i64 {
    let count = acc.stats_per_method.get(method).and_then(|s| s.result.get(&(code as i32)));
    count.copied().map_or(0, i64::from)
}

/// RPCs of `method` (`EMPTY_CALL` / `UNARY_CALL`) that completed with any status but OK.
pub fn failed(acc: &LoadBalancerAccumulatedStatsResponse, method: &str) -> i64 {
    let m = acc.stats_per_method.get(method);
    m.map_or(0, |m| m.result.iter().filter(|(code, _)| **code != 0).map(|(_, n)| i64::from(*n)).sum())
}

/// Successful RPCs that `peer` answered in a GetClientStats window.
pub fn peer_count(stats: &LoadBalancerStatsResponse, peer: &str) -> i32 {
    stats.rpcs_by_peer.get(peer).copied().unwrap_or(0)
}
