//! Replicas that act as one: what each replica reports about itself through the cluster, and how the others
//! merge it. Pure: the IO (one ConfigMap per replica, written and watched) is `source::kube::replica`.
//!
//! ```text
//!  replica A ── its proxies: per release, state fingerprint + ACKed/total; per version, running traffic totals ──┐
//!  replica B ── the same ──────────────────────────────────────────────────────────────────────────────────────────┤ ConfigMap
//!                                                                                                                   ▼ per replica
//!  every replica: [`Peers`] (the others' reports) ─▶ merge_proxies: the gate and `status.proxies` count every proxy
//!                                                ─▶ TrafficFollower: report-to-report deltas ─▶ TrafficStats
//! ```
//! A report is **fresh** while it is renewed (every heartbeat, or sooner on change), **stale** once it missed
//! two heartbeats (its proxies then count as not holding anything: the gate waits, never passes), and
//! **expired** once its lease passed without a renewal (the replica is gone: its proxies are no longer counted,
//! and a condition says so).

use super::status::{Proxies, ReplicaProxies};
use crate::model::{ObjectKey, ReleasePolicySpec, ReleaseState};
use crate::telemetry::{Delta, Histogram, Totals, VersionKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most proxy ids a report (and a status) names as not holding a release's state.
pub const MAX_PENDING: usize = 10;

/// What one replica reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaReport {
    /// The replica's name (its Lease identity).
    pub identity: String,
    /// When this replica process started (ms since the epoch): its traffic totals count from there.
    pub started_ms: u64,
    /// When it wrote this report (ms since the epoch).
    pub renewed_ms: u64,
    /// How often it renews the report without a change.
    pub heartbeat_ms: u64,
    /// How long the report holds without a renewal: after that the replica counts as gone.
    pub lease_ms: u64,
    /// Where its Release API listens (`http://host:port`), for a follower to forward verbs to the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Proxies connected to it.
    pub connected: usize,
    /// Per release (`namespace/name`): what its proxies hold.
    #[serde(default)]
    pub releases: BTreeMap<String, ReleaseProxies>,
    /// Per version: the traffic its proxies reported since it started.
    #[serde(default)]
    pub traffic: Vec<VersionTraffic>,
}

/// One release's proxies on one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseProxies {
    /// [`fingerprint`] of the release state these counts are for.
    pub state: String,
    /// This replica's own proxies (ACKed/total, pending, refused), as its release status counts them.
    #[serde(flatten)]
    pub proxies: Proxies,
}

/// One version's running traffic totals on one replica.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionTraffic {
    pub namespace: String,
    pub service: String,
    pub version: String,
    pub requests: u64,
    pub errors: u64,
    /// Latency histogram (ms): upper bounds and cumulative counts, and every sample's count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounds: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cumulative: Vec<u64>,
    #[serde(default)]
    pub count: u64,
}

impl VersionTraffic {
    pub fn new(key: &VersionKey, t: &Totals) -> Self {
        Self {
            namespace: key.namespace.clone(),
            service: key.service.clone(),
            version: key.version.clone(),
            requests: t.requests,
            errors: t.errors,
            bounds: t.latency.bounds.clone(),
            cumulative: t.latency.cumulative.clone(),
            count: t.latency.count,
        }
    }

    fn key(&self) -> VersionKey {
        VersionKey::new(&self.namespace, &self.service, &self.version)
    }

    fn totals(&self) -> Totals {
        let latency = Histogram { bounds: self.bounds.clone(), cumulative: self.cumulative.clone(), count: self.count };
        Totals { requests: self.requests, errors: self.errors, latency }
    }
}

/// The other replicas' reports, by identity.
pub type Peers = BTreeMap<String, ReplicaReport>;

/// How current a report is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Freshness {
    Fresh,
    /// Two heartbeats missed: its proxies hold nothing as far as the gate knows.
    Stale,
    /// Its lease passed: the replica is gone and its proxies are not counted.
    Expired,
}

impl ReplicaReport {
    pub fn freshness(&self, now_ms: u64) -> Freshness {
        let age = now_ms.saturating_sub(self.renewed_ms);
        if age > self.lease_ms {
            Freshness::Expired
        } else if age > 2 * self.heartbeat_ms + STALE_SLACK_MS.min(self.heartbeat_ms / 2) {
            Freshness::Stale
        } else {
            Freshness::Fresh
        }
    }
}

/// Room for a write's round trip and the watch's delay before two missed heartbeats count as stale.
const STALE_SLACK_MS: u64 = 1000;

/// Identifies a release's state (spec and phase, step, weight) across replicas: equal on two replicas exactly
/// when they route the release alike. Stable across processes and builds (xxh3 of the JSON).
pub fn fingerprint(spec: &ReleasePolicySpec, state: &ReleaseState) -> String {
    let json = serde_json::to_vec(&(spec, state)).unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&json))
}

