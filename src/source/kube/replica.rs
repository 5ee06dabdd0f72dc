//! Every replica's report through the cluster (see [`crate::release::replicas`]): one ConfigMap per replica in
//! the Lease's namespace, `sluice-replica-<identity>`, labelled [`REPORT_LABEL`], its `report` key holding the
//! replica's [`ReplicaReport`] as JSON.
//!
//! ```text
//!  every 1 s: report = this replica's proxies per release + its own traffic totals
//!             changed (apart from the time), or a heartbeat due? ─▶ merge PATCH (create when absent)
//!  watch (label selector) ─▶ the other replicas' reports ─▶ Peers (watch channel: the controller's gate,
//!                                                           status, the leader's address for forwarded verbs)
//!                                                        ─▶ TrafficFollower ─▶ TrafficStats::record_remote
//!  the Lease holder: deletes reports expired for GC_AFTER; shutdown: this replica deletes its own
//! ```
//! Write rate: at most one PATCH per second per replica while its proxies' traffic or ACKs change, one per
//! heartbeat when idle; counted in `sluice_replica_report_writes_total{cause,result}`.

use super::REPLICA_REPORTS;
use crate::release::ReleaseController;
use crate::release::replicas::{Freshness, Peers, ReplicaReport, TrafficFollower, VersionTraffic};
use crate::telemetry::{TrafficStats, names};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// The label every report carries (the watch selects on it).
pub const REPORT_LABEL: &str = "sluice.dev/replica-report";
/// The ConfigMap key holding the report.
const REPORT_KEY: &str = "report";
/// Fewest milliseconds between two writes of one replica's report.
const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Where and how often this replica reports.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// The namespace of the reports (the Lease's).
    pub namespace: String,
    pub identity: String,
    /// Renewal without a change.
    pub heartbeat: Duration,
    /// How long a report holds without renewal (the Lease's duration).
    pub lease: Duration,
    /// This replica's Release API (`http://host:port`), for followers to forward verbs to.
    pub api_url: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The ConfigMap name of a replica's report: `sluice-replica-` + the identity made a DNS subdomain.
pub fn report_name(identity: &str) -> String {
    let clean: String = identity
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect();
    let name = format!("sluice-replica-{}", clean.trim_matches(|c| c == '-' || c == '.'));
    name.chars().take(253).collect()
}

/// Starts reporting this replica and following the others until `stop` turns true; the returned channel holds
/// the other replicas' reports. The returned handle ends once this replica's report is deleted at stop.
pub fn start(
    client: Client,
    config: ReplicaConfig,
    releases: ReleaseController,
    traffic: TrafficStats,
    leading: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) -> (watch::Receiver<Peers>, tokio::task::JoinHandle<()>) {
    let (peers_tx, peers) = watch::channel(Peers::new());
    let api = Api::<ConfigMap>::namespaced(client, &config.namespace);
    tokio::spawn(follow(api.clone(), config.clone(), peers_tx, traffic.clone(), leading, stop.clone()));
    let handle = tokio::spawn(report(api, config, releases, traffic, stop));
    (peers, handle)
}

/// This replica's report as of now.
fn build(
    config: &ReplicaConfig,
    started_ms: u64,
    releases: &ReleaseController,
    traffic: &TrafficStats,
) -> ReplicaReport {
    ReplicaReport {
        identity: config.identity.clone(),
        started_ms,
        renewed_ms: now_ms(),
        heartbeat_ms: config.heartbeat.as_millis() as u64,
        lease_ms: config.lease.as_millis() as u64,
        api_url: config.api_url.clone(),
        connected: releases.connected(),
        releases: releases.report_releases(),
        traffic: traffic.local_totals().iter().map(|(k, t)| VersionTraffic::new(k, t)).collect(),
    }
}

