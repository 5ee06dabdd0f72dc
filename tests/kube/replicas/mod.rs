//! Replicas that act as one control plane, end to end: real `sluice serve --kube` child processes against the
//! kmock API emulator, a real Envoy on each (bootstrapped to that replica's xDS port), local backends for v1/v3.
//!
//! ```text
//!  replica-a (Lease holder) ◀─ ConfigMap reports ─▶ replica-b ◀─▶ replica-c      (kmock: Lease, ConfigMaps,
//!     │ xDS                                           │ xDS          │ xDS         Service, Pods, Slices,
//!  envoy-a                                         envoy-b        envoy-c        Deployment reviews-v1, policy)
//!                     └──────── each ─▶ backends v1, v3 (in process, counting) ◀──────┘
//! ```
//! - `gate`: the finalize gate waits for a frozen Envoy on a follower (`pending` names it) and scales the stable
//!   to zero only after it resumes and ACKs.
//! - `traffic`: traffic through a follower's Envoy shows in every replica's release status at the backends' rate;
//!   a canary failing behind that follower is aborted by the leader's analysis; report writes per second.
//! - `expiry`: a replica SIGKILLed for good expires within the lease plus a heartbeat (`ReplicasReporting` False,
//!   `ReplicaExpired`), and the finalize waiting on its proxies completes.
//!
//! The tests of this module run one at a time ([`serial`]): each runs three Sluice processes and three Envoys.

use crate::common;

use crate::deploy::{deployment_of, pod, reviews_service, slice};
use common::http::{client, get_with};
use common::kmock::{Kmock, api, create, obj, patch};
use common::{Backend, Envoy, SluiceChild, start_envoy};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Mutex, MutexGuard};

mod expiry;
mod gate;
mod traffic;

/// The REST path of the release.
pub const PATH: &str = "/api/v1/namespaces/default/releases/reviews";
/// Generous bound for what should take a few ticks and report writes, on a loaded 2-core machine.
pub const BOUND: Duration = Duration::from_secs(20);

static SERIAL: Mutex<()> = Mutex::const_new(());

/// One test of this module at a time (other tests of the binary may still run beside it).
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// The cluster, the replicas (`replicas[0]` leads) and an Envoy on each (`envoys[i]` on `replicas[i]`).
pub struct Mesh {
    pub client: kube::Client,
    pub replicas: Vec<SluiceChild>,
    pub envoys: Vec<(Envoy, SocketAddr)>,
    pub v1: Backend,
    pub v3: Backend,
    // Dropped last: the replicas and Envoys go first.
    dir: tempfile::TempDir,
    _kmock: Kmock,
}

pub const IDS: [&str; 3] = ["replica-a", "replica-b", "replica-c"];
pub const NODES: [&str; 3] = ["envoy-a", "envoy-b", "envoy-c"];

impl Mesh {
    /// The cluster with the policy's `spec` (service, versions added), `n` replicas (the first one leading before
    /// the others start), an Envoy on each; returns once the leader sees every replica's proxy holding the release.
    pub async fn start(n: usize, lease_secs: u64, spec: Value) -> Mesh {
        let kmock = Kmock::start();
        let client = kmock.client().await;
        let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
        cluster(&client, v1.port(), v3.port(), spec).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut replicas = vec![kmock.replica(IDS[0], lease_secs, dir.path()).await];
        until("replica-a holds the lease", async || (holder(&client).await.as_deref() == Some(IDS[0])).then_some(()))
            .await;
        for id in &IDS[1..n] {
            replicas.push(kmock.replica(id, lease_secs, dir.path()).await);
        }
        let mut envoys = Vec::new();
        for (replica, node) in replicas.iter().zip(NODES) {
            envoys.push(start_envoy(replica.xds, node, false).await);
        }
        let mesh = Mesh { client, replicas, envoys, v1, v3, dir, _kmock: kmock };
        mesh.until_leader("every replica's proxy holds the release", |s| {
            let p = &s["proxies"];
            let fresh =
                p["replicas"].as_array().is_some_and(|r| r.len() == n && r.iter().all(|r| r["report"] == "Fresh"));
            (fresh && p["total"] == n && p["acked"] == n).then_some(())
        })
        .await;
        mesh
    }

    pub fn leader(&self) -> &SluiceChild {
        &self.replicas[0]
    }