/// This replica's own count for a release, merged with every other replica's report: a fresh report adds its
/// proxies (ACKed only when they hold the same `state`); a stale one adds its proxies as not holding it; an
/// expired one adds nothing. `replicas` lists each replica's share (this one first) for the status.
pub fn merge_proxies(
    identity: &str,
    local: Proxies,
    key: &ObjectKey,
    state: &str,
    peers: &Peers,
    now_ms: u64,
) -> Proxies {
    let mut merged = Proxies {
        replicas: vec![ReplicaProxies {
            name: identity.to_string(),
            acked: local.acked,
            total: local.total,
            report: Freshness::Fresh,
            age_ms: 0,
        }],
        ..local
    };
    let id = key.to_string();
    for (name, report) in peers.iter().filter(|(n, _)| n.as_str() != identity) {
        let freshness = report.freshness(now_ms);
        let held = report.releases.get(&id);
        let total = held.map_or(report.connected, |h| h.proxies.total);
        let acked = match (freshness, held) {
            (Freshness::Fresh, Some(h)) if h.state == state => h.proxies.acked,
            _ => 0,
        };
        let age_ms = now_ms.saturating_sub(report.renewed_ms);
        merged.replicas.push(ReplicaProxies { name: name.clone(), acked, total, report: freshness, age_ms });
        if freshness == Freshness::Expired {
            continue;
        }
        merged.acked += acked;
        merged.total += total;
        // No ages in these lines: they go to the ReleasePolicy status, which is written only when it changes.
        match held {
            _ if freshness == Freshness::Stale && total > 0 => {
                merged.pending.push(format!("{name}: {total} proxies (its report missed two heartbeats)"))
            }
            Some(h) if h.state == state => {
                merged.pending.extend(h.proxies.pending.iter().map(|p| format!("{name}/{p}")));
                merged.refused.extend(h.proxies.refused.iter().map(|r| format!("{name}/{r}")));
            }
            Some(h) if h.proxies.total > 0 => merged
                .pending
                .push(format!("{name}: {} proxies (it serves another state of this release)", h.proxies.total)),
            None if total > 0 => merged.pending.push(format!("{name}: {total} proxies (it has not this release yet)")),
            _ => {}
        }
    }
    merged.pending.truncate(MAX_PENDING);
    merged.refused.truncate(MAX_PENDING);
    merged
}

/// Turns successive reports of the other replicas into traffic deltas, as a proxy's flushes become deltas in the
/// stats sink: each report's totals minus the previous report's, covering the time between the two.
#[derive(Default)]
pub struct TrafficFollower {
    /// Per replica: the process start its totals count from, when the last report was written, and its totals.
    seen: BTreeMap<String, (u64, u64, BTreeMap<VersionKey, Totals>)>,
}

/// How far back the traffic a report adds is spread: a proxy's flush period (1 s) plus the report's write period
/// (1 s).
const RECENT_MS: u64 = 2000;

/// Deltas for `TrafficStats::record_remote`: `(now_ms, since_ms, deltas)`.
pub type RemoteDeltas = (u64, u64, Vec<(VersionKey, Delta)>);

impl TrafficFollower {
    /// The traffic each new report adds (reports already seen, and expired ones, add nothing). The first
    /// report of a replica (or of a restarted one) sets its baseline: the counts it carries happened before this
    /// replica looked, except for a restarted replica, whose counts all came after its start.
    pub fn follow(&mut self, peers: &Peers, self_identity: &str, now_ms: u64) -> Vec<RemoteDeltas> {
        let mut out = Vec::new();
        self.seen.retain(|name, _| peers.contains_key(name));
        for (name, report) in peers.iter().filter(|(n, _)| n.as_str() != self_identity) {
            if report.freshness(now_ms) == Freshness::Expired {
                continue;
            }
            let totals: BTreeMap<VersionKey, Totals> = report.traffic.iter().map(|t| (t.key(), t.totals())).collect();
            let previous = self.seen.get(name);
            match previous {
                Some((started, renewed, _)) if *started == report.started_ms && *renewed >= report.renewed_ms => {
                    continue;
                }
                Some((started, renewed, before)) => {
                    let restarted = *started != report.started_ms;
                    let since = if restarted { report.started_ms.max(*renewed) } else { *renewed };
                    // A report is rewritten within a second of a change, so what it adds happened in the last
                    // proxy flush and write periods, not over a quiet stretch since the previous (heartbeat) write.
                    let since = since.max(report.renewed_ms.saturating_sub(RECENT_MS));
                    let empty = BTreeMap::new();
                    let before = if restarted { &empty } else { before };
                    let deltas = differences(&totals, before);
                    if !deltas.is_empty() {
                        out.push((report.renewed_ms, since, deltas));
                    }
                }
                None => {}
            }
            self.seen.insert(name.clone(), (report.started_ms, report.renewed_ms, totals));
        }
        out
    }
}

/// `now - before` per version; a version whose totals went down (forgotten and reported again) counts from zero.
fn differences(now: &BTreeMap<VersionKey, Totals>, before: &BTreeMap<VersionKey, Totals>) -> Vec<(VersionKey, Delta)> {
    now.iter()
        .filter_map(|(k, t)| {
            let base = before.get(k).filter(|b| b.requests <= t.requests).cloned().unwrap_or_default();
            let d = t.delta_since(&base);
            (d.requests > 0 || d.latency.count > 0).then(|| (k.clone(), d))
        })
        .collect()
}

#[cfg(test)]
#[path = "replicas_tests.rs"]
mod tests;