async fn report(
    api: Api<ConfigMap>,
    config: ReplicaConfig,
    releases: ReleaseController,
    traffic: TrafficStats,
    mut stop: watch::Receiver<bool>,
) {
    debug_assert!(REPLICA_REPORTS.verbs.contains(&"patch"));
    let name = report_name(&config.identity);
    let started_ms = now_ms();
    // What was last written, its time zeroed (a change is anything but the time), and when.
    let mut written: Option<(ReplicaReport, u64)> = None;
    loop {
        let report = build(&config, started_ms, &releases, &traffic);
        let same = written.as_ref().is_some_and(|(w, _)| *w == ReplicaReport { renewed_ms: 0, ..report.clone() });
        let last = written.as_ref().map_or(0, |(_, at)| *at);
        let heartbeat_due = report.renewed_ms.saturating_sub(last) >= config.heartbeat.as_millis() as u64;
        if !same || heartbeat_due {
            let cause = if same { "heartbeat" } else { "change" };
            let result = write(&api, &name, &report).await;
            let outcome = if result.is_ok() { "ok" } else { "error" };
            metrics::counter!(names::REPLICA_REPORT_WRITES, "cause" => cause, "result" => outcome).increment(1);
            match result {
                Ok(()) => written = Some((ReplicaReport { renewed_ms: 0, ..report.clone() }, report.renewed_ms)),
                Err(error) => {
                    tracing::warn!(report = %name, %error, "writing this replica's report failed; will retry")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(MIN_WRITE_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Going away: the other replicas stop counting this one's proxies now, not when the report expires.
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(report = %name, "this replica's report deleted"),
        Err(error) => tracing::warn!(report = %name, %error, "deleting this replica's report failed; it expires"),
    }
}

async fn write(api: &Api<ConfigMap>, name: &str, report: &ReplicaReport) -> Result<(), kube::Error> {
    let json = serde_json::to_string(report).unwrap_or_default();
    let patch = serde_json::json!({ "data": { REPORT_KEY: json } });
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_string()),
                    labels: Some(BTreeMap::from([
                        (REPORT_LABEL.to_string(), "true".to_string()),
                        ("app.kubernetes.io/name".to_string(), "sluice".to_string()),
                    ])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(REPORT_KEY.to_string(), json)])),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// How long after expiry the Lease holder deletes a report that a replica left behind (one killed for good).
fn gc_after(lease: Duration) -> Duration {
    (lease * 20).max(Duration::from_secs(60))
}

async fn follow(
    api: Api<ConfigMap>,
    config: ReplicaConfig,
    peers: watch::Sender<Peers>,
    traffic: TrafficStats,
    leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let selector = watcher::Config::default().labels(&format!("{REPORT_LABEL}=true"));
    let stream = watcher(api.clone(), selector).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut reports: BTreeMap<String, ReplicaReport> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, ReplicaReport>> = None;
    let mut follower = TrafficFollower::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(watcher::Event::Apply(cm))) => { if let Some((n, r)) = parse(&cm) { reports.insert(n, r); } }
                Some(Ok(watcher::Event::Delete(cm))) => { reports.remove(&cm.metadata.name.unwrap_or_default()); }
                Some(Ok(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
                Some(Ok(watcher::Event::InitApply(cm))) => {
                    if let (Some(l), Some((n, r))) = (listing.as_mut(), parse(&cm)) { l.insert(n, r); }
                }
                Some(Ok(watcher::Event::InitDone)) => { if let Some(l) = listing.take() { reports = l; } }
                Some(Err(error)) => tracing::warn!(%error, "watching replica reports failed; retrying with backoff"),
                None => return,
            },
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = now_ms();
        let others: Peers = reports
            .values()
            .filter(|r| r.identity != config.identity)
            .map(|r| (r.identity.clone(), r.clone()))
            .collect();
        for (now_ms, since_ms, deltas) in follower.follow(&others, &config.identity, now) {
            traffic.record_remote(now_ms, since_ms, &deltas);
        }
        peers.send_if_modified(|p| std::mem::replace(p, others.clone()) != others);
        if *leading.borrow() {
            collect_garbage(&api, &others, config.lease, now).await;
        }
    }
}

/// Deletes the reports of replicas gone for longer than [`gc_after`] (Lease holder only).
async fn collect_garbage(api: &Api<ConfigMap>, peers: &Peers, lease: Duration, now: u64) {
    for report in peers.values() {
        let gone_for = now.saturating_sub(report.renewed_ms + report.lease_ms);
        if report.freshness(now) != Freshness::Expired || gone_for < gc_after(lease).as_millis() as u64 {
            continue;
        }
        let name = report_name(&report.identity);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(report = %name, "deleted the report of a replica gone for good"),
            Err(error) => tracing::warn!(report = %name, %error, "deleting a gone replica's report failed"),
        }
    }
}

/// A ConfigMap's report; one that does not parse is logged and skipped (a replica of another version may write a
/// shape this one does not read: it then counts as not reporting).
fn parse(cm: &ConfigMap) -> Option<(String, ReplicaReport)> {
    let name = cm.metadata.name.clone()?;
    let raw = cm.data.as_ref()?.get(REPORT_KEY)?;
    match serde_json::from_str::<ReplicaReport>(raw) {
        Ok(r) => Some((name, r)),
        Err(error) => {
            tracing::warn!(report = %name, %error, "a replica report that does not parse; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_are_dns_subdomains() {
        assert_eq!(report_name("sluice-7d9f-abcde"), "sluice-replica-sluice-7d9f-abcde");
        assert_eq!(report_name("Replica_A"), "sluice-replica-replica-a");
        assert!(report_name(&"x".repeat(400)).len() <= 253);
    }
}