    /// Polls the leader's REST status until `check` returns `Some`.
    pub async fn until_leader<T>(&self, what: &str, check: impl Fn(&Value) -> Option<T>) -> T {
        let admin = self.leader().admin;
        let mut last = Value::Null;
        let found = poll(BOUND, async || {
            last = view(admin).await["status"].clone();
            check(&last)
        });
        found.await.unwrap_or_else(|| panic!("{what}: not within {BOUND:?}; the leader's view: {last:#}"))
    }

    /// Polls the ReleasePolicy status (what the leader wrote) until `check` returns `Some`.
    pub async fn until_status<T>(&self, what: &str, check: impl Fn(&Value) -> Option<T>) -> T {
        let mut last = Value::Null;
        let found = poll(BOUND, async || {
            last = policy_status(&self.client).await;
            check(&last)
        });
        found.await.unwrap_or_else(|| panic!("{what}: not within {BOUND:?}; the ReleasePolicy status: {last:#}"))
    }

    /// Sets `spec.action` as a GitOps edit would (a new generation).
    pub async fn act(&self, action: &str, generation: i64) {
        let p = json!({"metadata": {"generation": generation}, "spec": {"action": action}});
        patch(&self.client, "sluice.dev/v1alpha1", "ReleasePolicy", "reviews", p).await;
    }

    /// `spec.replicas` of the stable Deployment.
    pub async fn stable_replicas(&self) -> i64 {
        let d = api(&self.client, "apps/v1", "Deployment").get("reviews-v1").await.expect("reviews-v1");
        d.data["spec"]["replicas"].as_i64().expect("spec.replicas")
    }

    /// The log of replica `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", IDS[i]))).unwrap_or_default()
    }
}

/// The release as a replica's REST API shows it.
pub async fn view(admin: SocketAddr) -> Value {
    let (code, body) = get_with(&client(), admin, "localhost", PATH, &[]).await.expect("REST answer");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// A counter of a replica's `/metrics`, summed over the samples whose labels include `labels` (`k="v"`).
pub async fn counter(admin: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    let (code, body) = get_with(&client(), admin, "localhost", "/metrics", &[]).await.expect("/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|k| l.contains(k)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

pub async fn policy_status(client: &kube::Client) -> Value {
    let p = api(client, "sluice.dev/v1alpha1", "ReleasePolicy").get("reviews").await.expect("the policy");
    p.data.get("status").cloned().unwrap_or(Value::Null)
}

pub async fn holder(client: &kube::Client) -> Option<String> {
    match api(client, "coordination.k8s.io/v1", "Lease").get("sluice").await {
        Ok(l) => l.data["spec"]["holderIdentity"].as_str().map(String::from),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => panic!("lease get: {e}"),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, failing after [`BOUND`].
pub async fn until<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    until_within(what, BOUND, check).await
}

/// [`until`], failing after `limit`.
pub async fn until_within<T>(what: &str, limit: Duration, check: impl AsyncFnMut() -> Option<T>) -> T {
    poll(limit, check).await.unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

/// Polls `check` every 100 ms for at most `limit`; `None` when it never returned `Some`.
pub async fn poll<T>(limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(t) = check().await {
            return Some(t);
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn condition<'a>(conditions: &'a Value, kind: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == kind)
}

/// Sends `sig` (`-STOP`, `-CONT`, `-KILL`) to one process, by PID.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Service reviews (app=reviews), one ready pod per version on the backends, the stable's Deployment
/// reviews-v1, and the ReleasePolicy reviews (v1 → v3) with `spec` added.
async fn cluster(client: &kube::Client, v1: u16, v3: u16, spec: Value) {
    create(client, reviews_service()).await;
    create(client, deployment_of("reviews-v1", "reviews", "v1", "istio/examples-bookinfo-reviews-v1:1.20")).await;
    for (version, port) in [("v1", v1), ("v3", v3)] {
        let name = format!("reviews-{version}-a");
        create(client, pod(&name, "reviews", version)).await;
        create(client, slice(&name, port, &[&name], true)).await;
    }
    let mut full = json!({"service": "reviews", "stable": "v1", "canary": "v3"});
    for (k, v) in spec.as_object().expect("spec fields") {
        full[k] = v.clone();
    }
    let mut policy = obj("sluice.dev/v1alpha1", "ReleasePolicy", "reviews", json!({}), json!({"spec": full}));
    policy["metadata"]["generation"] = json!(1);
    create(client, policy).await;
}
